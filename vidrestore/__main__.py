"""`python -m vidrestore`: the command line."""

from .cli import main

main()

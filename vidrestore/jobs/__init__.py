"""Batch runs: many files (and long files cut into segments) restored on this machine's
worker processes or as Ray tasks, resumable, each output written exactly once."""

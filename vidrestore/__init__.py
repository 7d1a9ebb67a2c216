"""vidrestore: restore faces in video and images."""

__version__ = "0.1.0"

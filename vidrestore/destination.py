"""Where outputs go: checks before writing, and partial files renamed into place at the end."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError


def partial_path(final: Path) -> Path:
    """Where `final` is written until it is complete; same folder, so the rename is atomic."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}{final.suffix}")


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse to write `dst`: the input itself, a folder, an existing file (unless
    `overwrite`), a missing or read-only folder."""
    if dst.resolve() == src.resolve() or (dst.exists() and _same_file(src, dst)):
        raise OutputError(f"{dst}: is the input file; choose another output path")
    if dst.is_dir():
        raise OutputError(f"{dst}: is a directory; give a file name")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst}: already exists; pass --overwrite to replace it")
    if not dst.parent.is_dir():
        raise OutputError(f"{dst}: folder {dst.parent} does not exist")
    if not os.access(dst.parent, os.W_OK):
        raise OutputError(f"{dst}: folder {dst.parent} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

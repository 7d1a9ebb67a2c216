"""The files a batch restores: paths, folders (searched recursively) and glob patterns,
each mapped to its output in OUTDIR, and refused up front when two would collide."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io.probe import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class FileJob:
    """One input restored to one output, with its log beside the output."""

    input: Path
    output: Path

    @property
    def log(self) -> Path:
        return self.output.with_name(self.output.name + ".jsonl")

    @property
    def key(self) -> str:
        return self.output.name


def plan_files(items: Sequence[str], outdir: Path) -> list[FileJob]:
    """Jobs for `items`: a file goes to OUTDIR/NAME; a folder's media files keep their path
    below the folder; a glob (`'tapes/*.mp4'`, `'**'` allowed) is expanded like a list of
    files. Anything under OUTDIR itself is left out (a rerun must not restore its outputs)."""
    outdir = outdir.resolve()
    jobs: dict[Path, FileJob] = {}
    for item in items:
        for source, relative in _expand(item, outdir):
            target = outdir / relative
            other = jobs.get(target)
            if other is not None and other.input.resolve() != source.resolve():
                raise ConfigError(f"{source}: would be written to {target}, as {other.input} "
                                  "is; give the two files different names or folders")
            jobs[target] = FileJob(source, target)
    if not jobs:
        raise InputError(f"{' '.join(items)}: no video or image files found "
                         f"({' '.join(MEDIA_EXTENSIONS)})")
    return sorted(jobs.values(), key=lambda job: str(job.output))


def _expand(item: str, outdir: Path) -> list[tuple[Path, Path]]:
    path = Path(item)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if _is_media(p) and not _inside(p, outdir))
        return [(p, p.relative_to(path)) for p in found]
    if path.is_file():
        return [(path, Path(path.name))]
    if _GLOB_CHARS & set(item):
        found = sorted(Path(p) for p in glob.glob(item, recursive=True))
        return [(p, Path(p.name)) for p in found if _is_media(p) and not _inside(p, outdir)]
    raise InputError(f"{item}: no such file or folder")


def _is_media(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MEDIA_EXTENSIONS and \
        not path.name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)

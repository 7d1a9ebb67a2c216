"""Where outputs go: checks before writing, and partial files renamed into place at the end."""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

from .errors import OutputError

log = logging.getLogger(__name__)

_PARTIAL = re.compile(r"^\..*\.partial-(\d+)(\.[^.]*)?$")
_DEFAULT_NAME_MAX = 255


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system under `folder` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return _DEFAULT_NAME_MAX


def partial_path(final: Path) -> Path:
    """Where `final` is written until it is complete; same folder, so the rename is atomic.

    `.NAME.partial-PID.SUFFIX`, with NAME shortened when the whole would be longer than the
    file system allows (a long but legal OUT name must not fail for its partial's sake)."""
    tail = f".partial-{os.getpid()}{final.suffix}"
    room = name_max(final.parent) - len(tail.encode()) - 1
    name = final.name.encode()
    if len(name) > room:
        name = name[:max(room, 1)]
    return final.with_name("." + name.decode(errors="ignore") + tail)


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse to write `dst`: the input itself, a folder, an existing file (unless
    `overwrite`), a missing or read-only folder, a name longer than the file system takes."""
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
    if len(dst.name.encode()) > name_max(dst.parent):
        raise OutputError(f"{dst}: file name longer than the file system allows "
                          f"({name_max(dst.parent)} bytes); choose a shorter name")
    if _PARTIAL.match(dst.name):
        raise OutputError(f"{dst}: looks like one of vidrestore's partial files; "
                          "choose another name")


def check_distinct(out: Path, log_path: Path) -> None:
    """The log must be neither OUT nor either one's partial file."""
    same = _same_path(out, log_path) or _same_path(partial_path(out), log_path) \
        or _same_path(partial_path(log_path), out)
    if same:
        raise OutputError(f"{log_path}: the log cannot be written to the output {out}; "
                          "give --log another path")


def commit(partial: Path, final: Path, overwrite: bool) -> None:
    """Move the finished `partial` to `final`. Without `overwrite`, never replace a file
    that appeared at `final` while the run was going (a hard link fails where a rename
    would replace); file systems without hard links fall back to check-then-rename."""
    if overwrite:
        os.replace(partial, final)
        return
    try:
        os.link(partial, final)
    except FileExistsError:
        raise OutputError(f"{final}: appeared while the run was going; not replaced (pass "
                          "--overwrite to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK, errno.ENOSYS):
            raise
        if final.exists():
            raise OutputError(f"{final}: appeared while the run was going; not replaced "
                              "(pass --overwrite to replace it)") from None
        os.replace(partial, final)
        return
    partial.unlink()


def remove_stale_partials(folder: Path) -> None:
    """Delete partial files in `folder` left by runs that were killed (SIGKILL, power loss):
    those whose process no longer exists. A live run's partials are kept."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()
                log.info("removed %s, left by a run that was killed", entry)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and _same_file(a, b))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

"""Download one file over HTTP(S) with urllib, resumable, hashed on the way, renamed at the end.

Bytes stream into ``<dest>.part`` beside the destination. A `.part` left by an interrupted
run is resumed with a Range request (and hashed first, so the digest covers the whole file).
Only a file whose size and SHA-256 match is renamed into place, atomically, so the cache
never holds a half-written or unchecked file under its real name.

Two processes that want the same file on a fresh cache (two runs started together, a batch
of jobs) take turns through a lock file, ``.<dest>.lock``: the second waits, then finds the
file in place and checks it instead of writing into the first one's `.part`. The `.part`
keeps one name so that an interrupted download resumes in a later run; the lock is what
makes that one name safe to share.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import filelock

from .. import __version__
from ..errors import ChecksumError, DownloadError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]  # (bytes done, bytes in all or None)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        _hash_into(digest, f, progress)
    return digest.hexdigest()


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    """Kept after use: removing a lock file races with a process about to take it."""
    return dest.with_name(f".{dest.name}.lock")


def download(url: str, dest: Path, *, label: str, sha256: str | None, size_bytes: int | None,
             progress: ProgressCallback | None = None, timeout_s: float = TIMEOUT_S) -> Path:
    """Fetch `url` into `dest`; return `dest`.

    `label` names the model in messages. Raises `DownloadError` when the server cannot be
    reached or answers with an error (the `.part` is kept for a later resume), and
    `ChecksumError` when the bytes do not match (the `.part` is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest, label):
        if dest.is_file():  # another process fetched it while we waited: check it
            _check(dest, dest.stat().st_size, sha256_file(dest), label=label, url=url,
                   sha256=sha256, size_bytes=size_bytes)
            return dest
        return _download_locked(url, dest, label=label, sha256=sha256, size_bytes=size_bytes,
                                progress=progress, timeout_s=timeout_s)


@contextlib.contextmanager
def _exclusive(dest: Path, label: str) -> Iterator[None]:
    """Hold `<dest>.lock` (an OS file lock, released if the process dies)."""
    lock = filelock.FileLock(str(lock_path(dest)))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.warning("%s: another process is downloading %s; waiting for it", label, dest.name)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _download_locked(url: str, dest: Path, *, label: str, sha256: str | None,
                     size_bytes: int | None, progress: ProgressCallback | None,
                     timeout_s: float) -> Path:
    part = part_path(dest)
    digest = hashlib.sha256()
    done = _resume_offset(part, size_bytes, digest)
    if size_bytes is None or done < size_bytes:
        done, digest = _fetch_into(url, part, done, digest, label=label, dest=dest,
                                   size_bytes=size_bytes, progress=progress,
                                   timeout_s=timeout_s)
    _check(part, done, digest.hexdigest(), label=label, url=url, sha256=sha256,
           size_bytes=size_bytes)
    os.replace(part, dest)
    log.info("%s: saved %s (%d bytes)", label, dest, done)
    return dest


def _resume_offset(part: Path, size_bytes: int | None, digest) -> int:
    """Bytes already in `part` (hashed into `digest`), or 0 when there is nothing to resume."""
    if not part.exists():
        return 0
    have = part.stat().st_size
    if size_bytes is not None and have > size_bytes:
        part.unlink()  # longer than the real file: not a prefix of it
        return 0
    with open(part, "rb") as f:
        _hash_into(digest, f, None)
    log.info("resuming %s at byte %d", part, have)
    return have


def _fetch_into(url: str, part: Path, offset: int, digest, *, label: str, dest: Path,
                size_bytes: int | None, progress: ProgressCallback | None,
                timeout_s: float) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"User-Agent": f"vidrestore/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if offset and response.status != 206:
                # The server ignored the Range header and sends the whole file again.
                offset, digest = 0, hashlib.sha256()
            total = _total_size(response, offset, size_bytes)
            with open(part, "ab" if offset else "wb") as out:
                done = _stream(response, out, offset, digest, total, size_bytes, progress)
            return done, digest
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            part.unlink(missing_ok=True)  # our .part does not fit the file on the server
        raise _download_error(label, url, dest, f"HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, cut-offs
        reason = getattr(exc, "reason", None) or exc
        raise _download_error(label, url, dest, str(reason) or type(exc).__name__) from exc


def _stream(response: BinaryIO, out: BinaryIO, done: int, digest, total: int | None,
            size_bytes: int | None, progress: ProgressCallback | None) -> int:
    while chunk := response.read(CHUNK_BYTES):
        done += len(chunk)
        if size_bytes is not None and done > size_bytes:
            break  # more bytes than the real file has: stop filling the disk
        out.write(chunk)
        digest.update(chunk)
        if progress:
            progress(done, total)
    return done


def _total_size(response, offset: int, size_bytes: int | None) -> int | None:
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return offset + int(length)
    return size_bytes


def _check(part: Path, done: int, actual: str, *, label: str, url: str, sha256: str | None,
           size_bytes: int | None) -> None:
    problem = None
    if size_bytes is not None and done != size_bytes:
        problem = f"got {done} bytes, expected {size_bytes}"
    elif sha256 is not None and actual != sha256:
        problem = f"sha256 {actual}, expected {sha256}"
    if problem is None:
        if sha256 is None:
            log.warning("%s: no published sha256; %s was checked by size only", label, part.name)
        return
    part.unlink(missing_ok=True)
    raise ChecksumError(f"{label}: the download from {url} does not match ({problem}); "
                        "the partial file was removed; try again, and report it if it recurs")


def _download_error(label: str, url: str, dest: Path, reason: str) -> DownloadError:
    return DownloadError(f"cannot download {label} ({dest.name}) from {url}: {reason}; "
                         f"fetch it by hand and put it at {dest}")


def _hash_into(digest, f: BinaryIO, progress: ProgressCallback | None) -> None:
    done = 0
    while chunk := f.read(CHUNK_BYTES):
        digest.update(chunk)
        done += len(chunk)
        if progress:
            progress(done, None)

"""Receive an upload: stream it to the job's folder under a size limit, then check its type.

The multipart body is parsed as it arrives (Starlette's parser; a file part spools to disk
past 1 MB), and the body is counted on the way in: past the limit the request is refused
with 413 before more is read. The type is decided by opening the file (`sniff_extension`),
never by its name or the client's Content-Type; then the CLI's own input check (`probe`)
runs on it, so a truncated video or a corrupt image gets the CLI's one-line message. The
client's file name is kept for display only and never reaches the file system.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..errors import InputError
from ..io.probe import probe, sniff_extension

CHUNK_BYTES = 1 << 20


class UploadRefused(Exception):
    """A bad upload: `status` is the HTTP code, the message one line naming the file."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    filename: str  # the client's name, cleaned, for display
    input_name: str  # the file's name in the job folder: input + the probed extension
    kind: str  # "image" | "video"
    fields: dict[str, str]  # the form's other fields


def display_name(name: str | None) -> str:
    """The last part of the client's file name, printable, at most 120 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:120] or "upload"


async def _limited(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise UploadRefused(413, f"upload larger than the server's limit of "
                                     f"{max_bytes / 1e6:g} MB (--max-upload-mb)")
        yield chunk


async def receive(request: Request, folder: Path, max_bytes: int, max_fields: int) -> Upload:
    """Write the request's `file` part into `folder` and return what was uploaded; on any
    refusal the folder is removed and `UploadRefused` raised."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRefused(415, "send the file as multipart/form-data (a 'file' field)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadRefused(413, f"upload of {int(declared) / 1e6:g} MB is larger than the "
                                 f"server's limit of {max_bytes / 1e6:g} MB (--max-upload-mb)")
    folder.mkdir(parents=True)
    form = None
    try:
        parser = MultiPartParser(request.headers, _limited(request, max_bytes), max_files=1,
                                 max_fields=max_fields)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise UploadRefused(400, f"bad multipart body: {exc.message}") from exc
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise UploadRefused(400, "no file: send the video or image in a 'file' field")
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        filename = display_name(file.filename)
        return _store(file, folder, filename, fields)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        if form is not None:
            await form.close()


def _store(file: UploadFile, folder: Path, filename: str, fields: dict[str, str]) -> Upload:
    raw = folder / "upload"
    with raw.open("wb") as out:
        file.file.seek(0)
        shutil.copyfileobj(file.file, out, CHUNK_BYTES)
    path = raw
    try:
        path = raw.rename(folder / f"input{sniff_extension(raw)}")
        info = probe(path)
    except InputError as exc:
        message = str(exc).replace(str(path), filename)  # the client's name, not ours
        status = 422 if path is not raw else 415  # a known type that is broken: 422
        raise UploadRefused(status, message) from exc
    return Upload(filename=filename, input_name=path.name, kind=info.kind, fields=fields)

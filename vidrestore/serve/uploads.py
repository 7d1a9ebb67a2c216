"""Receive an upload: stream it into the job's folder under a size limit, then check its type.

The multipart body is parsed as it arrives (python-multipart's push parser) and the file
part is written straight to `JOB/upload`, so nothing is held whole in memory nor written
twice; the body is counted on the way in and refused with 413 past the limit. The type is
decided by opening the file (`sniff_extension`), never by its name or the client's
Content-Type; then the CLI's own input check (`probe`) runs on it, so a truncated video or
a corrupt image gets the CLI's one-line message. The client's file name is kept for display
only and never reaches the file system.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InputError
from ..io.probe import probe, sniff_extension

MAX_FIELD_BYTES = 1024  # an option's value; the file has its own limit


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


class _FormWriter:
    """python-multipart callbacks: the `file` part into `path`, short fields into a dict."""

    def __init__(self, path: Path, max_fields: int) -> None:
        self.path, self.max_fields = path, max_fields
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._file: BinaryIO | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header: tuple[bytearray, bytearray] = (bytearray(), bytearray())
        self._name: str | None = None
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0].extend(data[start:end])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1].extend(data[start:end])

    def _header_end(self) -> None:
        field, value = self._header
        self._headers[bytes(field).lower()] = bytes(value)
        self._header = (bytearray(), bytearray())

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if name != "file" or self.filename is not None:
                raise UploadRefused(400, "send one file, in a field named 'file'")
            self.filename = options[b"filename"].decode("utf-8", "replace")
            self._file = self.path.open("wb")
        else:
            if len(self.fields) >= self.max_fields:
                raise UploadRefused(400, f"more than {self.max_fields} form fields")
            self._name = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
        else:
            self._value.extend(data[start:end])
            if len(self._value) > MAX_FIELD_BYTES:
                raise UploadRefused(400, f"form field {self._name!r} is longer than "
                                         f"{MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name is not None:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive(request: Request, folder: Path, max_bytes: int, max_fields: int) -> Upload:
    """Write the request's `file` part into `folder` and return what was uploaded; on any
    refusal the folder is removed and `UploadRefused` raised."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadRefused(415, "send the file as multipart/form-data (a 'file' field)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadRefused(413, f"upload of {int(declared) / 1e6:g} MB is larger than the "
                                 f"server's limit of {max_bytes / 1e6:g} MB (--max-upload-mb)")
    folder.mkdir(parents=True)
    writer = _FormWriter(folder / "upload", max_fields)
    try:
        parser = MultipartParser(params[b"boundary"], writer.callbacks())
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise UploadRefused(413, f"upload larger than the server's limit of "
                                             f"{max_bytes / 1e6:g} MB (--max-upload-mb)")
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise UploadRefused(400, f"bad multipart body: {exc}") from exc
        finally:
            writer.close()
        if writer.filename is None:
            raise UploadRefused(400, "no file: send the video or image in a 'file' field")
        return _check(folder, display_name(writer.filename), writer.fields)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _check(folder: Path, filename: str, fields: dict[str, str]) -> Upload:
    raw = folder / "upload"
    path = raw
    try:
        path = raw.rename(folder / f"input{sniff_extension(raw)}")
        info = probe(path)
    except InputError as exc:
        message = str(exc).replace(str(path), filename)  # the client's name, not ours
        status = 422 if path is not raw else 415  # a known type that is broken: 422
        raise UploadRefused(status, message) from exc
    return Upload(filename=filename, input_name=path.name, kind=info.kind, fields=fields)

"""The per-frame log: one JSON object per output frame, in order, then a summary object."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import EncodeError


class RunLog:
    """Writes JSON Lines to `path` (the caller decides where and renames it at the end).

    observers: called with each frame record after it is written (e.g. a summary's `add`).
    line_buffered: every record reaches the file at once (a live run's log can be followed
        while it runs, `tail -f`); otherwise records are written in blocks.
    name: the path named in error messages (the final path, not the partial one).

    A write that fails (a full disk, a file-size limit) raises `EncodeError`; after a failed
    write or `close()`, `close()` does nothing, so an error path can always call it.
    """

    def __init__(self, path: Path,
                 observers: Sequence[Callable[[dict[str, Any]], None]] = (), *,
                 line_buffered: bool = False, name: Path | None = None) -> None:
        self.path = path
        self.name = name or path
        self.observers = tuple(observers)
        try:
            self._file: TextIO | None = open(  # noqa: SIM115 - see close()
                path, "w", encoding="utf-8", buffering=1 if line_buffered else -1)
        except OSError as exc:
            raise EncodeError(f"{self.name}: cannot create the log ({_why(exc)})") from exc

    def frame(self, record: dict[str, Any]) -> None:
        self._write(json.dumps(_clean(record), separators=(",", ":")) + "\n")
        for observe in self.observers:
            observe(record)

    def summary(self, summary: dict[str, Any]) -> None:
        self._write(json.dumps({"summary": _clean(summary)}, separators=(",", ":")) + "\n")

    def close(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as exc:
            _discard(file)
            raise EncodeError(f"{self.name}: writing the log failed ({_why(exc)})") from exc

    def _write(self, text: str) -> None:
        if self._file is None:
            raise EncodeError(f"{self.name}: the log is closed")
        try:
            self._file.write(text)
        except OSError as exc:
            file, self._file = self._file, None
            _discard(file)
            raise EncodeError(f"{self.name}: writing the log failed ({_why(exc)})") from exc


def _discard(file: TextIO) -> None:
    """Close `file` without flushing what is still buffered (the disk refused it)."""
    try:
        file.buffer.raw.close()  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass
    try:
        file.close()
    except (OSError, ValueError):
        pass


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value

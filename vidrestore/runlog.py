"""The per-frame log: one JSON object per output frame, in order, then a summary object."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO


class RunLog:
    """Writes JSON Lines to `path` (the caller decides where and renames it at the end).

    observers: called with each frame record after it is written (e.g. a summary's `add`).
    line_buffered: every record reaches the file at once (a live run's log can be followed
        while it runs); otherwise records are written in blocks.
    """

    def __init__(self, path: Path,
                 observers: Sequence[Callable[[dict[str, Any]], None]] = (), *,
                 line_buffered: bool = False) -> None:
        self.path = path
        self.observers = tuple(observers)
        self._file: TextIO = open(path, "w", encoding="utf-8",  # noqa: SIM115 - see close()
                                  buffering=1 if line_buffered else -1)

    def frame(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(_clean(record), separators=(",", ":")) + "\n")
        for observe in self.observers:
            observe(record)

    def summary(self, summary: dict[str, Any]) -> None:
        self._file.write(json.dumps({"summary": _clean(summary)}, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value

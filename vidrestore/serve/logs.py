"""Logging for the server: a line per event on the console, a JSON object per event in
DATA_DIR/server.jsonl. Requests and job transitions are logged with their fields as
`extra={"fields": {...}}`, so the JSON log can be read back by a program."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("vidrestore.serve")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage(),
                 **getattr(record, "fields", {})}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} vidrestore serve: {record.getMessage()}"
        if record.levelno >= logging.WARNING:
            line = f"{stamp} vidrestore serve: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and logging.getLogger("vidrestore").level <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(data_dir: Path, level: int) -> Path:
    """Console and JSON Lines handlers on the `vidrestore` logger; returns the JSON log's path."""
    path = data_dir / "server.jsonl"
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleLine())
    json_file = logging.FileHandler(path, encoding="utf-8")
    json_file.setFormatter(JsonLines())
    json_file.setLevel(logging.INFO)  # the file keeps requests and transitions even with -q
    root = logging.getLogger("vidrestore")
    root.handlers[:] = [console, json_file]
    console.setLevel(level)
    root.setLevel(min(level, logging.INFO))
    root.propagate = False
    # "identity.png not drawn" for a job without faces is expected here, not a warning.
    logging.getLogger("vidrestore.report").setLevel(logging.ERROR)
    return path


def event(message: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, message, extra={"fields": fields})

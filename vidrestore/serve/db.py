"""The job table in SQLite: a versioned schema with migrations, and every state change.

The database lives in the data folder (`jobs.sqlite3`). `PRAGMA user_version` holds the
schema version; `MIGRATIONS[i]` takes a database from version i to i + 1, so an older data
folder is brought up to date when the server opens it. One connection is shared by the
server's threads behind a lock (SQLite in WAL mode, so readers in other processes, such as
a test, see committed rows).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the job table
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: workers take the lowest
        id TEXT NOT NULL UNIQUE,                -- random, what clients see
        state TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','cancelled')),
        kind TEXT NOT NULL,                     -- 'image' or 'video'
        filename TEXT NOT NULL,                 -- the client's name for the upload (display only)
        input_name TEXT NOT NULL,               -- file names inside the job's folder
        output_name TEXT NOT NULL,
        options TEXT NOT NULL,                  -- JSON
        frames_done INTEGER NOT NULL DEFAULT 0,
        frames_total INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        worker TEXT,
        error TEXT,
        summary TEXT,                           -- JSON, the run's summary
        plots TEXT NOT NULL DEFAULT '[]'        -- JSON list of plot names written
    );
    CREATE INDEX jobs_state ON jobs (state, seq);
    """,
    # 1 -> 2: how often a job was started (a restart in the middle of a run reruns it)
    "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
)
SCHEMA_VERSION = len(MIGRATIONS)
_JSON_COLUMNS = ("options", "summary", "plots")


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks; return the version it had."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"the job database has schema version {version}; this vidrestore "
                           f"knows {SCHEMA_VERSION}: upgrade vidrestore")
    for number in range(version, SCHEMA_VERSION):
        with conn:
            conn.executescript(f"BEGIN; {MIGRATIONS[number]} PRAGMA user_version = {number + 1};"
                               " COMMIT;")
    return version


class JobStore:
    """Jobs as dicts (JSON columns decoded); every method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self.migrated_from = migrate(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return _decode(row) if row is not None else None

    def _all(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_decode(row) for row in rows]

    def _write(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    def add(self, job_id: str, *, kind: str, filename: str, input_name: str, output_name: str,
            options: dict[str, Any]) -> dict[str, Any]:
        self._write("INSERT INTO jobs (id, state, kind, filename, input_name, output_name, "
                    "options, created_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (job_id, kind, filename, input_name, output_name, json.dumps(options),
                     time.time()))
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def list(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM jobs ORDER BY seq")

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            found = dict(rows.fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def claim(self, worker: str) -> dict[str, Any] | None:
        """Move the oldest queued job to running for `worker`; None when the queue is empty."""
        with self._lock:
            row = self._conn.execute(
                "UPDATE jobs SET state = 'running', worker = ?, started_at = ?, "
                "attempts = attempts + 1, frames_done = 0 WHERE seq = (SELECT seq FROM jobs "
                "WHERE state = 'queued' ORDER BY seq LIMIT 1) RETURNING *",
                (worker, time.time())).fetchone()
        return _decode(row) if row is not None else None

    def progress(self, job_id: str, done: int, total: int) -> None:
        self._write("UPDATE jobs SET frames_done = ?, frames_total = ? WHERE id = ? AND "
                    "state = 'running'", (done, total, job_id))

    def finish(self, job_id: str, state: str, *, error: str | None = None,
               summary: dict[str, Any] | None = None, plots: list[str] = ()) -> None:
        assert state in FINISHED, state
        self._write("UPDATE jobs SET state = ?, finished_at = ?, error = ?, summary = ?, "
                    "plots = ? WHERE id = ?",
                    (state, time.time(), error, json.dumps(summary) if summary else None,
                     json.dumps(list(plots)), job_id))

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that no worker has taken yet; False when it is not queued."""
        return self._write("UPDATE jobs SET state = 'cancelled', finished_at = ?, error = ? "
                           "WHERE id = ? AND state = 'queued'",
                           (time.time(), "cancelled before it started", job_id)) == 1

    def requeue(self, job_id: str) -> None:
        """A running job back to the queue (the server stops; it runs again on the next start)."""
        self._write("UPDATE jobs SET state = 'queued', worker = NULL, started_at = NULL, "
                    "frames_done = 0, attempts = attempts - 1 WHERE id = ? AND "
                    "state = 'running'", (job_id,))

    def delete(self, job_id: str) -> bool:
        return self._write("DELETE FROM jobs WHERE id = ?", (job_id,)) == 1

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """After a restart: jobs left running by a server that stopped are queued again, or
        failed with the reason once they have been started `max_attempts` times. Returns the
        ids requeued and the ids failed."""
        with self._lock:
            rows = self._conn.execute("SELECT id, attempts FROM jobs WHERE state = 'running'")
            stale = rows.fetchall()
        requeued, failed = [], []
        for job_id, attempts in stale:
            if attempts >= max_attempts:
                self._write("UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                            "WHERE id = ?",
                            (time.time(), f"the server stopped while this job ran, {attempts} "
                             "times; not retried again", job_id))
                failed.append(job_id)
            else:
                self._write("UPDATE jobs SET state = 'queued', worker = NULL, started_at = "
                            "NULL, frames_done = 0 WHERE id = ?", (job_id,))
                requeued.append(job_id)
        return requeued, failed


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    for column in _JSON_COLUMNS:
        if job.get(column) is not None:
            job[column] = json.loads(job[column])
    return job

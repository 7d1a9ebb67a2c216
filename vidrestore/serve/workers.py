"""The worker threads: each takes the oldest queued job and runs it through `vidrestore.restore`.

One worker a device (`cuda:0`, `cuda:1`, ... or the CPU). A worker claims a job in one
database transaction, so two never take the same one and each takes jobs in submission
order. Progress goes to the database at most every `PROGRESS_EVERY_S`; cancelling sets the
run's `cancel` event, and the run stops at the next frame with nothing written. Stopping
the server cancels the running jobs and puts them back in the queue, to run on the next
start; a server that is killed leaves them `running`, and `JobStore.recover` deals with them
when it starts again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import api
from ..errors import Cancelled, VidrestoreError
from . import logs, plots
from .db import JobStore
from .options import JobOptions

PROGRESS_EVERY_S = 0.25
IDLE_POLL_S = 1.0


@dataclass
class _Running:
    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    requeue: bool = False  # cancelled because the server stops: run it again next time
    finished: threading.Event = field(default_factory=threading.Event)


class WorkerPool:
    def __init__(self, store: JobStore, jobs_dir: Path, devices: list[str],
                 model_overrides: dict[str, Any]) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.devices = devices
        self.model_overrides = model_overrides  # the server's, e.g. {"dir": ..., "download": ...}
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def names(self) -> list[str]:
        return [f"worker-{i}:{device}" for i, device in enumerate(self.devices)]

    def start(self) -> None:
        for name, device in zip(self.names, self.devices, strict=True):
            thread = threading.Thread(target=self._loop, args=(name, device), name=name,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Cancel what runs (to be rerun on the next start) and wait for the workers."""
        self._stopping.set()
        with self._lock:
            for running in self._running.values():
                running.requeue = True
                running.cancel.set()
        self.notify()
        for thread in self._threads:
            thread.join(timeout_s)

    def cancel(self, job_id: str) -> bool:
        """Ask the running job `job_id` to stop; False when no worker runs it."""
        with self._lock:
            running = self._running.get(job_id)
        if running is None:
            return False
        running.cancel.set()
        return True

    def wait_stopped(self, job_id: str, timeout_s: float) -> bool:
        with self._lock:
            running = self._running.get(job_id)
        return running is None or running.finished.wait(timeout_s)

    def _loop(self, name: str, device: str) -> None:
        while not self._stopping.is_set():
            with self._lock:  # claimed and registered at once: a cancel finds it either way
                if self._stopping.is_set():
                    return
                job = self.store.claim(name)
                running = _Running(job["id"]) if job is not None else None
                if running is not None:
                    self._running[job["id"]] = running
            if job is None:
                with self._wake:
                    self._wake.wait(IDLE_POLL_S)
                continue
            try:
                self._run(job, name, device, running)
            finally:
                with self._lock:
                    del self._running[job["id"]]
                running.finished.set()

    def _run(self, job: dict[str, Any], worker: str, device: str, running: _Running) -> None:
        job_id = job["id"]
        folder = self.jobs_dir / job_id
        logs.event(f"job {job_id} running on {worker} ({job['filename']}, attempt "
                   f"{job['attempts']})", job=job_id, state="running", worker=worker,
                   attempt=job["attempts"])
        started = time.monotonic()
        try:
            summary = self._restore(job, folder, device, running)
        except Cancelled:
            if running.requeue:
                self.store.requeue(job_id)
                logs.event(f"job {job_id} put back in the queue: the server stops",
                           job=job_id, state="queued")
            else:
                self.store.finish(job_id, "cancelled", error="cancelled while running")
                logs.event(f"job {job_id} cancelled", job=job_id, state="cancelled")
            return
        except VidrestoreError as exc:
            message = str(exc).replace(str(folder / job["input_name"]), job["filename"])
            self.store.finish(job_id, "failed", error=message)
            logs.event(f"job {job_id} failed: {message}", logging.WARNING, job=job_id,
                       state="failed", error=message)
            return
        except Exception as exc:  # a bug: the job fails with it, the server goes on
            message = f"internal error: {type(exc).__name__}: {exc}"
            self.store.finish(job_id, "failed", error=message)
            logging.getLogger(__name__).exception("job %s: %s", job_id, message,
                                                  extra={"fields": {"job": job_id}})
            return
        written = plots.write_plots(folder / "output.jsonl", folder / "plots")
        self.store.finish(job_id, "done", summary=summary, plots=written)
        logs.event(f"job {job_id} done in {time.monotonic() - started:.2f} s "
                   f"({summary['frames_out']} frames)", job=job_id, state="done",
                   worker=worker, wall_s=round(time.monotonic() - started, 3),
                   frames=summary["frames_out"])

    def _restore(self, job: dict[str, Any], folder: Path, device: str,
                 running: _Running) -> dict[str, Any]:
        options = JobOptions.model_validate(job["options"])
        overrides = options.to_overrides()
        overrides["device"] = device
        overrides["models"] = self.model_overrides
        config = api.load_config(options.preset, **overrides)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or (total and done >= total):
                last[0] = now
                self.store.progress(job["id"], done, total)

        return api.restore(folder / job["input_name"], folder / job["output_name"],
                           config=config, log_path=folder / "output.jsonl", overwrite=True,
                           progress=progress, cancel=running.cancel)

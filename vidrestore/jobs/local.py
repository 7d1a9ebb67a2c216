"""Running batch tasks on this machine: one worker process per slot, a slot per device.

Each slot has a worker process (spawned, so CUDA and torch's threads start clean) that
runs its tasks one after another, with the slot's device and, on the CPU, its share of the
cores. A process that dies (killed, out of memory) fails its task, which a rerun of the
batch picks up; the slot starts a new process for its next task and the others go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .tasks import Task, cpu_threads, run_task

ResultSink = Callable[[Task, dict[str, Any]], None]
ProgressSink = Callable[[str, int], None]

log = logging.getLogger(__name__)


class ForwardedLog(logging.Handler):
    """A worker's log records, sent to the driver as (level, text) through `send`, so its
    warnings reach the driver's console once, named by their task."""

    def __init__(self, send: Callable[[int, str], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(record.levelno, record.getMessage())
        except Exception:  # noqa: BLE001 - a log line is not worth a failed task
            self.handleError(record)


def forward_logs(send: Callable[[int, str], None], level: int) -> None:
    """In a worker: the package's log records go to `send` (and nowhere else)."""
    root = logging.getLogger("vidrestore")
    root.handlers[:] = [ForwardedLog(send)]
    root.propagate = False
    root.setLevel(level)


def log_forwarded(key: str, level: int, text: str) -> None:
    """On the driver: a worker's log line, under its task's name."""
    log.log(level, "%s: %s", key, text)


def local_slots(device: str, jobs: int | None) -> list[str]:
    """The device of each worker slot: `jobs` of them (default: one per device), spread
    over the CUDA devices when the run is on CUDA, else all on `device`."""
    import torch

    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda else \
        ["cpu" if device == "auto" else device]
    count = jobs or len(devices)
    return [devices[i % len(devices)] for i in range(count)]


def run_local(tasks: Sequence[Task], slots: Sequence[str], on_result: ResultSink,
              on_progress: ProgressSink) -> None:
    """Run every task in `slots` worker processes; report each row and progress to the
    callbacks (on this thread)."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    todo: queue.SimpleQueue[Task] = queue.SimpleQueue()
    for task in tasks:
        todo.put(task)
    cpu_workers = sum(1 for s in slots if not s.startswith("cuda"))
    level = logging.getLogger("vidrestore").getEffectiveLevel()
    threads = [threading.Thread(target=_slot, args=(context, device, todo, messages,
                                                    cpu_threads(cpu_workers), level),
                                name=f"slot-{n}", daemon=True)
               for n, device in enumerate(slots)]
    for thread in threads:
        thread.start()
    by_key = {task.key: task for task in tasks}
    pending = len(tasks)
    while pending:
        kind, key, value = messages.get()
        if kind == "progress":
            on_progress(key, value)
        elif kind == "log":
            log_forwarded(key, *value)
        else:
            pending -= 1
            on_result(by_key[key], value)
    for thread in threads:
        thread.join()


def _slot(context, device: str, todo: queue.SimpleQueue, messages, threads: int,
          level: int) -> None:
    """One slot: a worker process that runs its tasks one after another (torch and the
    models' code are imported once), replaced by a new one when it dies."""
    worker = None
    try:
        while True:
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            task = replace(task, config=replace(task.config, device=device),
                           place={"slot_device": device})
            if worker is None:
                worker = _Worker(context, messages, threads, level)
            row = worker.run(task)
            if row is None:
                row = {"key": task.key, "input": task.input, "output": task.output,
                       "status": "failed", "exit_code": 1, "where": {"slot_device": device},
                       "error": f"worker process died (exit code {worker.exitcode})"}
                worker = None
            messages.put(("result", task.key, row))
    finally:
        if worker is not None:
            worker.stop()


class _Worker:
    """A spawned worker process and the pipe its tasks and rows go through."""

    def __init__(self, context, messages, threads: int, level: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_work, args=(child, messages, threads, level),
                                       name="vidrestore batch worker", daemon=True)
        self.process.start()
        child.close()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def run(self, task: Task) -> dict[str, Any] | None:
        """The task's row, or None when the process died before sending it."""
        try:
            self.conn.send(task)
            while self.process.is_alive() or self.conn.poll():
                if self.conn.poll(0.2):
                    return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass
        self.process.join()
        return None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)


def _work(conn, messages, threads: int, level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    key = [""]
    forward_logs(lambda lvl, text: messages.put(("log", key[0], (lvl, text))), level)
    while (task := conn.recv()) is not None:
        key[0] = task.key
        last = [-1]

        def progress(name: str, done: int, task=task, last=last) -> None:
            if done - last[0] >= 5 or done == task.frames:  # not one message a frame
                last[0] = done
                messages.put(("progress", name, done))

        conn.send(run_task(task, progress))

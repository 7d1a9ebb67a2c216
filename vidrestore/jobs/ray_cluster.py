"""Running batch tasks as Ray tasks, on a local Ray or an existing cluster.

`pip install 'vidrestore[ray]'`. Each task asks for what it needs: one GPU (and a CPU)
where the cluster has GPUs and the run is not pinned to the CPU, else `cpus_per_task`
CPUs; Ray places it and sets CUDA_VISIBLE_DEVICES, so the task's device `cuda` is its own
GPU. A task whose worker dies (killed, out of memory, its node lost) is retried by Ray
(`max_retries`); retrying is safe because a task skips an output that is already
finished and writes only through partial files renamed into place (see `tasks`). An error
in the input is not retried: it comes back in the task's row. Progress goes to a small
actor the driver polls. The driver and the workers must see the inputs, OUTDIR and the
model folder at the same paths (a shared file system) on a multi-node cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import ConfigError
from .local import ProgressSink, ResultSink, forward_logs, log_forwarded
from .tasks import Task, run_task

MAX_RETRIES = 3  # attempts after the first when a worker dies
_POLL_S = 0.5


def connect(address: str) -> Any:
    """Ray, connected: `auto` joins the cluster RAY_ADDRESS names or a running local one,
    else starts a local Ray; any other value is a cluster address (`ray://head:10001`,
    `head:6379`). Already connected (a test, a notebook): kept as it is."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'vidrestore[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "auto" else address,
                     include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--ray {address}: cannot connect to Ray ({exc})") from exc
    return ray


def task_resources(ray: Any, device: str, cpus_per_task: float) -> dict[str, float]:
    """What one task asks the cluster for."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and device != "cpu":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": cpus_per_task}


def run_ray(tasks: Sequence[Task], address: str, on_result: ResultSink,
            on_progress: ProgressSink, *, jobs: int | None = None,
            cpus_per_task: float = 1) -> None:
    """Run every task on Ray, at most `jobs` at once (default: as many as fit)."""
    ray = connect(address)
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    level = logging.getLogger("vidrestore").getEffectiveLevel()
    resources = task_resources(ray, tasks[0].config.device if tasks else "auto",
                               cpus_per_task)
    on_gpu = "num_gpus" in resources
    remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False,
                        **resources)(ray_task)
    waiting = list(tasks)
    running: dict[Any, Task] = {}
    limit = jobs or len(tasks)
    seen: dict[str, int] = {}
    while waiting or running:
        while waiting and len(running) < limit:
            task = waiting.pop(0)
            if on_gpu:  # Ray's CUDA_VISIBLE_DEVICES makes the task's GPU cuda:0
                task = replace(task, config=replace(task.config, device="cuda"))
            running[remote.remote(task, board, level)] = task
        done, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
        _poll(ray, board, seen, on_progress)
        for ref in done:
            task = running.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - Ray gave up: its retries are spent
                row = {"key": task.key, "input": task.input, "output": task.output,
                       "status": "failed", "exit_code": 1, "where": {"ray": address},
                       "error": f"Ray task failed after {MAX_RETRIES} retries "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0]})"}
            on_result(task, row)
    _poll(ray, board, seen, on_progress)  # log lines sent just before the last task ended


def _poll(ray: Any, board: Any, seen: dict[str, int], on_progress: ProgressSink) -> None:
    frames_by_key, lines = ray.get(board.snapshot.remote())
    for key, frames in frames_by_key.items():
        if seen.get(key) != frames:
            seen[key] = frames
            on_progress(key, frames)
    for key, level, text in lines:
        log_forwarded(key, level, text)


def ray_task(task: Task, board: Any, level: int = logging.WARNING) -> dict[str, Any]:
    """The body of a batch task on a Ray worker."""
    import ray
    import torch

    forward_logs(lambda lvl, text: board.log.remote(task.key, lvl, text), level)
    context = ray.get_runtime_context()
    place = {"ray_node": context.get_node_id(), "ray_task": context.get_task_id()}
    cpus = context.get_assigned_resources().get("CPU")
    if cpus and not task.config.device.startswith("cuda"):
        torch.set_num_threads(max(1, int(cpus)))
    last = [0.0]

    def progress(key: str, done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _POLL_S or done == task.frames:
            last[0] = now
            board.update.remote(key, done)

    return run_task(replace(task, place=place), progress)


class ProgressBoard:
    """A Ray actor: frames written so far by each task, for the driver's progress bar, and
    the tasks' log lines, for the driver's console."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}
        self.lines: list[tuple[str, int, str]] = []

    def update(self, key: str, frames: int) -> None:
        self.frames[key] = frames

    def log(self, key: str, level: int, text: str) -> None:
        self.lines.append((key, level, text))

    def snapshot(self) -> tuple[dict[str, int], list[tuple[str, int, str]]]:
        """Frames written by each task, and the log lines since the last snapshot."""
        lines, self.lines = self.lines, []
        return dict(self.frames), lines

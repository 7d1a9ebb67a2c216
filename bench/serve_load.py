"""A load test of `vidrestore serve`: many jobs submitted at once from many clients.

Starts a real server (its own process, a fresh data folder), warms it up with a few jobs,
then has `--clients` threads submit `--jobs` tiny images between them at the same moment
(`--face-model none --bg-model none`, the fast preset) and poll their jobs until they
finish. It checks that every job finished `done`, that none is missing from the server's
list, and that each worker started its jobs in submission order; it samples the server's
resident memory (VmRSS) throughout. Prints the figures as JSON.

    python bench/serve_load.py [--jobs 50] [--clients 10] [--workers 1] [--rounds 2]
                               [--json bench/results/serve_load_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run_info import run_info, write_json  # noqa: E402

OPTIONS = {"preset": "fast", "face_model": "none", "bg_model": "none"}
FINISHED = ("done", "failed", "cancelled")


def tiny_image(path: Path, media: Path) -> Path:
    """A real photo 48 px wide (a synthetic gradient when the shared media is missing)."""
    import numpy as np
    from PIL import Image

    source = media / "images" / "codeformer_whole_imgs_01.jpg"
    if source.is_file():
        with Image.open(source) as img:
            img.convert("RGB").resize((48, 36)).save(path)
    else:
        ramp = np.linspace(0, 255, 48 * 36 * 3).reshape(36, 48, 3).astype(np.uint8)
        Image.fromarray(ramp).save(path)
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, data_dir: Path, workers: int) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (data_dir.parent / "console.txt").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "VIDRESTORE_HOME": str(data_dir.parent / "models")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidrestore", "serve", "--port", str(port), "--data-dir",
             str(data_dir), "--workers", str(workers), "--quiet"], cwd=ROOT, env=env,
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited {self.proc.returncode}")
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def submit_and_poll(url: str, image: Path, count: int, start: threading.Barrier,
                    submit_s: list[float], ids: list[str], errors: list[str]) -> None:
    """One client: submit `count` jobs as fast as it can, then poll them until finished."""
    with httpx.Client(base_url=url, timeout=120) as client:
        mine = []
        start.wait()
        for _ in range(count):
            began = time.perf_counter()
            with image.open("rb") as file:
                response = client.post("/api/jobs", files={"file": (image.name, file)},
                                       data=OPTIONS)
            submit_s.append(time.perf_counter() - began)
            if response.status_code != 201:
                errors.append(f"submit: {response.status_code} {response.text}")
                continue
            mine.append(response.json()["id"])
        ids.extend(mine)
        pending = set(mine)
        while pending:
            for job_id in list(pending):
                job = client.get(f"/api/jobs/{job_id}").json()
                if job["state"] in FINISHED:
                    pending.discard(job_id)
            time.sleep(0.2)


def one_round(server: Server, image: Path, jobs: int, clients: int) -> dict:
    submit_s: list[float] = []
    ids: list[str] = []
    errors: list[str] = []
    start = threading.Barrier(clients)
    per_client = [jobs // clients + (i < jobs % clients) for i in range(clients)]
    threads = [threading.Thread(target=submit_and_poll,
                                args=(server.url, image, n, start, submit_s, ids, errors))
               for n in per_client]
    rss, stop = [], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append(rss_mb(server.proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample)
    began = time.perf_counter()
    sampler.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    stop.set()
    sampler.join()
    listed = {job["id"]: job for job in httpx.get(f"{server.url}/api/jobs").json()}
    mine = [listed[i] for i in ids if i in listed]
    return {"jobs": jobs, "clients": clients, "errors": errors,
            "submitted": len(ids), "listed": len(mine),
            "done": sum(job["state"] == "done" for job in mine),
            "failed_frames": sum((job["summary"] or {}).get("failed_frames", 0) for job in mine),
            "fifo_per_worker": fifo_per_worker(mine),
            "wall_s": round(wall, 2), "jobs_per_s": round(jobs / wall, 2),
            "submit_ms": _spread([s * 1000 for s in submit_s]),
            "queue_wait_s": _spread([j["started_at"] - j["created_at"] for j in mine
                                     if j["started_at"]]),
            "run_s": _spread([j["finished_at"] - j["started_at"] for j in mine
                              if j["finished_at"] and j["started_at"]]),
            "rss_mb": {"start": round(rss[0], 1), "peak": round(max(rss), 1),
                       "end": round(rss[-1], 1)}}


def fifo_per_worker(jobs: list[dict]) -> bool:
    """Each worker started its jobs in the order they were submitted (their `seq`)."""
    for worker in {job["worker"] for job in jobs}:
        mine = sorted((job for job in jobs if job["worker"] == worker),
                      key=lambda job: job["started_at"])
        if [job["seq"] for job in mine] != sorted(job["seq"] for job in mine):
            return False
    return True


def _spread(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"median": round(statistics.median(values), 3),
            "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 3),
            "max": round(values[-1], 3)}


def run_load(jobs: int = 50, clients: int = 10, workers: int = 1, rounds: int = 2,
             warmup: int = 5, media: Path | None = None) -> dict:
    media = media or Path(os.environ.get("VIDRESTORE_TEST_MEDIA") or ROOT.parent / "shared"
                          / "media")
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        tmp = Path(tmp)
        image = tiny_image(tmp / "tiny.png", media)
        server = Server(tmp / "data", workers)
        try:
            warm = one_round(server, image, warmup, 1)  # imports, first-run set-up
            results = [one_round(server, image, jobs, clients) for _ in range(rounds)]
        finally:
            server.stop()
    return {**run_info(), "workers": workers, "warmup": warm, "rounds": results,
            "rss_growth_mb": round(results[-1]["rss_mb"]["end"] - results[0]["rss_mb"]["start"],
                                   1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write_json(run_load(args.jobs, args.clients, args.workers, args.rounds), args.json)


if __name__ == "__main__":
    main()

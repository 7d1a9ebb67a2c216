"""Helpers for the `vidrestore serve` tests: tiny real inputs, a server in-process or as a
real process on a free port, and waiting for jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

from tests.conftest import ROOT
from tests.media import make_clip_of_images

FINISHED = ("done", "failed", "cancelled")
# The cheapest job that still runs the whole restore machinery.
NO_MODELS = {"preset": "fast", "face_model": "none", "bg_model": "none"}


def tiny_photo(media: Path, out: Path, width: int = 96,
               name: str = "codeformer_whole_imgs_01.jpg") -> Path:
    """A real photo from the shared media (four faces, low resolution), `width` pixels wide,
    as PNG."""
    with Image.open(media / "images" / name) as img:
        img = img.convert("RGB")
        img.resize((width, round(img.height * width / img.width))).save(out)
    return out


def real_clip(media: Path, out: Path, frames: int = 6, width: int = 96) -> Path:
    """The first `frames` frames of a real talking-face clip, scaled to `width` (even sizes)."""
    images = []
    with av.open(str(media / "video" / "talk_real_1.mp4")) as container:
        for frame in container.decode(video=0):
            height = round(frame.height * width / frame.width) // 2 * 2
            images.append(np.asarray(frame.to_image().resize((width, height))))
            if len(images) == frames:
                break
    return make_clip_of_images(out, images)


def wait_for(client: httpx.Client, job_id: str, states=FINISHED, timeout_s: float = 60,
             failed_frames: int = 0) -> dict:
    """The job once it is in one of `states`; a job `done` must also have written exactly
    `failed_frames` frames unprocessed (as the `cli` fixture checks for CLI runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            if job["state"] == "done":
                assert job["summary"]["failed_frames"] == failed_frames, job["summary"]
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout_s} s")
        time.sleep(0.1)


def submit(client: httpx.Client, path: Path, name: str | None = None, **options) -> httpx.Response:
    with path.open("rb") as file:
        return client.post("/api/jobs", files={"file": (name or path.name, file)},
                           data={k: str(v) for k, v in options.items()})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m vidrestore serve` on a free port, with its console output in a file."""

    def __init__(self, data_dir: Path, models_dir: Path, *args: str, host: str = "127.0.0.1"):
        self.data_dir, self.models_dir, self.args, self.host = data_dir, models_dir, args, host
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.console = data_dir.parent / f"console-{self.port}.txt"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> ServerProcess:
        env = {**os.environ, "VIDRESTORE_HOME": str(self.models_dir),
               "PYTHONPATH": str(ROOT)}
        with self.console.open("ab") as console:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidrestore", "serve", "--host", self.host, "--port",
                 str(self.port), "--data-dir", str(self.data_dir), *self.args],
                cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited {self.proc.returncode}:\n"
                                     f"{self.console.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not answer in {timeout_s} s")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when the machine loses power."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode if self.proc is not None else 0

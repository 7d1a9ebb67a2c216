"""Shared fixtures: paths to the real media, a CLI runner, and PyAV read-back helpers."""

from __future__ import annotations

import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
# Beside the checkout in CI; VIDRESTORE_TEST_MEDIA points elsewhere (e.g. from a worktree).
MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA") or ROOT.parent / "shared" / "media")
sys.path.insert(0, str(ROOT))  # so tests can `from tests.media import ...`

# The cheapest settings that still run the whole machinery.
FAST = ["--bg-model", "none", "--face-model", "none", "--quiet", "--batch-size", "3"]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"{MEDIA} is missing (it sits beside the checkout in CI)")
    return MEDIA


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run `vidrestore ARGS` in-process; models are cached under tmp_path, never downloaded.

    Every restore or webcam run that succeeds is checked for failed frames: its summary, as
    returned and as written in the log, must say `failed_frames == failed_frames` (0 unless
    the test expects failures), so a run that quietly wrote frames unprocessed fails the
    test that made it. The result carries the run's summaries in `result.summaries`."""
    import vidrestore.live
    import vidrestore.run
    from vidrestore.cli import main

    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "models"))
    runner = CliRunner()
    summaries: list[tuple[dict, Path | None]] = []
    restore, run_live = vidrestore.run.restore, vidrestore.live.run_live

    def checked_restore(input_path, output_path, *args, log_path=None, **kwargs):
        summary = restore(input_path, output_path, *args, log_path=log_path, **kwargs)
        log = Path(log_path) if log_path else Path(str(output_path) + ".jsonl")
        summaries.append((summary, log))
        return summary

    def checked_live(*args, outputs=None, **kwargs):
        summary = run_live(*args, outputs=outputs, **kwargs)
        summaries.append((summary, outputs.log if outputs is not None else None))
        return summary

    monkeypatch.setattr(vidrestore.run, "restore", checked_restore)
    monkeypatch.setattr(vidrestore.live, "run_live", checked_live)

    def run(*args: str | Path, failed_frames: int = 0):
        summaries.clear()
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
        result.summaries = [summary for summary, _ in summaries]
        if result.exit_code == 0:
            for summary, log in summaries:
                assert summary["failed_frames"] == failed_frames, summary.get("failures")
                if log is not None and log.is_file():
                    written = json.loads(log.read_text().splitlines()[-1])
                    assert written["summary"]["failed_frames"] == failed_frames
        return result

    return run


def _ctrl_c_delivered() -> None:
    """`preexec_fn` for a child that a test interrupts with SIGINT: a shell that runs a job
    in the background (a CI runner can) starts it with SIGINT ignored, and Python keeps an
    ignored SIGINT ignored, so Ctrl-C would never reach it. A user's Ctrl-C at a terminal
    does; this gives the child the same default."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_run(tmp_path: Path, signum: int) -> tuple[int, str, Path]:
    """`vidrestore` on a 400-frame clip (no models, a slow encoder preset) sent `signum` once
    writing has begun; returns its exit code, its stderr and the output folder."""
    import subprocess
    import time

    from tests.media import make_clip

    src = make_clip(tmp_path / "in.mp4", width=320, height=240, frames=400)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "VIDRESTORE_HOME": str(tmp_path / "models")}
    proc = subprocess.Popen([sys.executable, "-m", "vidrestore", str(src),
                             str(out_dir / "out.mp4"), *FAST, "--scale", "2", "--preset",
                             "slow"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_delivered)
    deadline = time.monotonic() + 60
    while not any(out_dir.iterdir()) and time.monotonic() < deadline:  # writing has begun
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr, out_dir


def video_frames(path: Path) -> list[tuple[Fraction, av.VideoFrame]]:
    """(presentation time, frame) for every frame of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(frame.pts * frame.time_base, frame) for frame in container.decode(stream)]


def frame_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        return [f.pts * f.time_base for f in container.decode(container.streams.video[0])]


def packets(path: Path, kind: str) -> list[tuple[Fraction | None, bytes]]:
    """(pts in seconds, payload) of every packet of the first stream of `kind`."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        if not streams:
            return []
        out = []
        for packet in container.demux(streams[0]):
            if packet.size:
                pts = packet.pts * packet.time_base if packet.pts is not None else None
                out.append((pts, bytes(packet)))
        return out

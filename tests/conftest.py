"""Shared fixtures: paths to the real media, a CLI runner, and PyAV read-back helpers."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
# beside the checkout in CI; VIDRESTORE_TEST_MEDIA points elsewhere (a git worktree, say)
MEDIA = Path(os.environ.get("VIDRESTORE_TEST_MEDIA", ROOT.parent / "shared" / "media"))
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
    """Run `vidrestore ARGS` in-process; models are cached under tmp_path, never downloaded."""
    from vidrestore.cli import main

    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "models"))
    runner = CliRunner()

    def run(*args: str | Path):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=True)

    return run


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

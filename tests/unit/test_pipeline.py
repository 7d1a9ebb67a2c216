"""The error policy: a failing batch is retried per frame; a failing frame passes through."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.conftest import frame_times
from tests.media import frame_index_of, make_clip
from vidrestore.batch import FrameBatch
from vidrestore.config import EncodeConfig
from vidrestore.frames import Frame
from vidrestore.io.plan import plan_output
from vidrestore.io.probe import probe
from vidrestore.pipeline import Pipeline
from vidrestore.runlog import RunLog
from vidrestore.stages.upscale import PlainResize
from vidrestore.transfer import HostTransfer


class FlakyStage:
    """Fails every batch of more than one frame, and the third single frame it sees."""

    name = "flaky"

    def __init__(self) -> None:
        self.single_calls = 0

    def __call__(self, batch):
        if len(batch) > 1:
            raise RuntimeError("batch too big")
        self.single_calls += 1
        if self.single_calls == 3:
            raise RuntimeError("bad frame")
        return dataclasses.replace(batch, output=batch.inputs.flip(-1))  # visible change


def test_failed_frames_are_written_unprocessed_and_logged(tmp_path: Path):
    src = make_clip(tmp_path / "in.mp4", width=128, height=96, frames=8)
    info = probe(src)
    plan = plan_output(info, tmp_path / "out.mp4", 1, EncodeConfig())
    pipe = Pipeline(info, plan, [FlakyStage()], torch.device("cpu"), batch_size=4,
                    queue_frames=4, encode_config=EncodeConfig())
    log = RunLog(tmp_path / "log.jsonl")
    stats = pipe.run(tmp_path / "out.mp4", log)
    log.close()
    assert stats.frames_out == 8 and stats.failed_frames == 1
    assert frame_times(tmp_path / "out.mp4") == frame_times(src)
    with av.open(str(tmp_path / "out.mp4")) as c:
        images = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # Frame 2 failed: written as it came in, so its index strip reads normally; the
    # others were mirrored by the stage.
    assert frame_index_of(images[2]) == 2
    assert frame_index_of(images[5][:, ::-1]) == 5
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [i for i, r in enumerate(records) if r["warnings"]] == [2]
    assert "bad frame" in records[2]["warnings"][0]


def test_host_device_round_trip_is_exact():
    rng = np.random.default_rng(0)
    frames = [Frame(i, rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), i, Fraction(1, 25))
              for i in range(3)]
    transfer = HostTransfer(torch.device("cpu"))
    for _ in range(2):  # the second round reuses the input buffer
        tensor = transfer.upload(frames)
        assert tensor.shape == (3, 3, 5, 7) and tensor.dtype == torch.float32
        output = PlainResize()(FrameBatch(inputs=tensor, scale=2)).output
        expected = PlainResize()(FrameBatch(inputs=tensor.clone(), scale=2)).output
        expected = expected.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        assert (transfer.download(output) == expected.numpy()).all()
    identity = transfer.download(transfer.upload(frames))
    assert (identity == np.stack([f.image for f in frames])).all()


class StatefulFlakyStage:
    """Records the times it has seen in `state`; the first batch fails after recording."""

    name = "stateful"

    def __init__(self) -> None:
        self.state: list[float] = []
        self.failed_once = False

    def __call__(self, batch):
        self.state.extend(batch.times_s)
        if len(batch) > 1 and not self.failed_once:
            self.failed_once = True
            raise RuntimeError("fails after changing its state")
        return dataclasses.replace(batch, output=batch.inputs.clone())


def test_a_failed_batch_leaves_no_trace_in_stream_state(tmp_path: Path):
    """The retry frame by frame starts from the state before the batch, so a tracker never
    sees time go backwards (which would end its tracks)."""
    src = make_clip(tmp_path / "in.mp4", frames=6)
    info = probe(src)
    plan = plan_output(info, tmp_path / "out.mp4", 1, EncodeConfig())
    stage = StatefulFlakyStage()
    pipe = Pipeline(info, plan, [stage], torch.device("cpu"), batch_size=3, queue_frames=3,
                    encode_config=EncodeConfig())
    log = RunLog(tmp_path / "log.jsonl")
    stats = pipe.run(tmp_path / "out.mp4", log)
    log.close()
    assert stats.frames_out == 6 and stats.failed_frames == 0
    times = [float(t) for t in frame_times(src)]
    assert stage.state == pytest.approx(times)

"""Failures are loud: a one-off failed frame is written unprocessed and counted; failures
that are systematic (past --max-failed-frames, or one cause in 3 batches in a row) stop the
run with exit 6 and one line; the summary lists each cause and each fallback taken."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import vidrestore.run
from tests.conftest import FAST, frame_times
from tests.media import make_clip
from vidrestore.errors import ConfigError, ProcessingError
from vidrestore.failures import STREAK_BATCHES, FailureLimit, FailureLog


class FrameFailingStage:
    """Fails any batch holding a frame whose time is in `bad_times`."""

    name = "failing"

    def __init__(self, bad_times: set[float] | None, message: str = "broken network") -> None:
        self.bad_times, self.message = bad_times, message

    def __call__(self, batch):
        if self.bad_times is None or set(batch.times_s) & self.bad_times:
            raise RuntimeError(self.message)
        return batch


@pytest.fixture
def with_stage(monkeypatch):
    """Append a stage to every run's stages (after the background)."""
    def add(stage):
        build = vidrestore.run.build_stages

        def build_with(*args, **kwargs):
            built = build(*args, **kwargs)
            built.stages.append(stage)
            return built

        monkeypatch.setattr(vidrestore.run, "build_stages", build_with)
    return add


# --- the limit ---------------------------------------------------------------------------


def test_limits_parse_counts_shares_and_auto():
    assert FailureLimit.parse("auto", still_image=True).allowed(1) == 0
    assert FailureLimit.parse("auto", still_image=False).allowed(250) == 3  # 1%, rounded up
    assert FailureLimit.parse("auto", still_image=False).allowed(20) == 1
    assert FailureLimit.parse("5", still_image=True).allowed(1) == 5
    assert FailureLimit.parse("10%", still_image=False).allowed(45) == 5
    assert FailureLimit.parse("0%", still_image=False).allowed(1000) == 0
    for bad in ("x", "-1", "150%", "1.5"):
        with pytest.raises(ConfigError, match="max_failed_frames"):
            FailureLimit.parse(bad, still_image=False)


def test_the_same_cause_in_consecutive_batches_is_systematic():
    log = FailureLog()
    limit = FailureLimit(count=1000)
    for batch in range(STREAK_BATCHES):
        log.frame_failed(batch * 4, RuntimeError("out of memory\nmore detail"))
        log.batch_done({"RuntimeError: out of memory"})
        if batch < STREAK_BATCHES - 1:
            log.check(limit, expected_frames=100, seen_frames=4 * (batch + 1), label="in.mp4")
    with pytest.raises(ProcessingError, match="3 batches in a row") as info:
        log.check(limit, expected_frames=100, seen_frames=12, label="in.mp4")
    assert "in.mp4" in str(info.value) and "first at frame 0" in str(info.value)


def test_a_batch_without_the_cause_breaks_the_streak():
    log = FailureLog()
    limit = FailureLimit(count=1000)
    for causes in ({"E: x"}, {"E: x"}, set(), {"E: x"}, {"E: x"}):
        if causes:
            log.frame_failed(0, Exception("x"))
        log.batch_done({"Exception: x"} if causes else set())
        log.check(limit, expected_frames=0, seen_frames=1, label="in")


# --- through the CLI ---------------------------------------------------------------------


def summary_of(log_path):
    return json.loads(log_path.read_text().splitlines()[-1])["summary"]


def test_a_one_off_failure_is_written_unprocessed_and_counted(cli, tmp_path, with_stage):
    clip = make_clip(tmp_path / "in.mp4", frames=40)
    with_stage(FrameFailingStage({6 / 25}))  # one frame, at 25 fps
    out = tmp_path / "out.mp4"
    result = cli(clip, out, *FAST, failed_frames=1)
    assert result.exit_code == 0, result.output
    assert frame_times(out) == frame_times(clip)
    summary = summary_of(tmp_path / "out.mp4.jsonl")
    assert summary["failures"] == [{"error": "RuntimeError: broken network", "count": 1,
                                    "first_frame": 6}]
    assert summary["fallbacks"] == [{"what": "batch retried frame by frame", "count": 1}]
    assert summary["max_failed_frames"] == "1%"


def test_a_run_whose_every_frame_fails_stops_with_exit_6_and_writes_nothing(cli, tmp_path,
                                                                            with_stage):
    clip = make_clip(tmp_path / "in.mp4", frames=60)
    with_stage(FrameFailingStage(None))
    out = tmp_path / "out.mp4"
    result = cli(clip, out, *FAST)
    assert result.exit_code == 6, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidrestore: error: ")
    assert "in.mp4" in lines[0] and "RuntimeError: broken network" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "models") == ["in.mp4"]


def test_an_image_accepts_no_failed_frame_by_default(cli, tmp_path, with_stage):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.full((32, 48, 3), 90, np.uint8))
    with_stage(FrameFailingStage(None, "x"))
    result = cli(image, tmp_path / "out.png", *FAST)
    assert result.exit_code == 6 and "max-failed-frames 0" in result.output
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.png.jsonl").exists()
    result = cli(image, tmp_path / "out.png", *FAST, "--max-failed-frames", "1",
                 failed_frames=1)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").exists()


def test_the_console_says_each_cause_once_with_its_count(cli, tmp_path, with_stage):
    clip = make_clip(tmp_path / "in.mp4", frames=12)
    with_stage(FrameFailingStage({i / 25 for i in (1, 5, 9)}))
    args = [a for a in FAST if a != "--quiet"]
    result = cli(clip, tmp_path / "out.mp4", *args, "--max-failed-frames", "50%",
                 failed_frames=3)
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if "broken network" in x]
    assert warnings == ["vidrestore: warning: 3 frames written unprocessed after "
                        "RuntimeError: broken network (first at frame 1)"]


def test_a_bad_limit_is_refused_before_any_frame(cli, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=4)
    result = cli(clip, tmp_path / "out.mp4", *FAST, "--max-failed-frames", "lots")
    assert result.exit_code == 2 and "max_failed_frames" in result.output

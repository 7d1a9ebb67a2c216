"""`vidrestore webcam`: a file source played in real time, headless and in a real window."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageGrab

from tests.conftest import ROOT, frame_times
from tests.media import frame_index_of, make_clip
from vidrestore.io.preview import bar_height

CHEAP = ["--bg-model", "none", "--face-model", "none", "--quiet"]
RATE = 25


def _log(path: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[:-1], lines[-1]["summary"]


def _recorded_inputs(path: Path, width: int, height: int) -> list[int]:
    """The source frame index read from the left (input) pane of each recorded picture."""
    with av.open(str(path)) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frame_index_of(p[:height, :width]) for p in pictures]


def _check_drop_accounting(records: list[dict], summary: dict) -> None:
    """Every frame the source delivered was shown, dropped, or still in flight at the end;
    the gaps between shown frames are exactly the dropped ones."""
    shown = [r["frame"] for r in records]
    assert shown == sorted(set(shown))
    gaps = [b - a - 1 for a, b in zip([-1, *shown], shown, strict=False)]
    assert [r["dropped_before"] for r in records] == gaps
    assert sum(gaps) == summary["frames_dropped"]
    assert summary["frames_shown"] == len(records)
    assert summary["frames_unshown_at_stop"] >= 0
    assert (summary["frames_captured"] == summary["frames_shown"] + summary["frames_dropped"]
            + summary["frames_unshown_at_stop"])


def test_file_source_headless_records_what_was_shown_in_real_time(cli, tmp_path):
    src = make_clip(tmp_path / "cam.mp4", width=96, height=64, frames=60, rate=RATE)
    rec = tmp_path / "rec.mp4"
    result = cli("webcam", "--source", src, "--no-window", "--record", rec,
                 "--max-frames", 40, *CHEAP)
    assert result.exit_code == 0, result.output
    records, summary = _log(tmp_path / "rec.mp4.jsonl")
    assert summary["stopped"] == "max frames" and summary["frames_shown"] == 40
    assert summary["size_in"] == [96, 64] and summary["scale"] == 1  # the live preset
    _check_drop_accounting(records, summary)

    # The recording holds exactly what was shown: the input pane of picture i is the
    # source frame the log names, and it was written at the time it was shown.
    times = [float(t) for t in frame_times(rec)]
    assert len(times) == 40
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    shown_s = [r["shown_s"] - records[0]["shown_s"] for r in records]
    assert times == pytest.approx(shown_s, abs=0.0015)
    assert _recorded_inputs(rec, 96, 64) == [r["frame"] for r in records]
    with av.open(str(rec)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (2 * 96, 64 + bar_height(64))

    # Real time: a file plays as a camera would, so 40 frames take about 40 / 25 s, and
    # source time and shown time advance together.
    source_s = [r["time"] - records[0]["time"] for r in records]
    assert times[-1] == pytest.approx(source_s[-1], abs=0.25)
    assert source_s[-1] == pytest.approx(39 / RATE, abs=0.25)
    latency = summary["latency_ms"]
    assert 0 < latency["median"] <= latency["p95"] <= latency["max"]
    assert all(r["latency_ms"] > 0 and r["restored"] for r in records)


class SlowStage:
    """Takes 120 ms a batch, three times a 25 fps frame interval."""

    name = "slow"

    def __call__(self, batch):
        time.sleep(0.12)
        return batch


def test_slow_processing_drops_stale_frames_and_latency_stays_bounded(cli, tmp_path,
                                                                    monkeypatch):
    import vidrestore.live

    def with_slow_stage(*args, **kwargs):
        built = build_stages(*args, **kwargs)
        return dataclasses.replace(built, stages=[*built.stages, SlowStage()])

    build_stages = vidrestore.live.build_stages
    monkeypatch.setattr(vidrestore.live, "build_stages", with_slow_stage)
    src = make_clip(tmp_path / "cam.mp4", width=96, height=64, frames=50, rate=RATE)
    log = tmp_path / "live.jsonl"
    result = cli("webcam", "--source", src, "--no-window", "--log", log, *CHEAP)
    assert result.exit_code == 0, result.output
    records, summary = _log(log)
    assert summary["stopped"] == "source ended"
    assert summary["frames_captured"] == 50
    _check_drop_accounting(records, summary)
    # 2 s of video at 120 ms a frame: about 17 shown, the rest dropped, none left over.
    assert summary["frames_dropped"] >= 20 and summary["frames_unshown_at_stop"] == 0
    assert 10 <= summary["frames_shown"] <= 30
    assert summary["max_waiting_frames"] == {"inbox": 1, "outbox": 1}
    # Newest frame wins, so latency is one processing time plus at most a frame interval,
    # and does not grow over the run (queued frames would reach ~2.8 s by the end).
    latencies = [r["latency_ms"] for r in records]
    assert max(latencies) < 600
    assert np.median(latencies[-5:]) < 2 * np.median(latencies[:5]) + 100
    assert summary["mean_ms_per_frame"]["slow"] == pytest.approx(120, abs=60)


def test_space_bar_state_can_start_off_and_frames_pass_unrestored(cli, tmp_path):
    src = make_clip(tmp_path / "cam.mp4", width=96, height=64, frames=10, rate=RATE)
    log = tmp_path / "live.jsonl"
    result = cli("webcam", "--source", src, "--no-window", "--log", log, "--no-restore",
                 "--scale", "2", *CHEAP)
    assert result.exit_code == 0, result.output
    records, summary = _log(log)
    assert records and not any(r["restored"] for r in records)
    assert "background" not in records[0]["timings_ms"]  # the stages did not run
    assert summary["scale"] == 2


def test_sigterm_ends_a_headless_session_and_keeps_the_recording(tmp_path):
    """Ctrl-C (or SIGTERM) is how a headless camera session ends: a normal end, exit 0."""
    src = make_clip(tmp_path / "cam.mp4", width=96, height=64, frames=250, rate=RATE)
    rec = tmp_path / "rec.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vidrestore", "webcam", "--source", str(src),
                             "--no-window", "--record", str(rec), *CHEAP], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(tmp_path.glob(".rec.mp4.jsonl.partial-*"))
                  and any(p.stat().st_size for p in tmp_path.glob(".rec.mp4.jsonl.partial-*")),
                  60, "the first frames")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    records, summary = _log(tmp_path / "rec.mp4.jsonl")
    assert summary["stopped"] == "interrupted" and 0 < len(records) < 250
    assert len(frame_times(rec)) == len(records)
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("source, message", [
    ("{tmp}/nope.mp4", "{tmp}/nope.mp4: no such file"),
    ("{tmp}/still.png", "is an image"),
    ("7", "camera 7: cannot open it"),
    ("/dev/video9", "/dev/video9: cannot open it"),
])
def test_a_source_that_cannot_be_opened_is_one_line(cli, tmp_path, source, message):
    Image.new("RGB", (32, 32)).save(tmp_path / "still.png")
    result = cli("webcam", "--source", source.format(tmp=tmp_path), "--no-window", *CHEAP)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidrestore: error: "), result.output
    assert message.format(tmp=tmp_path) in lines[0]


def test_an_existing_recording_is_refused_before_anything_runs(cli, tmp_path):
    src = make_clip(tmp_path / "cam.mp4", frames=3)
    rec = tmp_path / "rec.mp4"
    rec.write_bytes(b"keep me")
    result = cli("webcam", "--source", src, "--no-window", "--record", rec, *CHEAP)
    assert result.exit_code == 2 and "already exists" in result.output
    assert rec.read_bytes() == b"keep me"


@pytest.mark.parametrize("display, message", [
    (None, "$DISPLAY is not set"),
    (":93", "cannot connect to display ':93'"),
])
def test_no_display_is_one_line_from_a_real_process(tmp_path, display, message):
    """OpenCV's Qt aborts the process when it finds no display; we must fail first."""
    src = make_clip(tmp_path / "cam.mp4", frames=3)
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    if display:
        env["DISPLAY"] = display
    proc = subprocess.run([sys.executable, "-m", "vidrestore", "webcam", "--source", str(src),
                           *CHEAP], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "--no-window" in lines[0], proc.stderr


# --- the real window, under Xvfb -----------------------------------------------------------


def _need(tool: str) -> str:
    """The tool's path; without it, skip with the reason, or fail under CI ($CI set)."""
    path = shutil.which(tool)
    if path is None:
        reason = (f"{tool} is not installed (Debian: apt-get install xvfb xdotool; "
                  "`make test` does it where apt-get is usable)")
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the window test: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def xvfb():
    """A private X server; yields its display name (":N")."""
    xvfb_bin = _need("Xvfb")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen([xvfb_bin, "-displayfd", str(write_fd), "-screen", "0",
                               "1280x720x24", "-nolisten", "tcp"], pass_fds=(write_fd,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()  # Xvfb writes its display number when ready
    try:
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def _xdotool(display: str, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run([_need("xdotool"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _shown(log_partial_dir: Path) -> list[dict]:
    """Frame records written so far to the (partial) log of a running session."""
    records = []
    for path in log_partial_dir.glob(".live.jsonl.partial-*"):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
    return records


def test_real_window_under_xvfb_shows_both_panes_and_takes_keys(xvfb, tmp_path, media):
    _need("xdotool")
    src = media / "video" / "talk_real_1.mp4"  # 388x512, 20 fps, 12.4 s, one real face
    snaps = tmp_path / "snaps"
    log = tmp_path / "live.jsonl"
    env = {**os.environ, "DISPLAY": xvfb, "VIDRESTORE_HOME": str(tmp_path / "models")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidrestore", "webcam", "--source", str(src), "--log", str(log),
         "--snapshot-dir", str(snaps), "--bg-model", "none", "--face-model", "passthrough",
         "--device", "cpu"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        window = _xdotool(xvfb, "search", "--sync", "--name", "vidrestore webcam").split()[0]
        _wait_for(lambda: len(_shown(tmp_path)) >= 5, 60, "five frames on screen")
        on = ImageGrab.grab(xdisplay=xvfb)
        _xdotool(xvfb, "windowfocus", "--sync", window)
        _xdotool(xvfb, "key", "space")
        _wait_for(lambda: any(not r["restored"] for r in _shown(tmp_path)), 30,
                  "a frame shown with restoration off")
        time.sleep(0.5)
        off = ImageGrab.grab(xdisplay=xvfb)
        _xdotool(xvfb, "key", "s")
        _wait_for(lambda: snaps.is_dir() and any(snaps.glob("*.png")), 30, "a snapshot")
        _xdotool(xvfb, "key", "q")
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    on.save(tmp_path / "window_restoring.png")
    off.save(tmp_path / "window_restoration_off.png")
    shutil.copy(tmp_path / "window_restoring.png", "/tmp/webcam_window.png")

    records, summary = _log(log)
    assert summary["stopped"] == "quit key"
    assert summary["snapshots"] and Path(summary["snapshots"][0]).parent == snaps
    # Restoration on (faces found and tracked), then off after the space bar.
    restored = [r["restored"] for r in records]
    assert restored[0] and not restored[-1] and restored == sorted(restored, reverse=True)
    assert any(r["faces"] for r in records if r["restored"])

    # The screen holds the window at its picture's size: two 388x512 panes over a status
    # bar. The left pane is the source frame; the right one is the same face passed through
    # the face path unchanged, so the panes match closely but not exactly (paste seams).
    snapshot = np.asarray(Image.open(next(snaps.glob("*.png"))).convert("RGB"))
    bar = bar_height(512)
    assert snapshot.shape == (512 + bar, 2 * 388, 3)
    screen = np.asarray(on.convert("RGB"))
    window_area = screen[:512 + bar, :2 * 388].astype(np.int16)
    assert window_area.std() > 20  # a picture, not an empty window
    left, right = window_area[:512, :388], window_area[:512, 388:]
    assert np.abs(left - right).mean() < 6
    bar_on = screen[512:512 + bar, :2 * 388]
    bar_off = np.asarray(off.convert("RGB"))[512:512 + bar, :2 * 388]
    assert (bar_on.astype(int) - bar_off).any()  # the status bar now says restoration OFF

"""The parts of the live preview: newest-wins hand-over, keys, the side-by-side picture, the
guard against PyAV's clashing libxcb, and a paced file source."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.media import make_clip
from vidrestore.io.capture import PacedFileSource
from vidrestore.io.preview import Status, bar_height, side_by_side
from vidrestore.live import LiveControls
from vidrestore.newest import NewestItems


def test_newest_items_evicts_the_oldest_and_counts_it():
    box: NewestItems[int] = NewestItems(capacity=2)
    assert [box.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert box.take() == [3, 4] and box.evicted == 3 and box.peak == 2
    assert box.take(timeout=0.01) == []  # nothing there yet
    box.put(5)
    box.close()
    assert box.take() == [5]
    assert box.take() is None  # closed and empty: the producer has finished
    with pytest.raises(RuntimeError):
        box.put(6)


def test_newest_items_stays_bounded_between_a_fast_producer_and_a_slow_consumer():
    box: NewestItems[int] = NewestItems(capacity=1)
    taken: list[int] = []

    def consume():
        while (items := box.take()) is not None:
            taken.extend(items)
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(2000):
        box.put(i)
    box.close()
    consumer.join(10)
    assert box.peak == 1
    assert taken == sorted(taken) and taken[-1] == 1999  # the newest always arrives
    assert len(taken) + box.evicted == 2000 and box.evicted > 1000


def test_keys_quit_toggle_and_snapshot():
    controls = LiveControls()
    assert controls.restoring.is_set() and not controls.quit
    controls.press(-1)
    controls.press(ord(" "))
    assert not controls.restoring.is_set()
    controls.press(ord(" "))
    assert controls.restoring.is_set()
    controls.press(ord("s"))
    assert controls.snapshot_wanted and not controls.quit
    controls.press(0x100000 | ord("q"))  # a backend's modifier bits above the character
    assert controls.quit
    escape = LiveControls(restoring=False)
    assert not escape.restoring.is_set()
    escape.press(27)
    assert escape.quit


def test_side_by_side_puts_input_left_output_right_and_the_status_below():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    picture = side_by_side(small, big, Status(24.96, 85.2, 3, True))
    bar = bar_height(60)
    assert picture.shape == (60 + bar, 160, 3) and bar % 2 == 0
    assert np.array_equal(picture[:60, :80], small.repeat(2, 0).repeat(2, 1))  # nearest
    assert np.array_equal(picture[:60, 80:], big)
    status = picture[60:]
    assert (status != status[0, 0]).any()  # text was drawn
    off = side_by_side(small, big, Status(None, None, 0, False))
    assert not np.array_equal(off[60:], status)


def test_window_refuses_to_open_when_pyav_loaded_its_xcb_helpers_first(tmp_path):
    """In a fresh process that imports av before cv2, the window would hang in namedWindow
    (when both wheels bundle the same libxcb helpers): it must refuse with one line."""
    code = ("import av, cv2\n"
            "from vidrestore.io import preview\n"
            "from vidrestore.errors import DisplayError\n"
            "print('clashing', preview.clashing_xcb_helpers())\n"
            "try:\n"
            "    preview.PreviewWindow()\n"
            "except DisplayError as exc:\n"
            "    print('refused', exc)\n")
    env = {**os.environ, "DISPLAY": ":0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    clashing = proc.stdout.splitlines()[0]
    if clashing == "clashing []":
        pytest.skip("these cv2 and av builds share no libxcb helpers")
    assert "libxcb-" in clashing
    assert proc.stdout.splitlines()[1].startswith("refused the preview window cannot open")
    # cv2 first (as the CLI does): OpenCV's own copies serve both, nothing clashes.
    code = ("import cv2, av\n"
            "from vidrestore.io import preview\n"
            "print(preview.clashing_xcb_helpers())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.strip() == "[]"


def test_a_file_source_is_paced_by_its_timestamps(tmp_path):
    src = PacedFileSource(make_clip(tmp_path / "c.mp4", frames=10, rate=20))
    started = time.perf_counter()
    arrivals = [(f.time, time.perf_counter() - started)
                for f in src.frames(threading.Event())]
    assert [round(t, 3) for t, _ in arrivals] == [round(i / 20, 3) for i in range(10)]
    lags = [arrived - t for t, arrived in arrivals]
    assert max(lags) - min(lags) < 0.05  # every frame released on its own time
    stop = threading.Event()
    frames = src.frames(stop)
    next(frames)
    stop.set()
    assert list(frames) == []  # stopping ends the source at once

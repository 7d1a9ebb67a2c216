"""Live sources: a camera, or a video file that behaves like one.

Each source is opened on the calling thread (so a camera that cannot be opened is an error
before any thread starts) and then read by the capture thread through `frames(stop)`,
which yields upright uint8 RGB `Frame`s at the source's own pace, numbered 0, 1, 2, ... in
the order they arrived. A camera runs at its own rate whether or not anyone keeps up; a
file is paced the same way, each frame released when the wall clock reaches its pts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2

from ..errors import InputError
from ..frames import Frame
from .decode import read_frames
from .probe import probe

log = logging.getLogger(__name__)

CAMERA_TIME_BASE = Fraction(1, 1000)  # camera frames get pts in ms since the first one
_DEVICE_PATH = re.compile(r"/dev/video\d+")


class LiveSource(Protocol):
    name: str  # for messages: "camera 0", "/dev/video2", "clip.mp4"
    width: int
    height: int
    rate: Fraction | None  # nominal frames per second, when the source says

    def frames(self, stop: threading.Event) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def open_live_source(spec: str) -> LiveSource:
    """`0`, `1`, ... (camera index), `/dev/videoN` (a V4L2 device) or a video file path."""
    spec = spec.strip()
    if spec.isdigit():
        return CameraSource(int(spec))
    if _DEVICE_PATH.fullmatch(spec):
        return CameraSource(spec)
    return PacedFileSource(Path(spec))


class CameraSource:
    """A camera through OpenCV, its driver queue kept to one frame so none goes stale."""

    def __init__(self, device: int | str) -> None:
        self.name = f"camera {device}" if isinstance(device, int) else device
        self._capture = _open_capture(device)
        if not self._capture.isOpened():
            self._capture.release()
            raise InputError(f"{self.name}: cannot open it (no such camera, in use, or no "
                             "permission); try another --source index or /dev/videoN, or a "
                             "video file")
        self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        ok, first = self._capture.read()
        if not ok or first is None:
            self._capture.release()
            raise InputError(f"{self.name}: opened, but it gives no frames")
        self.height, self.width = first.shape[:2]
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Fresh frames from now on (the one read at opening is stale by now)."""
        started = time.perf_counter()
        index = 0
        while not stop.is_set():
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                if stop.is_set():
                    return
                raise InputError(f"{self.name}: stopped giving frames (unplugged?)")
            pts = round((time.perf_counter() - started) * 1000)
            yield Frame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pts, CAMERA_TIME_BASE)
            index += 1

    def close(self) -> None:
        self._capture.release()


def _open_capture(device: int | str) -> cv2.VideoCapture:
    """OpenCV tries several backends and logs each failure on stderr; silence that, so a
    missing camera is the one error line we print ourselves."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        if isinstance(device, str):  # a device path: only V4L2 opens those by name
            return cv2.VideoCapture(device, cv2.CAP_V4L2)
        return cv2.VideoCapture(device)
    finally:
        cv2.utils.logging.setLogLevel(level)


class PacedFileSource:
    """A video file played in real time: frame i is released at start + (pts_i - pts_0).

    Decoding happens on the capture thread; a frame that decodes late is released at once,
    as a camera's late frame would be. Audio is ignored. The source ends with the file.
    """

    def __init__(self, path: Path) -> None:
        self.info = probe(path)  # InputError for a missing, empty or unreadable file
        if self.info.kind != "video":
            raise InputError(f"{path}: is an image; a live source is a camera index, "
                             "/dev/videoN, or a video file")
        self.name = str(path)
        self.width, self.height, self.rate = self.info.width, self.info.height, self.info.rate

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        decoded = read_frames(self.info)
        clock_start = first_time = None
        try:
            for frame in decoded:
                if clock_start is None:
                    clock_start, first_time = time.perf_counter(), frame.time
                due = clock_start + (frame.time - first_time)
                if stop.wait(max(0.0, due - time.perf_counter())):
                    return
                yield frame
        finally:
            decoded.close()  # closes the container at once, not when collected

    def close(self) -> None:
        pass  # `frames` owns the container

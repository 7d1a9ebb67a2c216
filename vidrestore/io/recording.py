"""`Recorder`: what the live preview showed, encoded on its own thread with its shown times.

Pictures come with pts in milliseconds (the wall-clock times they were shown), so the file
is variable frame rate and replays the session as it looked, stalls included. The queue to
the encoder thread is bounded: a recorder that falls behind slows the display loop (and
frames are then dropped upstream) rather than filling memory.
"""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..config import EncodeConfig
from ..errors import EncodeError, OutputError
from ..frames import Frame
from .encode import VideoWriter
from .plan import plan_output
from .probe import MediaInfo, media_kind

RECORD_TIME_BASE = Fraction(1, 1000)
_QUEUE_FRAMES = 8
_POLL_S = 0.1
_END = None


class Recorder:
    """Writes (width, height) RGB pictures to `partial`, planned as `final` (its extension
    picks the container and codec; messages name it)."""

    def __init__(self, partial: Path, final: Path, enc: EncodeConfig, *, size: tuple[int, int],
                 rate: Fraction) -> None:
        if media_kind(final) != "video":
            raise OutputError(f"{final}: a recording must be a video file (.mp4 .mkv .mov "
                              ".avi .webm .m4v)")
        width, height = size
        self.partial, self.enc = partial, enc
        self.info = MediaInfo(path=final, kind="video", width=width, height=height,
                              time_base=RECORD_TIME_BASE, rate=rate)
        self.plan = plan_output(self.info, final, 1, enc)
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_FRAMES)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()

    def write(self, picture: np.ndarray, pts_ms: int) -> None:
        """Queue one picture shown at `pts_ms`; blocks while the encoder is far behind."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode, name="record", daemon=True)
            self._thread.start()
        frame = Frame(self.frames_written, picture, pts_ms, RECORD_TIME_BASE)
        while True:
            self._raise_error()
            try:
                self._queue.put(frame, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (nothing is written when no picture came)."""
        if self._thread is None:
            return
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        self._abort.set()
        if self._thread is not None:
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _encode(self) -> None:
        try:
            writer = VideoWriter(self.partial, self.plan, self.info, self.enc)
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's next write
            self._error = exc
            return
        try:
            while not self._abort.is_set():
                try:
                    frame = self._queue.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if frame is _END:
                    writer.close()
                    return
                if frame.image.shape[:2] != (self.info.height, self.info.width):
                    raise EncodeError(f"{self.plan.path}: picture size changed mid-recording")
                writer.write(frame.image, frame)
            writer.abort()
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's next write
            self._error = exc
            writer.abort()

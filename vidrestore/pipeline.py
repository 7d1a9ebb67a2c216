"""Threads, bounded queues, batching and the error policy.

    decode thread  ->  q_frames  ->  device worker (this thread)  ->  q_out  ->  encode thread
         |                                                                         ^
         +---------------- side packets (audio, subtitles): q_side ---------------+

Queues between the threads are bounded, so memory does not grow with the video's length.
The worker knows stages only by their interface and runs them through `StageRunner` (shared
with the live preview), which holds the error policy: a batch that fails is retried frame by
frame; a frame that still fails is written unprocessed (a plain resize) and logged; failures
past `failure_limit` stop the run (`ProcessingError`).
Errors in a thread travel to the main thread and are raised there.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import cv2
import torch

from .errors import Cancelled
from .failures import FailureLimit, FailureLog
from .frame_range import FrameRange
from .frames import Frame
from .io.decode import HardwareDecode, SidePacket, read_frames
from .io.encode import open_writer
from .io.plan import OutputPlan
from .io.probe import MediaInfo
from .runlog import RunLog
from .stage_runner import RunStats, StageRunner
from .stages import Stage

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames written, frames expected or 0)
# Host memory each queue (and a device batch) may hold: frames count only up to this, so a
# 12000x12000 video (432 MB a frame) does not buffer 14 GB. A frame over it moves alone.
QUEUE_BYTES = 1 << 30


def queue_slots(frames: int, batch_size: int, frame_bytes: int, budget: int) -> int:
    """Places in a queue: `frames` (and a batch), but no more than `budget` bytes' worth."""
    return max(1, min(max(frames, batch_size), budget // max(frame_bytes, 1)))


def fit_batch(batch_size: int, frame_bytes: int, budget: int) -> int:
    """The device batch, cut so that its frames in and out fit in `budget` bytes."""
    fitted = max(1, min(batch_size, budget // max(frame_bytes, 1)))
    if fitted < batch_size:
        log.info("frames of %d MB: batches of %d instead of %d", frame_bytes >> 20, fitted,
                 batch_size)
    return fitted


_END = object()
_POLL_S = 0.1


class Pipeline:
    """Runs `stages` over every frame of `info` and writes the result as `plan` says."""

    def __init__(self, info: MediaInfo, plan: OutputPlan, stages: Sequence[Stage],
                 device: torch.device, *, batch_size: int, queue_frames: int, encode_config,
                 hwdecode: str = "none", progress: Progress | None = None,
                 failures: FailureLog | None = None,
                 failure_limit: FailureLimit | None = None,
                 queue_bytes: int | None = None,
                 cancel: threading.Event | None = None,
                 frame_range: FrameRange | None = None) -> None:
        self.info, self.plan, self.stages, self.device = info, plan, list(stages), device
        self.batch_size = batch_size
        self.encode_config = encode_config
        self.hwaccel = HardwareDecode(hwdecode, device.index or 0)
        self.progress = progress
        self.stats = RunStats(log=failures or FailureLog())
        self._runner = StageRunner(stages, device, plan.width // info.width, self.stats,
                                   limit=failure_limit, expected_frames=info.frame_count,
                                   label=str(info.path))
        in_bytes, out_bytes = 3 * info.width * info.height, 3 * plan.width * plan.height
        queue_bytes = queue_bytes or QUEUE_BYTES
        self.batch_size = fit_batch(batch_size, in_bytes + out_bytes, queue_bytes)
        self._frames: queue.Queue = queue.Queue(
            maxsize=queue_slots(queue_frames, self.batch_size, in_bytes, queue_bytes))
        self._out: queue.Queue = queue.Queue(
            maxsize=queue_slots(queue_frames, self.batch_size, out_bytes, queue_bytes))
        self._side: queue.SimpleQueue[SidePacket] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._cancel = cancel  # set by a library caller: stop at the next frame
        self._errors: list[BaseException] = []
        # A segment of the video only: its warm-up frames are processed, not written; their
        # records are kept here (the join matches tracks across segments with them).
        self.frame_range = frame_range
        self.warmup_records: list[dict] = []

    def run(self, output_path, log: RunLog) -> RunStats:
        """Decode, process and encode everything; raise the first error of any thread."""
        threads = [
            threading.Thread(target=self._guard, args=(self._decode,), name="decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._encode, output_path, log),
                             name="encode", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            self._guard(self._work)
            for t in threads:
                while t.is_alive():
                    t.join(_POLL_S)
        except KeyboardInterrupt:
            self._stop.set()
            for t in threads:
                t.join(5)
            raise Cancelled("interrupted") from None
        if self._errors:
            raise self._errors[0]
        return self.stats

    # --- threads -------------------------------------------------------------------------

    def _guard(self, body, *args) -> None:
        try:
            body(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            if not self._errors:
                self._errors.append(exc)
            self._stop.set()
            if isinstance(exc, KeyboardInterrupt):
                raise

    def _decode(self) -> None:
        try:
            frames = read_frames(self.info, self._side.put, self.plan.reencode_indices,
                                 self.hwaccel, on_decoder=self._note_decoder,
                                 on_warning=self.stats.warnings.append,
                                 seek_dts=self.frame_range.seek_dts if self.frame_range
                                 else None)
            if self.frame_range is not None:
                frames = self.frame_range.select(frames)
            started = time.perf_counter()
            for frame in frames:
                frame.timings_ms["decode"] = (time.perf_counter() - started) * 1000
                self._put(self._frames, frame)
                started = time.perf_counter()
        finally:
            self._put(self._frames, _END, force=True)

    def _note_decoder(self, name: str) -> None:
        self.stats.decoder = name

    def _work(self) -> None:
        try:
            for batch in self._batches():
                for out in self._runner.process(batch):
                    self._put(self._out, out)
            self._runner.finish()
        finally:
            self._put(self._out, _END, force=True)

    def _encode(self, output_path, log: RunLog) -> None:
        writer = open_writer(output_path, self.plan, self.info, self.encode_config)
        try:
            while (item := self._get(self._out)) is not _END:
                if self.frame_range is not None and self.frame_range.is_warmup(item.source):
                    self.warmup_records.append(item.record)
                    continue
                self._drain_side(writer)
                started = time.perf_counter()
                writer.write(item.image, item.source)
                encode_ms = (time.perf_counter() - started) * 1000
                item.record["timings_ms"]["encode"] = round(encode_ms, 3)
                log.frame(item.record)
                self.stats.frames_out += 1
                if self.progress:
                    self.progress(self.stats.frames_out, self.info.frame_count)
            if self._stop.is_set():
                raise Cancelled("stopped")
            self._drain_side(writer)
            writer.close()
        except BaseException:
            writer.abort()
            raise

    def _drain_side(self, writer) -> None:
        while True:
            try:
                writer.add_side(self._side.get_nowait())
            except queue.Empty:
                return

    # --- queues with a stop check, so no thread blocks forever ---------------------------

    def _put(self, q: queue.Queue, item, force: bool = False) -> None:
        while True:
            if self._stop.is_set() and not force:
                raise Cancelled("stopped")
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if force and self._stop.is_set():
                    return  # the consumer has stopped too

    def _get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _batches(self) -> Iterator[list[Frame]]:
        batch: list[Frame] = []
        while (item := self._get(self._frames)) is not _END:
            if self._cancel is not None and self._cancel.is_set():
                raise Cancelled("cancelled")
            self.stats.frames_in += 1
            batch.append(self._fit(item))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if self._stop.is_set():
            raise Cancelled("stopped")
        if batch:
            yield batch

    def _fit(self, frame: Frame) -> Frame:
        """A stream that changes size mid-way is resized to its first size, with a note."""
        h, w = frame.image.shape[:2]
        if (h, w) != (self.info.height, self.info.width):
            frame.image = cv2.resize(frame.image, (self.info.width, self.info.height),
                                     interpolation=cv2.INTER_AREA)
            frame.warnings.append(f"frame size {w}x{h} differs from the stream's; resized")
        return frame

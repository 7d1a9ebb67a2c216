"""Threads, bounded queues, batching and the error policy.

    decode thread  ->  q_frames  ->  device worker (this thread)  ->  q_out  ->  encode thread
         |                                                                         ^
         +---------------- side packets (audio, subtitles): q_side ---------------+

Queues between the threads are bounded, so memory does not grow with the video's length.
The worker knows stages only by their interface. A batch that fails is retried frame by
frame; a frame that still fails is written unprocessed (a plain resize) and logged.
Errors in a thread travel to the main thread and are raised there.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import torch

from .batch import FrameBatch
from .errors import Cancelled
from .frames import Frame, OutputFrame
from .io.decode import HardwareDecode, SidePacket, read_frames
from .io.encode import open_writer
from .io.plan import OutputPlan
from .io.probe import MediaInfo
from .runlog import RunLog
from .stages import Stage
from .transfer import HostTransfer

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames written, frames expected or 0)
_END = object()
_POLL_S = 0.1


@dataclass
class RunStats:
    frames_in: int = 0
    frames_out: int = 0
    failed_frames: int = 0
    decoder: str | None = None  # "software" or "cuda" (hardware decoding)
    stage_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Pipeline:
    """Runs `stages` over every frame of `info` and writes the result as `plan` says."""

    def __init__(self, info: MediaInfo, plan: OutputPlan, stages: Sequence[Stage],
                 device: torch.device, *, batch_size: int, queue_frames: int, encode_config,
                 hwdecode: str = "none", progress: Progress | None = None) -> None:
        self.info, self.plan, self.stages, self.device = info, plan, list(stages), device
        self.batch_size = batch_size
        self.encode_config = encode_config
        self.hwaccel = HardwareDecode(hwdecode, device.index or 0)
        self.progress = progress
        self.stats = RunStats()
        self._frames: queue.Queue = queue.Queue(maxsize=max(queue_frames, batch_size))
        self._out: queue.Queue = queue.Queue(maxsize=max(queue_frames, batch_size))
        self._side: queue.SimpleQueue[SidePacket] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._transfer = HostTransfer(device)

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
                                 self.hwaccel, on_decoder=self._note_decoder)
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
                for out in self._process(batch):
                    self._put(self._out, out)
        finally:
            self._put(self._out, _END, force=True)

    def _encode(self, output_path, log: RunLog) -> None:
        writer = open_writer(output_path, self.plan, self.info, self.encode_config)
        try:
            while (item := self._get(self._out)) is not _END:
                self._drain_side(writer)
                started = time.perf_counter()
                writer.write(item.image, item.source)
                item.record["timings_ms"]["encode"] = round((time.perf_counter() - started) * 1000, 3)
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

    # --- device work -----------------------------------------------------------------------

    def _process(self, frames: list[Frame]) -> list[OutputFrame]:
        saved = self._stream_states()
        try:
            return self._run_stages(frames)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the policy: retry per frame, then pass through
            self._restore_stream_states(saved)  # the retry must not see half a batch
            if len(frames) > 1:
                log.warning("a batch of %d frames failed (%s); retrying frame by frame",
                            len(frames), exc)
                return [out for f in frames for out in self._process([f])]
            log.warning("frame %d failed (%s); written unprocessed", frames[0].index, exc)
            log.debug("frame failure", exc_info=True)
            self.stats.failed_frames += 1
            return [self._unprocessed(frames[0], f"processing failed: {exc}")]

    def _stream_states(self) -> dict[int, Any]:
        """Copies of what stateful stages (the tracker's `state`) carry between batches."""
        return {i: copy.deepcopy(stage.state) for i, stage in enumerate(self.stages)
                if hasattr(stage, "state")}

    def _restore_stream_states(self, saved: dict[int, Any]) -> None:
        for i, state in saved.items():
            self.stages[i].state = state

    def _run_stages(self, frames: list[Frame]) -> list[OutputFrame]:
        started = time.perf_counter()
        batch = FrameBatch(inputs=self._transfer.upload(frames), scale=self.plan_scale,
                           times_s=tuple(f.time for f in frames))
        timings = {"upload": self._elapsed_ms(started)}
        for stage in self.stages:
            started = time.perf_counter()
            batch = stage(batch)
            timings[stage.name] = self._elapsed_ms(started)
        started = time.perf_counter()
        images = self._transfer.download_(batch.output)
        timings["download"] = self._elapsed_ms(started)
        per_frame = {k: v / len(frames) for k, v in timings.items()}
        for note in batch.notes:  # a stage's own breakdown, e.g. faces.detect, per frame
            per_frame_and_parts = {**per_frame, **note.get("timings_ms", {})}
            for name, ms in per_frame_and_parts.items():
                self.stats.stage_ms[name] = self.stats.stage_ms.get(name, 0.0) + ms
        return [OutputFrame(f, img, self._record(f, per_frame, note))
                for f, img, note in zip(frames, images, batch.notes)]

    @property
    def plan_scale(self) -> int:
        return self.plan.width // self.info.width

    def _elapsed_ms(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - started) * 1000

    def _unprocessed(self, frame: Frame, why: str) -> OutputFrame:
        image = cv2.resize(frame.image, (self.plan.width, self.plan.height),
                           interpolation=cv2.INTER_CUBIC)
        frame.warnings.append(why)
        return OutputFrame(frame, image, self._record(frame, {}, {}))

    def _record(self, frame: Frame, timings: dict[str, float], note: dict[str, Any]):
        """The frame's log record: its place in time, the stages' notes (faces, quality),
        the time each stage (and part of one) took for it, and its warnings."""
        timings = {**frame.timings_ms, **timings, **note.get("timings_ms", {})}
        extra = {k: v for k, v in note.items() if k not in ("faces", "timings_ms")}
        return {"frame": frame.index, "pts": frame.pts, "time": round(frame.time, 6),
                "faces": note.get("faces", []), **extra,
                "timings_ms": {k: round(v, 3) for k, v in timings.items()},
                "warnings": frame.warnings}


"""`StageRunner`: host frames in, processed host frames with their log records out.

Shared by the file pipeline and the live preview, so both run the stages the same way:
upload, every stage in order, download, per-stage timings, and the error policy. A batch
that fails is retried frame by frame (from the stream state it started with); a frame that
still fails comes out unprocessed (a plain resize) with a warning in its record, and is
counted by cause in `RunStats.log`. Given a `FailureLimit`, the runner raises
`ProcessingError` once failures are systematic (see `failures.py`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch

from .batch import FrameBatch
from .errors import Cancelled
from .failures import FailureLimit, FailureLog
from .frames import Frame, OutputFrame
from .stages import Stage, StreamStage
from .transfer import HostTransfer

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    frames_in: int = 0
    frames_out: int = 0
    decoder: str | None = None  # "software" or "cuda" (hardware decoding); file runs only
    stage_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    log: FailureLog = field(default_factory=FailureLog)  # failed frames and fallbacks

    @property
    def failed_frames(self) -> int:
        return self.log.failed_frames


class StageRunner:
    """Runs `stages` over batches of frames on `device`; one thread owns it.

    scale: output size / input size. `stats` collects failed frames and per-stage time.
    limit: failed frames accepted before `process` raises `ProcessingError` (None: never),
    judged against `expected_frames` (the stream's declared count; 0 when unknown);
    `label` names the input in that error.
    """

    def __init__(self, stages: Sequence[Stage], device: torch.device, scale: int,
                 stats: RunStats | None = None, *, limit: FailureLimit | None = None,
                 expected_frames: int = 0, label: str = "input") -> None:
        self.stages, self.device, self.scale = list(stages), device, scale
        self.stats = stats if stats is not None else RunStats()
        self.limit, self.expected_frames, self.label = limit, expected_frames, label
        self._transfer = HostTransfer(device)
        self._frames_seen = 0

    def process(self, frames: list[Frame]) -> list[OutputFrame]:
        """The frames through every stage, in order. A stage's failure costs only the frames
        it hits, unless failures are systematic: then `ProcessingError`."""
        causes: set[str] = set()
        out = self._process(frames, causes)
        self._frames_seen += len(frames)
        self.stats.log.batch_done(causes)
        self.stats.log.check(self.limit, expected_frames=self.expected_frames,
                             seen_frames=self._frames_seen, label=self.label)
        return out

    def finish(self) -> None:
        """After the last frame: a share of failed frames is judged on the frames seen."""
        self.stats.log.check(self.limit, expected_frames=self.expected_frames,
                             seen_frames=self._frames_seen, label=self.label, final=True)

    def _process(self, frames: list[Frame], causes: set[str]) -> list[OutputFrame]:
        saved = self._stream_states()
        try:
            return self._run_stages(frames)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the policy: retry per frame, then pass through
            self._restore_stream_states(saved)  # the retry must not see half a batch
            if len(frames) > 1:
                log.debug("a batch of %d frames failed (%s); retrying frame by frame",
                          len(frames), exc)
                self.stats.log.fell_back("batch retried frame by frame")
                return [out for f in frames for out in self._process([f], causes)]
            cause = self.stats.log.frame_failed(frames[0].index, exc)
            if self.stats.log.failures[cause].count == 1:  # the first of its kind
                log.info("frame %d failed (%s); written unprocessed", frames[0].index, cause)
            log.debug("frame %d failed", frames[0].index, exc_info=True)
            causes.add(cause)
            return [self.unprocessed(frames[0], f"processing failed: {exc}")]

    def warm_up(self, height: int, width: int, frames: int = 1) -> None:
        """Run a grey batch through the stages and forget it: lazy set-up (kernel choice,
        first allocations) is paid now, not by the first real frame. Stream state and
        statistics are left as they were."""
        saved = self._stream_states()
        stats = copy.deepcopy({k: v for k, v in vars(self.stats).items() if k != "log"})
        failures = copy.deepcopy(vars(self.stats.log))  # in place: stages hold the log
        grey = np.full((height, width, 3), 128, dtype=np.uint8)
        self._process([Frame(i, grey.copy(), i, Fraction(1, 25)) for i in range(frames)], set())
        self._restore_stream_states(saved)
        vars(self.stats).update(stats)
        vars(self.stats.log).update(failures)

    def unprocessed(self, frame: Frame, why: str | None = None) -> OutputFrame:
        """`frame` resized to the output size with nothing else done; `why` becomes a
        warning in its record (none: unprocessed on purpose)."""
        height, width = frame.image.shape[:2]
        image = cv2.resize(frame.image, (width * self.scale, height * self.scale),
                           interpolation=cv2.INTER_CUBIC)
        if why:
            frame.warnings.append(why)
        return OutputFrame(frame, image, self._record(frame, {}, {}))

    def _stream_states(self) -> dict[int, Any]:
        """Copies of what the `StreamStage`s (tracker, colour, white balance) carry."""
        return {i: copy.deepcopy(stage.state) for i, stage in enumerate(self.stages)
                if isinstance(stage, StreamStage)}

    def _restore_stream_states(self, saved: dict[int, Any]) -> None:
        for i, state in saved.items():
            self.stages[i].state = state

    def _run_stages(self, frames: list[Frame]) -> list[OutputFrame]:
        started = time.perf_counter()
        batch = FrameBatch(inputs=self._transfer.upload(frames), scale=self.scale,
                           times_s=tuple(f.time for f in frames))
        timings = {"upload": self._elapsed_ms(started)}
        for stage in self.stages:
            started = time.perf_counter()
            batch = stage(batch)
            timings[stage.name] = self._elapsed_ms(started)
        started = time.perf_counter()
        images = self._transfer.download(batch.output)
        timings["download"] = self._elapsed_ms(started)
        per_frame = {k: v / len(frames) for k, v in timings.items()}
        for note in batch.notes:  # a stage's own breakdown, e.g. faces.detect, per frame
            per_frame_and_parts = {**per_frame, **note.get("timings_ms", {})}
            for name, ms in per_frame_and_parts.items():
                self.stats.stage_ms[name] = self.stats.stage_ms.get(name, 0.0) + ms
        return [OutputFrame(f, img, self._record(f, per_frame, note))
                for f, img, note in zip(frames, images, batch.notes, strict=True)]

    def _elapsed_ms(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - started) * 1000

    @staticmethod
    def _record(frame: Frame, timings: dict[str, float], note: dict[str, Any]):
        """The frame's log record: its place in time, the stages' notes (faces, quality),
        the time each stage (and part of one) took for it, and its warnings."""
        timings = {**frame.timings_ms, **timings, **note.get("timings_ms", {})}
        extra = {k: v for k, v in note.items() if k not in ("faces", "timings_ms")}
        return {"frame": frame.index, "pts": frame.pts, "time": round(frame.time, 6),
                "faces": note.get("faces", []), **extra,
                "timings_ms": {k: round(v, 3) for k, v in timings.items()},
                "warnings": frame.warnings}

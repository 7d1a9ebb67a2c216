"""`run_live()`: the restoring stages on a live source, latency first.

    capture thread  ->  inbox  ->  worker thread (StageRunner)  ->  outbox  ->  main thread
    camera / paced      newest        the same stages as the       newest       compose, window,
    file                wins          file pipeline                 wins         keys, record, log

Both hand-overs are `NewestItems`: when processing falls behind, the oldest waiting frames
are pushed out and counted as dropped, so a frame is never queued behind stale ones and
memory stays bounded. The inbox holds one batch (`batch_size` frames, 1 in the live preset);
the worker takes whatever is there rather than waiting for a full batch.

Latency is measured per frame from the moment the source delivered it (capture) to the
moment it was on screen (after the window painted it; headless, once composed). `--record`
writes the composed picture with pts equal to the shown times, so the recording replays what
the viewer saw, stalls and all.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import __version__
from .compose import build_stages
from .config import RunConfig
from .device import resolve_device
from .errors import OutputError
from .failures import FailureLimit
from .frames import Frame, OutputFrame
from .io.capture import LiveSource, open_live_source
from .io.preview import PreviewWindow, Status, bar_height, check_display, side_by_side
from .io.recording import Recorder
from .models import ModelStore
from .newest import NewestItems
from .run import partial_path
from .runlog import RunLog
from .stage_runner import RunStats, StageRunner

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often waiting threads look at the stop flag
_WINDOW_POLL_S = 0.01  # with a window, its events are handled at least this often
_JOIN_S = 5.0  # how long the end waits for a worker still inside a batch
_FPS_WINDOW_S = 1.0  # the overlay's fps is taken over the last second of shown frames
QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})  # 27: Esc
TOGGLE_KEYS = frozenset({ord(" ")})
SNAPSHOT_KEYS = frozenset({ord("s"), ord("S")})


@dataclass
class Captured:
    frame: Frame
    captured_s: float  # time.perf_counter() when the source delivered it


@dataclass
class Processed:
    captured: Captured
    output: OutputFrame
    restored: bool
    started_s: float  # processing began
    finished_s: float  # processing ended


class LiveControls:
    """What the keys change. `restoring` is read by the worker thread; the rest by the
    display loop."""

    def __init__(self, restoring: bool = True) -> None:
        self.restoring = threading.Event()
        if restoring:
            self.restoring.set()
        self.quit = False
        self.snapshot_wanted = False

    def press(self, key: int) -> None:
        """Act on a key code from `cv2.waitKey` (-1: none)."""
        if key < 0:
            return
        key &= 0xFF  # some backends set modifier bits above the character
        if key in QUIT_KEYS:
            self.quit = True
        elif key in TOGGLE_KEYS:
            if self.restoring.is_set():
                self.restoring.clear()
            else:
                self.restoring.set()
            log.info("restoration %s", "on" if self.restoring.is_set() else "off")
        elif key in SNAPSHOT_KEYS:
            self.snapshot_wanted = True


@dataclass
class LiveOutputs:
    """Where a live run writes: all optional."""

    record: Path | None = None
    log: Path | None = None
    snapshot_dir: Path = Path(".")
    overwrite: bool = False


class LiveSession:
    """One live run: threads, window, recording and log; `run()` returns the summary."""

    def __init__(self, source: LiveSource, runner: StageRunner, *, batch_size: int = 1,
                 window: PreviewWindow | None = None, recorder: Recorder | None = None,
                 runlog: RunLog | None = None, snapshot_dir: Path = Path("."),
                 max_frames: int | None = None, controls: LiveControls | None = None) -> None:
        self.source, self.runner, self.window = source, runner, window
        self.recorder, self.runlog, self.snapshot_dir = recorder, runlog, snapshot_dir
        self.max_frames = max_frames
        self.controls = controls or LiveControls()
        self.inbox: NewestItems[Captured] = NewestItems(batch_size)
        self.outbox: NewestItems[Processed] = NewestItems(batch_size)
        self.frames_captured = self.frames_processed = self.frames_shown = 0
        self.latencies_ms: list[float] = []
        self.snapshots: list[str] = []
        self.warnings: list[str] = []
        self.interrupted = False  # Ctrl-C or SIGTERM
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._shown_times: collections.deque[float] = collections.deque()
        self._first_shown_s: float | None = None
        self._last_pts_ms = -1
        self._last_index = -1
        self._last_picture: np.ndarray | None = None
        self._started_s = 0.0

    @property
    def frames_dropped(self) -> int:
        """Frames pushed out by newer ones before they could be processed or shown."""
        return self.inbox.evicted + self.outbox.evicted

    def run(self) -> dict[str, Any]:
        """Run until the source ends, q, the window closes, `max_frames`, or Ctrl-C."""
        tiny = np.zeros((8, 8, 3), np.uint8)
        side_by_side(tiny, tiny, Status(None, None, 0, True))  # OpenCV's one-off font set-up
        self._started_s = time.perf_counter()
        threads = [threading.Thread(target=self._guard, args=(body,), name=name, daemon=True)
                   for name, body in (("capture", self._capture), ("worker", self._work))]
        for thread in threads:
            thread.start()
        previous = self._trap_stop_signals()
        try:
            stopped = self._display_loop()
        except KeyboardInterrupt:  # one that came before the trap was set
            stopped = "interrupted"
        finally:
            self._restore_signals(previous)
            self._stop.set()
            for thread in threads:
                thread.join(_JOIN_S)
            self.source.close()
        if self._errors:
            stopped = f"error: {self._errors[0]}"
        return self._summary(stopped)

    @property
    def error(self) -> BaseException | None:
        return self._errors[0] if self._errors else None

    def _trap_stop_signals(self) -> dict[int, Any]:
        """Ctrl-C and SIGTERM end the session like q: a flag the display loop reads between
        frames, so no exception lands between recording a frame and logging it."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, self._on_stop_signal)
        return previous

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    # --- threads -------------------------------------------------------------------------

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self._errors.append(exc)
            self._stop.set()

    def _capture(self) -> None:
        frames = self.source.frames(self._stop)
        try:
            for frame in frames:
                self.inbox.put(Captured(frame, time.perf_counter()))
                self.frames_captured += 1
                if self._stop.is_set():
                    break
        finally:
            frames.close()
            self.inbox.close()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                items = self.inbox.take(timeout=_POLL_S)
                if items is None:
                    return  # the source has ended and everything was taken
                if items:
                    self._process(items)
        finally:
            self.outbox.close()

    def _process(self, items: list[Captured]) -> None:
        restoring = self.controls.restoring.is_set()
        started = time.perf_counter()
        frames = [c.frame for c in items]
        if restoring:
            outputs = self.runner.process(frames)
        else:
            outputs = [self.runner.unprocessed(f) for f in frames]
        finished = time.perf_counter()
        self.frames_processed += len(items)
        for captured, output in zip(items, outputs, strict=True):
            self.outbox.put(Processed(captured, output, restoring, started, finished))

    # --- the main thread: show, keys, record, log ------------------------------------------

    def _display_loop(self) -> str:
        poll_s = _WINDOW_POLL_S if self.window else _POLL_S
        while not self._errors:
            items = self.outbox.take(timeout=poll_s)
            if items is None:
                return "source ended"
            for item in items:
                if self.interrupted:
                    return "interrupted"
                self._show(item)
                if self.max_frames and self.frames_shown >= self.max_frames:
                    return "max frames"
            if self.interrupted:
                return "interrupted"
            if self.window is not None:
                self.controls.press(self.window.poll_key(1))
                if self.window.closed:
                    return "window closed"
            if self.controls.snapshot_wanted:
                self._snapshot()
            if self.controls.quit:
                return "quit key"
        return "error"

    def _show(self, item: Processed) -> None:
        status = Status(self._fps(), self.latencies_ms[-1] if self.latencies_ms else None,
                        self.frames_dropped, item.restored)
        picture = side_by_side(item.captured.frame.image, item.output.image, status)
        if self.window is not None:
            self.controls.press(self.window.show(picture))
        shown = time.perf_counter()
        self._last_picture = picture
        self.frames_shown += 1
        self._shown_times.append(shown)
        while shown - self._shown_times[0] > _FPS_WINDOW_S:
            self._shown_times.popleft()
        latency_ms = (shown - item.captured.captured_s) * 1000
        self.latencies_ms.append(latency_ms)
        if self._first_shown_s is None:
            self._first_shown_s = shown
        if self.recorder is not None:
            self.recorder.write(picture, self._next_pts_ms(shown))
        if self.runlog is not None:
            self.runlog.frame(self._record(item, shown, latency_ms))
        self._last_index = item.captured.frame.index

    def _next_pts_ms(self, shown: float) -> int:
        """The recording's pts: ms since the first frame was shown, strictly increasing."""
        pts = max(round((shown - self._first_shown_s) * 1000), self._last_pts_ms + 1)
        self._last_pts_ms = pts
        return pts

    def _fps(self) -> float | None:
        times = self._shown_times
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def _record(self, item: Processed, shown: float, latency_ms: float) -> dict[str, Any]:
        record = dict(item.output.record)
        timings = record.get("timings_ms", {})
        record["timings_ms"] = {
            "wait": round((item.started_s - item.captured.captured_s) * 1000, 3), **timings,
            "show": round((shown - item.finished_s) * 1000, 3)}
        return {**record, "shown": self.frames_shown - 1, "restored": item.restored,
                "captured_s": round(item.captured.captured_s - self._started_s, 6),
                "shown_s": round(shown - self._started_s, 6),
                "latency_ms": round(latency_ms, 3),
                "dropped_before": item.captured.frame.index - self._last_index - 1}

    def _snapshot(self) -> None:
        self.controls.snapshot_wanted = False
        if self._last_picture is None:
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.snapshot_dir / f"vidrestore-{stamp}-{self.frames_shown:06d}.png"
        try:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            written = cv2.imwrite(str(path), cv2.cvtColor(self._last_picture, cv2.COLOR_RGB2BGR))
        except (OSError, cv2.error) as exc:
            written = False
            log.debug("snapshot failed", exc_info=exc)
        if written:
            log.warning("snapshot saved: %s", path)
            self.snapshots.append(str(path))
        else:
            self.warnings.append(f"{path}: could not save the snapshot")
            log.warning("%s: could not save the snapshot", path)

    def _summary(self, stopped: str) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else None
        span = (self._shown_times[-1] - self._first_shown_s) if self.frames_shown > 1 else 0.0
        return {
            "source": self.source.name, "stopped": stopped,
            "frames_captured": self.frames_captured, "frames_processed": self.frames_processed,
            "frames_shown": self.frames_shown, "frames_dropped": self.frames_dropped,
            "frames_unshown_at_stop": (self.frames_captured - self.frames_shown
                                       - self.frames_dropped),
            "max_waiting_frames": {"inbox": self.inbox.peak, "outbox": self.outbox.peak},
            "wall_s": round(time.perf_counter() - self._started_s, 3),
            "fps": round((self.frames_shown - 1) / span, 3) if span > 0 else None,
            "latency_ms": None if latencies is None else {
                "median": round(float(np.median(latencies)), 3),
                "p95": round(float(np.percentile(latencies, 95)), 3),
                "max": round(float(latencies.max()), 3)},
            "failed_frames": self.runner.stats.failed_frames,
            **self.runner.stats.log.summary(),
            "mean_ms_per_frame": {k: round(v / max(self.frames_processed, 1), 3)
                                  for k, v in self.runner.stats.stage_ms.items()},
            "snapshots": self.snapshots, "warnings": self.warnings,
        }


def run_live(source_spec: str, cfg: RunConfig, *, window: bool = True,
             outputs: LiveOutputs | None = None, max_frames: int | None = None,
             restoring: bool = True) -> dict[str, Any]:
    """Open the source, build the stages, run a `LiveSession`; return its summary.

    The recording and the log are written to partial files and renamed when the session
    ends, whatever ended it (q, Ctrl-C, the end of a file, a camera that stops); only a
    failure to write them removes them. An error of the source or the worker is raised
    after that, so what was recorded up to it is kept.
    """
    outputs = outputs or LiveOutputs()
    if window:
        check_display()  # before anything slow: a headless machine fails at once
    for path in (outputs.record, outputs.log):
        if path is not None:
            _check_new_file(path, outputs.overwrite)
    source = open_live_source(source_spec)
    files = None
    try:
        files = _LiveFiles(outputs, cfg, source)  # a bad --record name fails before the models
        device = resolve_device(cfg.device)
        built = build_stages(cfg, device, ModelStore(cfg.models))
        for warning in built.warnings:
            log.warning("%s", warning)
        # No share of an endless stream can be judged; the streak rule stops a live run
        # whose every batch fails the same way.
        limit = FailureLimit.parse(cfg.max_failed_frames, still_image=False)
        runner = StageRunner(built.stages, device, cfg.scale, RunStats(log=built.failures),
                             limit=limit, label=source_spec)
        runner.warm_up(source.height, source.width, cfg.batch_size)
        session_window = PreviewWindow() if window else None
    except BaseException:
        if files is not None:
            files.abort()
        source.close()
        raise
    session = LiveSession(source, runner, batch_size=cfg.batch_size, window=session_window,
                          recorder=files.recorder, runlog=files.runlog,
                          snapshot_dir=outputs.snapshot_dir, max_frames=max_frames,
                          controls=LiveControls(restoring))
    try:
        summary = session.run()
    except BaseException:
        files.abort()
        raise
    finally:
        if session_window is not None:
            session_window.close()
    summary = {"version": __version__, **summary, "device": str(device), "scale": cfg.scale,
               "batch_size": cfg.batch_size, "size_in": [source.width, source.height],
               "record": str(outputs.record) if files.recorded else None,
               "models": built.models, "warnings": built.warnings + summary["warnings"]}
    files.finish(summary)
    if session.error is not None:
        raise session.error
    for line in built.failures.console_lines():  # one line per cause, not one per frame
        log.warning("%s", line)
    return summary


class _LiveFiles:
    """The recording and the log, written to partial files and renamed at the end."""

    def __init__(self, outputs: LiveOutputs, cfg: RunConfig, source: LiveSource) -> None:
        self.outputs = outputs
        self.recorder = self.runlog = None
        self._partials: list[tuple[Path, Path]] = []
        if outputs.record is not None:
            partial = partial_path(outputs.record)
            width, height = source.width * cfg.scale, source.height * cfg.scale
            self.recorder = Recorder(partial, outputs.record, cfg.encode,
                                     size=(2 * width, height + bar_height(height)),
                                     rate=source.rate or Fraction(30))
            self._partials.append((partial, outputs.record))
        if outputs.log is not None:
            partial = partial_path(outputs.log)
            self.runlog = RunLog(partial, line_buffered=True)
            self._partials.append((partial, outputs.log))

    @property
    def recorded(self) -> bool:
        """At least one picture went to the recording (none: no file is written)."""
        return self.recorder is not None and self.recorder.frames_written > 0

    def finish(self, summary: dict[str, Any]) -> None:
        try:
            if self.recorder is not None:
                self.recorder.close()
            if self.runlog is not None:
                self.runlog.summary(summary)
                self.runlog.close()
        except BaseException:
            self.abort()
            raise
        for partial, final in self._partials:
            if partial.exists():
                os.replace(partial, final)

    def abort(self) -> None:
        if self.recorder is not None:
            self.recorder.abort()
        if self.runlog is not None:
            self.runlog.close()
        for partial, _ in self._partials:
            partial.unlink(missing_ok=True)


def _check_new_file(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: folder {path.parent} does not exist")


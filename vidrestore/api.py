"""The library's public surface: restore a file, or frames in memory, with the CLI's stages.

    import vidrestore
    cfg = vidrestore.load_config("fast", scale=2)
    summary = vidrestore.restore("in.mp4", "out.mp4", config=cfg, progress=print)

    with vidrestore.Restorer(cfg) as restorer:  # a webcam, a service, a test
        restored = restorer.process(frames)     # list of (H, W, 3) uint8 RGB

Both run the same `StageRunner` as the CLI: the same models, the same error policy, the
same stream state (tracks, smoothed landmarks, colour history) carried from call to call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig, preset_path
from .config import load_config as _load_config
from .errors import ConfigError, ProcessingError
from .failures import FailureLimit
from .frame_range import FrameRange

Progress = Callable[[int, int], None]  # (frames written, frames expected or 0)
Summary = dict[str, Any]  # the run's summary, as written at the end of its JSON Lines log


def load_config(preset: str | os.PathLike[str] = "default", **overrides: Any) -> RunConfig:
    """A run's configuration: code defaults, `configs/default.yaml`, then a preset name
    (`default`, `fast`, `quality`, `live`) or a YAML file, then `overrides` as nested keys
    (`scale=4`, `face={"model": "passthrough"}`; None counts as not given)."""
    path = Path(preset)
    if path.is_file():
        return _load_config("default", path, overrides)
    if path.suffix in (".yaml", ".yml"):
        raise ConfigError(f"{preset}: no such config file")
    return _load_config("default", preset_path(str(preset)), overrides)


def restore(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], *,
            config: RunConfig | None = None, log_path: str | os.PathLike[str] | None = None,
            overwrite: bool = False, progress: Progress | None = None,
            cancel: threading.Event | None = None,
            segment: FrameRange | None = None) -> Summary:
    """Restore a video or an image into `output_path`, atomically; return the summary.

    `progress(done, total)` is called from the encoder thread as frames are written. Setting
    `cancel` stops the run at the next frame: `Cancelled` is raised and nothing is left at
    the destination. Errors are `VidrestoreError` subclasses (see `vidrestore.errors`).
    `segment` restores one part of a video (video only, warm-up frames processed but not
    written): what `vidrestore batch --segments` runs on each worker before the join."""
    from .memory import settle_process

    settle_process()
    from .run import restore as run_restore

    return run_restore(input_path, output_path, config or load_config(), log_path=log_path,
                       overwrite=overwrite, progress=progress, cancel=cancel,
                       frame_range=segment)


class Restorer:
    """Restores frames held in memory, batch after batch, with a file run's stream state.

    `process(frames)` takes (H, W, 3) uint8 RGB arrays of one size and returns the restored
    frames (scaled by `config.scale`) in order; `records` holds each frame's log record and
    `summary()` the figures so far. Frames are timed at `rate` frames a second unless
    `process` is given their times. A frame that fails is returned unprocessed (a plain
    resize) and counted; failures that are systematic raise `ProcessingError`.
    """

    def __init__(self, config: RunConfig | None = None, *, rate: float = 25.0) -> None:
        from .memory import settle_process

        settle_process()
        from .compose import build_stages
        from .device import resolve_device
        from .models import ModelStore
        from .stage_runner import RunStats, StageRunner

        self.config = config or load_config()
        self.device = resolve_device(self.config.device)
        self.built = build_stages(self.config, self.device, ModelStore(self.config.models))
        limit = FailureLimit.parse(self.config.max_failed_frames, still_image=False)
        self._runner = StageRunner(self.built.stages, self.device, self.config.scale,
                                   RunStats(log=self.built.failures), limit=limit,
                                   label="frames in memory")
        self.time_base = Fraction(1, 1_000_000)
        self.rate = rate
        self.records: list[dict[str, Any]] = []
        self._size: tuple[int, int] | None = None
        self._next = 0

    @property
    def warnings(self) -> list[str]:
        """What was said about the models when they were loaded (stand-ins, features off)."""
        return list(self.built.warnings)

    def process(self, frames: Sequence[np.ndarray],
                times_s: Sequence[float] | None = None) -> list[np.ndarray]:
        from .frames import Frame

        if not frames:
            return []
        if times_s is not None and len(times_s) != len(frames):
            raise ConfigError(f"{len(times_s)} times for {len(frames)} frames")
        batch = []
        for i, image in enumerate(frames):
            self._check(image)
            time_s = times_s[i] if times_s is not None else self._next / self.rate
            pts = round(time_s / self.time_base)
            batch.append(Frame(self._next, np.ascontiguousarray(image), pts, self.time_base))
            self._next += 1
        out = []
        for start in range(0, len(batch), self.config.batch_size):
            for result in self._runner.process(batch[start:start + self.config.batch_size]):
                self.records.append(result.record)
                out.append(result.image)
        return out

    def summary(self) -> Summary:
        stats = self._runner.stats
        return {"frames": self._next, "failed_frames": stats.failed_frames,
                **stats.log.summary(), "models": self.built.models,
                "mean_ms_per_frame": {k: round(v / max(self._next, 1), 3)
                                      for k, v in stats.stage_ms.items()},
                "warnings": self.warnings}

    def _check(self, image: np.ndarray) -> None:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            raise ConfigError("frames must be (H, W, 3) uint8 RGB arrays, got "
                              f"{getattr(image, 'dtype', type(image).__name__)} "
                              f"{getattr(image, 'shape', '')}")
        if self._size is None:
            self._size = image.shape[:2]
        elif image.shape[:2] != self._size:
            raise ConfigError(f"frame size {image.shape[1]}x{image.shape[0]} differs from the "
                              f"first frame's {self._size[1]}x{self._size[0]}")

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc) -> None:
        return None


__all__ = ["ProcessingError", "Progress", "Restorer", "RunConfig", "Summary", "load_config",
           "restore"]

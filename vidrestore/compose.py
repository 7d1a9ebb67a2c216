"""`build_stages`: the composition root, the one place that knows both the config and the
models. It asks the model factory (`models/factory.py`) for each model the config names (the
factory finds it, refuses one in the wrong role and loads it) and builds the stage list in
the order of the pipeline diagram. File runs, the webcam and the library's `Restorer` all get
their stages here; the stages themselves take loaded models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import FaceConfig, RunConfig
from .errors import DownloadError, ModelError
from .failures import FailureLog
from .metrics.identity import open_identity_encoder
from .metrics.perceptual import LPIPS_TRUNK, open_lpips
from .models import ModelStore
from .models.factory import LoadedModel, load_model
from .stages import Stage
from .stages.detect import FaceDetector
from .stages.face_path import FaceModels, build_face_path
from .stages.preprocess import Preprocessor
from .stages.restore import FaceRestorer, PassthroughRestorer
from .stages.upscale import BackgroundUpscaler, PlainResize

log = logging.getLogger(__name__)


@dataclass
class BuiltStages:
    stages: list[Stage]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> where it came from
    warnings: list[str] = field(default_factory=list)
    failures: FailureLog = field(default_factory=FailureLog)  # fallbacks taken, from here on

    def fall_back(self, warning: str) -> None:
        """A stand-in model, or a feature turned off: said now, counted in the summary."""
        self.warnings.append(warning)
        self.failures.fell_back(warning, announced=True)


def build_stages(cfg: RunConfig, device: torch.device, store: ModelStore,
                 failures: FailureLog | None = None) -> BuiltStages:
    """Pre-processing (when on) first, so every later stage sees the cleaned frames; then
    the background, since the face stage pastes its faces onto the upscaled frames.

    A model named for the wrong role is refused here (`ConfigError`), before any frame."""
    built = BuiltStages(stages=[], failures=failures if failures is not None else FailureLog())
    if cfg.preprocess.enabled:
        built.stages.append(Preprocessor(cfg.preprocess, device))
    _add_background_stage(cfg, device, store, built)
    _add_face_stage(cfg, device, store, built)
    return built


def _add_background_stage(cfg: RunConfig, device, store: ModelStore, built: BuiltStages) -> None:
    bg = cfg.background
    if bg.model == "none":
        built.stages.append(PlainResize())
        built.models["background"] = {"name": "none", "source": "plain bicubic resize"}
        return
    loaded = load_model(store, bg.model, "background_upscaler", device, option="--bg-model")
    resolved = loaded.resolved
    stage = BackgroundUpscaler(loaded.module, device, tile=bg.tile, tile_pad=bg.tile_pad,
                               half=bg.half, compile=bg.compile,
                               on_fallback=built.failures.fell_back)
    built.stages.append(stage)
    built.models["background"] = {**loaded.describe(), **_run_settings(stage)}
    if resolved.is_fallback:
        built.fall_back(f"background model {bg.model} is not available; using "
                       f"{resolved.spec.name} ({resolved.source}) in its place")


def _add_face_stage(cfg: RunConfig, device, store: ModelStore, built: BuiltStages) -> None:
    face = cfg.face
    if face.model == "none":
        built.models["face"] = {"name": "none", "source": "face path skipped (--face-model none)"}
        return
    try:
        restorer = _face_restorer(face, device, store, built)
    except DownloadError as exc:  # not to be had here, and no stand-in for it: loud, not fatal
        if cfg.models.strict:
            raise
        built.fall_back(f"FACE RESTORATION IS OFF: {exc}")
        built.models["face"] = {"name": face.model, "source": None, "error": str(exc)}
        return
    lpips, lpips_reason = _lpips_metric(device, store, built)
    models = FaceModels(detector=_face_detector(face, device, store, built), restorer=restorer,
                        parser=_face_parser(cfg, device, store, built),
                        identity=_identity_encoder(cfg, store, built), lpips=lpips,
                        lpips_reason=lpips_reason)
    built.stages.append(build_face_path(face, models, device))


def _face_restorer(face: FaceConfig, device, store: ModelStore, built: BuiltStages):
    if face.model == "passthrough":
        built.models["face"] = {"name": "passthrough", "source": "built in: faces unchanged"}
        return PassthroughRestorer()
    loaded = load_model(store, face.model, "face_restorer", device, option="--face-model")
    resolved = loaded.resolved
    restorer = FaceRestorer(loaded.module, device, half=face.half, fidelity=face.fidelity,
                            compile=face.compile, on_fallback=built.failures.fell_back)
    built.models["face"] = {**loaded.describe(), **_run_settings(restorer)}
    if resolved.is_fallback:
        built.fall_back(f"face model {face.model} is not available; using "
                       f"{resolved.spec.name} ({resolved.source}) in its place")
    return restorer


def _run_settings(runner: BackgroundUpscaler | FaceRestorer) -> dict[str, Any]:
    """How a network runs, for the summary: its float type, memory order, compile mode."""
    return {"dtype": str(runner.dtype).removeprefix("torch."),
            "channels_last": runner.channels_last, "compile": runner.compiled.mode}


def _face_detector(face: FaceConfig, device, store: ModelStore,
                   built: BuiltStages) -> FaceDetector:
    loaded = load_model(store, face.detector, "detector", device, option="face.detector")
    resolved = loaded.resolved
    built.models["detector"] = {**loaded.describe(), "input_size": face.detector_size}
    if resolved.is_fallback:
        built.fall_back(f"face detector {face.detector} is not available; using "
                       f"{resolved.spec.name} ({resolved.source}) in its place")
    return FaceDetector(loaded.module, device, input_size=face.detector_size)


def _face_parser(cfg: RunConfig, device, store: ModelStore, built: BuiltStages):
    """ParseNet when `face.parse` is on and its weights are at hand, else None (faces are
    then pasted with the feathered crop square alone)."""
    if not cfg.face.parse:
        built.models["parser"] = {"name": "none", "source": "face.parse is off"}
        return None
    try:
        loaded: LoadedModel = load_model(store, "parsenet", "parser", device,
                                         option="face.parse", half=cfg.face.half)
    except ModelError as exc:
        if cfg.models.strict:
            raise
        if isinstance(exc, DownloadError):  # not at hand offline: the usual case, said softly
            log.info("face parsing off: %s", exc)
        else:  # there, but corrupt or not ParseNet: the user should hear of it
            built.fall_back(f"face parsing off (faces pasted with the feathered square): {exc}")
        built.models["parser"] = {"name": "parsenet", "source": None, "error": str(exc)}
        return None
    built.models["parser"] = loaded.describe()
    return loaded.module


def _identity_encoder(cfg: RunConfig, store: ModelStore, built: BuiltStages):
    """The encoder `face.identity_encoder` names when identity scoring (or the guard, which
    needs it) is on. One that cannot be loaded turns scoring off with a warning, unless it
    was asked for by name (arcface) or models are strict."""
    face = cfg.face
    if not (face.identity or face.identity_guard):
        built.models["identity"] = {"name": "none", "source": "face.identity is off"}
        return None
    try:
        encoder = open_identity_encoder(store, face.identity_encoder)
    except ModelError as exc:
        if cfg.models.strict or face.identity_encoder == "arcface":
            raise
        built.warnings.append(f"identity scoring is off: {exc}")
        built.models["identity"] = {"name": face.identity_encoder, "source": None,
                                    "error": str(exc)}
        return None
    built.models["identity"] = encoder.describe()
    return encoder


def _lpips_metric(device, store: ModelStore, built: BuiltStages):
    """LPIPS when its AlexNet trunk is in the cache (never downloaded for a run), and the
    reason logged with each face when it is not."""
    metric, reason = open_lpips(store, device)
    if metric is None:
        built.models["lpips"] = {"name": "none", "source": None, "reason": reason}
        return None, reason
    built.models["lpips"] = {"name": metric.name, "source": "cache",
                             "trunk": str(store.path_for(LPIPS_TRUNK))}
    return metric, ""

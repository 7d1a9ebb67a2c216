"""`build_stages`: the stage list for a run, in the order of the pipeline diagram."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import RunConfig
from ..errors import ModelError
from ..models import ModelStore, load_image_model
from . import Stage
from .upscale import BackgroundUpscaler, PlainResize

log = logging.getLogger(__name__)


@dataclass
class BuiltStages:
    stages: list[Stage]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> where it came from
    warnings: list[str] = field(default_factory=list)


def build_stages(cfg: RunConfig, device: torch.device, store: ModelStore) -> BuiltStages:
    built = BuiltStages(stages=[])
    _add_face_stage(cfg, device, store, built)
    _add_background_stage(cfg, device, store, built)
    return built


def _add_background_stage(cfg: RunConfig, device, store: ModelStore, built: BuiltStages) -> None:
    bg = cfg.background
    if bg.model == "none":
        built.stages.append(PlainResize())
        built.models["background"] = {"name": "none", "source": "plain bicubic resize"}
        return
    resolved = _resolve(store, bg.model, "background_upscaler")
    model = load_image_model(resolved, device)
    built.stages.append(BackgroundUpscaler(model, device, tile=bg.tile, tile_pad=bg.tile_pad,
                                           half=bg.half))
    built.models["background"] = resolved.describe()
    if resolved.is_fallback:
        built.warnings.append(f"background model {bg.model} is not available; using "
                              f"{resolved.spec.name} ({resolved.source}) in its place")


def _add_face_stage(cfg: RunConfig, device, store: ModelStore, built: BuiltStages) -> None:
    name = cfg.face.model
    if name == "none":
        built.models["face"] = {"name": "none", "source": "face path skipped (--face-model none)"}
        return
    try:
        resolved = _resolve(store, name, "face_restorer")
    except ModelError as exc:
        if cfg.models.strict:
            raise
        built.warnings.append(f"FACE RESTORATION IS OFF: {exc}")
        built.models["face"] = {"name": name, "source": None, "error": str(exc)}
        return
    # The face path (detect, track, align, restore, paste, blend) is issue 4's work; until it
    # lands the weights are located and reported, and faces get the background treatment.
    built.models["face"] = resolved.describe()
    built.warnings.append(f"face model {name} found, but this build has no face stage yet; "
                          "faces are upscaled with the background")


_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


def _resolve(store: ModelStore, name: str, role: str):
    """A registry name, or the path of the user's own weight file."""
    if name.lower().endswith(_WEIGHT_SUFFIXES):
        return store.user_file(name, role)
    return store.locate(name)

"""`TrainConfig`: every setting of `vidrestore train`, frozen, from code defaults + YAML.

The YAML mirrors the sections below; an unknown key raises `ConfigError` with its dotted
path, as the run config does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import build_dataclass, merge, read_yaml
from ..errors import ConfigError

ARCHS = ("unet", "gfpgan")
REC_LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class ModelSection:
    """arch: "unet" (FaceUNet, from scratch or `init`) or "gfpgan" (fine-tune GFPGANv1Clean
    from `init`: a registry name such as gfpgan-1.3, or an official-layout .pth file).
    widths, blocks: FaceUNet size."""

    arch: str = "unet"
    widths: tuple[int, ...] = (32, 64, 128, 192)
    blocks: int = 2
    init: str | None = None


@dataclass(frozen=True)
class DataSection:
    """patch: side of the random training patches cut from the 512 crops (0: whole crops;
    GFPGAN always takes whole crops). degradation: preset name ("gfpgan", "video") and
    `degradation_overrides` (prob / ranges entries). val_faces: whole validation faces
    scored every `val_every` steps and at the end (0: no validation). native_scale: degrade
    each face at its size in its source (the manifest's eye distance), so a blur or a
    downscale acts on the crop as the same step on the whole frame does (the video preset's
    ranges are frame-level figures); off, they act on the 512 px crop itself."""

    patch: int = 128
    batch: int = 8
    degradation: str = "video"
    degradation_overrides: dict[str, Any] = field(default_factory=dict)
    native_scale: bool = False
    val_faces: int = 16
    cache_in_memory: bool = True


@dataclass(frozen=True)
class LossSection:
    """L_total = rec_weight * L_rec + identity_weight * L_id + lpips_weight * L_lpips.

    rec: "l1" or "l2". identity: 1 - cosine of dlib ResNet descriptors (torch port, real
    weights) of restored and clean face, on whole faces: every `identity_every` steps a batch
    of `identity_batch` whole crops is added (patches carry no identity). lpips_weight: used
    only when LPIPS's AlexNet trunk is in the model cache (logged as off otherwise).
    temporal: on `temporal_batch` pairs of neighbouring faces of a clip (at most
    `temporal_gap` frames apart, one recipe, each its own noise), the L1 of the restored
    change minus the clean change; it keeps what the restorer adds steady from frame to
    frame (0: off; a dataset of stills has no pairs and logs it off).
    colour: the L1 of 16 px local mean colours of restored and clean patch, so the restorer
    keeps a face's colours (0: off)."""

    rec: str = "l1"
    rec_weight: float = 1.0
    identity_weight: float = 0.1
    identity_every: int = 4
    identity_batch: int = 1
    lpips_weight: float = 0.0
    temporal_weight: float = 0.0
    temporal_batch: int = 4
    temporal_gap: int = 4
    colour_weight: float = 0.0


@dataclass(frozen=True)
class OptimSection:
    """AdamW; cosine learning-rate decay after a linear warm-up; `accumulate` micro-batches
    per optimiser step; EMA of the weights with `ema_decay` (the exported weights)."""

    steps: int = 2000
    lr: float = 2e-4
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 0.0
    accumulate: int = 1
    ema_decay: float = 0.999
    grad_clip: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint_every: int = 200
    val_every: int = 200
    threads: int = 1  # torch CPU threads (the trainer leaves the rest of the machine alone)

    def __post_init__(self) -> None:
        if self.model.arch not in ARCHS:
            raise ConfigError(f"model.arch: {self.model.arch!r} is not one of {list(ARCHS)}")
        if self.loss.rec not in REC_LOSSES:
            raise ConfigError(f"loss.rec: {self.loss.rec!r} is not one of {list(REC_LOSSES)}")
        if self.data.patch and self.data.patch % 16:
            raise ConfigError(f"data.patch: {self.data.patch} must be a multiple of 16")
        if min(self.optim.steps, self.data.batch, self.optim.accumulate,
               self.loss.identity_every, self.loss.temporal_batch,
               self.loss.temporal_gap) < 1:
            raise ConfigError("optim.steps, data.batch, optim.accumulate, "
                              "loss.identity_every, loss.temporal_batch and "
                              "loss.temporal_gap must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: str | Path | None = None,
                      overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides` (a dict in the same shape; None
    counts as not given), built and checked as the run config is."""
    data = read_yaml(path) if path is not None else {}
    return build_dataclass(TrainConfig, merge(data, overrides or {}))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return build_dataclass(TrainConfig, data)

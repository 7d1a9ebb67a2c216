"""Training samples: clean aligned crops from a faces dataset, degraded on the fly.

Everything random is a pure function of (seed, step): which faces a step takes, where its
patches lie and how each is degraded. So a resumed run draws exactly what the uninterrupted
run would have, with no random state to save.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..face_geometry import FFHQ_TEMPLATE_512
from ..faces_dataset import read_manifest
from .degradation import Degrader

VAL_SEED_OFFSET = 1_000_003  # validation degradations never coincide with training ones
CROP_EYE_PX = float(FFHQ_TEMPLATE_512[1, 0] - FFHQ_TEMPLATE_512[0, 0])  # 125.9 in a 512 crop


@dataclass
class Batch:
    """clean, degraded: (B, 3, S, S) float RGB in [0, 1]; chip: (B, 2, 3) crop -> dlib chip
    affines (whole crops only, else None)."""

    clean: torch.Tensor
    degraded: torch.Tensor
    chip: torch.Tensor | None


class FaceCrops:
    """The faces of one split of a dataset, read once (into memory when `cache`)."""

    def __init__(self, dataset: str | os.PathLike[str], split: str, cache: bool = True) -> None:
        self.root = Path(dataset)
        self.records = read_manifest(dataset, split)
        if not self.records:
            raise InputError(f"{dataset}: no {split} faces in the manifest")
        self._cache: dict[int, np.ndarray] = {}
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        """(512, 512, 3) uint8 RGB."""
        if i in self._cache:
            return self._cache[i]
        path = self.root / "faces" / self.records[i]["file"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: missing or unreadable face crop")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.cache:
            self._cache[i] = rgb
        return rgb

    def source_scale(self, i: int) -> float:
        """Crop pixels per source pixel of face i (1 when the manifest has no eye distance)."""
        eye_px = self.records[i].get("eye_px")
        return CROP_EYE_PX / eye_px if eye_px else 1.0

    def chip_affine(self, i: int) -> np.ndarray:
        return np.asarray(self.records[i]["chip_affine"], np.float32)

    def sources(self) -> list[str]:
        return sorted({r["source"] for r in self.records})

    def neighbours(self, max_gap: int) -> list[tuple[int, int]]:
        """(i, j): faces of one track of one video, j the next kept face after i, at most
        `max_gap` frames later: consecutive frames of a clip, for the temporal loss."""
        last: dict[tuple[str, int], tuple[int, int]] = {}
        pairs = []
        order = sorted(range(len(self.records)), key=lambda k: (
            self.records[k]["source"], self.records[k].get("track", 0),
            self.records[k].get("frame", 0)))
        for k in order:
            r = self.records[k]
            if "track" not in r:
                continue
            key = (r["source"], r["track"])
            if key in last and 0 < r["frame"] - last[key][1] <= max_gap:
                pairs.append((last[key][0], k))
            last[key] = (k, r["frame"])
        return pairs


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255).contiguous()


class TrainSampler:
    """Batches for step `step`: `batch` faces, patches of `patch` px (0: whole crops)."""

    def __init__(self, crops: FaceCrops, degrader: Degrader, seed: int, batch: int,
                 patch: int) -> None:
        self.crops, self.degrader, self.seed = crops, degrader, seed
        self.batch, self.patch = batch, patch

    def __call__(self, step: int, stream: int = 0, batch: int | None = None,
                 whole: bool = False) -> Batch:
        """stream separates independent draws of one step (0: the patches, 1: the whole
        faces of the identity term, 2.. micro-batches)."""
        count = batch or self.batch
        rng = np.random.default_rng([self.seed, step, stream])
        picks = rng.integers(len(self.crops), size=count)
        clean, degraded, chips = [], [], []
        for j, i in enumerate(picks):
            image = self.crops.image(int(i))
            flip = rng.random() < 0.5
            if flip:
                image = image[:, ::-1]
            sample_index = (step * 64 + stream) * 64 + j
            low = self.degrader(np.ascontiguousarray(image), sample_index,
                                scale=self.crops.source_scale(int(i)))
            if self.patch and not whole:
                size = image.shape[0]
                y, x = rng.integers(0, size - self.patch + 1, size=2)
                image = image[y:y + self.patch, x:x + self.patch]
                low = low[y:y + self.patch, x:x + self.patch]
            clean.append(np.ascontiguousarray(image))
            degraded.append(low)
            chips.append(_flipped_affine(self.crops.chip_affine(int(i)), flip, image.shape[1]))
        chip = torch.from_numpy(np.stack(chips)) if (whole or not self.patch) else None
        return Batch(_to_tensor(clean), _to_tensor(degraded), chip)


@dataclass
class PairBatch:
    """Neighbouring frames of clips: clean0/clean1 and degraded0/degraded1, (B, 3, S, S)."""

    clean0: torch.Tensor
    clean1: torch.Tensor
    degraded0: torch.Tensor
    degraded1: torch.Tensor


class PairSampler:
    """Pairs of neighbouring video faces for the temporal loss, as a clip degrades them:
    both frames get one recipe (the same blur, scale and codec), each its own noise, the
    same flip and the same patch position."""

    def __init__(self, crops: FaceCrops, degrader: Degrader, seed: int, batch: int,
                 patch: int, max_gap: int) -> None:
        self.crops, self.degrader, self.seed = crops, degrader, seed
        self.batch, self.patch = batch, patch
        self.pairs = crops.neighbours(max_gap)

    def __call__(self, step: int, stream: int = 3) -> PairBatch | None:
        if not self.pairs:
            return None
        rng = np.random.default_rng([self.seed, step, stream])
        picks = rng.integers(len(self.pairs), size=self.batch)
        out: list[list[np.ndarray]] = [[], [], [], []]
        for j, p in enumerate(picks):
            flip = rng.random() < 0.5
            sample_index = (step * 64 + stream) * 64 + j
            size = self.crops.image(self.pairs[int(p)][0]).shape[0]
            y, x = rng.integers(0, size - self.patch + 1, size=2) if self.patch else (0, 0)
            for frame, i in enumerate(self.pairs[int(p)]):
                image = self.crops.image(i)
                if flip:
                    image = image[:, ::-1]
                image = np.ascontiguousarray(image)
                low = self.degrader(image, sample_index, noise_index=sample_index * 2 + frame,
                                    scale=self.crops.source_scale(i))
                if self.patch:
                    image = image[y:y + self.patch, x:x + self.patch]
                    low = low[y:y + self.patch, x:x + self.patch]
                out[frame].append(np.ascontiguousarray(image))
                out[2 + frame].append(np.ascontiguousarray(low))
        return PairBatch(*(_to_tensor(images) for images in out))


def _flipped_affine(affine: np.ndarray, flip: bool, width: int) -> np.ndarray:
    """The crop -> chip map of the mirrored crop: mirror back first, then the chip is
    mirrored too, so the chip shows the mirrored face upright."""
    if not flip:
        return affine
    mirror = np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], np.float32)
    chip_mirror = np.array([[-1, 0, 149], [0, 1, 0], [0, 0, 1]], np.float32)
    full = chip_mirror @ np.vstack([affine, [0, 0, 1]]) @ mirror
    return full[:2].astype(np.float32)


def validation_batch(crops: FaceCrops, degrader: Degrader, count: int, seed: int) -> Batch:
    """A fixed set of whole validation faces, evenly spread over the split, each degraded
    by its own recipe from the preset (seeded apart from the training draws). The preset's
    "clean" draw is left out: an untouched face would score the capped 100 dB and swamp
    the mean."""
    preset = degrader.preset
    degrader = Degrader(dataclasses.replace(preset, prob={**preset.prob, "clean": 0.0}),
                        degrader.seed, degrader.native_scale)
    picks = np.linspace(0, len(crops) - 1, num=min(count, len(crops))).round().astype(int)
    clean = [crops.image(int(i)) for i in picks]
    degraded = [degrader(image, VAL_SEED_OFFSET + seed + k, scale=crops.source_scale(int(i)))
                for k, (i, image) in enumerate(zip(picks, clean, strict=True))]
    chips = torch.from_numpy(np.stack([crops.chip_affine(int(i)) for i in picks]))
    return Batch(_to_tensor(clean), _to_tensor(degraded), chips)


def describe_split(crops: FaceCrops) -> dict[str, Any]:
    return {"faces": len(crops), "sources": crops.sources()}

"""On-the-fly degradation of aligned face crops for training, from `vidrestore.degrade`'s steps.

A preset gives, for each step, the probability it is applied and the range each parameter is
drawn from, uniformly. Each sample draws its own recipe from a generator seeded by
(seed, sample index), so a given sample is degraded the same way on every run and on resume.

Order (as in GFPGAN's and Real-ESRGAN's synthetic pipelines, and in `vidrestore degrade`):
blur or motion blur, downscale, colour cast, noise, JPEG, video codec; then the face is
brought back to the crop size with bilinear resizing, as the aligner's warp would bring a
small face up to 512 px.

Presets: "gfpgan", GFPGAN's published ranges (blur sigma 0.1-10, downsample x0.8-8, noise
0-20, JPEG quality 60-100); "video", milder and with codec compression, for footage.

Two draws come before the steps: with probability `prob["clean"]` a sample is left as it
is, and with `prob["light"]` every range shrinks to its mildest quarter (the lowest blur,
scale, noise and crf, the highest JPEG quality, casts near 1). Without them a restorer
learns to sharpen whatever it is given and damages faces that were nearly clean (measured:
-1.8 dB on a validation face at 41 dB after 2000 steps of the video preset without them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .. import degrade as steps
from ..errors import ConfigError
from ..io.roundtrip import codec_roundtrip

Range = tuple[float, float]


@dataclass(frozen=True)
class DegradationPreset:
    """prob: step name -> probability it is applied; ranges: "step.param" -> (low, high)."""

    name: str
    prob: Mapping[str, float]
    ranges: Mapping[str, Range]
    methods: tuple[str, ...] = ("area", "bilinear", "bicubic")
    extra: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, DegradationPreset] = {
    "gfpgan": DegradationPreset(
        "gfpgan",
        prob={"clean": 0.0, "light": 0.0, "blur": 1.0, "motion": 0.0, "downscale": 1.0,
              "cast": 0.0, "noise": 1.0, "jpeg": 1.0, "codec": 0.0},
        ranges={"blur.sigma": (0.1, 10.0), "downscale.factor": (0.8, 8.0),
                "noise.sigma": (0.0, 20.0), "jpeg.quality": (60, 100)}),
    "video": DegradationPreset(
        "video",
        prob={"clean": 0.08, "light": 0.2, "blur": 0.8, "motion": 0.15, "downscale": 0.9,
              "cast": 0.1, "noise": 0.7, "jpeg": 0.3, "codec": 0.6},
        ranges={"blur.sigma": (0.2, 3.0), "motion.length": (3, 9), "motion.angle": (0.0, 180.0),
                "downscale.factor": (1.0, 6.0), "cast.gain": (0.85, 1.15),
                "noise.sigma": (0.0, 8.0), "jpeg.quality": (60, 95), "codec.crf": (20, 38)}),
}


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> DegradationPreset:
    """A preset by name, with `prob` / `ranges` entries replaced from `overrides`."""
    if name not in PRESETS:
        raise ConfigError(f"degradation preset {name!r} is unknown; presets: {list(PRESETS)}")
    base = PRESETS[name]
    overrides = dict(overrides or {})
    prob = {**base.prob, **overrides.pop("prob", {})}
    ranges = {**base.ranges, **{k: tuple(v) for k, v in overrides.pop("ranges", {}).items()}}
    if overrides:
        raise ConfigError(f"degradation: unknown keys {sorted(overrides)} (prob, ranges)")
    unknown = set(prob) - set(base.prob)
    if unknown:
        raise ConfigError(f"degradation.prob: unknown steps {sorted(unknown)}; "
                          f"steps: {list(base.prob)}")
    return DegradationPreset(name, prob, ranges, base.methods)


class Degrader:
    """Degrades uint8 (S, S, 3) RGB crops; `__call__(image, index)` is deterministic.

    native_scale: apply each recipe at the face's size in its source (`scale`, crop pixels
    per source pixel, given with each crop), as a degradation of the whole frame acts on a
    face before the aligner enlarges it (see `at_source_scale`)."""

    def __init__(self, preset: DegradationPreset, seed: int = 0,
                 native_scale: bool = False) -> None:
        self.preset, self.seed, self.native_scale = preset, seed, native_scale

    def recipe(self, index: int) -> list[tuple[str, dict[str, Any]]]:
        """The steps and parameters sample `index` gets."""
        rng = np.random.default_rng([self.seed, index, 0])
        p, out = self.preset, []
        if rng.random() < p.prob.get("clean", 0.0):
            return out
        light = rng.random() < p.prob.get("light", 0.0)

        def draw(key: str) -> float:
            return _uniform(rng, _mildest(key, p.ranges[key]) if light else p.ranges[key])

        if rng.random() < p.prob["blur"]:
            out.append(("blur", {"sigma": draw("blur.sigma")}))
        if rng.random() < p.prob["motion"]:
            out.append(("motion", {"length": draw("motion.length"),
                                   "angle": _uniform(rng, p.ranges["motion.angle"])}))
        if rng.random() < p.prob["downscale"]:
            out.append(("downscale", {"factor": draw("downscale.factor"),
                                      "method": p.methods[rng.integers(len(p.methods))]}))
        if rng.random() < p.prob["cast"]:
            low, high = _mildest("cast.gain", p.ranges["cast.gain"]) if light else \
                p.ranges["cast.gain"]
            r, g, b = (round(float(v), 4) for v in rng.uniform(low, high, 3))
            out.append(("cast", {"r": r, "g": g, "b": b}))
        if rng.random() < p.prob["noise"]:
            out.append(("noise", {"sigma": draw("noise.sigma")}))
        if rng.random() < p.prob["jpeg"]:
            out.append(("jpeg", {"quality": int(round(draw("jpeg.quality")))}))
        if rng.random() < p.prob["codec"]:
            out.append(("codec", {"crf": int(round(draw("codec.crf")))}))
        return out

    def __call__(self, image: np.ndarray, index: int, noise_index: int | None = None,
                 scale: float = 1.0) -> np.ndarray:
        """Degraded copy of `image` (uint8 RGB), same size. `noise_index` (default `index`)
        seeds the noise alone: two frames of one clip share a recipe, not their noise.
        `scale`: crop pixels per source pixel (used with `native_scale`)."""
        size = image.shape[1], image.shape[0]
        noise_rng = np.random.default_rng([self.seed, index if noise_index is None
                                           else noise_index, 1])
        recipe = self.recipe(index)
        if self.native_scale:
            recipe = at_source_scale(recipe, scale)
        x = image.astype(np.float32) / 255.0
        for name, params in recipe:
            x = apply_step(x, name, params, noise_rng)
        if (x.shape[1], x.shape[0]) != size:
            x = cv2.resize(x, size, interpolation=cv2.INTER_LINEAR)
        return steps.to_uint8(x)


def at_source_scale(recipe: list[tuple[str, dict[str, Any]]], scale: float
                    ) -> list[tuple[str, dict[str, Any]]]:
    """`recipe`, drawn for a face at its source's resolution, for its aligned crop, which
    is `scale` times larger (crop pixels per source pixel): blur and motion lengths grow
    by `scale`, and the downscale shrinks the crop to the face's source size times the
    drawn factor, so noise and compression act on source-sized pixels, as on a frame. A
    face larger in its source than the crop (scale < 1) gets smaller blurs and no enlarging
    downscale. An untouched sample (the "clean" draw) stays untouched."""
    if not recipe:
        return recipe
    out = []
    for name, params in recipe:
        if name == "blur":
            params = {**params, "sigma": round(params["sigma"] * scale, 4)}
        elif name == "motion":
            params = {**params, "length": round(params["length"] * scale, 4)}
        elif name == "downscale":
            params = {**params, "factor": round(max(1.0, params["factor"] * scale), 4)}
        out.append((name, params))
    if scale > 1 and not any(name == "downscale" for name, _ in out):
        # recipes run blur, motion, downscale, ...: the face goes to its source size there
        at = sum(name in ("blur", "motion") for name, _ in out)
        out.insert(at, ("downscale", {"factor": round(scale, 4), "method": "area"}))
    return out


def apply_step(x: np.ndarray, name: str, params: dict[str, Any],
               rng: np.random.Generator) -> np.ndarray:
    """One step on a float32 (H, W, 3) image in [0, 1]; downscale may shrink below 1x
    (factor < 1 enlarges, as GFPGAN's range starts at 0.8)."""
    if name == "blur":
        return steps.gaussian_blur(x, float(params["sigma"]))
    if name == "motion":
        return steps.motion_blur(x, float(params["length"]), float(params["angle"]))
    if name == "downscale":
        factor = float(params["factor"])
        size = steps.downscaled_size(x.shape[1], x.shape[0], factor, even=True)
        method = params["method"] if factor >= 1 else "bicubic"
        return steps.downscale(x, size, method)
    if name == "cast":
        return steps.colour_cast(x, params["r"], params["g"], params["b"])
    if name == "noise":
        return steps.gaussian_noise(x, float(params["sigma"]), rng)
    if name == "jpeg":
        return steps.jpeg(x, int(params["quality"]))
    if name == "codec":
        return codec_roundtrip(steps.to_uint8(x), int(params["crf"])).astype(np.float32) / 255
    raise ConfigError(f"degradation step {name!r} is unknown")


def frame_recipe(preset: DegradationPreset, seed: int) -> list[steps.Step]:
    """A `vidrestore degrade` recipe for whole frames drawn from `preset` (the eval's
    degradations): the same steps and ranges, with the downscale factor for frames."""
    rng = np.random.default_rng([seed, 7])
    p = preset
    out = [steps.Step("blur", {"sigma": _uniform(rng, p.ranges["blur.sigma"])})]
    low, high = p.ranges["downscale.factor"]
    out.append(steps.Step("downscale", {"factor": _uniform(rng, (max(low, 1.0), min(high, 3.0))),
                                        "method": "area"}))
    out.append(steps.Step("noise", {"sigma": _uniform(rng, p.ranges["noise.sigma"])}))
    if "codec.crf" in p.ranges:
        out.append(steps.Step("codec", {"crf": int(round(_uniform(rng, p.ranges["codec.crf"]))),
                                        "codec": "libx264", "preset": "medium"}))
    return out


def _mildest(key: str, bounds: Range) -> Range:
    """The mildest quarter of a range: JPEG quality from the top, casts around 1, the
    rest from the bottom."""
    low, high = bounds
    quarter = (high - low) / 4
    if key == "jpeg.quality":
        return high - quarter, high
    if key == "cast.gain":  # the quarter nearest to no cast
        centre = min(max(1.0, low + quarter / 2), high - quarter / 2)
        return centre - quarter / 2, centre + quarter / 2
    return low, low + quarter


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    return round(float(rng.uniform(low, high)), 4)

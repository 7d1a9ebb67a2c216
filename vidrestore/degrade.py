"""Reproducible degradation of an image or a video, for testing restoration against a
known original.

A recipe is a list of steps applied in order to every frame. Each step has parameters;
those not given are drawn once, from the seed, within the step's range (so one seed gives
one degradation, the same on every run). Noise is drawn afresh for each frame from a second
stream of the same seed. `degrade()` writes OUT and, beside it, `OUT.degrade.json` with
the seed and every parameter used; `load_recipe` reads that file back to replay it.

Steps (parameters and their default ranges in `STEPS`):

    blur       Gaussian blur, sigma in pixels
    motion     motion blur along a line: length in pixels, angle in degrees
    downscale  shrink by `factor` with `method` (area, bilinear, bicubic); videos keep
               even sizes
    noise      additive Gaussian noise, sigma in 8-bit levels
    poisson    shot noise: `photons` expected at white
    jpeg       JPEG compression at `quality`
    cast       colour cast: gains r, g, b (default: a blue night cast)
    codec      video compression of the written file: `crf`, `codec`, `preset` (videos
               only, last)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import __version__
from .config import EncodeConfig
from .destination import check_destination, partial_path
from .errors import ConfigError
from .frames import Frame
from .io.decode import read_frames
from .io.encode import open_writer
from .io.plan import plan_output
from .io.probe import MediaInfo, probe

log = logging.getLogger(__name__)

Range = tuple[float, float]


@dataclass(frozen=True)
class StepSpec:
    """A step's parameters: name -> a fixed default, a (low, high) range drawn uniformly
    (ints stay ints), or a list of choices."""

    params: dict[str, Any]
    doc: str


STEPS: dict[str, StepSpec] = {
    "blur": StepSpec({"sigma": (0.5, 2.0)}, "Gaussian blur, sigma px"),
    "motion": StepSpec({"length": (5, 15), "angle": (0.0, 180.0)},
                       "motion blur: length px, angle degrees"),
    "downscale": StepSpec({"factor": 2.0, "method": ["area", "bilinear", "bicubic"]},
                          "shrink by factor; method area, bilinear or bicubic"),
    "noise": StepSpec({"sigma": (2.0, 10.0)}, "Gaussian noise, sigma in 8-bit levels"),
    "poisson": StepSpec({"photons": (100.0, 1000.0)}, "shot noise, photons at white"),
    "jpeg": StepSpec({"quality": (30, 70)}, "JPEG compression, quality 1-100"),
    "cast": StepSpec({"r": (0.45, 0.7), "g": (0.65, 0.85), "b": 1.0},
                     "colour cast, channel gains (default: blue, dark)"),
    "codec": StepSpec({"crf": (28, 38), "codec": "libx264", "preset": "medium"},
                      "video compression of OUT (videos only, last step)"),
}
DEFAULT_IMAGE_RECIPE = ("blur", "downscale", "noise", "jpeg")
DEFAULT_VIDEO_RECIPE = ("blur", "downscale", "noise", "codec")
# x264's frame-type lookahead gives different bytes from run to run on the same frames in
# the PyAV 18 wheel (measured: 248 frames of talk_real_1, even with one thread; with the
# lookahead off, every run is the same). Degradations must be reproducible, so it is off.
X264_REPRODUCIBLE = {"x264-params": "rc-lookahead=0"}
FINAL_CRF = 18  # a video written without a codec step: x264 at its "visually lossless" crf
_METHODS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class Step:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


def parse_step(text: str) -> Step:
    """'noise' or 'noise:sigma=5' or 'cast:r=0.5,g=0.7' -> a `Step` (values not given are
    drawn later); unknown steps and parameters are named with the allowed ones."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in STEPS:
        raise ConfigError(f"degrade step {name!r} is unknown; steps: {', '.join(STEPS)}")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in STEPS[name].params:
            raise ConfigError(f"degrade step {name}: {item!r} is not KEY=VALUE with KEY one of "
                              f"{', '.join(STEPS[name].params)}")
        params[key] = _number(value)
    return Step(name, params)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def resolve(steps: list[Step], seed: int, kind: str) -> list[Step]:
    """Every parameter fixed: given ones kept, the rest drawn from the seed's own stream
    for parameters (independent of the frame count) or taken from the defaults."""
    _check_order(steps, kind)
    rng = np.random.default_rng([seed, 0])
    out = []
    for step in steps:
        params = {}
        for key, default in STEPS[step.name].params.items():
            params[key] = step.params[key] if key in step.params else _draw(default, rng)
        _check_values(step.name, params)
        out.append(Step(step.name, params))
    return out


def _draw(default: Any, rng: np.random.Generator) -> Any:
    if isinstance(default, tuple):
        low, high = default
        if isinstance(low, int) and isinstance(high, int):
            return int(rng.integers(low, high + 1))
        return round(float(rng.uniform(low, high)), 4)
    if isinstance(default, list):
        return default[int(rng.integers(len(default)))]
    return default


def _check_order(steps: list[Step], kind: str) -> None:
    names = [s.name for s in steps]
    if "codec" in names:
        if kind != "video":
            raise ConfigError("degrade step codec compresses videos; use jpeg for an image")
        if names.index("codec") != len(names) - 1 or names.count("codec") > 1:
            raise ConfigError("degrade step codec must come once, last (it is how OUT is encoded)")


def _check_values(name: str, params: dict[str, Any]) -> None:
    checks = {
        "blur": params.get("sigma", 1) > 0, "motion": params.get("length", 1) >= 1,
        "downscale": params.get("factor", 2) >= 1 and params.get("method", "area") in _METHODS,
        "noise": params.get("sigma", 0) >= 0, "poisson": params.get("photons", 1) > 0,
        "jpeg": 1 <= params.get("quality", 50) <= 100,
        "cast": all(params.get(c, 1) >= 0 for c in "rgb"),
        "codec": 0 <= params.get("crf", 18) <= 63,
    }
    if not checks[name]:
        raise ConfigError(f"degrade step {name}: bad parameters {params} ({STEPS[name].doc})")


# --- the steps, on float32 (H, W, 3) RGB images in [0, 1] --------------------------------------


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line of `length` px at `angle` degrees (counter-clockwise from the x
    axis), anti-aliased by splatting sub-pixel samples bilinearly."""
    size = int(math.ceil(length)) // 2 * 2 + 1
    kernel = np.zeros((size + 1, size + 1), np.float64)
    centre = size // 2
    theta = math.radians(angle)
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, int(length * 8) + 1):
        # rounded, so that cos(90 degrees) = 6e-17 does not smear a vertical line sideways
        x, y = round(centre + t * math.cos(theta), 9), round(centre - t * math.sin(theta), 9)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    kernel = kernel[:size, :size]
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length: float, angle: float) -> np.ndarray:
    return cv2.filter2D(image, -1, motion_kernel(length, angle), borderType=cv2.BORDER_REFLECT)


def downscaled_size(width: int, height: int, factor: float, even: bool) -> tuple[int, int]:
    """(width, height) / factor, rounded; to even numbers for video (4:2:0 chroma)."""
    if even:
        return (max(2, round(width / factor / 2) * 2), max(2, round(height / factor / 2) * 2))
    return max(1, round(width / factor)), max(1, round(height / factor))


def downscale(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    return cv2.resize(image, size, interpolation=_METHODS[method])


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return image + rng.normal(0.0, sigma / 255.0, image.shape).astype(np.float32)


def poisson_noise(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    counts = rng.poisson(np.clip(image, 0, 1).astype(np.float64) * photons)
    return (counts / photons).astype(np.float32)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding at quality {quality} failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) \
        .astype(np.float32) / 255.0


def colour_cast(image: np.ndarray, r: float, g: float, b: float) -> np.ndarray:
    return image * np.array([r, g, b], np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


# --- whole files ----------------------------------------------------------------------------


def params_path(output: Path) -> Path:
    return output.with_name(output.name + ".degrade.json")


def default_recipe(kind: str) -> list[Step]:
    names = DEFAULT_VIDEO_RECIPE if kind == "video" else DEFAULT_IMAGE_RECIPE
    return [Step(name) for name in names]


def load_recipe(path: str | os.PathLike[str]) -> tuple[list[Step], int]:
    """The steps and seed of a `.degrade.json` file written by `degrade`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        steps = [Step(s["name"], dict(s["params"])) for s in data["steps"]]
        seed = int(data["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a degrade parameters file ({exc})") from exc
    for step in steps:
        parse_step(step.name)  # an unknown name is named
    return steps, seed


def degrade(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], *,
            seed: int = 0, steps: list[Step] | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Degrade IN into OUT and write OUT.degrade.json; return what that file holds.

    Both files are written to partial files first and renamed when complete."""
    src, dst = Path(input_path), Path(output_path)
    info = probe(src)
    check_destination(src, dst, overwrite)
    check_destination(src, params_path(dst), overwrite)
    steps = resolve(list(steps) if steps is not None else default_recipe(info.kind), seed,
                    info.kind)
    sizes = _step_sizes(info, steps)
    size = sizes[-1] if sizes else (info.width, info.height)
    codec = next((s.params for s in steps if s.name == "codec"), None)
    encode = EncodeConfig(codec=codec["codec"] if codec else "libx264",
                          crf=int(codec["crf"]) if codec else FINAL_CRF,
                          preset=codec["preset"] if codec else "medium")
    plan = plan_output(info, dst, 1, encode, size=size)
    noise_rng = np.random.default_rng([seed, 1])
    apply = _frame_function(steps, sizes, noise_rng)
    partial = partial_path(dst)
    writer = open_writer(partial, plan, info, encode)
    if plan.codec == "libx264":
        writer.video.options = {**writer.video.options, **X264_REPRODUCIBLE}
    frames = 0
    try:
        for frame in read_frames(info, writer.add_side, plan.reencode_indices):
            writer.write(apply(frame.image), _resized_alpha(frame, size))
            frames += 1
        writer.close()
    except BaseException:
        writer.abort()
        partial.unlink(missing_ok=True)
        raise
    record = {"version": __version__, "input": str(src), "output": str(dst), "seed": seed,
              "kind": info.kind, "frames": frames, "size_in": [info.width, info.height],
              "size_out": list(size),
              "steps": [{"name": s.name, "params": s.params} for s in steps],
              "written_as": _written_as(plan, encode)}
    _write_json_atomically(params_path(dst), record)
    os.replace(partial, dst)
    return record


def _step_sizes(info: MediaInfo, steps: list[Step]) -> list[tuple[int, int]]:
    """The (width, height) of the frames after each step."""
    size, out = (info.width, info.height), []
    for step in steps:
        if step.name == "downscale":
            size = downscaled_size(*size, float(step.params["factor"]),
                                   even=info.kind == "video")
        out.append(size)
    return out


# name -> (image, params, target size of a downscale, noise generator) -> image
_APPLY: dict[str, Callable[[np.ndarray, dict[str, Any], tuple[int, int], np.random.Generator],
                           np.ndarray]] = {
    "blur": lambda x, p, size, rng: gaussian_blur(x, float(p["sigma"])),
    "motion": lambda x, p, size, rng: motion_blur(x, float(p["length"]), float(p["angle"])),
    "downscale": lambda x, p, size, rng: downscale(x, size, p["method"]),
    "noise": lambda x, p, size, rng: gaussian_noise(x, float(p["sigma"]), rng),
    "poisson": lambda x, p, size, rng: poisson_noise(x, float(p["photons"]), rng),
    "jpeg": lambda x, p, size, rng: jpeg(x, int(p["quality"])),
    "cast": lambda x, p, size, rng: colour_cast(x, float(p["r"]), float(p["g"]), float(p["b"])),
    "codec": lambda x, p, size, rng: x,  # applied by the encoder when OUT is written
}


def _frame_function(steps: list[Step], sizes: list[tuple[int, int]],
                    rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 frame -> degraded uint8 frame; noise draws advance `rng` frame after frame.
    Frames stay float between steps and are rounded to 8 bits once, at the end (JPEG
    rounds its own input)."""

    def apply(image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32) / 255.0
        for step, size in zip(steps, sizes, strict=True):
            x = _APPLY[step.name](x, step.params, size, rng)
        return to_uint8(x)

    return apply


def _resized_alpha(frame: Frame, size: tuple[int, int]) -> Frame:
    if frame.alpha is not None and frame.alpha.shape[::-1] != size:
        frame.alpha = cv2.resize(frame.alpha, size, interpolation=cv2.INTER_AREA)
    return frame


def _written_as(plan, encode: EncodeConfig) -> dict[str, Any]:
    if plan.kind == "image":
        lossy = plan.image_format in ("JPEG", "WEBP")
        return {"format": plan.image_format, "quality": 95 if lossy else None}
    extra = X264_REPRODUCIBLE if plan.codec == "libx264" else {}
    return {"codec": plan.codec, "crf": encode.crf, "preset": encode.preset,
            "pix_fmt": plan.pix_fmt, **extra}


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = partial_path(path)
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)

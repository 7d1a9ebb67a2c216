"""One frozen `RunConfig`, built once from layered plain dicts.

Later sources win: code defaults, the preset YAML (``configs/``), ``--config FILE``, then
command-line flags (a flag left at ``None`` counts as not given). Unknown keys raise
`ConfigError` with their dotted path. Only this module reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SCALES = (1, 2, 4)


@dataclass(frozen=True)
class BackgroundConfig:
    model: str = "realesrgan-x2plus"
    tile: int = 0  # 0: automatic (whole frame on CUDA with out-of-memory fallback, 512 on CPU)
    tile_pad: int = 16
    half: bool = True


@dataclass(frozen=True)
class TrackConfig:
    """Settings of `FaceTracker` and `detect_scene_cuts`.

    Association (see the module docstring):
      min_iou: least IoU between a track's predicted box and a detection to pair them.
      max_landmark_distance: most mean landmark distance, in face sizes, to pair them.
      landmark_weight: weight of the landmark distance against 1 - IoU in the cost.
      max_missed: frames in a row a track may go undetected and keep its id (a blink of the
        detector, a hand passing); at 25 fps the default bridges 0.2 s.
    Faces reported but not restored (`TrackedFace.skipped`):
      min_face_score: a track is restored only once one of its detections has scored at
        least this. Every real face in ../shared/media scores 0.99 or more; the false
        detections there (hands, a bannister knob, a corner of hair) score 0.53 to 0.88 and
        would have GFPGAN paint a face on them.
      min_eye_distance_px: eye distance (frame pixels, smoothed landmarks) below which a face
        is too small. GFPGAN's 512-px template has the eyes 126 px apart and it was trained
        on faces downscaled up to 8x (16 px); CodeFormer's own demo restores group photos
        with eyes 14 to 18 px apart (codeformer_whole_imgs_00 in ../shared/media), and the
        GFPGAN and CodeFormer scripts skip only faces under 5 px. 10 px (12x below the
        template) keeps every real face in the media and drops what would be invented
        rather than restored, where a pixel of landmark noise is a tenth of the face.
      max_yaw_ratio: most offset of the nose tip from the eyes' midpoint, along the eye
        axis, in eye distances (smoothed landmarks): 0 for a frontal face. With the nose tip
        about half an eye distance in front of the eyes it grows as about 0.47 * tan(yaw);
        in talk_real_2 a head turned some 50 degrees reads 0.57. 0.8 is about 60 degrees,
        past which a 5-point alignment to a frontal template squashes the far half of the
        face (and RetinaFace guesses the hidden eye).
      skip_hysteresis: relative margin by which a skipped face must clear the eye-distance
        and yaw limits to be restored again, so a face near a limit does not flicker
        between restored and not.
    One-Euro smoothing (cutoff = min_cutoff_hz + beta * speed in face sizes per second):
      min_cutoff_hz: cutoff for a still face (lower: steadier, slower to settle).
      beta: how fast the cutoff rises with speed (higher: less lag on moving faces).
      d_cutoff_hz: cutoff of the speed estimate itself.
    Scene cuts:
      scene_cut_threshold: histogram distance (0..1, see `detect_scene_cuts`) above which
        two consecutive frames belong to different shots.
    """

    min_iou: float = 0.1
    max_landmark_distance: float = 0.75
    landmark_weight: float = 1.0
    max_missed: int = 5
    min_face_score: float = 0.9
    min_eye_distance_px: float = 10.0
    max_yaw_ratio: float = 0.8
    skip_hysteresis: float = 0.1
    min_cutoff_hz: float = 0.25
    beta: float = 3.0
    d_cutoff_hz: float = 1.0
    scene_cut_threshold: float = 0.3

    def __post_init__(self) -> None:
        for name in ("min_cutoff_hz", "d_cutoff_hz", "max_landmark_distance"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"face.track.{name}: {getattr(self, name)} must be positive")
        for name in ("min_iou", "min_face_score", "skip_hysteresis", "scene_cut_threshold"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"face.track.{name}: {getattr(self, name)} must be within [0, 1)")
        for name in ("beta", "landmark_weight", "min_eye_distance_px", "max_yaw_ratio"):
            if getattr(self, name) < 0:
                raise ConfigError(f"face.track.{name}: {getattr(self, name)} must not be negative")
        if self.max_missed < 0:
            raise ConfigError(f"face.track.max_missed: {self.max_missed} must not be negative")


DETECTORS = ("retinaface-resnet50", "retinaface-mobilenet0.25")


@dataclass(frozen=True)
class FaceConfig:
    """The face path (see `vidrestore.stages.face`).

    model: restorer name, a .pth file, "passthrough" (the whole path, faces unchanged) or
        "none" (no face path).
    detector: RetinaFace backbone, or a .pth file; falls back to the bundled MobileNet-0.25.
    detector_size: longest side, in pixels, frames are detected at (larger ones shrink).
    fidelity: 0-1, restored face weight against the input face (1: fully restored).
    half: bf16/fp16 on CUDA where the models support it.
    parse: use ParseNet's face mask for paste-back when its weights are present.
    identity: score each restored face against its input (dlib, ~80 ms a face on a CPU).
    identity_guard: blend faces that fail the identity threshold back toward the input
        (fidelity 0.75, 0.5, 0.25, 0) until they pass; turns identity scoring on.
    colour_history: frames of per-track colour smoothing; 1 (the default) matches each
        restored face to its own input face exactly. Longer histories also steady an input
        whose exposure flickers, but lag behind real changes of the face (a mouth opening):
        at 4, an unchanged face on talk_real_1 came back at 38 dB instead of 53.
    colour_strength: 0-1, how much of the colour match is applied; 0 pastes faces in the
        restorer's own colours (for measuring what the colour stage does).
    track: association, smoothing and skip settings of the face tracker.
    """

    model: str = "gfpgan-1.3"
    detector: str = "retinaface-resnet50"
    detector_size: int = 640
    fidelity: float = 1.0
    half: bool = True
    parse: bool = True
    identity: bool = True
    identity_guard: bool = False
    colour_history: float = 1.0
    colour_strength: float = 1.0
    track: TrackConfig = field(default_factory=TrackConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fidelity <= 1.0:
            raise ConfigError(f"face.fidelity: {self.fidelity} must be within [0, 1]")
        if self.detector_size < 32:
            raise ConfigError(f"face.detector_size: {self.detector_size} must be at least 32")
        if self.colour_history < 1:
            raise ConfigError(f"face.colour_history: {self.colour_history} must be at least 1")
        if not 0.0 <= self.colour_strength <= 1.0:
            raise ConfigError(f"face.colour_strength: {self.colour_strength} must be within "
                              "[0, 1]")
        if self.detector not in DETECTORS and not self.detector.endswith((".pth", ".pt")):
            raise ConfigError(f"face.detector: {self.detector!r} is not one of "
                              f"{list(DETECTORS)} or a .pth file")


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "auto"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str = "auto"


@dataclass(frozen=True)
class ModelsConfig:
    dir: str | None = None
    download: bool = True
    strict: bool = False


@dataclass(frozen=True)
class RunConfig:
    device: str = "auto"
    scale: int = 2
    batch_size: int = 4
    queue_frames: int = 16  # frames buffered between each pair of threads
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"scale: {self.scale!r} is not one of {list(SCALES)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be at least 1")
        if self.queue_frames < 1:
            raise ConfigError(f"queue_frames: {self.queue_frames} must be at least 1")
        if not 0 <= self.encode.crf <= 63:
            raise ConfigError(f"encode.crf: {self.encode.crf} must be within 0..63")
        if self.background.tile and self.background.tile < 32:
            raise ConfigError(f"background.tile: {self.background.tile} must be 0 or >= 32")


def preset_path(name: str) -> Path:
    """Path of a preset by name (``default``, ``fast``, ...) or a YAML file path."""
    for base in _preset_dirs():
        candidate = base / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for base in _preset_dirs() for p in base.glob("*.yaml")})
    raise ConfigError(f"preset {name!r} not found; known presets: {', '.join(known)}")


def _preset_dirs() -> list[Path]:
    # Installed wheel: vidrestore/configs; source checkout: configs/ beside the package.
    dirs = [Path(str(resources.files("vidrestore"))) / "configs"]
    dirs.append(Path(__file__).resolve().parent.parent / "configs")
    return [d for d in dirs if d.is_dir()]


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two plain dicts; ``None`` values in `override` count as not given."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(*layers: dict[str, Any]) -> RunConfig:
    """Merge layers in order (later wins) and build the frozen config once."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return _build(RunConfig, merged, prefix="")


def load_config(
    preset: str = "default",
    config_file: str | os.PathLike[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> RunConfig:
    layers = [read_yaml(preset_path(preset))]
    if config_file is not None:
        layers.append(read_yaml(config_file))
    env_models_dir = os.environ.get("VIDRESTORE_HOME")
    if env_models_dir:
        layers.insert(0, {"models": {"dir": env_models_dir}})
    layers.append(flags or {})
    return build_config(*layers)


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; known keys: "
            + ", ".join(prefix + n for n in sorted(names))
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        path = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=path + ".")
        else:
            kwargs[name] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ConfigError(f"{path}: {value!r} is not a valid {names}")

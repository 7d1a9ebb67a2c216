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
from .failures import FailureLimit

SCALES = (1, 2, 4)
# torch.compile modes (see vidrestore.stages.compiled); "off" runs the networks eagerly.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")
HWDECODE = ("none", "auto", "cuda")


def _check_compile(value: str, path: str) -> None:
    if value not in COMPILE_MODES:
        raise ConfigError(f"{path}: {value!r} is not one of {list(COMPILE_MODES)}")


@dataclass(frozen=True)
class BackgroundConfig:
    model: str = "realesrgan-x2plus"
    tile: int = 0  # 0: automatic (whole frame on CUDA with out-of-memory fallback, 512 on CPU)
    tile_pad: int = 16
    half: bool = True
    compile: str = "off"  # torch.compile mode for the upscaler, one of COMPILE_MODES

    def __post_init__(self) -> None:
        _check_compile(self.compile, "background.compile")


@dataclass(frozen=True)
class TrackConfig:
    """Settings of `FaceTracker` and `detect_scene_cuts`.

    Association (see the module docstring):
      min_iou: least IoU between a track's predicted box and a detection to pair them.
      max_landmark_distance: most mean landmark distance, in face sizes, to pair them.
      landmark_weight: weight of the landmark distance against 1 - IoU in the cost.
      max_missed: frames in a row a track may go undetected and keep its id (a blink of the
        detector, a hand passing); at 25 fps the default bridges 0.2 s.
      restore_missed: a bridged track still gives a face in the frames its detection was
        missed, at the place its motion predicts, so the face is restored in every frame
        rather than blinking back to the unrestored input for a frame. Off for files (a
        missed frame is rare with the full-size detector, and there the log keeps to what
        was detected); on in the live preset, whose small, low-resolution detector misses
        more often and where a blink shows at once.
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
    restore_missed: bool = False
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
IDENTITY_ENCODERS = ("auto", "arcface", "dlib")


@dataclass(frozen=True)
class FaceConfig:
    """The face path (see `vidrestore.stages.face_path`).

    model: restorer name, a .pth file, "passthrough" (the whole path, faces unchanged) or
        "none" (no face path).
    detector: RetinaFace backbone, or a .pth file; falls back to the bundled MobileNet-0.25.
    detector_size: longest side, in pixels, frames are detected at (larger ones shrink).
    fidelity: 0-1, restored face weight against the input face (1: fully restored);
        for CodeFormer, the network's own fidelity weight w (1: closest to the input).
    half: bf16/fp16 on CUDA where the models support it.
    parse: use ParseNet's face mask for paste-back when its weights are present.
    identity: score each restored face against its input (see identity_encoder).
    identity_encoder: "auto" (ArcFace buffalo_l when its weights are in the model cache, else
        the bundled dlib encoder), "arcface" (downloaded when allowed, an error when it cannot
        be had) or "dlib".
    identity_guard: blend faces that fail the identity threshold back toward the input
        (fidelity 0.75, 0.5, 0.25, 0) until they pass; turns identity scoring on.
    colour_history: frames of per-track colour smoothing; 1 (the default) matches each
        restored face to its own input face exactly. Longer histories also steady an input
        whose exposure flickers, but lag behind real changes of the face (a mouth opening):
        at 4, an unchanged face on talk_real_1 came back at 38 dB instead of 53.
    colour_strength: 0-1, how much of the colour match is applied; 0 pastes faces in the
        restorer's own colours (for measuring what the colour stage does).
    temporal_strength: 0-1 (1 excluded), the most weight a restored face's steadied face of
        the frame before gets, carried along the motion (`stages.face_temporal`); 0: off.
    temporal_threshold: local luma difference (0-1 units) above which a restored face is
        taken as it is (a real change, not flicker).
    track: association, smoothing and skip settings of the face tracker.
    compile: torch.compile mode for the restorer (one of COMPILE_MODES; "off": eager).
    """

    model: str = "gfpgan-1.3"
    detector: str = "retinaface-resnet50"
    detector_size: int = 640
    fidelity: float = 1.0
    half: bool = True
    parse: bool = True
    identity: bool = True
    identity_encoder: str = "auto"
    identity_guard: bool = False
    colour_history: float = 1.0
    colour_strength: float = 1.0
    temporal_strength: float = 0.85
    temporal_threshold: float = 0.2
    track: TrackConfig = field(default_factory=TrackConfig)
    compile: str = "off"

    def __post_init__(self) -> None:
        _check_compile(self.compile, "face.compile")
        if not 0.0 <= self.fidelity <= 1.0:
            raise ConfigError(f"face.fidelity: {self.fidelity} must be within [0, 1]")
        if self.detector_size < 32:
            raise ConfigError(f"face.detector_size: {self.detector_size} must be at least 32")
        if self.colour_history < 1:
            raise ConfigError(f"face.colour_history: {self.colour_history} must be at least 1")
        if self.identity_encoder not in IDENTITY_ENCODERS:
            raise ConfigError(f"face.identity_encoder: {self.identity_encoder!r} is not one of "
                              f"{list(IDENTITY_ENCODERS)}")
        if not 0.0 <= self.colour_strength <= 1.0:
            raise ConfigError(f"face.colour_strength: {self.colour_strength} must be within "
                              "[0, 1]")
        if not 0.0 <= self.temporal_strength < 1.0:
            raise ConfigError(f"face.temporal_strength: {self.temporal_strength} must be "
                              "within [0, 1)")
        if self.temporal_threshold <= 0:
            raise ConfigError(f"face.temporal_threshold: {self.temporal_threshold} must be "
                              "positive")
        if self.detector not in DETECTORS and not self.detector.endswith((".pth", ".pt")):
            raise ConfigError(f"face.detector: {self.detector!r} is not one of "
                              f"{list(DETECTORS)} or a .pth file")


@dataclass(frozen=True)
class WhiteBalanceConfig:
    """Gray-world white balance: each channel is scaled so that the channel means agree.

    strength: 0-1, the fraction of the correction applied (gains raised to this power).
    max_gain: bound on a channel's gain (and 1/max_gain below), so a frame that is nearly
        one colour (a blue sky, a red wall) is not pushed into grey.
    smoothing_s: time constant, in seconds, of the gains' moving average over a video's
        frames, so they do not flicker from frame to frame; 0 uses each frame's own.
    """

    enabled: bool = False
    strength: float = 1.0
    max_gain: float = 4.0
    smoothing_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"preprocess.white_balance.strength: {self.strength} must be "
                              "within [0, 1]")
        if self.max_gain < 1:
            raise ConfigError(f"preprocess.white_balance.max_gain: {self.max_gain} must be "
                              "at least 1")
        if self.smoothing_s < 0:
            raise ConfigError(f"preprocess.white_balance.smoothing_s: {self.smoothing_s} must "
                              "not be negative")


@dataclass(frozen=True)
class ClaheConfig:
    """Contrast-limited adaptive histogram equalisation of the CIE L* lightness only, so
    hue and chroma stay as they are.

    clip_limit: OpenCV's clipLimit (histogram bins clipped at this multiple of the mean).
    grid: tiles along each side of the frame.
    """

    enabled: bool = False
    clip_limit: float = 2.0
    grid: int = 8

    def __post_init__(self) -> None:
        if self.clip_limit <= 0:
            raise ConfigError(f"preprocess.clahe.clip_limit: {self.clip_limit} must be positive")
        if self.grid < 1:
            raise ConfigError(f"preprocess.clahe.grid: {self.grid} must be at least 1")


@dataclass(frozen=True)
class DenoiseConfig:
    """Non-local means (Buades, Coll, Morel 2005) on the RGB frame.

    strength: OpenCV's h, in 8-bit levels: patches whose mean squared difference is h^2
        weigh e^-1 of an identical patch. About the noise's standard deviation.
    patch: side of the compared patches, pixels (odd).
    search: side of the window searched for similar patches, pixels (odd); the cost grows
        with its square.
    """

    enabled: bool = False
    strength: float = 10.0
    patch: int = 7
    search: int = 11

    def __post_init__(self) -> None:
        if self.strength <= 0:
            raise ConfigError(f"preprocess.denoise.strength: {self.strength} must be positive")
        for name in ("patch", "search"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ConfigError(f"preprocess.denoise.{name}: {value} must be odd and positive")


@dataclass(frozen=True)
class PreprocessConfig:
    """Optional clean-up of the decoded frames before anything else sees them; each step
    is off by default. They run in this order: white balance, denoise, CLAHE (which would
    otherwise sharpen the noise as well as the picture)."""

    white_balance: WhiteBalanceConfig = field(default_factory=WhiteBalanceConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    clahe: ClaheConfig = field(default_factory=ClaheConfig)

    @property
    def enabled(self) -> bool:
        return self.white_balance.enabled or self.denoise.enabled or self.clahe.enabled


@dataclass(frozen=True)
class DecodeConfig:
    """hwaccel: "none" decodes in software; "cuda" decodes on the GPU through FFmpeg's
    NVDEC support (an error where there is none); "auto" tries it and falls back to
    software with one log line."""

    hwaccel: str = "none"

    def __post_init__(self) -> None:
        if self.hwaccel not in HWDECODE:
            raise ConfigError(f"decode.hwaccel: {self.hwaccel!r} is not one of {list(HWDECODE)}")


@dataclass(frozen=True)
class EncodeConfig:
    codec: str = "auto"
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str = "auto"
    threads: int = 0  # encoder threads; 0: the encoder's own choice (x264: 1.5 per core)


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
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    # Failed frames a run accepts before it stops: N, P% or auto (0 for an image, 1% of a
    # video); see failures.FailureLimit.
    max_failed_frames: str = "auto"

    def __post_init__(self) -> None:
        FailureLimit.parse(self.max_failed_frames, still_image=False)
        if self.scale not in SCALES:
            raise ConfigError(f"scale: {self.scale!r} is not one of {list(SCALES)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be at least 1")
        if self.queue_frames < 1:
            raise ConfigError(f"queue_frames: {self.queue_frames} must be at least 1")
        if not 0 <= self.encode.crf <= 63:
            raise ConfigError(f"encode.crf: {self.encode.crf} must be within 0..63")
        if self.encode.threads < 0:
            raise ConfigError(f"encode.threads: {self.encode.threads} must not be negative")
        if self.background.tile and self.background.tile < 32:
            raise ConfigError(f"background.tile: {self.background.tile} must be 0 or >= 32")


def x_display() -> str | None:
    """The X display a window would open on ($DISPLAY), or None on a headless machine."""
    return os.environ.get("DISPLAY") or None


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
    return build_dataclass(RunConfig, merged)


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


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """`cls` (a frozen dataclass, nested ones included) from plain YAML-shaped data: each
    value checked against its field's type, an unknown key refused with its dotted path."""
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
            kwargs[name] = build_dataclass(hint, value, prefix=path + ".")
        else:
            kwargs[name] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin = typing.get_origin(kind)
        if origin is tuple and isinstance(value, (list, tuple)):  # tuple[X, ...]
            return tuple(_coerce(v, typing.get_args(kind)[0], path) for v in value)
        if origin is dict and isinstance(value, dict):
            return dict(value)
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

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
class FaceConfig:
    model: str = "gfpgan-1.3"


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

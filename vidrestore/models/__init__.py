"""Model weights: the registry, the cache and downloads, safe loading, bundled fallbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .fetch import ProgressCallback
from .registry import REGISTRY, FileDigest, ModelSpec, get_spec, official_names
from .store import ModelStatus, ModelStore, ResolvedModel, VerifyResult, default_cache_dir

if TYPE_CHECKING:
    from .loaders import load_image_model


def __getattr__(name: str):
    # The loader pulls in torch and spandrel (seconds); listing or fetching models does not
    # need them, so they are imported on first use.
    if name == "load_image_model":
        from .loaders import load_image_model

        return load_image_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REGISTRY",
    "FileDigest",
    "ModelSpec",
    "ModelStatus",
    "ModelStore",
    "ProgressCallback",
    "ResolvedModel",
    "VerifyResult",
    "default_cache_dir",
    "get_spec",
    "load_image_model",
    "official_names",
]

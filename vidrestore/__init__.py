"""vidrestore: restore faces in video and images.

The public API (see the README's "As a library"): `restore`, `Restorer`, `load_config`,
`RunConfig`, `ModelStore`, `load_model` (any model by name or file, for a role, with its
capabilities) and the errors of `vidrestore.errors`. Everything else is
internal. Names are imported on first use, so `import vidrestore` stays light and the
process settings that must come before torch (`memory.settle_process`) still can.
"""

from __future__ import annotations

__version__ = "0.1.0"

_PUBLIC = {
    "restore": "api", "Restorer": "api", "load_config": "api", "Summary": "api",
    "Progress": "api", "RunConfig": "config", "ModelStore": "models",
    "load_model": "models.factory", "LoadedModel": "models.factory",
    "VidrestoreError": "errors", "ConfigError": "errors", "InputError": "errors",
    "OutputError": "errors", "ModelError": "errors", "DeviceError": "errors",
    "EncodeError": "errors", "ProcessingError": "errors", "Cancelled": "errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'vidrestore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)

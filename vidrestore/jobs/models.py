"""Model files for a batch: fetched once, on the driver, before any task starts.

Workers then read them from the model folder the driver used (its own cache, or the shared
folder given with --models-dir) with downloads off, so no worker downloads a file the
driver already has, and a batch of 500 files does not fetch the weights 500 times.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..config import RunConfig
from ..errors import ModelError

log = logging.getLogger(__name__)


def models_named(cfg: RunConfig) -> list[str]:
    """The registry names a run with `cfg` may load (weight files given by path aside)."""
    names = [cfg.background.model]
    if cfg.face.model not in ("none", "passthrough"):
        names.append(cfg.face.model)
    if cfg.face.model != "none":
        names.append(cfg.face.detector)
        if cfg.face.parse:
            names.append("parsenet")
    return names


def prepare_models(cfg: RunConfig) -> RunConfig:
    """Fetch (when downloads are on) the official files `cfg` names that are missing from
    the model folder; return the config the workers get: that folder, downloads off."""
    from ..models import ModelStore
    from ..models.registry import REGISTRY

    store = ModelStore(cfg.models)
    for name in models_named(cfg):
        spec = REGISTRY.get(name)
        if spec is None or spec.bundled or store.path_for(name).exists():
            continue
        if not cfg.models.download:
            continue  # each worker falls back (or fails, when strict) as a single run would
        try:
            store.download(name)
        except ModelError as exc:
            log.warning("%s; the workers will use what a single run falls back to", exc)
    return replace(cfg, models=replace(cfg.models, dir=str(store.cache_dir), download=False))

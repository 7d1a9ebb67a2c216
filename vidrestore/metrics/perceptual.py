"""LPIPS (Zhang et al. 2018, v0.1, AlexNet): a learned perceptual distance between images.

The `lpips` package (PyPI) supplies the network and, inside its wheel, the linear layers
(`lpips-alex`, bundled). The AlexNet trunk is torchvision's ImageNet AlexNet
(`alexnet-imagenet`, alexnet-owt-7be5be79.pth), which has to be downloaded once
(`vidrestore models download alexnet-imagenet`). The net is built with the trunk randomly
initialised (so torchvision downloads nothing) and both files are then loaded from the model
store with `torch.load(weights_only=True)`: tensors only, digests checked by the store.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelError
from ..models.reader import read_state_dict
from ..models.store import ModelStore

log = logging.getLogger(__name__)

LPIPS_LINEAR = "lpips-alex"  # registry names
LPIPS_TRUNK = "alexnet-imagenet"
# AlexNet's first conv (11 px, stride 4, pad 2) and two 3 px max-pools leave nothing of an
# image under 31 px for the fifth layer; smaller images give NaN.
MIN_SIDE = 31


class Lpips:
    """LPIPS v0.1 on the AlexNet trunk, on one device, in eval mode without gradients."""

    name = "lpips-alex-v0.1"

    def __init__(self, trunk: str | Path, linear: str | Path,
                 device: torch.device | str = "cpu") -> None:
        try:
            import lpips
        except ImportError as exc:
            raise ModelError("LPIPS needs the lpips package: pip install lpips==0.1.4") from exc
        with warnings.catch_warnings():  # lpips asks torchvision with the old `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                              verbose=False)
        state = net.state_dict()
        state.update(_trunk_state(net, _read(trunk, "AlexNet trunk")))
        state.update(_linear_state(net, _read(linear, "LPIPS linear layers")))
        net.load_state_dict(state, strict=True)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N,) float64 CPU distances of a and b: (N, 3, H, W) RGB in [0, 1], same shape, any
        device (moved to the metric's). 0 for identical images; NaN under `MIN_SIDE` px."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS takes two (N, 3, H, W) batches of one shape, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[-2:]) < MIN_SIDE:
            return torch.full((a.shape[0],), math.nan, dtype=torch.float64)
        a = a.to(self.device, torch.float32)
        b = b.to(self.device, torch.float32)
        return self.net(a, b, normalize=True).flatten().double().cpu()


def open_lpips(store: ModelStore, device: torch.device | str = "cpu"
               ) -> tuple[Lpips | None, str | None]:
    """(metric, None) when the AlexNet trunk is in the store's cache, else (None, reason).

    Nothing is downloaded here; a file that fails its digest or does not load also gives
    None and the reason, since a missing figure should not stop a run.
    """
    trunk_path = store.path_for(LPIPS_TRUNK)
    if not trunk_path.is_file():
        return None, (f"not measured: the LPIPS trunk ({LPIPS_TRUNK}) is not at {trunk_path}; "
                      f"run `vidrestore models download {LPIPS_TRUNK}`")
    try:
        trunk = store.locate(LPIPS_TRUNK, allow_fallback=False)
        linear = store.locate(LPIPS_LINEAR)
        return Lpips(trunk.path, linear.path, device), None
    except ModelError as exc:
        log.warning("LPIPS is off: %s", exc)
        return None, f"not measured: {exc}"


def _read(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    return read_state_dict(path, what=what)


def _trunk_state(net, trunk: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's `features.<i>.<param>` keys under lpips's `net.slice<k>.<i>.<param>`.

    lpips keeps each layer's torchvision index inside its slices, so the index in our key
    names the torchvision key; the classifier's tensors in the file are not needed."""
    out = {}
    for key, value in net.net.state_dict().items():
        source = "features." + key.split(".", 1)[1]  # slice2.3.weight -> features.3.weight
        out[f"net.{key}"] = _fitting(trunk, source, value, "AlexNet trunk")
    return out


def _linear_state(net, linear: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The v0.1 file's `lin<k>.model.1.weight`, also under lpips's `lins.<k>` aliases."""
    out = {}
    for key, value in net.state_dict().items():
        if key.startswith("lin") and not key.startswith("lins."):
            out[key] = _fitting(linear, key, value, "LPIPS linear layers")
            out[key.replace("lin", "lins.", 1)] = out[key]
    return out


def _fitting(state: Mapping[str, torch.Tensor], key: str, like: torch.Tensor,
             what: str) -> torch.Tensor:
    tensor = state.get(key)
    if tensor is None or tensor.shape != like.shape:
        found = "missing" if tensor is None else f"of shape {tuple(tensor.shape)}"
        raise ModelError(f"the {what} do not fit: {key} is {found}, expected "
                         f"{tuple(like.shape)}")
    return tensor.to(like.dtype)

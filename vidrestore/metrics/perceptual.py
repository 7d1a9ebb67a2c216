"""LPIPS (Zhang et al. 2018, v0.1, AlexNet): a learned perceptual distance between images.

The `lpips` package (PyPI) supplies the network and, inside its wheel, the linear layers
(`lpips-alex`, bundled). The AlexNet trunk is torchvision's ImageNet AlexNet
(`alexnet-imagenet`, alexnet-owt-7be5be79.pth), which has to be downloaded once
(`vidrestore models download alexnet-imagenet`). The model factory (role `lpips`,
`models/arch/lpips_net.py`) builds the net with the trunk randomly initialised (so
torchvision downloads nothing) and loads both files from the model store through the one
safe reader: tensors only, digests checked by the store. `Lpips` takes that network.
"""

from __future__ import annotations

import logging
import math

import torch

from ..errors import ModelError
from ..models.factory import LPIPS_LINEAR, LPIPS_TRUNK, load_model
from ..models.store import ModelStore

log = logging.getLogger(__name__)

__all__ = ["LPIPS_LINEAR", "LPIPS_TRUNK", "MIN_SIDE", "Lpips", "open_lpips"]

# AlexNet's first conv (11 px, stride 4, pad 2) and two 3 px max-pools leave nothing of an
# image under 31 px for the fifth layer; smaller images give NaN.
MIN_SIDE = 31


class Lpips:
    """LPIPS v0.1 on the AlexNet trunk, on the device its network is on, in eval mode
    without gradients.

    net: the `lpips.LPIPS` network as the model factory loads it (`load_model(store,
    "lpips-alex", "lpips", device).module`: both weight files read, checked and fitted).
    """

    name = "lpips-alex-v0.1"

    def __init__(self, net: torch.nn.Module) -> None:
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"Lpips takes the loaded LPIPS network, not {type(net).__name__}; "
                            "see open_lpips")
        self.net = net.eval().requires_grad_(False)
        self.device = next(net.parameters()).device

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
        loaded = load_model(store, LPIPS_LINEAR, "lpips", device, option="LPIPS")
    except ModelError as exc:
        log.warning("LPIPS is off: %s", exc)
        return None, f"not measured: {exc}"
    return Lpips(loaded.module), None

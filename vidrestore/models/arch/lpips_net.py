"""The LPIPS v0.1 AlexNet network (Zhang et al. 2018) with its two weight files loaded:
torchvision's ImageNet AlexNet trunk (alexnet-owt-7be5be79.pth) and the linear layers that
ship in the `lpips` wheel. The `lpips` package supplies the module, built with its trunk
randomly initialised (so torchvision downloads nothing); both files are read through
`reader.read_state_dict` (tensors only) and must fit it exactly. The model factory builds
it; `metrics/perceptual.py` measures with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ...errors import ModelError
from ..reader import read_state_dict


def load_lpips_net(trunk: str | Path, linear: str | Path):
    """`lpips.LPIPS` (alex, v0.1) with both files loaded, eval mode, gradients off, on CPU."""
    try:
        import lpips
    except ImportError as exc:
        raise ModelError("LPIPS needs the lpips package: pip install lpips==0.1.4") from exc
    with warnings.catch_warnings():  # lpips asks torchvision with the old `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                          verbose=False)
    state = net.state_dict()
    state.update(_trunk_state(net, read_state_dict(trunk, what="AlexNet trunk")))
    state.update(_linear_state(net, read_state_dict(linear, what="LPIPS linear layers")))
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


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

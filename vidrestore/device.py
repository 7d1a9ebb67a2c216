"""Pick the working device from the `device` option."""

from __future__ import annotations

import re

import torch

from .errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """`auto` picks the first CUDA device when there is one, else the CPU."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise DeviceError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this machine has no usable CUDA "
                          "device; use --device cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)

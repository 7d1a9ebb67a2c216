"""Opt-in `torch.compile` for the networks that see few input shapes.

GFPGAN always sees 512x512 faces (the restorer pads each chunk of faces to one of a few
batch sizes), and the upscaler sees one tile or frame shape per batch size; with
`dynamic=False` each of those shapes is compiled once and then reused. The module is
compiled in place (`nn.Module.compile`), so the spandrel descriptor around it, with its
padding and clamping, stays as it is.

The CUDA-graph modes ("reduce-overhead", "max-autotune") replay into buffers that the next
call overwrites: callers copy what they keep (`CompiledNet.keep`) before the next call.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class CompiledNet:
    """How one network runs: eagerly, or compiled in one of `config.COMPILE_MODES`."""

    def __init__(self, module: nn.Module, mode: str, device: torch.device) -> None:
        self.mode = mode
        self.cuda_graphs = mode in CUDA_GRAPH_MODES and device.type == "cuda"
        if mode != "off":
            module.compile(mode=None if mode == "default" else mode, dynamic=False)
            log.info("torch.compile(%s, mode=%s): the first batch of each shape compiles",
                     type(module).__name__, mode)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def step(self) -> None:
        """Call before each forward: a new CUDA-graph generation may reuse old outputs."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def keep(self, output: torch.Tensor) -> torch.Tensor:
        """`output` as a tensor that the next forward will not overwrite."""
        return output.clone() if self.cuda_graphs else output

"""Face restoration: every aligned face of a batch through the restorer in one forward pass.

The restorer sees aligned, square face crops (GFPGAN: 512x512, FFHQ alignment) and returns
crops of the same size; alignment and paste-back happen elsewhere. Faces are batched across
frames and tracks, in chunks of at most `max_batch` to bound device memory.

GFPGAN is called directly rather than through spandrel's `ImageModelDescriptor.__call__`:

* spandrel 0.4.2's GFPGAN `call_fn` is `model(image)[0]`, so the network would get the
  [0, 1] image unchanged, while GFPGAN was trained on [-1, 1] inputs and returns [-1, 1]
  (GFPGANer normalises with mean 0.5 / std 0.5 and reads the output with min_max=(-1, 1)).
  We map in and out here, once. (spandrel's RestoreFormer `call_fn` does normalise; other
  face models go through the descriptor and its [0, 1] contract.)
* GFPGAN's StyleGAN2 decoder adds fresh Gaussian noise in every style conv on every call by
  default (`randomize_noise=True`): the same face gives a different output each frame, which
  shows as flicker, and a face's result depends on which batch it is in. We pass
  `randomize_noise=False`, so the decoder uses its stored `stylegan_decoder.noises.noise*`
  buffers (saved in the official weight files, so fixed across runs and machines). Those are
  (1, 1, h, w) and broadcast over the batch, which keeps faces independent of each other.

CodeFormer (spandrel-extra-arches) is called directly too, for the same reason: its `call_fn`
feeds the [0, 1] image to a network trained on [-1, 1] (the official inference normalises
with mean 0.5 / std 0.5 and reads the output with min_max=(-1, 1)). Its fidelity weight w is
the restorer's `fidelity` (0: the most restoration, 1: the closest to the input), passed to
the network, not blended afterwards; adain is always on in that module, as the official
inference sets it. It runs under autocast in bf16: its codebook lookup multiplies a float32
one-hot matrix by the codebook, which a bf16 module refuses outside autocast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from spandrel import ImageModelDescriptor
from spandrel.architectures.GFPGAN import GFPGAN

from ..errors import ModelError
from ..models.capabilities import pick_dtype
from .compiled import CompiledNet

log = logging.getLogger(__name__)

GFPGAN_FACE_SIZE = 512  # the encoder ends in a linear layer sized for 512 px inputs
CODEFORMER_FACE_SIZE = 512  # its transformer's 256 positions are a 16 x 16 grid at 512 px
CODEFORMER = "CodeFormer"  # spandrel-extra-arches' architecture id

ForwardFn = Callable[[ImageModelDescriptor, torch.Tensor], torch.Tensor]


class FaceRestorer:
    """Restores aligned face crops with a spandrel face model (GFPGAN, RestoreFormer++,
    CodeFormer, vidrestore-face-v2).

    Runs bf16 on CUDA when the model supports it (GFPGAN: bf16 yes, fp16 no), else fp16 when
    supported, else float32; float32 on the CPU or with `half=False`. `dtype` overrides that
    choice (bf16 on a CPU, to check the reduced-precision path there). The output is
    `fidelity * restored + (1 - fidelity) * input`: 1 is fully restored, 0 the input face;
    for CodeFormer `fidelity` is the network's own fidelity weight w instead (see above).

    With `compile` other than "off" the network is compiled for fixed shapes, and each chunk
    of faces is padded with blank faces to a power of two (at most `max_batch`), so a few
    compiled shapes serve any number of faces.
    """

    def __init__(self, model: ImageModelDescriptor, device: torch.device, *, half: bool = True,
                 fidelity: float = 1.0, max_batch: int = 16, compile: str = "off",
                 dtype: torch.dtype | None = None,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        if not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if model.scale != 1 or model.input_channels != 3 or model.output_channels != 3:
            raise ModelError(f"{model.architecture.name} is a x{model.scale} model with "
                             f"{model.input_channels}->{model.output_channels} channels; a face "
                             "restorer must be x1 RGB->RGB (GFPGAN, RestoreFormer++)")
        self.device = device
        self.on_fallback = on_fallback  # hears of each fallback taken (out-of-memory halving)
        self.dtype = dtype or pick_dtype(model, device, half)
        self.fidelity = fidelity
        self.max_batch = max_batch
        self.is_gfpgan = isinstance(model.model, GFPGAN)
        self.is_codeformer = model.architecture.id == CODEFORMER
        # GFPGAN's modulated convs hold 5-D weights and flatten activations with .view(),
        # which needs NCHW-contiguous tensors; elsewhere channels_last suits cuDNN on CUDA.
        self.channels_last = device.type == "cuda" and not self.is_gfpgan
        self.model = model.to(device).to(self.dtype).eval()
        if self.channels_last:
            self.model.model.to(memory_format=torch.channels_last)
        self._forward: ForwardFn = _gfpgan_forward if self.is_gfpgan else _descriptor_forward
        if self.is_codeformer:
            self._forward = functools.partial(_codeformer_forward, fidelity=fidelity)
        self.compiled = CompiledNet(self.model.model, compile, device)

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        """Restore K faces.

        faces: (K, 3, S, S) float RGB in [0, 1] on `self.device` (S = 512 for GFPGAN).
        Returns (K, 3, S, S) float32 RGB in [0, 1] on `self.device`; `faces` is not changed.
        The same face gives the same output whatever else is in the batch, and every call.
        """
        self._check(faces)
        faces = faces.to(self.device, torch.float32)
        if faces.shape[0] == 0 or not self.changes_faces:
            return faces.clone()
        restored = self._run_with_fallback(faces)
        if self.fidelity < 1.0 and not self.is_codeformer:
            restored = torch.lerp(faces, restored, self.fidelity)
        return restored

    @property
    def changes_faces(self) -> bool:
        """False at fidelity 0 (the input face comes back; CodeFormer's w is no such mix)."""
        return self.fidelity > 0.0 or self.is_codeformer

    def _check(self, faces: torch.Tensor) -> None:
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[2] != faces.shape[3]:
            raise ValueError(f"faces must be (K, 3, S, S), got {tuple(faces.shape)}")
        if not faces.is_floating_point():
            raise ValueError(f"faces must be float in [0, 1], got {faces.dtype}")
        if self.is_gfpgan and faces.shape[-1] != GFPGAN_FACE_SIZE:
            raise ValueError(f"GFPGAN takes {GFPGAN_FACE_SIZE}x{GFPGAN_FACE_SIZE} aligned faces, "
                             f"got {faces.shape[-1]}x{faces.shape[-1]}")
        if self.is_codeformer and faces.shape[-1] != CODEFORMER_FACE_SIZE:
            raise ValueError(f"CodeFormer takes {CODEFORMER_FACE_SIZE}x{CODEFORMER_FACE_SIZE} "
                             f"aligned faces, got {faces.shape[-1]}x{faces.shape[-1]}")

    def _run_with_fallback(self, faces: torch.Tensor) -> torch.Tensor:
        while True:
            try:
                return self._run_chunks(faces)
            except torch.OutOfMemoryError:
                if self.device.type != "cuda" or self.max_batch == 1:
                    raise
                torch.cuda.empty_cache()
                self.max_batch //= 2  # remembered for the next batches
                log.warning("out of memory in the face restorer; retrying %d faces at a time",
                            self.max_batch)
                if self.on_fallback:
                    self.on_fallback(f"face restorer batch halved to {self.max_batch} faces "
                                     "(out of memory)")

    @torch.no_grad()  # not inference_mode: later stages may update the result in place
    def _run_chunks(self, faces: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(faces)
        for start in range(0, faces.shape[0], self.max_batch):
            chunk = faces[start:start + self.max_batch].to(self.dtype)
            count = chunk.shape[0]
            if self.compiled.enabled:
                chunk = _pad_batch(chunk, _bucket(count, self.max_batch))
            if self.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            self.compiled.step()
            out[start:start + count] = self._forward(self.model, chunk)[:count].float()
        log.debug("restored %d faces in chunks of %d (%s)", faces.shape[0], self.max_batch,
                  self.dtype)
        return out


class PassthroughRestorer:
    """`--face-model passthrough`: faces come back unchanged (checks alignment and seams)."""

    fidelity = 1.0
    changes_faces = False

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: (K, 3, S, S) float in [0, 1]; returns the same tensor, not a copy."""
        if faces.ndim != 4 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (K, 3, S, S), got {tuple(faces.shape)}")
        return faces


def _bucket(count: int, limit: int) -> int:
    """The smallest power of two >= count, capped at `limit` (count <= limit)."""
    return min(1 << (count - 1).bit_length(), limit)


def _pad_batch(chunk: torch.Tensor, size: int) -> torch.Tensor:
    """`chunk` with blank (zero) faces appended up to `size`; faces do not affect each other."""
    if chunk.shape[0] == size:
        return chunk
    blank = chunk.new_zeros((size - chunk.shape[0], *chunk.shape[1:]))
    return torch.cat([chunk, blank])


def gfpgan_forward(net: GFPGAN, faces: torch.Tensor) -> torch.Tensor:
    """GFPGANv1Clean on (K, 3, 512, 512) faces in [0, 1]: normalised to [-1, 1] in, back to
    [0, 1] out (not clamped, so training keeps its gradients), with the stored noise. The
    run and `vidrestore train` share it."""
    return (net(faces * 2 - 1, return_rgb=False, randomize_noise=False)[0] + 1) / 2


def _gfpgan_forward(model: ImageModelDescriptor, faces: torch.Tensor) -> torch.Tensor:
    return gfpgan_forward(model.model, faces).clamp_(0, 1)


def _codeformer_forward(model: ImageModelDescriptor, faces: torch.Tensor, *,
                        fidelity: float) -> torch.Tensor:
    """CodeFormer on [0, 1] faces with fidelity weight w: [-1, 1] in, [0, 1] out, as the
    official `net(x, w=w, adain=True)[0]` (that module's `weight` is the official `w`)."""
    reduced = faces.dtype in (torch.bfloat16, torch.float16)
    with torch.autocast(faces.device.type, dtype=faces.dtype, enabled=reduced):
        raw = model.model(faces * 2 - 1, weight=fidelity)[0]
    return ((raw.float() + 1) / 2).clamp_(0, 1)


def _descriptor_forward(model: ImageModelDescriptor, faces: torch.Tensor) -> torch.Tensor:
    """spandrel's own call: [0, 1] in and out, any normalisation done by its `call_fn`."""
    return model(faces)

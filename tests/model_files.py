"""Random-initialised weight files in official layouts, loaded by tests through the real loaders.

Plain functions, no pytest: each writes one file to the path it is given and returns the path.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from vidrestore.models.arch.restoreformer import CHECKPOINT_PREFIX, RestoreFormerPlusPlus

# Official RestoreFormer++ sizes; width 32 keeps every key of the release (the same levels,
# blocks, attention layers and 1x1 shortcuts) at a quarter of the compute.
RFPP_FULL = {}
RFPP_SMALL = {"width": 32, "z_channels": 64, "codes": 64, "code_dim": 32}


def restoreformer_pp_checkpoint(path: Path, *, seed: int = 0, **sizes) -> Path:
    """A random RestoreFormer++ written as the release `RestoreFormer++.ckpt` is laid out.

    The release file (294,028,815 bytes) holds the network's 73,472,579 float32 tensors
    under 'state_dict', each key prefixed 'vqvae.', in a dict of its own (a module's
    state_dict() would carry a `_metadata` attribute, about 17 kB of pickle the file has no
    room for), beside about 40 to 100 bytes of other top-level pickle: room for the three scalars
    of a weights-only Lightning checkpoint written here, and for nothing bigger (optimizer
    states, callbacks, hyper-parameters, training-only loss modules). Its exact size also
    fits a zip written through an in-memory buffer ('archive/' record prefix), which is how
    Lightning saves: so is this one.

    `sizes` are `RestoreFormerPlusPlus` arguments (RFPP_SMALL for a fast model with every
    key of the release). Codes are drawn from N(0, 1), so that different positions pick
    different codes.
    """
    torch.manual_seed(seed)
    net = RestoreFormerPlusPlus(**sizes)
    with torch.no_grad():
        net.quantize.embedding.weight.normal_()
    state = {CHECKPOINT_PREFIX + key: value for key, value in net.state_dict().items()}
    checkpoint = {"epoch": 105, "global_step": 4_000_000, "pytorch-lightning_version": "1.0.8",
                  "state_dict": state}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def gfpgan_checkpoint(path: Path, *, seed: int = 0, noise_strength: float = 0.2) -> Path:
    """A random GFPGANv1Clean saved as {'params_ema': state_dict}, as GFPGANv1.3.pth is.

    Random init leaves the decoder's noise strengths at 0, which would hide the noise: they
    are set to `noise_strength`.
    """
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, channel_multiplier=2, sft_half=True, different_w=True)
    state = net.state_dict()
    for key, value in state.items():  # StyleConv.weight: the scale of the injected noise
        if key.startswith("stylegan_decoder.style_conv") and key.endswith(".weight") \
                and value.shape == (1,):
            state[key] = torch.full((1,), noise_strength)
    torch.save({"params_ema": state}, path)
    return path

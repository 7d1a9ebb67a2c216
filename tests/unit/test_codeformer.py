"""CodeFormer as one registry entry: its spec (licence, digest), the model factory loading a
random file in the release's layout with its capabilities, the role checks, and the
restorer's forward (the fidelity weight w reaches the network; bf16 on CUDA).

CodeFormer at 512 px takes about 10 s a face on this CPU, so the tests that run the network
are slow; loading and checking take seconds.
"""

from __future__ import annotations

import cv2
import pytest
import torch

from tests.model_files import codeformer_checkpoint, registry_accepting
from vidrestore.config import ModelsConfig
from vidrestore.errors import ConfigError
from vidrestore.models import ModelStore
from vidrestore.models.capabilities import Capabilities
from vidrestore.models.factory import image_capabilities, load_model
from vidrestore.models.registry import REGISTRY
from vidrestore.stages.restore import FaceRestorer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def codeformer_file(tmp_path_factory):
    return codeformer_checkpoint(tmp_path_factory.mktemp("codeformer") / "codeformer.pth")


@pytest.fixture(scope="module")
def store(codeformer_file) -> ModelStore:
    """A store holding the random file under the release's name, its digest accepted."""
    config = ModelsConfig(dir=str(codeformer_file.parent), download=False, strict=True)
    return ModelStore(config, registry=registry_accepting(codeformer=codeformer_file))


@pytest.fixture(scope="module")
def adele(media) -> torch.Tensor:
    bgr = cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Adele_crop.png"))
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255


def test_the_registry_entry_says_where_it_comes_from_and_that_it_is_non_commercial():
    spec = REGISTRY["codeformer"]
    assert (spec.role, spec.scale, spec.format) == ("face_restorer", 1, "pth")
    assert spec.url == "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/" \
        "codeformer.pth"
    assert "S-Lab" in spec.license and "non-commercial" in spec.license
    assert spec.size_bytes == 376_637_898 and len(spec.sha256) == 64
    assert spec.fallback == "vidrestore-face-v2"  # offline, as for GFPGAN


def test_models_list_shows_its_licence(cli):
    result = cli("models", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[-1] == "LICENCE"
    (row,) = [r for r in rows if r.startswith("codeformer ")]
    assert row.endswith("S-Lab License 1.0: non-commercial use only")
    assert "non-commercial" not in next(r for r in rows if r.startswith("gfpgan-1.3 "))


def test_the_factory_loads_the_release_layout_with_its_capabilities(store, codeformer_file):
    loaded = load_model(store, "codeformer", "face_restorer", CPU, option="--face-model")
    assert loaded.module.architecture.id == "CodeFormer"
    assert loaded.resolved.source == "cache" and loaded.resolved.path == codeformer_file
    assert loaded.capabilities == Capabilities(scale=1, precisions=(torch.float32,),
                                               tiling=False, input_size=512)
    described = loaded.describe()
    assert described["capabilities"]["input_size"] == 512
    assert "non-commercial" in described["license"]
    assert not any(p.requires_grad for p in loaded.module.model.parameters())


@pytest.mark.parametrize("card_bf16,expected", [
    (True, (torch.bfloat16, torch.float32)),  # A100/H100: bf16
    (False, (torch.float32,)),                # T4/V100: no fp16 for CodeFormer either
])
def test_its_precisions_on_cuda_are_read_from_the_architecture(store, monkeypatch, card_bf16,
                                                               expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                        card_bf16)
    descriptor = load_model(store, "codeformer", "face_restorer").module
    caps = image_capabilities(descriptor, torch.device("cuda"), "face_restorer")
    assert caps.precisions == expected
    assert caps.dtype(half=True) == expected[0] and caps.dtype(half=False) == torch.float32


def test_it_is_refused_as_a_background_model_by_name_and_by_file(cli, store, codeformer_file,
                                                                 tmp_path):
    from tests.media import make_clip

    clip = make_clip(tmp_path / "in.mp4", frames=2)
    result = cli(clip, tmp_path / "out.mp4", "--bg-model", "codeformer", "--face-model",
                 "none", "--no-download")
    assert result.exit_code == 2
    assert "is a face restorer, not a background upscaler" in result.output
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(ConfigError, match="CodeFormer x1 face restorer, not a background"):
        load_model(store, str(codeformer_file), "background_upscaler", option="--bg-model")


def test_the_restorer_takes_only_512_px_faces(store):
    restorer = FaceRestorer(load_model(store, "codeformer", "face_restorer").module, CPU)
    with pytest.raises(ValueError, match="CodeFormer takes 512x512"):
        restorer(torch.rand(1, 3, 256, 256))


@pytest.mark.slow  # four CodeFormer passes at 512 px: about 40 s on this CPU
def test_fidelity_is_the_networks_w_on_the_minus_one_to_one_range(store, adele):
    """`fidelity` goes into the network as w (not blended afterwards), on [-1, 1] input as
    CodeFormer was trained: the result is the network's own, computed here apart from the
    restorer, and w = 0 and w = 1 give different faces, both unlike the input."""
    module = load_model(store, "codeformer", "face_restorer").module
    out = {}
    for w in (0.0, 1.0):
        out[w] = FaceRestorer(module, CPU, fidelity=w)(adele)
        with torch.no_grad():
            own = ((module.model(adele * 2 - 1, weight=w)[0] + 1) / 2).clamp(0, 1)
        assert torch.equal(out[w], own)
        assert (out[w] - adele).abs().mean() > 0.05  # restored, not the input face
    assert (out[0.0] - out[1.0]).abs().mean() > 0.02  # measured 0.12 on random weights


@pytest.mark.needs_cuda
def test_cuda_runs_it_in_bf16(store, adele):
    """bf16 where the card has it, under autocast (its codebook lookup multiplies a float32
    one-hot matrix). With random weights bf16 rounding flips some of the 256 code choices
    (argmax over 1024 random codes), so outputs differ more than GFPGAN's: measured on this
    CPU in bf16, 0.09 mean from float32; a wrong input range gives 0.41."""
    from vidrestore.models.capabilities import supports_bf16

    cuda = torch.device("cuda")
    if not supports_bf16(cuda):
        pytest.skip("this card has no native bf16")
    half = FaceRestorer(load_model(store, "codeformer", "face_restorer", cuda).module, cuda)
    full = FaceRestorer(load_model(store, "codeformer", "face_restorer", cuda).module, cuda,
                        half=False)
    assert (half.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    faces = torch.cat([adele, adele.flip(-1)]).to(cuda)
    together, reference = half(faces), full(faces)
    assert together.dtype == torch.float32 and torch.isfinite(together).all()
    assert (together - reference).abs().mean() < 0.15
    assert torch.equal(half(faces[:1]), half(faces[:1]))

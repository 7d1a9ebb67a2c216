"""Face restorer on a random-initialised GFPGAN v1.3 (official file layout) and real faces.

GFPGAN at 512 px takes 2-3 s a face on this CPU, so one model serves the whole module and
the GFPGAN tests stay at a few faces; the cheaper checks use a tiny x1 Compact model.
"""

from __future__ import annotations

import hashlib

import cv2
import pytest
import torch
from spandrel import ImageModelDescriptor, ModelLoader
from spandrel.architectures.Compact import Compact

from tests.model_files import gfpgan_checkpoint
from vidrestore.errors import ModelError
from vidrestore.models import load_image_model
from vidrestore.models.registry import ModelSpec
from vidrestore.models.store import ResolvedModel
from vidrestore.stages.restore import FaceRestorer, PassthroughRestorer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gfpgan_file(tmp_path_factory) -> ResolvedModel:
    """A random GFPGANv1Clean saved as {'params_ema': state_dict}, as GFPGANv1.3.pth is."""
    path = gfpgan_checkpoint(tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.3.pth")
    data = path.read_bytes()
    spec = ModelSpec(name="gfpgan-1.3", role="face_restorer", arch="gfpgan", format="pth",
                     url="https://example.org/GFPGANv1.3.pth", origin_url="https://example.org",
                     license="Apache-2.0", sha256=hashlib.sha256(data).hexdigest(),
                     size_bytes=len(data), filename=path.name, scale=1)
    return ResolvedModel(spec, path, "cache", spec.name)


@pytest.fixture(scope="module")
def gfpgan(gfpgan_file) -> ImageModelDescriptor:
    return load_image_model(gfpgan_file, CPU)


@pytest.fixture(scope="module")
def faces(media) -> torch.Tensor:
    """Adele, Julia Roberts and Adele mirrored: (3, 3, 512, 512) float32 RGB in [0, 1]."""
    crops = []
    for name in ("Adele", "Julia_Roberts"):
        bgr = cv2.imread(str(media / "images" / f"gfpgan_cropped_faces_{name}_crop.png"))
        crops.append(torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
    crops.append(crops[0].flip(-1))
    return torch.stack(crops)


@pytest.fixture(scope="module")
def adele(gfpgan, faces) -> torch.Tensor:
    """Adele restored once by a fresh FaceRestorer, (1, 3, 512, 512)."""
    return FaceRestorer(gfpgan, CPU)(faces[:1])


def _compact() -> ImageModelDescriptor:
    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1)
    return ModelLoader().load_from_state_dict({"params": net.state_dict()})


# -- GFPGAN ---------------------------------------------------------------------------------

def test_a_batch_of_faces_gives_what_one_face_at_a_time_gives(gfpgan, faces):
    restorer = FaceRestorer(gfpgan, CPU)
    assert restorer.dtype == torch.float32 and not restorer.channels_last
    together = restorer(faces)  # one forward pass of 3 faces
    apart = torch.cat([restorer(face[None]) for face in faces])
    assert together.shape == faces.shape and together.dtype == torch.float32
    assert 0 <= together.min() and together.max() <= 1
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=0)  # measured 1e-6


def test_the_same_face_gives_the_same_output_every_call(gfpgan, faces, adele):
    assert torch.equal(FaceRestorer(gfpgan, CPU)(faces[:1]), adele)
    # GFPGAN's default, which spandrel's call_fn uses, draws fresh decoder noise each call;
    # with this model's noise strength that lands well away from the fixed-noise result.
    with torch.no_grad():
        plain = gfpgan.model(faces[:1] * 2 - 1, return_rgb=False)[0]
    assert (((plain + 1) / 2).clamp(0, 1) - adele).abs().mean() > 1e-3


def test_gfpgan_is_given_faces_in_minus_one_to_one(gfpgan, faces):
    seen = []

    class Seen(Exception):
        pass

    def capture(_module, args):
        seen.append(args[0].clone())
        raise Seen  # the input is all this test needs; skip the rest of the network

    hook = gfpgan.model.conv_body_first.register_forward_pre_hook(capture)
    try:
        with pytest.raises(Seen):
            FaceRestorer(gfpgan, CPU)(faces[:1])
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], faces[:1] * 2 - 1)


def test_output_is_the_networks_minus_one_to_one_image_mapped_to_zero_one(gfpgan, faces,
                                                                           adele):
    with torch.no_grad():
        raw = gfpgan.model(faces[:1] * 2 - 1, return_rgb=False, randomize_noise=False)[0]
    torch.testing.assert_close(adele, ((raw + 1) / 2).clamp(0, 1), atol=1e-6, rtol=0)


def test_gfpgan_refuses_faces_that_are_not_512(gfpgan):
    with pytest.raises(ValueError, match="512x512"):
        FaceRestorer(gfpgan, CPU)(torch.rand(1, 3, 256, 256))


@pytest.mark.needs_cuda
def test_cuda_bf16_matches_float32_within_bf16_rounding(gfpgan_file, faces):
    # bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); rounding through ~40 layers
    # leaves errors of a few 1e-3 on [0, 1] pixels that mostly cancel: a mean below 1e-2
    # (2.5 / 255, under what the eye sees) is bf16 at work, a wrong path or cast is far above.
    cuda = torch.device("cuda")
    half = FaceRestorer(load_image_model(gfpgan_file, cuda), cuda)
    full = FaceRestorer(load_image_model(gfpgan_file, cuda), cuda, half=False)
    assert (half.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    batch = faces.to(cuda)
    together, reference = half(batch), full(batch)
    apart = torch.cat([half(face[None]) for face in batch])
    assert together.dtype == torch.float32
    assert (together - reference).abs().mean() < 1e-2
    assert (together - apart).abs().mean() < 1e-2
    assert torch.equal(half(batch[:1]), half(batch[:1]))


# -- chunking, fidelity, checks (tiny model) -------------------------------------------------

def test_faces_go_through_in_chunks_of_max_batch():
    model = _compact()
    sizes = []
    hook = model.model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    faces = torch.rand(5, 3, 32, 32)
    chunked = FaceRestorer(model, CPU, max_batch=2)(faces)
    hook.remove()
    assert sizes == [2, 2, 1]
    torch.testing.assert_close(chunked, FaceRestorer(model, CPU)(faces), atol=1e-6, rtol=0)


def test_fidelity_blends_restored_and_input_faces():
    model, faces = _compact(), torch.rand(2, 3, 32, 32)
    full = FaceRestorer(model, CPU)(faces)
    half = FaceRestorer(model, CPU, fidelity=0.25)(faces)
    torch.testing.assert_close(half, 0.25 * full + 0.75 * faces, atol=1e-6, rtol=0)
    assert torch.equal(FaceRestorer(model, CPU, fidelity=0)(faces), faces)
    assert not torch.equal(full, faces)


def test_inputs_are_not_changed_and_no_faces_is_fine():
    restorer = FaceRestorer(_compact(), CPU)
    faces = torch.rand(2, 3, 32, 32)
    before = faces.clone()
    restorer(faces)
    assert torch.equal(faces, before)
    assert restorer(torch.rand(0, 3, 32, 32)).shape == (0, 3, 32, 32)


@pytest.mark.parametrize("kwargs", [{"fidelity": 1.5}, {"fidelity": -0.1}, {"max_batch": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        FaceRestorer(_compact(), CPU, **kwargs)


def test_an_upscaler_is_not_a_face_restorer():
    torch.manual_seed(0)
    x4 = ModelLoader().load_from_state_dict(Compact(num_feat=8, num_conv=2).state_dict())
    with pytest.raises(ModelError, match="x4"):
        FaceRestorer(x4, CPU)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 3, 32, 16), (2, 1, 32, 32)])
def test_faces_must_be_square_rgb_batches(shape):
    with pytest.raises(ValueError):
        FaceRestorer(_compact(), CPU)(torch.rand(shape))


def test_passthrough_returns_the_faces():
    faces = torch.rand(3, 3, 64, 64)
    assert PassthroughRestorer()(faces) is faces

"""RestoreFormer++: our network module, loaded from random-initialised files in the layout of
the release `RestoreFormer++.ckpt` through the loader the real file goes through.

The full-size network takes 6-9 s a 512 px face on this CPU, so the full-size file is only
loaded and run on a small input here; batching and ranges are checked on RFPP_SMALL (every key
of the release at width 32) and 64 px faces; the full-size batch check is marked slow.
"""

from __future__ import annotations

import argparse
import dataclasses

import cv2
import pytest
import torch
from spandrel.architectures.RestoreFormer import RestoreFormer

from tests.model_files import RFPP_FULL, RFPP_SMALL, restoreformer_pp_checkpoint
from vidrestore.errors import ModelError
from vidrestore.models import load_image_model
from vidrestore.models.arch.restoreformer import RestoreFormerPlusPlus
from vidrestore.models.registry import REGISTRY
from vidrestore.models.store import ResolvedModel
from vidrestore.stages.restore import FaceRestorer

CPU = torch.device("cpu")
SPEC = REGISTRY["restoreformer++"]
RELEASE_PARAMETERS = 73_472_579  # RestoreFormer++ as its repository builds it for this file


def resolved(path) -> ResolvedModel:
    """The file as the store hands over the official one (size checked elsewhere)."""
    return ResolvedModel(dataclasses.replace(SPEC, size_bytes=path.stat().st_size), path,
                         "cache", SPEC.name)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("rfpp") / SPEC.filename
    return load_image_model(resolved(restoreformer_pp_checkpoint(path, **RFPP_SMALL)), CPU)


@pytest.fixture(scope="module")
def faces(media) -> torch.Tensor:
    """Adele, Julia Roberts and Adele mirrored, 64 px: (3, 3, 64, 64) float32 in [0, 1]."""
    crops = []
    for name in ("Adele", "Julia_Roberts"):
        bgr = cv2.imread(str(media / "images" / f"gfpgan_cropped_faces_{name}_crop.png"))
        rgb = cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()
        crops.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    crops.append(crops[0].flip(-1))
    return torch.stack(crops)


def test_the_release_layout_loads_with_the_release_shapes(tmp_path):
    """Full size, in the release's layout: 294 MB written and read back in a few seconds."""
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_FULL)
    model = load_image_model(resolved(path), CPU)
    net = model.model
    assert isinstance(net, RestoreFormerPlusPlus) and model.architecture.name == "RestoreFormer++"
    count = sum(p.numel() for p in net.parameters())
    assert count == RELEASE_PARAMETERS
    # the release's bytes are these float32 tensors plus ~140 kB of zip records and pickle
    assert 0 < SPEC.size_bytes - 4 * count < 200_000
    assert [len(level.attn) for level in net.encoder.down] == [0, 0, 0, 0, 0, 2]
    assert [len(level.attn) for level in net.decoder.up] == [0, 0, 0, 0, 3, 3]
    assert {a.heads for a in net.modules() if hasattr(a, "heads")} == {4}
    assert (model.scale, model.supports_bfloat16, model.supports_half) == (1, True, False)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64) and 0 <= out.min() and out.max() <= 1


def test_our_network_computes_what_spandrels_restoreformer_computes():
    """Configured as RestoreFormer v1 (decoder attention at the level of the encoder's only),
    our module with spandrel's v1 weights gives spandrel's v1 output: the blocks, the
    multi-head (cross-)attention and the codebook lookup are the same computation."""
    for heads in (4,):  # RestoreFormer++'s head count (v1: 8)
        torch.manual_seed(heads)
        # three levels of 64, 32 and 16 px: attention at the 16 px level, as in the release
        reference = RestoreFormer(ch=32, ch_mult=(1, 2, 2), resolution=64, z_channels=64,
                                  n_embed=64, embed_dim=32, head_size=heads).eval()
        with torch.no_grad():
            reference.quantize.embedding.weight.normal_()
        ours = RestoreFormerPlusPlus(width=32, multipliers=(1, 2, 2), z_channels=64, codes=64,
                                     code_dim=32, encoder_attention=frozenset({2}),
                                     decoder_attention=frozenset({2}), heads=heads).eval()
        ours.load_state_dict(reference.state_dict())  # strict: the same keys and shapes
        x = torch.rand(2, 3, 64, 64) * 2 - 1
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x)[0], atol=1e-4, rtol=0)


def test_a_batch_of_faces_gives_what_one_face_at_a_time_gives(small, faces):
    restorer = FaceRestorer(small, CPU)
    assert restorer.dtype == torch.float32 and not restorer.is_gfpgan
    together = restorer(faces)  # one forward pass of 3 faces
    apart = torch.cat([restorer(face[None]) for face in faces])
    assert together.shape == faces.shape and together.dtype == torch.float32
    assert 0 <= together.min() and together.max() <= 1 and together.std() > 0.01
    # float32 kernels differ with the batch size: measured 3e-5 (0.008 of an 8-bit step); a
    # codebook entry picked differently would move pixels by far more
    torch.testing.assert_close(together, apart, atol=1e-4, rtol=0)
    assert not torch.equal(together[0], together[2])  # a mirrored face is another input


def test_the_network_sees_minus_one_to_one_and_its_output_is_mapped_to_zero_one(small, faces):
    seen = []
    hook = small.model.encoder.conv_in.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].clone()))
    try:
        restored = FaceRestorer(small, CPU)(faces[:1])
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], faces[:1] * 2 - 1)
    with torch.no_grad():
        raw = small.model(faces[:1] * 2 - 1)
    torch.testing.assert_close(restored, ((raw + 1) / 2).clamp(0, 1), atol=1e-6, rtol=0)


def test_a_checkpoint_missing_a_network_tensor_is_refused(tmp_path):
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_SMALL)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["vqvae.decoder.up.4.attn.2.proj_out.weight"]
    torch.save(checkpoint, path)
    with pytest.raises(ModelError, match="does not fit the restoreformer\\+\\+ architecture"):
        load_image_model(resolved(path), CPU)


def test_entries_beside_the_network_are_ignored(tmp_path, small, faces):
    """Training-only modules under other prefixes (the loss's discriminator, say) do not
    stop the network from loading, and change nothing."""
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_SMALL)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["loss.discriminator.main.0.weight"] = torch.rand(64, 3, 4, 4)
    torch.save(checkpoint, path)
    model = load_image_model(resolved(path), CPU)
    with torch.no_grad():
        torch.testing.assert_close(model(faces[:1]), small(faces[:1]), atol=0, rtol=0)


def test_a_restoreformer_v1_checkpoint_is_not_taken_for_plus_plus(tmp_path):
    """v1 has no decoder attention below the top level: our detector leaves it alone, and
    spandrel does not know the 'vqvae.' prefix, so the file is refused in one line."""
    net = RestoreFormer(ch=32, z_channels=64, n_embed=64, embed_dim=32)
    path = tmp_path / SPEC.filename
    torch.save({"state_dict": {f"vqvae.{k}": v for k, v in net.state_dict().items()}}, path)
    with pytest.raises(ModelError, match="not an architecture"):
        load_image_model(resolved(path), CPU)


def test_python_objects_in_the_checkpoint_are_not_unpickled(tmp_path):
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_SMALL)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"] = argparse.Namespace(base_learning_rate=4.5e-6)
    torch.save(checkpoint, path)
    with pytest.raises(ModelError, match="Python objects besides tensors"):
        load_image_model(resolved(path), CPU)


@pytest.mark.slow
def test_full_size_512_px_faces_in_one_batch_match_one_at_a_time(tmp_path, media):
    """Every face picks the same codebook entries alone as in the batch; pixels then agree
    to float32 rounding through ~100 layers (measured 2e-4, 0.05 of an 8-bit step)."""
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_FULL)
    model = load_image_model(resolved(path), CPU)
    restorer = FaceRestorer(model, CPU)
    crops = []
    for name in ("Adele", "Julia_Roberts"):
        bgr = cv2.imread(str(media / "images" / f"gfpgan_cropped_faces_{name}_crop.png"))
        crops.append(torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
    faces = torch.stack(crops)
    codes = []
    hook = model.model.quantize.register_forward_hook(lambda _m, _a, out: codes.append(out))
    try:
        together = restorer(faces)
        apart = torch.cat([restorer(face[None]) for face in faces])
    finally:
        hook.remove()
    assert torch.equal(codes[0], torch.cat(codes[1:]))
    torch.testing.assert_close(together, apart, atol=1e-3, rtol=0)


@pytest.mark.needs_cuda
def test_cuda_bf16_matches_float32_within_bf16_rounding(tmp_path, faces):
    path = restoreformer_pp_checkpoint(tmp_path / SPEC.filename, **RFPP_FULL)
    cuda = torch.device("cuda")
    half = FaceRestorer(load_image_model(resolved(path), cuda), cuda)
    full = FaceRestorer(load_image_model(resolved(path), cuda), cuda, half=False)
    assert (half.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    batch = faces.to(cuda)
    together, reference = half(batch), full(batch)
    assert together.dtype == torch.float32
    assert (together - reference).abs().mean() < 2e-2
    assert (together - torch.cat([half(face[None]) for face in batch])).abs().mean() < 1e-2

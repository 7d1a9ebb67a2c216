"""ParseNet: official key layout, safe loading, batching and the paste-back face mask.

Random weights saved the way facexlib's parsing_parsenet.pth is (a plain state dict) stand in
for the real file. The network is fully convolutional, so forward passes run on 32x32 inputs
(a 512 face is about 100 GMAC, seconds on a CPU), and each is done once where it can be.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from vidrestore.errors import ModelError
from vidrestore.models.arch.parsenet import (
    CLASS_NAMES,
    FACE_CLASSES,
    ParseNet,
    face_mask_from_parsing,
    fuse_batchnorm,
    load_parsenet,
    parsenet_from_state_dict,
)

# facexlib/utils/face_restoration_helper.py, paste_faces_to_input_image (use_parse=True)
FACEXLIB_MASK_COLORMAP = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0,
                          255, 0, 0, 0]


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    """A random ParseNet state dict with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = ParseNet()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)
    return net.state_dict()


@pytest.fixture(scope="module")
def model(official_sd) -> ParseNet:
    return parsenet_from_state_dict(official_sd)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 32, 32) * 2 - 1


@pytest.fixture(scope="module")
def reference(model, faces) -> torch.Tensor:
    with torch.inference_mode():
        return model.parse(faces)


def _same_weights(loaded: ParseNet, sd: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())


def _meta_parsenet() -> ParseNet:
    with torch.device("meta"):  # shapes without the cost of initialising 21 M weights
        return ParseNet().eval()


def test_state_dict_has_the_official_layout():
    sd = _meta_parsenet().state_dict()
    assert len(sd) == 238
    shapes = {
        "encoder.0.conv2d.weight": (64, 3, 3, 3),
        "encoder.0.conv2d.bias": (64,),
        "encoder.1.shortcut_func.conv2d.weight": (128, 64, 3, 3),
        "encoder.1.conv1.conv2d.weight": (128, 64, 3, 3),
        "encoder.1.conv1.norm.norm.running_var": (128,),
        "encoder.4.conv2.norm.norm.num_batches_tracked": (),
        "body.9.conv2.conv2d.weight": (256, 256, 3, 3),
        "decoder.3.shortcut_func.conv2d.bias": (64,),
        "decoder.3.conv2.norm.norm.weight": (64,),
        "out_img_conv.conv2d.weight": (3, 64, 3, 3),
        "out_mask_conv.conv2d.bias": (19,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("body.") and "shortcut_func" in k for k in sd)
    assert "encoder.1.conv1.conv2d.bias" not in sd  # conv before BatchNorm has no bias
    assert sum(p.numel() for p in _meta_parsenet().parameters()) == 21_303_254


def test_loads_official_file_and_gives_identical_outputs(tmp_path, official_sd, faces,
                                                         reference):
    path = tmp_path / "parsing_parsenet.pth"
    torch.save(official_sd, path)
    loaded = load_parsenet(path)
    assert not loaded.training
    assert _same_weights(loaded, official_sd)
    with torch.inference_mode():
        mask_logits, image = loaded(faces)
    assert mask_logits.shape == (2, 19, 32, 32) and image.shape == (2, 3, 32, 32)
    assert torch.equal(mask_logits, reference)  # parse() is forward()[0] without the image


@pytest.mark.parametrize("wrap", ["params_ema", "params", "state_dict", "module"])
def test_accepts_wrapped_and_prefixed_state_dicts(official_sd, wrap):
    sd = {k: v for k, v in official_sd.items() if not k.endswith("num_batches_tracked")}
    obj = ({"module." + k: v for k, v in sd.items()} if wrap == "module"
           else {wrap: sd, "meta": {"iter": torch.tensor(1)}})
    assert _same_weights(parsenet_from_state_dict(obj), official_sd)


def test_half_precision_file_loads_as_float32(official_sd):
    half = {k: v.half() if v.is_floating_point() else v for k, v in official_sd.items()}
    loaded = parsenet_from_state_dict(half)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert _same_weights(loaded, {k: v.float() if v.is_floating_point() else v
                                  for k, v in half.items()})
    assert all(v.dtype == torch.float16 for k, v in half.items() if "running" in k)  # untouched


def test_batch_of_two_matches_one_at_a_time(model, faces, reference):
    with torch.inference_mode():
        single = torch.cat([model.parse(faces[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(reference, single, rtol=1e-5, atol=1e-5)


def test_full_size_faces_give_512_logits():
    # On the meta device: shapes are checked without the ~100 GMAC a 512 face costs on a CPU.
    logits, image = _meta_parsenet()(torch.empty(2, 3, 512, 512, device="meta"))
    assert logits.shape == (2, 19, 512, 512) and image.shape == (2, 3, 512, 512)
    assert face_mask_from_parsing(logits).shape == (2, 1, 512, 512)


def test_fused_batchnorm_matches(official_sd, faces, reference):
    fused = fuse_batchnorm(parsenet_from_state_dict(official_sd))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.inference_mode():
        torch.testing.assert_close(fused.parse(faces), reference, rtol=1e-4, atol=1e-4)


def test_rejects_sizes_that_do_not_come_back(model):
    with pytest.raises(ValueError, match="multiples of 16"):
        model.parse(torch.zeros(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.parse(torch.zeros(1, 4, 32, 32))


# --------------------------------------------------------------------------- bad files


def _one_line_model_error(path) -> str:
    with pytest.raises(ModelError) as info:
        load_parsenet(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert "not found" in _one_line_model_error(tmp_path / "nope.pth")


def test_corrupt_and_truncated_files(tmp_path, official_sd):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint\n" * 40)
    assert "cannot read" in _one_line_model_error(junk)

    small = {k: v[:2].clone() if v.ndim else v for k, v in list(official_sd.items())[:6]}
    whole = tmp_path / "whole.pth"
    torch.save(small, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "cannot read" in _one_line_model_error(cut)


class Payload:
    """Stands in for an arbitrary pickled object that weights_only loading must refuse."""


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"encoder.0.conv2d.weight": Payload()}, path)
    assert "Python objects besides tensors" in _one_line_model_error(path)
    plain = tmp_path / "plain.pickle"
    plain.write_bytes(pickle.dumps({"encoder.0.conv2d.weight": [1.0]}, protocol=2))
    _one_line_model_error(plain)


def test_wrong_keys_and_shapes(tmp_path, official_sd):
    wrong = dict(official_sd)
    wrong["encoder.0.conv.weight"] = wrong.pop("encoder.0.conv2d.weight")
    path = tmp_path / "keys.pth"
    torch.save(wrong, path)
    message = _one_line_model_error(path)
    assert "1 missing keys ['encoder.0.conv2d.weight']" in message
    assert "1 unexpected ['encoder.0.conv.weight']" in message

    wrong = dict(official_sd)
    wrong["out_mask_conv.conv2d.weight"] = torch.zeros(11, 64, 3, 3)
    torch.save(wrong, path)
    assert "out_mask_conv.conv2d.weight has shape (11, 64, 3, 3)" in _one_line_model_error(path)

    for obj in (torch.zeros(3), {}, {"a": 1}):
        torch.save(obj, path)
        _one_line_model_error(path)


# --------------------------------------------------------------------------- face mask


def test_face_classes_match_facexlib_colormap():
    assert [255 if c in FACE_CLASSES else 0 for c in range(19)] == FACEXLIB_MASK_COLORMAP
    assert {CLASS_NAMES[c] for c in range(19) if c not in FACE_CLASSES} == {
        "background", "hat", "neck_l", "neck", "cloth"}


def test_mask_picks_exactly_the_face_classes():
    # Pixel (row r, column c) of image n wins class (n * 7 + r * 5 + c) % 19, so every class
    # wins somewhere in both images and the images differ.
    n, h, w = 2, 4, 5
    winners = (torch.arange(n)[:, None, None] * 7 + torch.arange(h)[:, None] * 5
               + torch.arange(w)) % 19
    logits = torch.randn(n, 19, h, w)
    logits.scatter_(1, winners[:, None], 10.0)
    mask = face_mask_from_parsing(logits)
    assert mask.shape == (n, 1, h, w) and mask.dtype == torch.float32
    expected = torch.tensor(FACEXLIB_MASK_COLORMAP, dtype=torch.float32)[winners] / 255
    assert torch.equal(mask[:, 0], expected)
    assert set(winners.flatten().tolist()) == set(range(19))


def test_mask_is_float32_for_bf16_logits_and_rejects_wrong_channels():
    logits = torch.zeros(1, 19, 2, 2, dtype=torch.bfloat16)
    logits[:, 17] = 1  # neck
    logits[0, 1, 0, 0] = 2  # skin at one pixel
    mask = face_mask_from_parsing(logits)
    assert mask.dtype == torch.float32
    assert mask.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        face_mask_from_parsing(torch.zeros(1, 18, 2, 2))

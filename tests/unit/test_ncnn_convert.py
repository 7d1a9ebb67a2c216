"""ncnn -> PyTorch conversion: the parser and layouts on synthetic nets, then the two bundled
Real-ESRGAN models, checked against spandrel's architectures and on a real photo."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from vidrestore.config import ModelsConfig
from vidrestore.errors import ModelError
from vidrestore.models import load_image_model, ncnn, store
from vidrestore.models.store import ModelStore

log = logging.getLogger(__name__)

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media"
PHOTO = MEDIA / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"
needs_photo = pytest.mark.skipif(not PHOTO.is_file(), reason=f"test photo not found: {PHOTO}")


# -- synthetic ncnn files ---------------------------------------------------------------------

def _conv_line(name: str, src: str, dst: str, out_ch: int, in_ch: int, extra: str = "") -> str:
    return (f"Convolution {name} 1 1 {src} {dst} 0={out_ch} 1=3 4=1 5=1 "
            f"6={out_ch * in_ch * 9} {extra}").strip()


def _fp16_blob(weight: torch.Tensor) -> bytes:
    data = weight.numpy().astype("<f2").tobytes()
    return struct.pack("<I", ncnn.TAG_FP16) + data + b"\0" * (-len(data) % 4)


def _compact_as_ncnn(net: Compact) -> tuple[str, bytes]:
    """A Compact (conv, PReLU, ..., conv, pixel shuffle, + upsampled input) as ncnn files."""
    lines, blob, src = [], b"", "d1"
    for index, module in enumerate(net.body):
        dst = f"t{index}"
        if isinstance(module, torch.nn.Conv2d):
            lines.append(_conv_line(f"c{index}", src, dst, module.out_channels,
                                    module.in_channels))
            blob += _fp16_blob(module.weight.detach()) + module.bias.detach().numpy().tobytes()
        else:
            lines.append(f"PReLU p{index} 1 1 {src} {dst} 0={module.num_parameters}")
            blob += module.weight.detach().numpy().astype("<f4").tobytes()
        src = dst
    layers = ["Input data 0 1 data", "Split split 1 2 data d0 d1", *lines,
              f"PixelShuffle ps 1 1 {src} shuffled 0={net.upscale}",
              f"Interp up 1 1 d0 base 0=1 1={net.upscale:e} 2={net.upscale:e}",
              "BinaryOp add 2 1 shuffled base output"]
    return "\n".join([str(ncnn.MAGIC), f"{len(layers)} {len(layers) + 1}", *layers]), blob


@pytest.fixture
def tiny_compact() -> Compact:
    torch.manual_seed(0)
    net = Compact(num_feat=4, num_conv=2, upscale=2)
    with torch.no_grad():  # weights that fp16 holds exactly, so the round trip is exact
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.ndim == 4:
                p.copy_(p.half().float())
    return net.eval()


def test_param_text_is_parsed_with_array_and_float_values():
    text = "\n".join([str(ncnn.MAGIC), "2 3", "Input in 0 1 data",
                      "Convolution c1 1 1 data out 0=32 1=3 4=1 5=1 6=18432 9=2 "
                      "-23310=1,2.000000e-01"])
    layers = ncnn.parse_param(text)
    assert [layer.type for layer in layers] == ["Input", "Convolution"]
    conv = layers[1]
    assert (conv.inputs, conv.outputs) == (("data",), ("out",))
    assert conv.params == {0: 32, 1: 3, 4: 1, 5: 1, 6: 18432, 9: 2, 10: (0.2,)}


@pytest.mark.parametrize("text, message", [
    ("7767516\n0 0", "not an ncnn .param"),
    (f"{ncnn.MAGIC}\n2 1\nInput in 0 1 data", "header says 2 layers, found 1"),
    (f"{ncnn.MAGIC}\n1 1\nConvolution c 1", "cannot parse layer line"),
])
def test_bad_param_text_is_refused(text, message):
    with pytest.raises(ModelError, match=message):
        ncnn.parse_param(text)


def test_a_synthetic_compact_round_trips_exactly(tiny_compact, tmp_path):
    text, blob = _compact_as_ncnn(tiny_compact)
    (tmp_path / "m.param").write_text(text)
    (tmp_path / "m.bin").write_bytes(blob)
    converted = ncnn.convert(tmp_path / "m.param", tmp_path / "m.bin", "srvgg")
    assert list(converted) == ["params"]
    original = tiny_compact.state_dict()
    assert list(converted["params"]) == list(original)
    for key, value in original.items():
        assert torch.equal(converted["params"][key], value), key
    descriptor = ModelLoader().load_from_state_dict(converted)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(descriptor.model(x), tiny_compact(x), atol=1e-6)


def test_odd_fp16_weight_counts_are_padded_to_four_bytes():
    text = "\n".join([str(ncnn.MAGIC), "1 2", _conv_line("c", "a", "b", 1, 3)])
    weight = torch.arange(27, dtype=torch.float32).reshape(1, 3, 3, 3)  # 54 bytes -> 56
    blob = _fp16_blob(weight) + struct.pack("<f", 0.5)
    (item,) = ncnn.read_weights(ncnn.parse_param(text), blob)
    assert torch.equal(item.tensors["weight"], weight)
    assert item.tensors["bias"].tolist() == [0.5]


@pytest.mark.parametrize("change, message", [
    (lambda blob: blob + b"\0" * 4, "the file has"),
    (lambda blob: blob[:-8], "ends at byte"),
    (lambda blob: struct.pack("<I", ncnn.TAG_INT8) + blob[4:], "int8"),
])
def test_a_bin_that_does_not_fit_the_param_is_refused(tiny_compact, change, message):
    text, blob = _compact_as_ncnn(tiny_compact)
    with pytest.raises(ModelError, match=message):
        ncnn.read_weights(ncnn.parse_param(text), change(blob))


def test_unknown_weighted_layers_and_wrong_geometry_are_refused(tiny_compact):
    text, blob = _compact_as_ncnn(tiny_compact)
    with pytest.raises(ModelError, match="InnerProduct"):
        ncnn.read_weights(ncnn.parse_param(text.replace("PReLU p1", "InnerProduct p1")), blob)
    strided = ncnn.read_weights(ncnn.parse_param(text.replace("0=4 1=3 4=1", "0=4 1=3 3=2 4=1",
                                                              1)), blob)
    with pytest.raises(ModelError, match="dilation/stride/pad"):
        ncnn.srvgg_state_dict(strided)
    with pytest.raises(ModelError, match="do not make an RRDBNet"):
        ncnn.rrdbnet_state_dict([w for w in strided if w.layer.type == "Convolution"])


# -- the bundled models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> ModelStore:
    cache = tmp_path_factory.mktemp("models")
    return ModelStore(ModelsConfig(dir=str(cache), download=False))


def test_x4plus_has_rrdbnet_x4_layers_and_shapes(bundled):
    resolved = bundled.locate("realesrgan-x4plus-ncnn")
    assert resolved.path == bundled.cache_dir / "realesrgan-x4plus-ncnn.safetensors"
    converted = load_file(resolved.path)
    reference = ESRGAN(num_blocks=23, scale=4).state_dict()  # spandrel's RRDBNet x4
    assert sum(k.endswith(".weight") and v.ndim == 4 for k, v in converted.items()) == 351
    # spandrel names the same parameters the old ESRGAN way (model.N...), in the same order
    names = [f"{n}.{kind}" for n, _ in ncnn.rrdbnet_names(23) for kind in ("weight", "bias")]
    expected = dict(zip(names, (v.shape for v in reference.values()), strict=True))
    assert {k: v.shape for k, v in converted.items()} == expected
    descriptor = load_image_model(resolved)
    assert (descriptor.architecture.id, descriptor.scale, descriptor.tags) == (
        "ESRGAN", 4, ["64nf", "23nb"])


def test_conversion_happens_once_and_a_damaged_result_is_redone(bundled, monkeypatch):
    bundled.locate("realesr-animevideov3-ncnn")
    target = bundled.cache_dir / "realesr-animevideov3-ncnn.safetensors"
    calls = []
    real = ncnn.convert_to_safetensors
    monkeypatch.setattr(ncnn, "convert_to_safetensors",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(store, "_VERIFIED", set())
    ModelStore(bundled.config).locate("realesr-animevideov3-ncnn")
    assert calls == []
    target.write_bytes(b"not safetensors")
    ModelStore(bundled.config).locate("realesr-animevideov3-ncnn")
    assert len(calls) == 1 and load_file(target)["body.0.weight"].shape == (64, 3, 3, 3)


def _laplacian_variance(image: torch.Tensor) -> float:
    gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]) * 255
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    return F.conv2d(gray[None, None], kernel).var().item()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


def _photo_trial(descriptor, crop: tuple[int, int, int, int] | None = None, photo=None):
    """Downscale the photo by 4 (bicubic, antialiased), upscale with bicubic and the model."""
    image = torch.from_numpy(np.array(Image.open(photo or PHOTO).convert("RGB")))
    image = image.permute(2, 0, 1)
    image = image.float() / 255
    if crop:
        top, left, h, w = crop
        image = image[:, top:top + h, left:left + w]
    h, w = (s // 4 * 4 for s in image.shape[1:])
    original = image[:, :h, :w]
    small = F.interpolate(original[None], size=(h // 4, w // 4), mode="bicubic",
                          antialias=True).clamp(0, 1)
    bicubic = F.interpolate(small, size=(h, w), mode="bicubic").clamp(0, 1)[0]
    with torch.inference_mode():
        model = descriptor(small).clamp(0, 1)[0]
    return original, bicubic, model


def _save_grid(path: Path, *images: torch.Tensor) -> None:
    grid = torch.cat(images, dim=2).permute(1, 2, 0).mul(255).round().byte().numpy()
    Image.fromarray(grid).save(path)


@needs_photo
@pytest.mark.slow
def test_x4plus_on_an_old_photo_comes_near_the_original_sharpness(bundled, tmp_path):
    """gfpgan_whole_imgs_10045.png is a scan without JPEG blocks: there the GAN's detail
    comes near the original's (measured: variance 55 vs original 130 and bicubic 3; PSNR
    30.63 dB vs bicubic 32.82)."""
    descriptor = load_image_model(bundled.locate("realesrgan-x4plus-ncnn"))
    original, bicubic, model = _photo_trial(
        descriptor, photo=MEDIA / "images" / "gfpgan_whole_imgs_10045.png")
    lap = {k: _laplacian_variance(v) for k, v in
           {"original": original, "bicubic": bicubic, "model": model}.items()}
    assert lap["model"] > 8 * lap["bicubic"]
    assert 0.3 * lap["original"] < lap["model"] < lap["original"]
    assert _psnr(model, original) > _psnr(bicubic, original) - 3


@needs_photo
def test_x4plus_on_a_real_photo_is_sharp_and_faithful(bundled, tmp_path):
    descriptor = load_image_model(bundled.locate("realesrgan-x4plus-ncnn"))
    original, bicubic, model = _photo_trial(descriptor)
    _save_grid(tmp_path / "x4plus_original_bicubic_model.png", original, bicubic, model)
    lap = {k: _laplacian_variance(v) for k, v in
           {"original": original, "bicubic": bicubic, "model": model}.items()}
    psnr_model, psnr_bicubic = _psnr(model, original), _psnr(bicubic, original)
    log.info(f"x4plus: PSNR model {psnr_model:.2f} dB, bicubic {psnr_bicubic:.2f} dB; "
          f"Laplacian variance {lap}; grid {tmp_path}")
    assert lap["model"] > 8 * lap["bicubic"]
    # This JPEG's own Laplacian variance is mostly block noise, which a GAN upscaler does
    # not put back; the model must land far nearer the original than bicubic does, and
    # never above it (a broken conversion shows up as noise with a huge variance).
    assert 0.1 * lap["original"] < lap["model"] < lap["original"]
    assert psnr_model > psnr_bicubic - 3


@needs_photo
def test_animevideov3_loads_as_x4_and_is_sharper_than_bicubic(bundled, tmp_path):
    descriptor = load_image_model(bundled.locate("realesr-animevideov3-ncnn"))
    assert (descriptor.architecture.id, descriptor.scale) == ("Compact", 4)
    original, bicubic, model = _photo_trial(descriptor)
    _save_grid(tmp_path / "animevideov3_original_bicubic_model.png", original, bicubic, model)
    lap_model, lap_bicubic = _laplacian_variance(model), _laplacian_variance(bicubic)
    log.info(f"animevideov3: PSNR model {_psnr(model, original):.2f} dB, bicubic "
          f"{_psnr(bicubic, original):.2f} dB; Laplacian variance model {lap_model:.0f}, "
          f"bicubic {lap_bicubic:.0f}, original {_laplacian_variance(original):.0f}")
    assert lap_model > 3 * lap_bicubic


@pytest.mark.parametrize("name, stem", [
    ("realesrgan-x4plus-ncnn", "REALESRGAN_X4PLUS_UP4X"),
    ("realesr-animevideov3-ncnn", "REALESRGAN_ANIMAVIDEOV3_UP4X"),
])
def test_converted_models_match_ncnn_itself(bundled, name, stem):
    """Same output as ncnn's own CPU runtime on the same input (needs `pip install ncnn`)."""
    ncnn_runtime = pytest.importorskip("ncnn")
    descriptor = load_image_model(bundled.locate(name))
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 32)
    with torch.inference_mode():
        ours = descriptor(x)[0].numpy()
    folder = bundled.path_for(name).parent
    net = ncnn_runtime.Net()
    net.opt.use_vulkan_compute = False
    for option in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed",
                   "use_bf16_storage"):
        setattr(net.opt, option, False)
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    extractor = net.create_extractor()
    extractor.input("data", ncnn_runtime.Mat(np.ascontiguousarray(x[0].numpy())))
    _, out = extractor.extract("output")
    theirs = np.clip(np.array(out), 0, 1)  # spandrel clamps its output to [0, 1]
    assert np.abs(ours - theirs).max() < 1e-4

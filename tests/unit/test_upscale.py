"""Background stages on random-initialised models in the official Real-ESRGAN layouts."""

from __future__ import annotations

import pytest
import torch
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact as SRVGGNetCompact

from vidrestore.batch import FrameBatch
from vidrestore.stages.upscale import BackgroundUpscaler, PlainResize


def _compact(scale: int) -> object:
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4, upscale=scale)
    return ModelLoader().load_from_state_dict({"params": net.state_dict()})


def _batch(n=2, h=60, w=80, scale=2) -> FrameBatch:
    torch.manual_seed(1)
    return FrameBatch(inputs=torch.rand(n, 3, h, w), scale=scale)


def test_tiles_with_overlap_give_the_untiled_result():
    model = _compact(4)
    batch = _batch(scale=4)
    whole = BackgroundUpscaler(model, torch.device("cpu"), tile=0)(batch).output
    tiled = BackgroundUpscaler(model, torch.device("cpu"), tile=32, tile_pad=16)(batch).output
    assert whole.shape == tiled.shape == (2, 3, 240, 320)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_scale,scale", [(4, 2), (4, 1), (2, 4)])
def test_tiles_are_resized_one_by_one_to_the_same_result(model_scale, scale, monkeypatch):
    """An x4 model at --scale 2 never holds the whole x4 frame: each tile's output is
    resized on its own, with its context, and the frame is the whole-frame resize."""
    model = _compact(model_scale)
    batch = _batch(scale=scale)
    whole = BackgroundUpscaler(model, torch.device("cpu"), tile=0)(batch).output
    stage = BackgroundUpscaler(model, torch.device("cpu"), tile=32, tile_pad=16)
    largest = []
    infer = stage._infer
    monkeypatch.setattr(stage, "_infer", lambda x: largest.append(x.shape[-2:]) or infer(x))
    tiled = stage(batch).output
    assert max(h * w for h, w in largest) <= 64 * 64  # a tile and its context, no more
    torch.testing.assert_close(tiled, whole, atol=2e-5, rtol=0)


@pytest.mark.parametrize("model_scale,scale", [(4, 2), (4, 1), (2, 4), (4, 4)])
def test_any_scale_from_any_model_scale(model_scale, scale):
    out = BackgroundUpscaler(_compact(model_scale), torch.device("cpu"))(_batch(scale=scale))
    assert out.output.shape == (2, 3, 60 * scale, 80 * scale)
    assert 0 <= out.output.min() and out.output.max() <= 1


def test_out_of_memory_halves_the_tile_and_says_so(monkeypatch):
    """The fallback is taken, remembered for later batches, and reported as a fallback."""
    model = _compact(4)
    batch = _batch(n=1, h=200, w=300, scale=2)
    said = []
    stage = BackgroundUpscaler(model, torch.device("cpu"), tile=0, on_fallback=said.append)
    infer = stage._infer

    def small_tiles_only(frames):
        if frames.shape[-2] * frames.shape[-1] > 30_000:  # CPU tiles start at 512 px
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return infer(frames)

    monkeypatch.setattr(stage, "_infer", small_tiles_only)
    out = stage(batch).output
    whole = BackgroundUpscaler(model, torch.device("cpu"), tile=0)(batch).output
    torch.testing.assert_close(out, whole, atol=2e-5, rtol=0)
    assert stage.tile == 128
    assert said == [f"background tiles halved to {px} px (out of memory)" for px in (256, 128)]


def test_input_is_left_alone_and_cpu_runs_float32():
    batch = _batch()
    before = batch.inputs.clone()
    stage = BackgroundUpscaler(_compact(2), torch.device("cpu"))
    out = stage(batch)
    assert stage.dtype == torch.float32
    assert torch.equal(batch.inputs, before) and out.inputs is batch.inputs


def test_plain_resize_is_identity_at_scale_one():
    batch = _batch(scale=1)
    assert torch.equal(PlainResize()(batch).output, batch.inputs)


@pytest.mark.needs_cuda
def test_cuda_reduced_precision_matches_float32():
    model = _compact(4)
    batch = _batch(scale=4)
    ref = BackgroundUpscaler(model, torch.device("cpu"))(batch).output
    stage = BackgroundUpscaler(_compact(4), torch.device("cuda"))
    cuda = FrameBatch(inputs=batch.inputs.cuda(), scale=4)
    assert stage.dtype in (torch.bfloat16, torch.float16)
    torch.testing.assert_close(stage(cuda).output.cpu(), ref, atol=3e-2, rtol=0)

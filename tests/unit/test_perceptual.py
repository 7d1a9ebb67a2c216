"""LPIPS with the lpips package's bundled linear layers and a random AlexNet trunk saved as
torchvision's alexnet-owt-7be5be79.pth is, both loaded through the model store."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.model_files import random_alexnet_trunk, registry_accepting
from vidrestore.config import ModelsConfig
from vidrestore.errors import ModelError
from vidrestore.metrics.perceptual import LPIPS_LINEAR, LPIPS_TRUNK, MIN_SIDE, Lpips, open_lpips
from vidrestore.models import store as store_module
from vidrestore.models.factory import load_model
from vidrestore.models.store import ModelStore


@pytest.fixture(autouse=True)
def fresh_verification_memory(monkeypatch):
    monkeypatch.setattr(store_module, "_VERIFIED", set())


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory) -> Path:
    return random_alexnet_trunk(tmp_path_factory.mktemp("trunk") / "alexnet-owt-7be5be79.pth")


def store_for(folder: Path, trunk: Path | None = None) -> ModelStore:
    registry = registry_accepting(**({LPIPS_TRUNK: trunk} if trunk else {}))
    return ModelStore(ModelsConfig(dir=str(folder), download=False), registry=registry)


@pytest.fixture(scope="module")
def metric(trunk_file) -> Lpips:
    """Opened from a cache that holds the trunk under its real name."""
    found, reason = open_lpips(store_for(trunk_file.parent, trunk_file))
    assert reason is None
    return found


@pytest.fixture(scope="module")
def photo(media) -> torch.Tensor:
    """(1, 3, 256, 256) float RGB in [0, 1]: a real face."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Julia_Roberts_crop.png"))
    rgb = cv2.resize(bgr[..., ::-1], (256, 256), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255


def test_both_files_are_loaded_into_the_network(metric, trunk_file):
    trunk = torch.load(trunk_file, weights_only=True)
    net = metric.net
    loaded = net.state_dict()
    for k, index in enumerate((0, 3, 6, 8, 10), start=1):  # lpips's slices of the features
        for param in ("weight", "bias"):
            assert torch.equal(loaded[f"net.slice{k}.{index}.{param}"],
                               trunk[f"features.{index}.{param}"])
    linear = torch.load(ModelStore().path_for(LPIPS_LINEAR), map_location="cpu",
                        weights_only=True)  # saved from CUDA tensors
    for k in range(5):
        assert torch.equal(net.lins[k].model[1].weight, linear[f"lin{k}.model.1.weight"])
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_identical_images_give_zero(metric, photo):
    assert metric(photo, photo.clone()).tolist() == [0.0]


def test_distance_grows_with_noise(metric, photo):
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(photo.shape, generator=generator)
    levels = [0.02, 0.05, 0.1, 0.2]
    noisy = torch.cat([(photo + s * noise).clamp(0, 1) for s in levels])
    values = metric(photo.expand(len(levels), -1, -1, -1), noisy)
    assert values.dtype == torch.float64 and values.shape == (4,)
    assert (values.diff() > 0).all() and values[0] > 0, values
    one_by_one = torch.cat([metric(photo, n[None]) for n in noisy])
    torch.testing.assert_close(values, one_by_one, atol=1e-6, rtol=1e-5)


def test_images_too_small_for_the_trunk_give_nan(metric):
    small = torch.rand(2, 3, MIN_SIDE, 40)
    assert torch.isfinite(metric(small, small.flip(-1))).all()
    assert math.isnan(metric(small[..., :-1, :], small[..., 1:, :])[0])
    with pytest.raises(ValueError, match="one shape"):
        metric(small, small[..., :32])


def test_a_missing_trunk_gives_the_reason_and_how_to_get_it(tmp_path):
    found, reason = open_lpips(store_for(tmp_path))
    assert found is None
    assert reason.startswith("not measured") and "alexnet-owt-7be5be79.pth" in reason
    assert f"vidrestore models download {LPIPS_TRUNK}" in reason


def test_a_trunk_of_the_wrong_network_is_refused_with_the_reason(tmp_path):
    import torchvision

    wrong = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), wrong)
    found, reason = open_lpips(store_for(tmp_path, wrong))
    assert found is None and "do not fit" in reason and "features.0.weight" in reason


def test_a_trunk_with_python_objects_is_not_unpickled(tmp_path):
    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": torch.zeros(1), "note": Path("x")}, bad)
    with pytest.raises(ModelError, match="Python objects"):
        load_model(store_for(tmp_path), str(bad), "lpips")
    found, reason = open_lpips(store_for(tmp_path, bad))
    assert found is None and "Python objects" in reason


def test_a_damaged_trunk_is_not_used(tmp_path, trunk_file):
    with trunk_file.open("rb") as f:
        (tmp_path / trunk_file.name).write_bytes(f.read(100_000))  # truncated
    found, reason = open_lpips(store_for(tmp_path, trunk_file))
    assert found is None and "does not match" in reason

"""Layered configuration: defaults < preset < --config < flags; unknown keys named."""

from __future__ import annotations

import pytest

from vidrestore.config import RunConfig, build_config, load_config
from vidrestore.errors import ConfigError


def test_later_layers_win_and_none_means_not_given():
    cfg = build_config({"scale": 4, "background": {"model": "a", "tile": 64}},
                       {"background": {"model": "b", "tile": None}}, {"scale": None})
    assert cfg.scale == 4 and cfg.background.model == "b" and cfg.background.tile == 64


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="encode.crff"):
        build_config({"encode": {"crff": 3}})
    with pytest.raises(ConfigError, match="scale"):
        build_config({"scale": 3})
    with pytest.raises(ConfigError, match="batch_size"):
        build_config({"batch_size": "four"})


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.scale = 4  # type: ignore[misc]


def test_environment_sets_the_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path))
    assert load_config().models.dir == str(tmp_path)
    assert load_config(flags={"models": {"dir": "/elsewhere"}}).models.dir == "/elsewhere"


def test_face_section_defaults_validation_and_track_subsection():
    face = RunConfig().face
    assert (face.detector, face.detector_size, face.fidelity, face.identity) == (
        "retinaface-resnet50", 640, 1.0, True)
    cfg = build_config({"face": {"fidelity": 0.5, "track": {"max_missed": 2}}})
    assert cfg.face.fidelity == 0.5 and cfg.face.track.max_missed == 2
    for bad, name in [({"fidelity": 1.5}, "face.fidelity"), ({"detector": "yolo"}, "detector"),
                      ({"track": {"min_iou": 2.0}}, "face.track.min_iou"),
                      ({"identity_encoder": "facenet"}, "face.identity_encoder"),
                      ({"track": {"max_mised": 1}}, "face.track.max_mised")]:
        with pytest.raises(ConfigError, match=name):
            build_config({"face": bad})


def test_cli_face_flags_reach_the_config():
    from vidrestore.cli import _model_flags

    flags = _model_flags({"face_model": "passthrough", "fidelity": 0.7, "identity_guard": True,
                          "identity_encoder": "dlib"})
    face = load_config("default", None, flags).face
    assert (face.model, face.fidelity, face.identity_guard, face.identity_encoder) == (
        "passthrough", 0.7, True, "dlib")
    default = load_config("default", None, _model_flags({})).face
    assert default.identity_guard is False and default.identity_encoder == "auto"
    from vidrestore.config import preset_path

    fast = load_config("default", preset_path("fast"), {})
    assert fast.face.detector == "retinaface-mobilenet0.25" and fast.face.identity is False

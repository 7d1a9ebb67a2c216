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

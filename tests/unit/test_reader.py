"""The one weight-file reader: tensors only, canonical form, one-line errors for the rest."""

from __future__ import annotations

import collections

import pytest
import torch
from safetensors.torch import save_file

from vidrestore.errors import ModelError
from vidrestore.models.reader import read_state_dict


def test_safetensors_and_wrapped_pickles_read_as_plain_tensors(tmp_path):
    tensors = {"conv.weight": torch.ones(2, 3), "conv.bias": torch.zeros(2)}
    save_file(tensors, tmp_path / "a.safetensors")
    torch.save({"params_ema": tensors}, tmp_path / "b.pth")
    torch.save({f"module.{k}": v for k, v in tensors.items()}, tmp_path / "c.pth")
    for name in ("a.safetensors", "b.pth", "c.pth"):
        state = read_state_dict(tmp_path / name, what="m")
        assert set(state) == set(tensors) and torch.equal(state["conv.weight"], tensors[
            "conv.weight"])


def test_a_pickle_with_code_in_it_is_refused_not_run(tmp_path):
    torch.save({"w": torch.ones(1), "hook": collections.Counter}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="holds Python objects besides tensors") as info:
        read_state_dict(tmp_path / "evil.pth", what="m", advice="fetch it again")
    assert str(info.value).endswith("; fetch it again")


@pytest.mark.parametrize("content,said", [
    (b"not a checkpoint at all", "truncated or corrupt"),
    (b"PK\x03\x04" + b"\0" * 40, "truncated or corrupt"),
])
def test_garbage_is_called_corrupt(tmp_path, content, said):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(ModelError, match=said):
        read_state_dict(tmp_path / "x.pth", what="m")


def test_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(ModelError, match="m: weights not found"):
        read_state_dict(tmp_path / "nope.pth", what="m")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(ModelError, match="no state dict of tensors"):
        read_state_dict(tmp_path / "empty.pth", what="m")
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelError, match="cannot read"):
        read_state_dict(tmp_path / "w.bin", what="m")

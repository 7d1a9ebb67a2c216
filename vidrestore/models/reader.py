"""The one way vidrestore reads a weight file: tensors only, never code, one-line errors.

`.safetensors` files are plain tensors. `.pth`, `.ckpt` and `.pt` files are pickles, read
through spandrel's restricted unpickler, which accepts tensors, containers and numbers and
refuses every other global (a pickle can run code). The state dict comes back in spandrel's
canonical form: unwrapped from `params_ema`, `params`, `state_dict` and the like, with a
common `module.` prefix removed. Every failure is a `ModelError` that names the file, says
what is wrong with it and, through `advice`, what to do.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from spandrel import ModelLoader

from ..errors import ModelError

# What reading a truncated, corrupt or foreign file raises inside torch.load / safetensors.
READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError,
               zipfile.BadZipFile, SafetensorError)

StateDict = dict[str, torch.Tensor]


def read_state_dict(path: str | os.PathLike[str], *, what: str, advice: str = "") -> StateDict:
    """The tensors of the weight file at `path`, on the CPU.

    what: names the model in messages ("ParseNet", "realesrgan-x2plus").
    advice: the next step when the file is unreadable (e.g. "delete it and run `vidrestore
    models download parsenet`").
    """
    path = Path(path)
    tail = f"; {advice}" if advice else ""
    if not path.is_file():
        raise ModelError(f"{what}: weights not found: {path}{tail}")
    try:
        state = ModelLoader(torch.device("cpu")).load_state_dict_from_file(path)
    except pickle.UnpicklingError as exc:
        if "is forbidden" not in str(exc):  # garbage, not a refused global: a corrupt file
            raise ModelError(f"{what}: cannot read {path} ({first_line(exc)}); the file is "
                             f"truncated or corrupt{tail}") from exc
        raise ModelError(f"{what}: {path} holds Python objects besides tensors "
                         f"({first_line(exc)}) and is not loaded, as unpickling them could run "
                         f"code{tail}") from exc
    except READ_ERRORS as exc:
        raise ModelError(f"{what}: cannot read {path} ({first_line(exc)}); the file is "
                         f"truncated or corrupt{tail}") from exc
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{what}: {path} holds no state dict of tensors{tail}")
    return state


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__

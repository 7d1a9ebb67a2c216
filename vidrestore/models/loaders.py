"""`load_image_model`: a resolved restorer or upscaler file as a ready spandrel descriptor.

Files are read safely: safetensors as plain tensors, .pth/.ckpt through spandrel's
`ModelLoader`, whose restricted unpickler accepts tensors and ordered dicts only. Any failure
to read or recognise the file becomes one `ModelError` line, never a raw traceback.

Architectures are detected by spandrel's registry plus the ones vidrestore writes itself for
files spandrel cannot load (RestoreFormer++, see `arch/restoreformer.py`, checked first; and
vidrestore's own FaceUNet, `arch/face_unet.py`, the bundled vidrestore-face-v1).
"""

from __future__ import annotations

import logging
import pickle
import zipfile

import torch
from safetensors import SafetensorError
from spandrel import (
    MAIN_REGISTRY,
    ArchSupport,
    ImageModelDescriptor,
    ModelLoader,
    UnsupportedModelError,
)

from ..errors import ModelError
from .arch.face_unet import FaceUNetArch
from .arch.restoreformer import RestoreFormerPlusPlusArch
from .store import ResolvedModel

log = logging.getLogger(__name__)

# What reading a truncated, corrupt or foreign file raises inside torch.load / safetensors.
_READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError,
                zipfile.BadZipFile, SafetensorError)

IMAGE_ROLES = ("face_restorer", "background_upscaler")
CPU = torch.device("cpu")


def _registry():
    """spandrel's architectures plus ours; ours are tried before the spandrel ones whose
    keys they share (a RestoreFormer++ state dict also has every RestoreFormer v1 key)."""
    registry = MAIN_REGISTRY.copy()  # spandrel's global registry stays as it is
    registry.add(ArchSupport.from_architecture(RestoreFormerPlusPlusArch(),
                                               before=("RestoreFormer",)))
    registry.add(ArchSupport.from_architecture(FaceUNetArch()))  # vidrestore-face-v1
    return registry


ARCHITECTURES = _registry()


def load_image_model(resolved: ResolvedModel, device: torch.device = CPU
                     ) -> ImageModelDescriptor:
    """The model in `resolved.path`, in eval mode with gradients off, on `device`."""
    spec, path = resolved.spec, resolved.path
    if spec.role not in IMAGE_ROLES:
        raise ModelError(f"{spec.name} is a {spec.role}, not an image model; "
                         f"load_image_model takes roles {list(IMAGE_ROLES)}")
    loader = ModelLoader(device, registry=ARCHITECTURES)
    try:
        state = loader.load_state_dict_from_file(path)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{spec.name}: {path} holds Python objects besides tensors "
                         f"({_first_line(exc)}) and is not loaded, as unpickling them could run "
                         f"code; if it is not the official file, delete it and run `vidrestore "
                         f"models download {resolved.requested}`") from exc
    except _READ_ERRORS as exc:
        raise ModelError(f"{spec.name}: cannot read {path} ({_first_line(exc)}); the file is "
                         f"truncated or corrupt: delete it and run `vidrestore models download "
                         f"{resolved.requested}`") from exc
    try:
        descriptor = loader.load_from_state_dict(state)
    except UnsupportedModelError as exc:
        raise ModelError(f"{spec.name}: {path} is not an architecture spandrel "
                         f"{_spandrel_version()} can load (expected {spec.arch})") from exc
    except _READ_ERRORS as exc:  # a known architecture whose tensors do not fit it
        raise ModelError(f"{spec.name}: {path} does not fit the {spec.arch} architecture "
                         f"({_first_line(exc)})") from exc
    _check_descriptor(descriptor, resolved)
    descriptor.eval()
    descriptor.model.requires_grad_(False)
    log.debug("loaded %s from %s as %s x%s", spec.name, path, descriptor.architecture.name,
              descriptor.scale)
    return descriptor


def _check_descriptor(descriptor, resolved: ResolvedModel) -> None:
    spec = resolved.spec
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelError(f"{spec.name}: {resolved.path} holds a "
                         f"{type(descriptor).__name__}, not an image-to-image model")
    if spec.scale is not None and descriptor.scale != spec.scale:
        raise ModelError(f"{spec.name}: {resolved.path} is a x{descriptor.scale} model, the "
                         f"registry says x{spec.scale}; delete the file and fetch it again")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _spandrel_version() -> str:
    import spandrel

    return spandrel.__version__

"""`load_image_model`: a resolved restorer or upscaler file as a ready spandrel descriptor.

Files are read by `reader.read_state_dict` (safetensors, or spandrel's restricted unpickler:
tensors only). Any failure to read or recognise the file becomes one `ModelError` line,
never a raw traceback.

Architectures are detected by spandrel's registry, with spandrel-extra-arches installed into
it (CodeFormer; its licence is non-commercial, see the registry), plus the ones vidrestore
writes itself for files spandrel cannot load (RestoreFormer++, see `arch/restoreformer.py`,
checked first; and vidrestore's own FaceUNet, `arch/face_unet.py`, the bundled
vidrestore-face-v1). Only the model factory (`factory.py`) calls `load_image_model`.
"""

from __future__ import annotations

import logging
import warnings

import torch
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
from .reader import READ_ERRORS, first_line, read_state_dict
from .store import ResolvedModel

log = logging.getLogger(__name__)


IMAGE_ROLES = ("face_restorer", "background_upscaler")
CPU = torch.device("cpu")


def _registry():
    """spandrel's architectures, the extra ones, then ours; ours are tried before the
    spandrel ones whose keys they share (a RestoreFormer++ state dict also has every
    RestoreFormer v1 key)."""
    with warnings.catch_warnings():  # one of its modules calls the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        import spandrel_extra_arches
    # spandrel-extra-arches is installed into spandrel's own registry, the way its README
    # says; ignore_duplicates: another library in the process may have installed it already
    spandrel_extra_arches.install(ignore_duplicates=True)
    registry = MAIN_REGISTRY.copy()
    registry.add(ArchSupport.from_architecture(RestoreFormerPlusPlusArch(),
                                               before=("RestoreFormer",)))
    registry.add(ArchSupport.from_architecture(FaceUNetArch()))  # vidrestore-face-v1, v2
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
    state = read_state_dict(path, what=spec.name, advice=_advice(resolved))
    try:
        descriptor = loader.load_from_state_dict(state)
    except UnsupportedModelError as exc:
        raise ModelError(f"{spec.name}: {path} is not an architecture spandrel "
                         f"{_spandrel_version()} can load (expected {spec.arch})") from exc
    except READ_ERRORS as exc:  # a known architecture whose tensors do not fit it
        raise ModelError(f"{spec.name}: {path} does not fit the {spec.arch} architecture "
                         f"({first_line(exc)})") from exc
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


def _advice(resolved: ResolvedModel) -> str:
    if resolved.source == "file":  # the user's own file: we cannot fetch it again
        return "check the file (a state dict saved with torch.save, or .safetensors)"
    return f"delete it and run `vidrestore models download {resolved.requested}`"


def _spandrel_version() -> str:
    import spandrel

    return spandrel.__version__

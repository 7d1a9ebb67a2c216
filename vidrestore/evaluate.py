"""`evaluate()`: a restored image or video against its reference (the undegraded original).

Frames are matched by index (the counts must agree). A restored frame whose size differs
from the reference's (our outputs are upscaled) is resized to the reference's size first,
area-averaged when shrinking and bicubic when growing, and the result says so. Per frame:

    psnr       dB over the three channels, capped at `PSNR_CAP_DB` (identical frames)
    ssim       on the BT.601 luma, 11 x 11 Gaussian window
    lpips      AlexNet LPIPS when its weights are present, else null with the reason
    flicker    warping error from the previous frame (see `metrics.flicker`) of the
               restored video and of the reference, with the reference's motion
    faces      per face found in the reference: its track and the identity cosine between
               the reference and the restored face, embedded at the same landmarks

The summary holds the means, the identity per track, and pass/fail against `TARGETS`
(a figure that was not measured is neither). Two folders are compared file by file,
matched by name (extension aside); the summary then pools the frames of every pair.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .config import RunConfig
from .errors import InputError
from .io.decode import read_frames
from .io.probe import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaInfo, probe
from .metrics.flicker import MotionEstimator, warping_error
from .metrics.identity import IdentityEncoder, LandmarkedFace, cosine
from .metrics.quality import PSNR_CAP_DB, psnr, ssim

log = logging.getLogger(__name__)

# The targets: name -> (comparison, bound)
TARGETS: dict[str, tuple[str, float]] = {
    "psnr": (">", 25.0), "ssim": (">", 0.8), "lpips": ("<", 0.3), "identity": (">", 0.4)}
ASPECT_TOLERANCE = 0.02  # relative; beyond it the two files cannot show the same picture
LPIPS_MISSING = "LPIPS not available"


@dataclass
class FaceScoring:
    """What identity scoring needs: a detector for the reference frames (`FaceDetector`),
    a maker of fresh trackers (one per file), and the identity encoder."""

    detector: Any
    make_tracker: Callable[[], Any]
    encoder: IdentityEncoder


@dataclass
class Measures:
    """What `evaluate` measures; each may be off or missing.

    identity: how faces are found and scored, or None to skip identity.
    lpips: a callable (N, 3, H, W) [0, 1] pair -> (N,) distances, or None, with the reason.
    """

    identity: FaceScoring | None = None
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    lpips_reason: str | None = LPIPS_MISSING
    device: torch.device = torch.device("cpu")


def open_measures(config: RunConfig, device: torch.device, *, identity: bool = True,
                  lpips: bool = True) -> Measures:
    """The models eval uses, from the run config's model store: the bundled RetinaFace
    MobileNet-0.25 detector and the face tracker's settings, the identity encoder that
    `face.identity_encoder` picks (ArcFace when present, else dlib), LPIPS when its weights
    are in the cache. Nothing is downloaded unless the config allows it."""
    from .metrics.identity import open_identity_encoder
    from .metrics.perceptual import open_lpips
    from .models import ModelStore
    from .models.factory import BUNDLED_DETECTOR, load_model
    from .stages.detect import FaceDetector
    from .stages.track import FaceTracker

    store = ModelStore(config.models)
    measures = Measures(device=device)
    if identity:
        encoder = open_identity_encoder(store, config.face.identity_encoder)
        retinaface = load_model(store, BUNDLED_DETECTOR, "detector", device).module
        detector = FaceDetector(retinaface, device, input_size=config.face.detector_size)
        measures.identity = FaceScoring(detector, lambda: FaceTracker(config.face.track),
                                        encoder)
    if lpips:
        measures.lpips, measures.lpips_reason = open_lpips(store, device)
    else:
        measures.lpips_reason = "not measured: --no-lpips"
    return measures


def identity_target(encoder: IdentityEncoder) -> float:
    """The issue's 0.4 (an ArcFace cosine), or the encoder's own same-person threshold
    when that is higher: dlib's descriptors score 0.79-0.89 between different people, so
    0.4 would pass anyone; its threshold is 0.91."""
    return max(TARGETS["identity"][1], float(encoder.threshold))


def evaluate(reference: str | os.PathLike[str], restored: str | os.PathLike[str],
             measures: Measures) -> dict[str, Any]:
    """Compare two images, two videos, or two folders of them; see the module docstring."""
    ref, res = Path(reference), Path(restored)
    if ref.is_dir() != res.is_dir():
        raise InputError(f"{ref if ref.is_dir() else res}: is a folder and the other is a "
                         "file; give two files or two folders")
    if ref.is_dir():
        pairs = [_evaluate_pair(a, b, measures, label=a.name) for a, b in _folder_pairs(ref, res)]
    else:
        pairs = [_evaluate_pair(ref, res, measures, label=None)]
    frames = [record for pair in pairs for record in pair["frames"]]
    result: dict[str, Any] = {"reference": str(ref), "restored": str(res)}
    if ref.is_dir():
        result["pairs"] = [_without_frames(p) | summarise(p["frames"], measures) for p in pairs]
    else:
        result |= {k: v for k, v in _without_frames(pairs[0]).items() if k != "file"}
    return result | summarise(frames, measures) | {"frames": frames}


def _without_frames(pair: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pair.items() if k != "frames"}


def _folder_pairs(ref: Path, res: Path) -> list[tuple[Path, Path]]:
    media = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    ref_files = {p.stem: p for p in sorted(ref.iterdir()) if p.suffix.lower() in media}
    res_files = {p.stem: p for p in sorted(res.iterdir()) if p.suffix.lower() in media}
    common = sorted(set(ref_files) & set(res_files))
    if not common:
        raise InputError(f"{ref} and {res}: no file names in common (matched by name, "
                         "extension aside)")
    for stem in sorted(set(ref_files) ^ set(res_files)):
        log.warning("%s: no counterpart in the other folder; left out",
                    ref_files.get(stem) or res_files.get(stem))
    return [(ref_files[s], res_files[s]) for s in common]


def _evaluate_pair(ref: Path, res: Path, measures: Measures, label: str | None) -> dict:
    ref_info, res_info = probe(ref), probe(res)
    if ref_info.kind != res_info.kind:
        raise InputError(f"{res}: is {'an' if res_info.kind == 'image' else 'a'} "
                         f"{res_info.kind} and {ref} {'an' if ref_info.kind == 'image' else 'a'} "
                         f"{ref_info.kind}; compare like with like")
    _check_aspect(ref_info, res_info)
    size = (ref_info.width, ref_info.height)
    restored_size = (res_info.width, res_info.height)
    flicker = MotionEstimator() if ref_info.kind == "video" else None
    faces = _FaceScorer(measures.identity) if measures.identity else None
    frames: list[dict[str, Any]] = []
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for index, time_s, ref_rgb, res_rgb in _frame_pairs(ref_info, res_info):
        res_rgb = _resize(res_rgb, size)
        record = {"frame": index, **({"file": label} if label else {}),
                  **_quality(ref_rgb, res_rgb, measures)}
        if flicker is not None:
            record["flicker"] = _flicker(flicker, previous, ref_rgb, res_rgb)
        if faces is not None:
            record["faces"] = faces(ref_rgb, res_rgb, time_s)
        frames.append(record)
        previous = (ref_rgb, res_rgb)
    resized = None
    if restored_size != size:
        how = "area-averaged" if restored_size[0] > size[0] else "bicubic"
        resized = (f"restored {restored_size[0]}x{restored_size[1]} resized to the reference's "
                   f"{size[0]}x{size[1]} ({how}) before comparing")
    return {"file": label, "reference": str(ref), "restored": str(res), "kind": ref_info.kind,
            "size": list(size), "restored_size": list(restored_size), "resized": resized,
            "frames": frames}


def _check_aspect(ref: MediaInfo, res: MediaInfo) -> None:
    ratio_ref, ratio_res = ref.width / ref.height, res.width / res.height
    if abs(ratio_res / ratio_ref - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{res.path}: {res.width}x{res.height} does not have the shape of the "
                         f"reference {ref.path} ({ref.width}x{ref.height}); not the same picture?")


def _frame_pairs(ref: MediaInfo, res: MediaInfo
                 ) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
    """(index, reference time in seconds, reference RGB, restored RGB), in lockstep."""
    missing = object()
    count = 0
    for a, b in zip_longest(read_frames(ref), read_frames(res), fillvalue=missing):
        if a is missing or b is missing:
            more, fewer = (ref, res) if b is missing else (res, ref)
            total = sum(1 for _ in read_frames(more))
            raise InputError(f"{fewer.path}: has {count} frames and {more.path} {total}; "
                             "frames are matched by index, so the counts must agree")
        yield count, a.time, a.image, b.image
        count += 1


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[1::-1] == size:
        return image
    shrinking = image.shape[1] > size[0]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None] \
        .float().div_(255)


def _quality(ref: np.ndarray, res: np.ndarray, measures: Measures) -> dict[str, Any]:
    a, b = _tensor(ref, measures.device), _tensor(res, measures.device)
    record = {"psnr": round(psnr(b, a).item(), 4), "ssim": _finite(ssim(b, a).item(), 5),
              "lpips": None}
    if measures.lpips is not None:
        with torch.no_grad():
            record["lpips"] = _finite(float(measures.lpips(b, a)[0]), 5)
    return record


def _flicker(motion_of: MotionEstimator, previous: tuple[np.ndarray, np.ndarray] | None,
             ref: np.ndarray, res: np.ndarray) -> dict[str, float | None] | None:
    """Warping errors of the restored video and of the reference into this frame."""
    if previous is None:
        return None
    motion = motion_of(previous[0], ref)
    return {"restored": _finite(warping_error(previous[1], res, motion), 4),
            "reference": _finite(warping_error(previous[0], ref, motion), 4),
            "valid_fraction": round(motion.valid_fraction, 4)}


class _FaceScorer:
    """Finds and tracks the faces of the reference; scores the restored face at the same
    landmarks (the detector's, not smoothed) against the reference face."""

    def __init__(self, scoring: FaceScoring) -> None:
        self.detector, self.encoder = scoring.detector, scoring.encoder
        self.tracker = scoring.make_tracker()

    def __call__(self, ref: np.ndarray, res: np.ndarray, time_s: float) -> list[dict[str, Any]]:
        found = self.detector(_tensor(ref, self.detector.device))[0]
        faces = [f for f in self.tracker.update(found, time_s, False) if f.skipped is None]
        if not faces:
            return []
        marks = [f.landmarks_raw.numpy().astype(np.float64) for f in faces]
        ref_emb = self.encoder.embed([LandmarkedFace(ref, m) for m in marks])
        res_emb = self.encoder.embed([LandmarkedFace(res, m) for m in marks])
        scores = cosine(ref_emb, res_emb)
        return [{"track": f.track_id, "box": np.round(f.box.double().numpy(), 1).tolist(),
                 "landmarks": np.round(m, 2).tolist(), "cosine": round(float(s), 4)}
                for f, m, s in zip(faces, marks, np.atleast_1d(scores), strict=True)]


def summarise(frames: list[dict[str, Any]], measures: Measures) -> dict[str, Any]:
    """Means over `frames`, identity per track, and the pass/fail checks."""
    means = {name: _mean(r.get(name) for r in frames) for name in ("psnr", "ssim", "lpips")}
    flicker = [r["flicker"] for r in frames if r.get("flicker")]
    flicker_means = None
    if flicker:
        restored = _mean(f["restored"] for f in flicker)
        reference = _mean(f["reference"] for f in flicker)
        flicker_means = {"restored": restored, "reference": reference,
                         "added": _round(restored - reference if None not in (
                             restored, reference) else None, 4)}
    identity = _identity_summary(frames, measures)
    checks = {
        "psnr": _check("psnr", means["psnr"]), "ssim": _check("ssim", means["ssim"]),
        "lpips": _check("lpips", means["lpips"],
                        None if means["lpips"] is not None else measures.lpips_reason or
                        "no frames"),
        "identity": _identity_check(identity, measures)}
    verdicts = [c["pass"] for c in checks.values() if c["pass"] is not None]
    return {"frame_count": len(frames), "psnr_cap_db": PSNR_CAP_DB,
            "means": {**means, "flicker": flicker_means},
            "lpips_reason": None if measures.lpips is not None else measures.lpips_reason,
            "identity": identity, "checks": checks,
            "pass": all(verdicts) if verdicts else None}


def _identity_summary(frames: list[dict[str, Any]], measures: Measures) -> dict[str, Any] | None:
    if measures.identity is None:
        return None
    encoder = measures.identity.encoder
    scores: dict[str, list[float]] = defaultdict(list)
    for record in frames:
        prefix = f"{record['file']}:" if record.get("file") else ""
        for face in record.get("faces", []):
            scores[f"{prefix}{face['track']}"].append(face["cosine"])
    tracks = {key: {"frames": len(values), "mean": _round(float(np.mean(values)), 4),
                    "min": _round(float(np.min(values)), 4)} for key, values in scores.items()}
    return {"encoder": encoder.name, "target": identity_target(encoder), "tracks": tracks}


def _identity_check(identity: dict[str, Any] | None, measures: Measures) -> dict[str, Any]:
    """Passes when every track's mean cosine is above the target."""
    if identity is None:
        return {"value": None, "target": None, "pass": None, "reason": "identity not measured"}
    if not identity["tracks"]:
        return {"value": None, "target": f"> {identity['target']}", "pass": None,
                "reason": "no face found in the reference"}
    worst = min(t["mean"] for t in identity["tracks"].values())
    return {"value": worst, "target": f"> {identity['target']}",
            "pass": bool(worst > identity["target"]), "reason": None,
            "of": "the lowest mean cosine of a track"}


def _check(name: str, value: float | None, reason: str | None = None) -> dict[str, Any]:
    op, bound = TARGETS[name]
    if value is None:
        return {"value": None, "target": f"{op} {bound}", "pass": None,
                "reason": reason or "not measured"}
    ok = value > bound if op == ">" else value < bound
    return {"value": value, "target": f"{op} {bound}", "pass": bool(ok), "reason": None}


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def _finite(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)

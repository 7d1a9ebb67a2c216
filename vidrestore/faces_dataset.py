"""`vidrestore faces extract`: a dataset of aligned faces cut from any media.

Faces are found, tracked and aligned by the face path's own stages (`FaceTracking`: the
detector, the tracker with its One-Euro smoothed landmarks and scene cuts; `align`: the
similarity fit and warp to the FFHQ 512 template), so a training crop is exactly what the
restorer sees in a run.

Layout of DATASET:

    faces/<source id>/<frame>_<track>.png   512x512 aligned crops (RGB PNG)
    parts/<source id>.jsonl                 one record per kept face, written when the
                                            source is finished (resuming skips it)
    manifest.jsonl                          every record of every finished source, with its
                                            split ("train" or "val")
    dataset.json                            settings, sources, split and filter counts

A record: source, source_id, frame, time_s, track, file, box, landmarks (frame pixels,
smoothed), score, eye_px, sharpness, identity (dlib 128-D, unit norm), chip_affine (the 2x3
map from crop pixels to dlib's 150 px identity chip) and split.

Splits are by source, and sources whose faces look like the same person (mean identity
embeddings at dlib's same-person cosine or above) are grouped first, so a person in
validation never appears in training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .batch import FaceSet, FrameBatch
from .config import TrackConfig
from .errors import InputError
from .io.decode import read_frames
from .io.probe import media_kind, probe
from .stages.align import face_template
from .stages.detect import FaceDetector
from .stages.face_align import align
from .stages.face_track import FaceTracking
from .stages.track import face_geometry

log = logging.getLogger(__name__)

CROP_SIZE = 512
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's identity chip
# Sources are grouped as one person from this cosine of their mean unit dlib embeddings. On
# ../shared/media/clean, faces within one clip score 0.90-0.99 with each other and source
# means of different people 0.78-0.94; dlib's own 0.6-distance rule (0.91 here) chained every
# clip into one group, so the grouping uses the stricter 0.945.
SAME_PERSON_COSINE = 0.945
ProgressFn = Callable[[str, int], None]  # (source id, faces kept so far in it)


@dataclass(frozen=True)
class ExtractSettings:
    """Filters of `extract_faces`.

    min_eye_px: eye distance in frame pixels below which a face is dropped (too small).
    min_score: least detection score.
    min_sharpness: least variance of the Laplacian of the crop's grey centre (0-255 scale);
        clean faces of the media measure 3-20 (smooth skin), a smeared one below 1.
    dedupe: a video face is kept only when its crop differs from the last kept crop of its
        track by at least this mean absolute difference (0-1, on 64 px thumbnails).
    every: look at every n-th frame of a video.
    max_per_source: most faces kept from one source (0: no limit).
    val_fraction: share of identity groups of sources put in validation.
    val_sources: source file names (globs) forced into validation; others then train.
    seed: for the split.
    detector_size: the detector's working size, as in a run.
    """

    min_eye_px: float = 24.0
    min_score: float = 0.9
    min_sharpness: float = 1.0
    dedupe: float = 0.02
    every: int = 1
    max_per_source: int = 0
    val_fraction: float = 0.2
    val_sources: tuple[str, ...] = ()
    seed: int = 0
    detector_size: int = 640


def media_files(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image and video files named, or found (sorted, recursively) in folders named."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and media_kind(p))
        elif item.is_file():
            if media_kind(item) is None:
                raise InputError(f"{item}: not an image or video file")
            found.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    if not found:
        raise InputError("no image or video files among the inputs")
    return found


def source_id(path: Path) -> str:
    """A stable folder-safe id: the stem plus 8 hex digits of the absolute path."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', path.stem)}-{digest}"


class FaceCutter:
    """Detect, track and align faces frame by frame, as the pipeline does, on the CPU."""

    def __init__(self, detector: FaceDetector, encoder, settings: ExtractSettings) -> None:
        self.detector, self.encoder, self.settings = detector, encoder, settings
        self.template = face_template(CROP_SIZE).numpy()

    def cut(self, path: Path, out_dir: Path, on_face: Callable[[], None] | None = None
            ) -> list[dict[str, Any]]:
        """Records of the faces kept from `path`; crops written under `out_dir`."""
        s = self.settings
        info = probe(path)
        tracking = FaceTracking(self.detector, TrackConfig())
        last_thumb: dict[int, np.ndarray] = {}
        records: list[dict[str, Any]] = []
        out_dir.mkdir(parents=True, exist_ok=True)
        for frame in read_frames(info):
            if frame.index % s.every:
                continue
            image = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255
            time_s = frame.time if info.kind == "video" else 0.0
            faces = tracking(FrameBatch(inputs=image, scale=1, times_s=(time_s,))).faces
            chosen = [f for f in range(len(faces)) if self._usable(faces, f)]
            crops = align(image, faces, chosen, CROP_SIZE).crops
            for f, crop in zip(chosen, crops, strict=True):
                record = self._keep(faces, f, crop, frame, last_thumb, out_dir, info.kind)
                if record is not None:
                    records.append(record)
                    if on_face:
                        on_face()
                if s.max_per_source and len(records) >= s.max_per_source:
                    return records
        return records

    def _usable(self, faces: FaceSet, f: int) -> bool:
        """Face f scores high enough, is big enough and is not a profile."""
        eye_px, yaw = face_geometry(faces.landmarks[f].numpy().astype(np.float64))
        s = self.settings
        return faces.scores[f] >= s.min_score and eye_px >= s.min_eye_px and yaw <= 0.8

    def _keep(self, faces: FaceSet, f: int, crop: torch.Tensor, frame,
              last_thumb: dict[int, np.ndarray], out_dir: Path, kind: str
              ) -> dict[str, Any] | None:
        """Face f's record, its crop written, unless the crop is blurred or a near copy of
        the last one kept of its track."""
        s, track = self.settings, faces.track_ids[f]
        landmarks = faces.landmarks[f].numpy().astype(np.float64)
        eye_px, _ = face_geometry(landmarks)
        rgb = (crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        sharp = sharpness(rgb)
        if sharp < s.min_sharpness:
            return None
        thumb = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        previous = last_thumb.get(track)
        if kind == "video" and previous is not None and np.abs(thumb - previous).mean() < s.dedupe:
            return None
        last_thumb[track] = thumb
        name = f"{frame.index:06d}_{track}.png"
        cv2.imwrite(str(out_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        identity, chip = self.identity(rgb)
        return {"frame": frame.index, "time_s": round(frame.time, 4), "track": track,
                "file": f"{out_dir.name}/{name}", "box": _r(faces.boxes[f].numpy()),
                "landmarks": _r(landmarks), "score": round(faces.scores[f], 4),
                "eye_px": round(eye_px, 2), "sharpness": round(sharp, 2),
                "identity": _r(identity, 5), "chip_affine": _r(chip, 5)}

    def identity(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(128,) unit dlib embedding of an aligned crop and its (2, 3) crop->chip affine."""
        from .metrics.identity import LandmarkedFace

        face = LandmarkedFace(crop, self.template)
        embedding = self.encoder.embed([face])[0]
        shape = self.encoder._predictor(crop, self.encoder._box(self.template))
        details = self.encoder._dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        return embedding, chip_affine(details)


def chip_affine(details) -> np.ndarray:
    """(2, 3) float64 map from image pixels to the pixels of dlib's chip `details`.

    dlib's `extract_image_chip` samples chip pixel (c, r) at the image point got by scaling
    (c, r) into the chip's rectangle and rotating it about the rectangle's centre by
    `details.angle`; this is that map, inverted.
    """
    rect = details.rect
    left, top, right, bottom = rect.left(), rect.top(), rect.right(), rect.bottom()
    sx = (right - left) / (details.cols - 1)
    sy = (bottom - top) / (details.rows - 1)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    # chip -> image: p = R (S q + tl - c) + c
    rs = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    shift = np.array([cx, cy]) + np.array([[cos, -sin], [sin, cos]]) @ (
        np.array([left, top]) - np.array([cx, cy]))
    inv = np.linalg.inv(rs)
    return np.concatenate([inv, (-inv @ shift)[:, None]], 1)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian over the central half of a crop, on 0-255 grey."""
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb[h // 4:3 * h // 4, w // 4:3 * w // 4], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


def extract_faces(inputs: Sequence[str | os.PathLike[str]], dataset: str | os.PathLike[str],
                  settings: ExtractSettings = ExtractSettings(), *,
                  detector: FaceDetector | None = None, encoder=None,
                  progress: ProgressFn | None = None) -> dict[str, Any]:
    """Cut faces from `inputs` into `dataset`; finished sources are skipped (resumable).

    Returns the dataset summary written to dataset.json.
    """
    root = Path(dataset)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    files = media_files(inputs)
    if detector is None:
        from .models import ModelStore
        from .models.factory import BUNDLED_DETECTOR, load_model

        retinaface = load_model(ModelStore(), BUNDLED_DETECTOR, "detector").module
        detector = FaceDetector(retinaface, "cpu", input_size=settings.detector_size)
    if encoder is None:
        from .metrics.identity import open_identity_encoder
        from .models import ModelStore

        encoder = open_identity_encoder(ModelStore(), "dlib")
    cutter = FaceCutter(detector, encoder, settings)
    for path in files:
        sid = source_id(path)
        part = root / "parts" / f"{sid}.jsonl"
        if part.is_file():
            log.info("%s: already extracted, skipped", path)
            continue
        kept = [0]

        def on_face(sid=sid, kept=kept) -> None:
            kept[0] += 1
            if progress:
                progress(sid, kept[0])

        records = cutter.cut(path, root / "faces" / sid, on_face)
        for record in records:
            record.update(source=str(path), source_id=sid)
        tmp = part.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, part)  # a source counts as done only once its part is whole
        log.info("%s: %d faces", path, len(records))
    return write_manifest(root, settings)


def write_manifest(root: Path, settings: ExtractSettings,
                   source_ids: list[str] | None = None) -> dict[str, Any]:
    """manifest.jsonl and dataset.json from the finished sources (default: every part in
    the dataset, so inputs added by a later extract join the earlier ones)."""
    if source_ids is None:
        source_ids = sorted(p.stem for p in (root / "parts").glob("*.jsonl"))
    records = [json.loads(line) for sid in source_ids
               for line in (root / "parts" / f"{sid}.jsonl").read_text().splitlines()]
    splits = split_sources(records, settings)
    for record in records:
        record["split"] = splits[record["source_id"]]
    tmp = root / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, root / "manifest.jsonl")
    summary = {
        "settings": asdict(settings), "faces": len(records),
        "sources": {sid: {"split": splits.get(sid, "none"),
                          "faces": sum(r["source_id"] == sid for r in records)}
                    for sid in source_ids},
        "train_faces": sum(r["split"] == "train" for r in records),
        "val_faces": sum(r["split"] == "val" for r in records),
    }
    (root / "dataset.json").write_text(json.dumps(summary, indent=1))
    return summary


def identity_groups(records: list[dict[str, Any]], threshold: float) -> list[set[str]]:
    """Sources joined when their mean identity embeddings reach `threshold` cosine
    (transitively): each group is taken to be one person, or people seen together."""
    by_source: dict[str, list[np.ndarray]] = {}
    for r in records:
        by_source.setdefault(r["source_id"], []).append(np.asarray(r["identity"]))
    ids = sorted(by_source)
    means = np.stack([np.mean(by_source[s], 0) for s in ids]) if ids else np.zeros((0, 128))
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sims = means @ means.T
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if sims[i, j] >= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, set[str]] = {}
    for i, sid in enumerate(ids):
        groups.setdefault(find(i), set()).add(sid)
    return sorted(groups.values(), key=lambda g: sorted(g))


def split_sources(records: list[dict[str, Any]], settings: ExtractSettings) -> dict[str, str]:
    """source id -> "train" or "val", whole identity groups at a time."""
    from fnmatch import fnmatch

    groups = identity_groups(records, SAME_PERSON_COSINE)
    names = {r["source_id"]: Path(r["source"]).name for r in records}
    if settings.val_sources:
        forced = {sid for sid, name in names.items()
                  if any(fnmatch(name, pat) for pat in settings.val_sources)}
        return {sid: "val" if group & forced else "train" for group in groups for sid in group}
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(groups))
    n_val = round(settings.val_fraction * len(groups)) if len(groups) > 1 else 0
    if settings.val_fraction > 0 and len(groups) > 1:
        n_val = max(n_val, 1)
    val = {int(i) for i in order[:n_val]}
    return {sid: "val" if g in val else "train" for g, group in enumerate(groups) for sid in group}


def read_manifest(dataset: str | os.PathLike[str], split: str | None = None
                  ) -> list[dict[str, Any]]:
    path = Path(dataset) / "manifest.jsonl"
    if not path.is_file():
        raise InputError(f"{dataset}: no manifest.jsonl; run `vidrestore faces extract` first")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if split is None or r["split"] == split]


def _r(array: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()

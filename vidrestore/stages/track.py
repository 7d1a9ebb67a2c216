"""Face tracking across frames, with per-track landmark smoothing and scene-cut detection.

`FaceTracker.update` takes one frame's `Detections` at a time, in presentation order, and
returns one `TrackedFace` per detected face: a track id that stays with the face, the raw and
the smoothed landmarks and box, and a reason when the face is not worth restoring (too small,
a profile). Its state is the tracker object itself; nothing is global.

Association: each live track predicts its box and landmarks at the new frame's time from its
last detection and smoothed velocity; the cost of pairing a track with a detection is
``(1 - IoU) + landmark_weight * d``, with ``d`` the mean landmark distance in face sizes
(face size: square root of the predicted box's area). Pairs with IoU below `min_iou` or ``d``
above `max_landmark_distance` are not allowed; the rest are paired by an optimal assignment
(`scipy.optimize.linear_sum_assignment`). Unpaired detections start tracks with new ids;
a track missed for up to `max_missed` frames in a row is kept and ends when missed once more.
Meanwhile it emits nothing, or, with `restore_missed`, a face at its predicted place marked
`predicted`. A scene cut ends every track.

Smoothing: a One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) per track over the five
landmarks and the two box corners, driven by the frames' timestamps, so variable frame rates
need no special case. The cutoff is shared by the x and y of a point and set from that
point's speed in face sizes per second, so the filter neither depends on the direction of
motion nor on the face's size in pixels: a still face gets a low cutoff (no shake), a moving
one a high cutoff (little lag).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..config import TrackConfig
from .detect import Detections

log = logging.getLogger(__name__)

_FORBIDDEN = 1e6  # cost of a pair the gates rule out; far above any allowed cost
_UNCONFIRMED = "unconfirmed"  # the skip reason of a track that never scored high enough


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame, in frame pixels; float32 CPU tensors.

    track_id: the same for the same face from frame to frame; never reused.
    box: (4,) x1, y1, x2, y2, smoothed.
    landmarks_raw: (5, 2) as detected (RetinaFace order: eyes, nose, mouth corners).
    landmarks: (5, 2) smoothed; what alignment should use.
    score: the detector's face probability.
    skipped: None to restore the face, else why not (unconfirmed, too small, profile).
    predicted: the detector missed the face in this frame; box and landmarks (raw and
        smoothed alike) are where the track's motion predicts it, score its last detection's
        (only with `TrackConfig.restore_missed`).
    """

    track_id: int
    box: torch.Tensor
    landmarks_raw: torch.Tensor
    landmarks: torch.Tensor
    score: float
    skipped: str | None = None
    predicted: bool = False


class OneEuroFilter:
    """One-Euro low-pass over P points in 2-D, with one cutoff per point from its speed.

    Positions in pixels, times in seconds; the speed that raises the cutoff is divided by
    the `scale` given with each sample (the face size in pixels), so it reads in face sizes
    per second.
    """

    def __init__(self, min_cutoff_hz: float, beta: float, d_cutoff_hz: float,
                 points: np.ndarray, time_s: float):
        self.min_cutoff_hz, self.beta, self.d_cutoff_hz = min_cutoff_hz, beta, d_cutoff_hz
        self.value = np.asarray(points, np.float64).copy()  # (P, 2) smoothed
        self.raw = self.value.copy()  # (P, 2) the last sample
        self.derivative = np.zeros_like(self.value)  # (P, 2) the filter's dx, pixels/s
        self.trend = np.zeros_like(self.value)  # (P, 2) velocity of `value`, pixels/s
        self.time_s = time_s

    def __call__(self, points: np.ndarray, time_s: float, scale: float) -> np.ndarray:
        """points: (P, 2) new raw sample at `time_s`; returns the (P, 2) smoothed value."""
        dt = time_s - self.time_s
        if dt <= 0:  # a repeated timestamp carries no new time: keep the estimate
            return self.value
        points = np.asarray(points, np.float64)
        # Casiez et al.: the derivative is taken against the last *smoothed* value
        raw_velocity = (points - self.value) / dt
        self.derivative += _alpha(self.d_cutoff_hz, dt) * (raw_velocity - self.derivative)
        speed = np.linalg.norm(self.derivative, axis=1, keepdims=True) / max(scale, 1e-6)
        alpha = _alpha(self.min_cutoff_hz + self.beta * speed, dt)  # (P, 1)
        value = self.value + alpha * (points - self.value)
        self.trend = (value - self.value) / dt
        self.value, self.raw, self.time_s = value, points, time_s
        return self.value

    def predict(self, time_s: float) -> np.ndarray:
        """(P, 2) where the points will be at `time_s`: the last sample moved on at the
        smoothed trend (the filter's own derivative overstates speed by 1/alpha, and its
        smoothed value trails the face, so neither alone predicts well)."""
        return self.raw + self.trend * max(0.0, time_s - self.time_s)


def _alpha(cutoff_hz: float | np.ndarray, dt: float) -> float | np.ndarray:
    """Smoothing factor of a first-order low-pass with this cutoff for a step of dt s."""
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class _Track:
    """One face followed over frames: its filter, missed-frame count and skip state."""

    def __init__(self, track_id: int, box: np.ndarray, landmarks: np.ndarray, time_s: float,
                 config: TrackConfig):
        self.track_id = track_id
        self.filter = OneEuroFilter(config.min_cutoff_hz, config.beta, config.d_cutoff_hz,
                                    _points(box, landmarks), time_s)
        self.missed = 0
        self.best_score = 0.0
        self.last_score = 0.0
        self.skipped: str | None = None

    def predict(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (4,) box and (5, 2) landmarks at `time_s`."""
        return _split(self.filter.predict(time_s))

    def smooth(self, box: np.ndarray, landmarks: np.ndarray,
               time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Feed one detection; returns the smoothed (4,) box and (5, 2) landmarks."""
        self.missed = 0
        scale = _face_size(_split(self.filter.value)[0])
        return _split(self.filter(_points(box, landmarks), time_s, scale))


def _points(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(7, 2): the five landmarks, then the box's top-left and bottom-right corners."""
    return np.concatenate([landmarks, box.reshape(2, 2)])


def _split(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[5:].reshape(4), points[:5]


def _face_size(box: np.ndarray) -> float:
    """Square root of the box's area, in pixels (at least 1)."""
    return float(max(1.0, math.sqrt(max(0.0, (box[2] - box[0]) * (box[3] - box[1])))))


class FaceTracker:
    """Follows faces through a stream, one frame per `update`, in presentation order."""

    def __init__(self, config: TrackConfig | None = None):
        self.config = config or TrackConfig()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_time_s: float | None = None

    @property
    def track_ids(self) -> frozenset[int]:
        """Ids of the live tracks, those bridged over missed frames included; an id that
        leaves this set has ended for good."""
        return frozenset(t.track_id for t in self._tracks)

    def reset(self) -> None:
        """End every track (a new stream, a seek); ids keep counting up, never reused."""
        self._tracks = []
        self._last_time_s = None

    def update(self, detections: Detections, time_s: float,
               scene_cut: bool = False) -> list[TrackedFace]:
        """Track one frame's faces.

        detections: the frame's faces from `FaceDetector` (any device; read on the host).
        time_s: the frame's presentation time in seconds.
        scene_cut: True when this frame starts a new shot: every track ends first.
        Returns one `TrackedFace` per detection, in the detections' order. Tracks missed in
        this frame but still bridged emit nothing, or with `restore_missed` a predicted face
        each, after those.
        """
        if scene_cut or (self._last_time_s is not None and time_s < self._last_time_s):
            if not scene_cut:
                log.debug("time went back from %.3f to %.3f s: ending all tracks",
                          self._last_time_s, time_s)
            self.reset()
        self._last_time_s = time_s
        boxes = detections.boxes.detach().cpu().double().numpy()
        landmarks = detections.landmarks.detach().cpu().double().numpy()
        scores = detections.scores.detach().cpu().double().numpy()
        pairs = self._associate(boxes, landmarks, time_s)
        seen = [self._follow(pairs.get(k), boxes[k], landmarks[k], float(scores[k]), time_s)
                for k in range(len(scores))]
        self._end_missed({track for track, _ in seen})
        faces = [face for _, face in seen]
        if self.config.restore_missed:
            faces += self._predicted({track for track, _ in seen}, time_s)
        return faces

    def _predicted(self, seen: set[_Track], time_s: float) -> list[TrackedFace]:
        """A face at its predicted place for each live track missed in this frame."""
        faces = []
        for track in self._tracks:
            if track in seen:
                continue
            box, landmarks = track.predict(time_s)
            faces.append(TrackedFace(track.track_id, _tensor(box), _tensor(landmarks),
                                     _tensor(landmarks), track.last_score, track.skipped,
                                     predicted=True))
        return faces

    def _associate(self, boxes: np.ndarray, landmarks: np.ndarray,
                   time_s: float) -> dict[int, _Track]:
        """Detection index -> track, by optimal assignment over the allowed pairs."""
        if not self._tracks or not len(boxes):
            return {}
        predicted = [t.predict(time_s) for t in self._tracks]
        pred_boxes = np.stack([p[0] for p in predicted])
        pred_marks = np.stack([p[1] for p in predicted])
        iou = _box_iou(pred_boxes, boxes)  # (T, D)
        sizes = np.array([_face_size(b) for b in pred_boxes])[:, None]
        dist = np.linalg.norm(pred_marks[:, None] - landmarks[None], axis=-1).mean(-1) / sizes
        allowed = (iou >= self.config.min_iou) & (dist <= self.config.max_landmark_distance)
        cost = np.where(allowed, 1 - iou + self.config.landmark_weight * dist, _FORBIDDEN)
        rows, cols = linear_sum_assignment(cost)
        return {int(c): self._tracks[r] for r, c in zip(rows, cols, strict=True)
                if allowed[r, c]}

    def _follow(self, track: _Track | None, box: np.ndarray, landmarks: np.ndarray,
                score: float, time_s: float) -> tuple[_Track, TrackedFace]:
        """Smooth one detection on its track (a new one if None) and describe the face."""
        if track is None:
            track = _Track(self._next_id, box, landmarks, time_s, self.config)
            self._next_id += 1
            self._tracks.append(track)
            smooth_box, smooth_marks = box, landmarks
        else:
            smooth_box, smooth_marks = track.smooth(box, landmarks, time_s)
        track.best_score = max(track.best_score, score)
        track.last_score = score
        track.skipped = _skip_reason(smooth_marks, track.best_score, track.skipped,
                                     self.config)
        return track, TrackedFace(track.track_id, _tensor(smooth_box), _tensor(landmarks),
                                  _tensor(smooth_marks), score, track.skipped)

    def _end_missed(self, seen: set[_Track]) -> None:
        """Count a miss for each track not `seen` in this frame; end those past the limit."""
        kept = []
        for track in self._tracks:
            if track not in seen:
                track.missed += 1
            if track.missed <= self.config.max_missed:
                kept.append(track)
            else:
                log.debug("track %d ended after %d missed frames", track.track_id,
                          track.missed)
        self._tracks = kept


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, np.float32).copy())


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) and (B, 4) x1y1x2y2 boxes -> (A, B) intersection over union."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def face_geometry(landmarks: np.ndarray) -> tuple[float, float]:
    """(eye distance in pixels, yaw ratio) of (5, 2) landmarks.

    Yaw ratio: the nose tip's offset from the eyes' midpoint along the eye axis, in eye
    distances, unsigned: 0 for a frontal face, rising with the head's turn whatever its roll.
    """
    eyes = landmarks[1] - landmarks[0]
    eye_distance = float(np.linalg.norm(eyes))
    if eye_distance < 1e-6:
        return eye_distance, math.inf
    offset = landmarks[2] - (landmarks[0] + landmarks[1]) / 2
    return eye_distance, abs(float(offset @ eyes)) / eye_distance**2


def _skip_reason(landmarks: np.ndarray, best_score: float, before: str | None,
                 config: TrackConfig) -> str | None:
    """Why the face is not restored, or None; a face skipped `before` must clear the
    geometric limits by the hysteresis margin to come back (a restored one is held to the
    plain limits), so a face near a limit does not flicker between the two."""
    if best_score < config.min_face_score:
        return f"{_UNCONFIRMED}: best score {best_score:.2f} < {config.min_face_score:.2f}"
    eye_distance, yaw_ratio = face_geometry(landmarks)
    skipped_for_shape = before is not None and not before.startswith(_UNCONFIRMED)
    margin = config.skip_hysteresis if skipped_for_shape else 0.0
    min_eyes = config.min_eye_distance_px * (1 + margin)
    max_yaw = config.max_yaw_ratio * (1 - margin)
    if eye_distance < min_eyes:
        return f"too small: eye distance {eye_distance:.1f} px < {min_eyes:.1f}"
    if yaw_ratio > max_yaw:
        return f"profile: yaw ratio {yaw_ratio:.2f} > {max_yaw:.2f}"
    return None


# --------------------------------------------------------------------------- scene cuts

_THUMB = 64  # side of the thumbnail the histogram is taken from: detail does not matter
_BINS = 8  # per channel: a joint 8x8x8 colour histogram


def detect_scene_cuts(frames: torch.Tensor, previous: torch.Tensor | None = None,
                      threshold: float = TrackConfig.scene_cut_threshold) -> list[bool]:
    """Which frames start a new shot.

    frames: (N, 3, H, W) float RGB in [0, 1], consecutive frames, on any device.
    previous: (3, H, W) the frame before frames[0] (the end of the last batch), or None at
        the start of a stream (frames[0] is then not a cut).
    threshold: histogram distance above which frame i is a cut from frame i - 1.
    Returns N booleans. The distance is 1 minus the intersection of the joint 8x8x8 colour
    histograms of 64x64 thumbnails: 0 for the same colours, 1 for disjoint ones. On the
    talking-head clips in ../shared/media consecutive frames stay below 0.07; a change of
    clip or photo gives 0.49 to 0.9.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        return []
    stream = frames if previous is None else torch.cat([previous[None].to(frames), frames])
    hist = _colour_histograms(stream)
    distance = 1 - torch.minimum(hist[1:], hist[:-1]).sum(1)
    cuts = (distance > threshold).tolist()
    return [False, *cuts] if previous is None else cuts


def _colour_histograms(frames: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, BINS**3) normalised joint colour histograms."""
    thumbs = F.adaptive_avg_pool2d(frames.float(), (_THUMB, _THUMB))
    q = (thumbs * _BINS).long().clamp(0, _BINS - 1)
    index = ((q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2]).flatten(1)
    hist = torch.zeros(frames.shape[0], _BINS**3, device=frames.device)
    hist.scatter_add_(1, index, torch.ones_like(index, dtype=hist.dtype))
    return hist / hist.sum(1, keepdim=True)

"""Face tracking: association, bridging, scene cuts, skip reasons, One-Euro smoothing, and
the tracker and scene-cut detector on real clips from ../shared/media."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vidrestore.errors import ConfigError
from vidrestore.stages.detect import Detections
from vidrestore.stages.track import (
    FaceTracker,
    OneEuroFilter,
    TrackConfig,
    TrackedFace,
    detect_scene_cuts,
    face_geometry,
)

# a frontal face's landmarks as fractions of its box: eyes, nose tip, mouth corners
TEMPLATE = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.76], [0.64, 0.76]])
FPS = 25.0


def face(cx: float, cy: float, size: float = 100.0, yaw: float = 0.0):
    """(box (4,), landmarks (5, 2)) of a square face centred at (cx, cy); `yaw` moves the
    nose along the eye axis by that many eye distances."""
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    marks = box[:2] + TEMPLATE * size
    marks[2, 0] += yaw * (TEMPLATE[1, 0] - TEMPLATE[0, 0]) * size
    return box, marks


def detections(*faces, score: float = 0.99) -> Detections:
    if not faces:
        return Detections(torch.zeros(0, 4), torch.zeros(0, 5, 2), torch.zeros(0))
    boxes = torch.tensor(np.stack([f[0] for f in faces]), dtype=torch.float32)
    marks = torch.tensor(np.stack([f[1] for f in faces]), dtype=torch.float32)
    return Detections(boxes, marks, torch.full((len(faces),), score))


def run(tracker: FaceTracker, frames, start: int = 0) -> list[list[TrackedFace]]:
    """Feed one Detections per frame at FPS; return the tracked faces per frame."""
    return [tracker.update(d, (start + i) / FPS, scene_cut=False) for i, d in enumerate(frames)]


# --------------------------------------------------------------------------- association


def test_two_faces_crossing_keep_their_ids():
    """Two faces swap places horizontally, overlapping as they pass; detection order is
    shuffled every frame. At frame 16 they are one step (15 px) apart, so each detection
    is nearer (10 px, vertically) to where the *other* face was a frame before than to where
    its own was: only the prediction from each track's velocity keeps the ids apart."""
    rng = np.random.default_rng(0)
    tracker = FaceTracker()
    ids = {"right": set(), "left": set()}
    for i in range(34):
        a = face(100 + 15 * i, 200)  # moving right, 3.75 face sizes per second
        b = face(595 - 15 * i, 210)  # moving left, 10 px lower
        order = [("right", a), ("left", b)]
        if rng.random() < 0.5:
            order.reverse()
        out = tracker.update(detections(*(f for _, f in order)), i / FPS, False)
        for (name, _), tracked in zip(order, out, strict=True):
            ids[name].add(tracked.track_id)
    assert len(ids["right"]) == 1 and len(ids["left"]) == 1
    assert ids["right"] != ids["left"]


def test_face_entering_and_leaving_gets_its_own_id():
    tracker = FaceTracker(TrackConfig(max_missed=2))
    stay, visitor = face(100, 100), face(400, 120)
    frames = [detections(stay)] * 5 + [detections(stay, visitor)] * 5 + [detections(stay)] * 5
    out = run(tracker, frames)
    assert {f.track_id for faces in out for f in faces if f.box[0] < 200} == {0}
    assert {f.track_id for faces in out[5:10] for f in faces if f.box[0] > 200} == {1}
    assert [len(faces) for faces in out] == [1] * 5 + [2] * 5 + [1] * 5
    # back after the visitor's track ended (3 misses > max_missed 2): a new id
    later = run(tracker, [detections(stay, visitor)], start=15)[0]
    assert sorted(f.track_id for f in later) == [0, 2]


def test_three_frame_miss_is_bridged_without_emitting():
    """A fast face (20 px a frame) missed for 3 frames has moved 80 px when it comes back:
    too far for the gates from where it was, near where its velocity predicts."""
    tracker = FaceTracker()  # max_missed 5
    frames = [detections(face(100 + 20 * i, 150)) for i in range(10)]
    frames[4:7] = [detections()] * 3
    out = run(tracker, frames)
    assert [len(faces) for faces in out] == [1] * 4 + [0] * 3 + [1] * 3
    assert {f.track_id for faces in out for f in faces} == {0}


def test_restore_missed_emits_the_bridged_face_where_it_is_predicted():
    """The same fast face and 3-frame miss, with restore_missed (the live preset): the
    missed frames get the face where its velocity puts it, marked predicted; once the
    track has ended it emits nothing."""
    tracker = FaceTracker(TrackConfig(restore_missed=True, max_missed=3))
    frames = [detections(face(100 + 20 * i, 150)) for i in range(12)]
    frames[4:7] = [detections()] * 3
    frames[8:] = [detections()] * 4  # 4 misses > max_missed: ends in frame 11
    out = run(tracker, frames)
    assert [len(faces) for faces in out] == [1] * 11 + [0]
    assert {f.track_id for faces in out for f in faces} == {0}
    assert [faces[0].predicted for faces in out[:11]] == [False] * 4 + [True] * 3 + \
        [False] + [True] * 3
    for i in (4, 5, 6):
        predicted = out[i][0]
        true_box, true_marks = face(100 + 20 * i, 150)
        assert np.abs(predicted.landmarks.numpy() - true_marks).max() < 12  # of 20 px a frame
        assert torch.equal(predicted.landmarks, predicted.landmarks_raw)
        assert predicted.score == pytest.approx(0.99) and predicted.skipped is None
    assert not out[7][0].predicted and out[7][0].track_id == 0


def test_a_new_track_gets_the_full_max_missed():
    """Born in frame 0, missed in frames 1-2 (max_missed 2): still the same face in 3."""
    tracker = FaceTracker(TrackConfig(max_missed=2))
    out = run(tracker, [detections(face(200, 150))] + [detections()] * 2
              + [detections(face(200, 150))] + [detections()] * 3
              + [detections(face(200, 150))])
    assert [f.track_id for faces in out for f in faces] == [0, 0, 1]


def test_ten_frame_miss_ends_the_track():
    tracker = FaceTracker()
    frames = [detections(face(200, 150))] * 3 + [detections()] * 10 + [detections(face(200, 150))]
    out = run(tracker, frames)
    assert out[0][0].track_id == 0 and out[-1][0].track_id == 1


def test_scene_cut_ends_all_tracks():
    tracker = FaceTracker()
    still = detections(face(200, 150))
    run(tracker, [still] * 5)
    cut = tracker.update(detections(face(210, 150)), 5 / FPS, scene_cut=True)
    assert cut[0].track_id == 1
    # a new track starts from the raw detection: nothing carried over from the old shot
    torch.testing.assert_close(cut[0].landmarks, cut[0].landmarks_raw)
    assert tracker.update(still, 6 / FPS, scene_cut=False)[0].track_id == 1


def test_ids_are_never_reused_after_reset_or_time_going_back():
    tracker = FaceTracker()
    run(tracker, [detections(face(200, 150))] * 3)
    tracker.reset()
    assert tracker.update(detections(face(200, 150)), 0.0)[0].track_id == 1
    assert tracker.update(detections(face(200, 150)), 0.04)[0].track_id == 1
    # a seek backwards without a scene-cut flag still ends the tracks
    assert tracker.update(detections(face(200, 150)), 0.0)[0].track_id == 2


def test_far_detection_is_not_paired():
    """Gating: a face that jumps by several face sizes in one frame is a new face."""
    tracker = FaceTracker()
    out = run(tracker, [detections(face(100, 100))] * 3 + [detections(face(500, 100))])
    assert out[-1][0].track_id == 1


# --------------------------------------------------------------------------- skip reasons


def test_tiny_and_profile_faces_are_reported_but_skipped():
    cfg = TrackConfig()
    tracker = FaceTracker(cfg)
    tiny = face(50, 50, size=25)  # eyes 9 px apart
    profile = face(300, 200, yaw=1.0)
    frontal = face(600, 200)
    out = tracker.update(detections(tiny, profile, frontal), 0.0)
    assert len(out) == 3
    assert out[0].skipped.startswith("too small")
    assert out[1].skipped.startswith("profile")
    assert out[2].skipped is None
    assert face_geometry(out[2].landmarks.numpy().astype(np.float64)) == pytest.approx(
        (36.0, 0.0), abs=1e-4)


def test_low_score_track_is_skipped_until_confirmed():
    tracker = FaceTracker(TrackConfig(min_face_score=0.9))
    doubtful = [tracker.update(detections(face(200, 200), score=0.6), i / FPS)[0]
                for i in range(3)]
    assert all(f.skipped.startswith("unconfirmed") for f in doubtful)
    sure = tracker.update(detections(face(200, 200), score=0.95), 3 / FPS)[0]
    later = tracker.update(detections(face(200, 200), score=0.6), 4 / FPS)[0]
    assert sure.skipped is None and later.skipped is None  # confirmed once is enough
    assert {f.track_id for f in [*doubtful, sure, later]} == {0}


def test_skip_has_hysteresis():
    """A tiny face growing just past the limit stays skipped until it clears the margin."""
    tracker = FaceTracker(TrackConfig(min_eye_distance_px=16.0, skip_hysteresis=0.1))
    sizes = [40.0] * 10 + [46.0] * 30 + [52.0] * 40  # eye distance 14.4, 16.6, 18.7 px
    out = run(tracker, [detections(face(200, 200, size=s)) for s in sizes])
    skipped = [faces[0].skipped is not None for faces in out]
    assert all(skipped[:40])  # 16.6 px is above 16 but below 16 * 1.1 = 17.6
    assert not any(skipped[-10:])


# --------------------------------------------------------------------------- smoothing


def _second_difference(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, 2, axis=0), axis=-1).mean())


def _track_points(times: np.ndarray, truth: np.ndarray, noise_px: float, seed: int = 0):
    """Run a single face along `truth` (M, 2) centres with landmark noise; return the raw
    and smoothed (M, 5, 2) landmarks."""
    rng = np.random.default_rng(seed)
    tracker = FaceTracker()
    raw, smooth = [], []
    for t, (cx, cy) in zip(times, truth, strict=True):
        box, marks = face(cx, cy, size=120)
        marks = marks + rng.normal(0, noise_px, marks.shape)
        box = box + rng.normal(0, noise_px, box.shape)
        (tracked,) = tracker.update(detections((box, marks)), float(t))
        raw.append(tracked.landmarks_raw.numpy())
        smooth.append(tracked.landmarks.numpy())
    return np.stack(raw), np.stack(smooth)


def _lag_frames(times, smooth, path, fps):
    """Shift (frames) of the true path that best fits the smoothed landmarks."""
    offsets = TEMPLATE * 120 - 60
    shifts = np.arange(-3, 3.001, 0.05)
    err = [np.mean((smooth - (path(times - s / fps)[:, None] + offsets)) ** 2) for s in shifts]
    return shifts[int(np.argmin(err))]


@pytest.mark.parametrize("vfr", [False, True])
def test_still_face_stops_shaking(vfr):
    times = np.arange(200) / FPS
    if vfr:  # intervals alternating 0.5 and 1.5 frame periods, as tests/media.py writes
        times = np.cumsum(np.r_[0, np.tile([0.5, 1.5], 100)[:199]]) / FPS
    raw, smooth = _track_points(times, np.tile([300.0, 200.0], (200, 1)), noise_px=1.0)
    assert _second_difference(smooth[20:]) < _second_difference(raw[20:]) / 3


@pytest.mark.parametrize("vfr", [False, True])
def test_moving_face_lags_at_most_one_frame(vfr):
    """A face on a sine path peaking near one face size per second."""
    def path(t):
        return np.stack([300 + 60 * np.sin(2 * np.pi * t / 3), 200 + 0 * t], axis=1)

    times = np.arange(250) / FPS
    if vfr:
        times = np.cumsum(np.r_[0, np.tile([0.5, 1.5], 125)[:249]]) / FPS
    raw, smooth = _track_points(times, path(times), noise_px=0.5)
    assert 0 <= _lag_frames(times, smooth, path, FPS) <= 1.0
    assert _second_difference(smooth) < _second_difference(raw)


def test_box_is_smoothed_with_the_landmarks():
    rng = np.random.default_rng(1)
    tracker = FaceTracker()
    boxes = []
    for i in range(100):
        box, marks = face(300, 200)
        noisy = (box + rng.normal(0, 1.0, 4), marks + rng.normal(0, 1.0, marks.shape))
        boxes.append(tracker.update(detections(noisy), i / FPS)[0].box.numpy())
    boxes = np.stack(boxes)[20:]
    assert np.abs(np.diff(boxes, 2, axis=0)).mean() < 0.3  # raw: about 2.3
    np.testing.assert_allclose(boxes.mean(0), face(300, 200)[0], atol=0.5)


def test_one_euro_repeated_timestamp_keeps_the_estimate():
    f = OneEuroFilter(1.0, 1.0, 1.0, np.zeros((1, 2)), 0.0)
    first = f(np.ones((1, 2)), 0.04, scale=100).copy()
    np.testing.assert_array_equal(f(np.full((1, 2), 50.0), 0.04, scale=100), first)


def test_outputs_are_float32_cpu_tensors_of_the_documented_shapes():
    (tracked,) = FaceTracker().update(detections(face(100, 100)), 0.0)
    assert tracked.box.shape == (4,) and tracked.landmarks.shape == (5, 2)
    assert tracked.landmarks_raw.shape == (5, 2) and isinstance(tracked.score, float)
    for t in (tracked.box, tracked.landmarks, tracked.landmarks_raw):
        assert t.dtype == torch.float32 and t.device.type == "cpu"


@pytest.mark.parametrize("field,value", [("min_cutoff_hz", 0.0), ("max_missed", -1),
                                         ("min_iou", 1.5), ("beta", -1.0)])
def test_bad_config_raises(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(TrackConfig(), **{field: value})


# --------------------------------------------------------------------------- scene cuts


def _video(media, name: str, every: int = 1) -> tuple[torch.Tensor, list[float]]:
    """(N, 3, H, W) float RGB in [0, 1] and presentation times of a clip's frames."""
    import av

    frames, times = [], []
    with av.open(str(media / "video" / name)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.pts * frame.time_base))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255, times


def _image(media, name: str, size: tuple[int, int]) -> torch.Tensor:
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.resize(cv2.imread(str(media / "images" / name)), size[::-1])
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 255


def test_scene_cut_between_two_real_photos(media):
    a = _image(media, "gfpgan_whole_imgs_Blake_Lively.jpg", (256, 320))
    b = _image(media, "codeformer_whole_imgs_00.jpg", (256, 320))
    frames = torch.stack([a, a, a, b, b])
    assert detect_scene_cuts(frames, None) == [False, False, False, True, False]
    # across batches: the cut is the first frame of the second batch
    assert detect_scene_cuts(frames[3:], previous=frames[2]) == [True, False]
    assert detect_scene_cuts(frames[:0], None) == []


def test_no_scene_cut_in_real_talking_head_clips(media):
    for name in ("talk_real_1.mp4", "talk_real_2.mp4", "talk_real_3.mp4"):
        frames, _ = _video(media, name)
        cuts = detect_scene_cuts(frames[:100], None) + detect_scene_cuts(frames[100:],
                                                                         frames[99])
        assert len(cuts) == len(frames) and not any(cuts), name


# --------------------------------------------------------------------------- real video


@pytest.fixture(scope="module")
def detector():
    from vidrestore.models.bundled_faces import bundled_retinaface
    from vidrestore.stages.detect import FaceDetector

    return FaceDetector(bundled_retinaface(), "cpu", input_size=320)


def _track_clip(detector, frames: torch.Tensor, times: list[float]) -> list[list[TrackedFace]]:
    tracker, out = FaceTracker(), []
    for start in range(0, len(frames), 16):  # the pipeline's way: detect a batch, then loop
        batch = frames[start:start + 16]
        cuts = detect_scene_cuts(batch, frames[start - 1] if start else None)
        for det, t, cut in zip(detector(batch), times[start:start + 16], cuts, strict=True):
            out.append(tracker.update(det, t, cut))
    return out


def test_one_track_for_the_whole_of_talk_real_1(media, detector):
    frames, times = _video(media, "talk_real_1.mp4")
    out = _track_clip(detector, frames, times)
    assert len(out) == 248
    assert all(len(faces) == 1 for faces in out)
    assert {f.track_id for faces in out for f in faces} == {0}
    assert not any(f.skipped for faces in out for f in faces)


def test_talk_real_3_front_face_and_face_behind_keep_two_ids(media, detector):
    """talk_real_3: a face in front and a second one behind, cut by the top of the frame.
    The detector finds both in every frame (eyes about 84 and 49 px apart, both frontal),
    so both are tracked with one id each for all 117 frames, and both are restored."""
    frames, times = _video(media, "talk_real_3.mp4")
    out = _track_clip(detector, frames, times)
    assert all(len(faces) == 2 for faces in out)
    front = {f.track_id for faces in out for f in faces if f.box[1] > 100}
    behind = {f.track_id for faces in out for f in faces if f.box[1] <= 100}
    assert len(front) == 1 and len(behind) == 1 and front != behind
    assert not any(f.skipped for faces in out for f in faces)


def test_talk_real_2_false_face_on_a_hand_is_not_restored(media, detector):
    """talk_real_2: one face moving a lot; in frame 294 the detector also finds a "face" on
    her hand (score 0.66). The real face keeps one id; the hand gets a one-frame track of
    its own, reported as unconfirmed."""
    frames, times = _video(media, "talk_real_2.mp4")
    out = _track_clip(detector, frames, times)
    assert all(len(faces) == (2 if i == 294 else 1) for i, faces in enumerate(out))
    assert {faces[0].track_id for faces in out} == {0}
    assert not any(faces[0].skipped for faces in out)
    hand = out[294][1]
    assert hand.track_id == 1 and hand.skipped.startswith("unconfirmed")

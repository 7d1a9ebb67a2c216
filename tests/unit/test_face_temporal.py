"""Temporal steadying of restored faces (`stages.face_temporal`): re-drawn detail is averaged
along the face's motion, real changes pass through, tracks restart after a gap, and the
stage only runs where a restorer changes faces."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vidrestore.batch import FaceSet, FrameBatch
from vidrestore.config import FaceConfig
from vidrestore.errors import ConfigError
from vidrestore.stages import StreamStage
from vidrestore.stages.face_path import FaceModels, build_face_path
from vidrestore.stages.face_temporal import FaceTemporal
from vidrestore.stages.restore import PassthroughRestorer

SIZE = 128


def smooth_face(seed: int = 0) -> torch.Tensor:
    """(3, SIZE, SIZE) float image with structure at several scales (flow can lock on)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, SIZE // 8, SIZE // 8, generator=g)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    return x.clamp(0, 1)[0]


def batch_of(crops: torch.Tensor, restored: torch.Tensor, times: list[float],
             track_ids: tuple[int, ...] | None = None, ended: frozenset[int] = frozenset()
             ) -> FrameBatch:
    """One face a frame (track 0 unless `track_ids`), frame n at times[n]."""
    n = len(times)
    ids = track_ids or (0,) * n
    faces = FaceSet(frame_index=torch.arange(n), track_ids=ids, boxes=torch.zeros(n, 4),
                    landmarks_raw=torch.zeros(n, 5, 2), landmarks=torch.zeros(n, 5, 2),
                    scores=(0.99,) * n, skipped=(None,) * n, predicted=(False,) * n,
                    ended_tracks=ended, restore_index=torch.arange(n),
                    crop_frames=torch.arange(n), affines=torch.zeros(n, 2, 3), crops=crops,
                    restored=restored)
    return FrameBatch(inputs=torch.rand(n, 3, 8, 8), scale=1, times_s=tuple(times),
                      faces=faces)


def frame_change(faces: torch.Tensor) -> float:
    """Mean absolute change between consecutive faces, 8-bit levels."""
    return float((faces[1:] - faces[:-1]).abs().mean() * 255)


def test_detail_redrawn_on_every_frame_is_steadied():
    """A still face whose restored detail changes on every frame (as a restorer's answer
    to each frame's noise does): steadied, the frame-to-frame change falls by more than
    half and every face stays within the noise of the true face."""
    face = smooth_face()
    frames = 8
    crops = face.expand(frames, -1, -1, -1).clone()
    noise = torch.randn(frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    restored = (face + 0.01 * noise).clamp(0, 1)
    stage = FaceTemporal(strength=0.7, threshold=0.1)
    out = stage(batch_of(crops, restored, [i / 25 for i in range(frames)])).faces.restored
    assert frame_change(out) < 0.5 * frame_change(restored)
    assert float((out - face).abs().mean()) < float((restored - face).abs().mean())
    assert torch.equal(out[0], restored[0])  # the first frame has nothing to steady against


def test_a_moving_face_is_followed_not_smeared():
    """The face shifts 2 px a frame in crop space: the blend follows the motion, so each
    steadied face stays on its own frame's face (no trail of the frame before)."""
    face = smooth_face(2)
    frames = 6
    crops = torch.stack([torch.roll(face, 2 * i, dims=2) for i in range(frames)])
    stage = FaceTemporal(strength=0.7, threshold=0.1)
    out = stage(batch_of(crops, crops.clone(), [float(i) for i in range(frames)]))
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    lag = float((out.faces.restored - crops)[inner].abs().mean() * 255)
    unmoved = float((crops[1:] - crops[:-1])[inner].abs().mean() * 255)
    assert lag < 0.1 * unmoved, (lag, unmoved)


def test_a_real_change_is_taken_as_it_is():
    """A new face (a cut within one track, an eye closing) differs by far more than the
    threshold: it comes through unchanged."""
    a, b = smooth_face(3), smooth_face(4)
    crops = torch.stack([a, b])
    stage = FaceTemporal(strength=0.9, threshold=0.02)
    out = stage(batch_of(crops, crops.clone(), [0.0, 1.0])).faces.restored
    changed = (out[1] - b).abs().amax(0) > 1e-6
    assert float(changed.float().mean()) < 0.02


def test_history_carries_across_batches_and_restarts_after_a_gap():
    face = smooth_face(5)
    noisy = [(face + 0.02 * torch.randn(3, SIZE, SIZE)).clamp(0, 1)[None] for _ in range(3)]
    stage = FaceTemporal(strength=0.7, threshold=0.2)
    stage(batch_of(face[None], noisy[0], [0.0]))
    carried = stage(batch_of(face[None], noisy[1], [1.0])).faces.restored
    assert not torch.equal(carried, noisy[1])  # steadied against the batch before
    # the next batch's frame has no face of track 0, the one after has: start afresh
    empty = FrameBatch(inputs=torch.rand(1, 3, 8, 8), scale=1, times_s=(2.0,),
                       faces=FaceSet(frame_index=torch.zeros(0, dtype=torch.int64),
                                     track_ids=(), boxes=torch.zeros(0, 4),
                                     landmarks_raw=torch.zeros(0, 5, 2),
                                     landmarks=torch.zeros(0, 5, 2), scores=(), skipped=(),
                                     predicted=()))
    stage(empty)
    after_gap = stage(batch_of(face[None], noisy[2], [3.0])).faces.restored
    assert torch.equal(after_gap, noisy[2])


def test_ended_tracks_are_forgotten_and_the_state_copies_for_retries():
    face = smooth_face(6)
    stage = FaceTemporal(strength=0.5, threshold=0.1)
    assert isinstance(stage, StreamStage)
    stage(batch_of(face[None], face[None].clone(), [0.0], track_ids=(7,)))
    snapshot = copy.deepcopy(stage.state)
    assert set(snapshot.faces) == {7}
    stage(batch_of(face[None], face[None].clone(), [1.0], track_ids=(7,), ended={7}))
    assert not stage.state.faces and not stage.state.guides and not stage.state.times
    stage.state = snapshot  # a retry puts the snapshot back: track 7 continues from it
    assert set(stage.state.faces) == {7}


def test_two_tracks_in_one_frame_are_steadied_each_against_its_own_history():
    a, b = smooth_face(7), smooth_face(8)
    stage = FaceTemporal(strength=0.7, threshold=0.1)
    crops = torch.stack([a, b, a, b])
    faces = FaceSet(frame_index=torch.tensor([0, 0, 1, 1]), track_ids=(1, 2, 1, 2),
                    boxes=torch.zeros(4, 4), landmarks_raw=torch.zeros(4, 5, 2),
                    landmarks=torch.zeros(4, 5, 2), scores=(0.99,) * 4, skipped=(None,) * 4,
                    predicted=(False,) * 4, restore_index=torch.arange(4),
                    crop_frames=torch.tensor([0, 0, 1, 1]), affines=torch.zeros(4, 2, 3),
                    crops=crops, restored=crops.clone())
    out = stage(FrameBatch(inputs=torch.rand(2, 3, 8, 8), scale=1, times_s=(0.0, 0.04),
                           faces=faces)).faces.restored
    assert float((out - crops).abs().max()) < 2 / 255  # a's history never blends into b


def _stage_names(config: FaceConfig, restorer) -> list[str]:
    from vidrestore.models.bundled_faces import bundled_retinaface
    from vidrestore.stages.detect import FaceDetector

    models = FaceModels(detector=FaceDetector(bundled_retinaface(), "cpu"), restorer=restorer)
    return [s.name for s in build_face_path(config, models, torch.device("cpu")).stages]


def test_the_stage_runs_after_colour_only_where_faces_are_restored():
    on = FaceConfig(temporal_strength=0.6)
    names = _stage_names(on, lambda x: x)
    assert names.index("temporal") == names.index("colour") + 1
    assert "temporal" not in _stage_names(on, PassthroughRestorer())  # nothing added to steady
    assert "temporal" not in _stage_names(FaceConfig(temporal_strength=0.0), lambda x: x)


@pytest.mark.parametrize("bad", [{"temporal_strength": 1.0}, {"temporal_strength": -0.1},
                                 {"temporal_threshold": 0.0}])
def test_bad_temporal_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="face.temporal_"):
        FaceConfig(**bad)

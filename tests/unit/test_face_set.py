"""The `FaceSet` the face path's stages hand on: its checks on construction, what each stage
adds to it, stages used on their own (as `faces extract` uses the tracker and the aligner),
observers that change no pixel, and the stream state the retry snapshot copies."""

from __future__ import annotations

import copy
import dataclasses

import cv2
import numpy as np
import pytest
import torch

from vidrestore.batch import FaceSet, FrameBatch, IdentityScores
from vidrestore.config import FaceConfig, TrackConfig
from vidrestore.models.bundled_faces import bundled_retinaface
from vidrestore.stages import StreamStage
from vidrestore.stages.detect import FaceDetector
from vidrestore.stages.face_align import FACE_SIZE, FaceAlignment
from vidrestore.stages.face_path import FaceModels, build_face_path
from vidrestore.stages.face_restore import FaceRestoration
from vidrestore.stages.face_track import FaceTracking
from vidrestore.stages.upscale import PlainResize

CPU = torch.device("cpu")


def tracked(faces: int = 2, frames: int = 2) -> FaceSet:
    """A FaceSet of `faces` faces spread over `frames` frames, nothing aligned."""
    return FaceSet(frame_index=torch.arange(faces) % frames, track_ids=tuple(range(faces)),
                   boxes=torch.zeros(faces, 4), landmarks_raw=torch.zeros(faces, 5, 2),
                   landmarks=torch.zeros(faces, 5, 2), scores=(0.99,) * faces,
                   skipped=(None,) * faces, predicted=(False,) * faces)


def aligned(faces: FaceSet, size: int = 8) -> FaceSet:
    k = len(faces)
    return dataclasses.replace(faces, restore_index=torch.arange(k),
                               crop_frames=faces.frame_index.clone(),
                               affines=torch.zeros(k, 2, 3), crops=torch.rand(k, 3, size, size))


def test_a_face_set_checks_shapes_dtypes_and_devices():
    faces = tracked()
    for bad in ({"boxes": torch.zeros(2, 5)}, {"boxes": torch.zeros(2, 4, dtype=torch.float64)},
                {"landmarks": torch.zeros(2, 4, 2)}, {"frame_index": torch.zeros(2)},
                {"scores": (0.9,)}, {"skipped": (None, None, None)}):
        with pytest.raises(ValueError, match="FaceSet"):
            dataclasses.replace(faces, **bad)
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(faces, crops=torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="without aligned crops"):
        dataclasses.replace(faces, restored=torch.rand(2, 3, 8, 8))
    ready = aligned(faces)
    with pytest.raises(ValueError, match="restored must be"):
        dataclasses.replace(ready, restored=torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="paste_masks must be"):
        dataclasses.replace(ready, paste_masks=torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="crop_frames must be int64"):
        dataclasses.replace(ready, crop_frames=torch.zeros(2))
    with pytest.raises(ValueError, match="affines must be float"):
        dataclasses.replace(ready, affines=torch.zeros(2, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="crops must be float"):
        dataclasses.replace(ready, crops=torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    scores = IdentityScores("x", 0.5, np.ones(3), np.zeros(3, bool), np.ones(3))
    with pytest.raises(ValueError, match="3 identity scores for 2"):
        dataclasses.replace(ready, identity=scores)
    assert ready.restored_count == 2 and len(ready) == 2 and ready.in_frame(1) == [1]


def test_a_batch_refuses_faces_of_frames_it_does_not_have():
    frames = torch.rand(2, 3, 16, 16)
    FrameBatch(inputs=frames, scale=1, faces=tracked(4, 2))
    with pytest.raises(ValueError, match="frame 2 in a batch of 2"):
        FrameBatch(inputs=frames, scale=1, faces=tracked(3, 3))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(bundled_retinaface(), CPU)


@pytest.fixture(scope="module")
def portrait(media) -> torch.Tensor:
    """(2, 3, H, W): the two-face portrait twice, as two frames of a still shot."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    frame = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    return frame.expand(2, -1, -1, -1).contiguous()


def test_tracker_and_aligner_work_on_their_own_and_leave_their_input_alone(detector,
                                                                          portrait):
    batch = FrameBatch(inputs=portrait, scale=1, times_s=(0.0, 0.04))
    tracking = FaceTracking(detector, TrackConfig())
    found = tracking(batch)
    assert batch.faces is None and isinstance(tracking, StreamStage)
    faces = found.faces
    assert len(faces) == 4 and faces.frame_index.tolist() == [0, 0, 1, 1]
    assert faces.track_ids[:2] == faces.track_ids[2:] and faces.restore_index is None
    cut = FaceAlignment(CPU)(found)
    assert found.faces.crops is None  # the stage's input keeps its FaceSet
    crops = cut.faces.crops
    assert crops.shape == (4, 3, FACE_SIZE, FACE_SIZE) and cut.faces.restored is None
    assert torch.equal(crops[:2], crops[2:])  # the same frame twice: the same crops
    restored = FaceRestoration(lambda x: 1 - x)(cut).faces.restored
    assert torch.equal(restored, 1 - crops) and cut.faces.restored is None


def test_observers_add_figures_and_change_no_pixel(detector, portrait):
    path = build_face_path(FaceConfig(model="passthrough"),
                           FaceModels(detector, lambda x: 1 - x), CPU)
    batch = PlainResize()(FrameBatch(inputs=portrait[:1], scale=2))
    for stage in path.stages:
        before = batch
        batch = stage(batch)
        if stage.name in ("identity", "measure", "lpips"):
            assert batch.output is before.output and batch.inputs is before.inputs
            assert torch.equal(batch.faces.restored, before.faces.restored)
    assert [s.name for s in path.stages] == ["detect", "align", "restore", "colour",
                                             "temporal", "paste", "measure"]
    assert batch.faces.background is not None and batch.output is not batch.faces.background
    assert len(batch.notes[0]["faces"]) == 2


def test_the_retry_snapshot_puts_back_tracker_and_colour_history(detector, portrait):
    """A batch run again from the copied state gives the same tracks and pixels (tracker,
    colour and temporal history all put back)."""
    path = build_face_path(FaceConfig(model="passthrough", colour_history=3, identity=False),
                           FaceModels(detector, lambda x: (x * 0.8).clamp(0, 1)), CPU)
    first = PlainResize()(FrameBatch(inputs=portrait, scale=1, times_s=(0.0, 0.04)))
    second = PlainResize()(FrameBatch(inputs=portrait, scale=1, times_s=(0.08, 0.12)))
    path(first)
    saved = copy.deepcopy(path.state)
    once = path(second)
    assert path.state[1].tracks  # the colour history has the tracks
    assert path.state[2].faces  # and the temporal steadying its last faces
    path.state = saved
    again = path(second)
    assert torch.equal(once.output, again.output)
    assert [f["track"] for f in once.notes[1]["faces"]] == \
        [f["track"] for f in again.notes[1]["faces"]]
    with pytest.raises(ValueError):
        path.state = saved[:1]  # one state per stream stage, no fewer

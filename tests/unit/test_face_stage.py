"""The face path's stages on real photos with the bundled detector: records, tracks that start
and end, the identity guard, the parsing mask, the `FaceSet` each stage hands on, and how
`build_stages` wires the face path."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vidrestore.batch import FrameBatch
from vidrestore.compose import build_stages
from vidrestore.config import FaceConfig, TrackConfig, build_config
from vidrestore.errors import ModelError
from vidrestore.models import ModelStore
from vidrestore.models.bundled_faces import bundled_retinaface
from vidrestore.stages.detect import Detections, FaceDetector
from vidrestore.stages.face_parse import soften_parse_mask
from vidrestore.stages.face_path import FaceModels, FacePath, build_face_path
from vidrestore.stages.restore import PassthroughRestorer
from vidrestore.stages.upscale import PlainResize

CPU = torch.device("cpu")
FACE_KEYS = {"track", "box", "landmarks_raw", "landmarks", "score", "skipped", "identity",
             "flagged", "guard_fidelity", "psnr", "ssim", "lpips", "lpips_reason", "sharpness",
             "predicted"}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(bundled_retinaface(), CPU)


def photo(media, name: str) -> torch.Tensor:
    """(1, 3, H, W) float32 RGB in [0, 1]."""
    bgr = cv2.imread(str(media / "images" / name))
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255


def stage_for(detector, restorer=None, parser=None, identity=None, **config) -> FacePath:
    models = FaceModels(detector, restorer or PassthroughRestorer(), parser, identity)
    return build_face_path(FaceConfig(model="passthrough", **config), models, CPU)


def run(stage: FacePath, frames: torch.Tensor, scale: int = 1, start: int = 0) -> FrameBatch:
    """The batch after the plain background and the face stage; frames 50 ms apart."""
    times = tuple(0.05 * (start + i) for i in range(len(frames)))
    batch = PlainResize()(FrameBatch(inputs=frames, scale=scale, times_s=times))
    return stage(batch)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / max((a - b).square().mean().item(), 1e-20))


def test_passthrough_logs_every_face_of_a_group_photo_and_keeps_it(media, detector):
    frame = photo(media, "codeformer_whole_imgs_02.png")
    out = run(stage_for(detector), frame, scale=2)
    faces = out.notes[0]["faces"]
    assert len(faces) == 4 and len({f["track"] for f in faces}) == 4
    for face in faces:
        assert set(face) == FACE_KEYS
        assert len(face["landmarks"]) == len(face["landmarks_raw"]) == 5
        assert face["skipped"] is None and face["psnr"] > 45 and face["ssim"] > 0.99
        assert face["lpips"] is None and face["lpips_reason"]
        assert face["identity"] is None  # no encoder given
    background = PlainResize()(FrameBatch(inputs=frame, scale=2)).output
    assert psnr(out.output, background) > 45  # alignment and paste-back lose next to nothing
    assert set(out.notes[0]["sharpness"]) == {"input", "output"}
    assert {"faces.detect", "faces.restore", "faces.paste"} <= set(out.notes[0]["timings_ms"])


def test_faces_entering_and_leaving_get_new_tracks_and_ended_ones_are_forgotten(media,
                                                                                detector):
    face = photo(media, "gfpgan_whole_imgs_Blake_Lively.jpg")
    blank = torch.full_like(face, 0.5)
    frames = torch.cat([blank, face, face, face, *[blank] * 7, face, face])
    stage = stage_for(detector)
    notes = []
    for start in range(0, len(frames), 3):  # batches of 3, as the pipeline makes them
        notes += run(stage, frames[start:start + 3], start=start).notes
        if start == 6:  # in the blank stretch: the first tracks have ended
            assert stage.part("colour").state.tracks == frozenset()
    ids = [[f["track"] for f in note["faces"]] for note in notes]
    assert [len(i) for i in ids] == [0, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 2, 2]
    first, second = set(ids[1]), set(ids[11])
    assert ids[1] == ids[2] == ids[3] and ids[11] == ids[12]
    assert first.isdisjoint(second)  # ids are never reused
    assert stage.part("colour").state.tracks == second


def test_a_batch_without_faces_keeps_the_background(detector):
    frames = torch.full((2, 3, 64, 96), 0.3)
    out = run(stage_for(detector), frames, scale=2)
    assert [n["faces"] for n in out.notes] == [[], []]
    assert torch.equal(out.output, PlainResize()(FrameBatch(inputs=frames, scale=2)).output)


def test_the_background_must_run_first(detector):
    with pytest.raises(ValueError, match="background"):
        stage_for(detector)(FrameBatch(inputs=torch.rand(1, 3, 32, 32), scale=1))


class BlinkingDetector:
    """The real detector, except that it finds nothing in the frames (stream order) listed."""

    def __init__(self, detector: FaceDetector, blind: set[int]) -> None:
        self.detector, self.blind, self.seen = detector, blind, 0

    def __call__(self, frames: torch.Tensor):
        found = self.detector(frames)
        nothing = Detections(torch.zeros(0, 4), torch.zeros(0, 5, 2), torch.zeros(0))
        out = [nothing if self.seen + i in self.blind else d for i, d in enumerate(found)]
        self.seen += len(frames)
        return out


@pytest.mark.parametrize("restore_missed", [False, True])
def test_a_missed_detection_is_restored_where_predicted_with_restore_missed(
        media, detector, restore_missed):
    frame = photo(media, "gfpgan_whole_imgs_Blake_Lively.jpg")
    frames = frame.expand(5, -1, -1, -1).contiguous()
    inverted = lambda faces: 1 - faces  # noqa: E731 - a visible "restoration"
    stage = stage_for(BlinkingDetector(detector, {2}), inverted,
                      track=TrackConfig(restore_missed=restore_missed))
    out = run(stage, frames)
    counts = [len(note["faces"]) for note in out.notes]
    changed = [(out.output[i] - frames[i]).abs().mean().item() for i in range(5)]
    if not restore_missed:  # the face blinks back to the input in frame 2
        assert counts == [2, 2, 0, 2, 2] and changed[2] == 0 < min(changed[:2] + changed[3:])
        return
    assert counts == [2] * 5
    assert [f["predicted"] for f in out.notes[2]["faces"]] == [True, True]
    assert not any(f["predicted"] for i in (0, 1, 3, 4) for f in out.notes[i]["faces"])
    assert changed[2] == pytest.approx(changed[1], rel=0.05)  # restored like its neighbours


class ThumbnailEncoder:
    """A stand-in identity encoder: the mean-free 16x16 grey thumbnail of each face."""

    name, threshold = "thumbnail", 0.95

    def embed(self, faces):
        thumbs = [cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (16, 16),
                             interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
                  for img, _ in faces]
        return np.stack([t - t.mean() for t in thumbs])


def test_identity_guard_blends_a_face_that_fails_back_toward_the_input(media, detector):
    frame = photo(media, "gfpgan_whole_imgs_Blake_Lively.jpg")
    inverted = lambda faces: 1 - faces  # noqa: E731 - a restorer that loses the identity
    plain = run(stage_for(detector, inverted, identity=ThumbnailEncoder()), frame)
    guarded = run(stage_for(detector, inverted, identity=ThumbnailEncoder(),
                            identity_guard=True), frame)
    for before, after in zip(plain.notes[0]["faces"], guarded.notes[0]["faces"], strict=True):
        assert before["flagged"] and after["flagged"]  # the restorer's own output failed
        assert before["guard_fidelity"] == 1.0 and before["identity"]["cosine"] < 0
        # 0.75 is still inverted, 0.5 nearly flat (0.58, 0.84); 0.25 passes (0.999)
        assert after["guard_fidelity"] == 0.25 and after["identity"]["cosine"] > 0.9
        assert after["identity"]["encoder"] == "thumbnail"
    background = PlainResize()(FrameBatch(inputs=frame, scale=1)).output
    assert psnr(guarded.output, background) > psnr(plain.output, background) + 3


class DiscParser(torch.nn.Module):
    """A stand-in ParseNet: 'skin' inside a disc of radius 120 px at the crop's centre."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def parse(self, faces: torch.Tensor) -> torch.Tensor:
        size = faces.shape[-1]
        axis = torch.arange(size) - (size - 1) / 2
        disc = (axis[None] ** 2 + axis[:, None] ** 2) < 120**2
        logits = torch.zeros(faces.shape[0], 19, size, size)
        logits[:, 1] = disc.float() * 10
        logits[:, 0] = 5.0
        return logits


def test_a_parsing_mask_limits_the_paste_to_the_face(media, detector):
    frame = photo(media, "gfpgan_whole_imgs_Blake_Lively.jpg")
    black = lambda faces: torch.zeros_like(faces)  # noqa: E731 - visible wherever pasted
    background = PlainResize()(FrameBatch(inputs=frame, scale=1)).output

    def changed(parser) -> int:
        out = run(stage_for(detector, black, parser=parser), frame).output
        return int(((out - background).abs().amax(1) > 1 / 255).sum())

    square, disc = changed(None), changed(DiscParser())
    # a disc of radius 120 (blurred) in a 512 square: about a quarter of the pixels
    assert 0.15 * square < disc < 0.45 * square


def test_parse_mask_softening_matches_facexlib():
    """facexlib: GaussianBlur((101, 101), 11) twice on the 0/255 mask, a 10 px border of 0."""
    yy, xx = np.mgrid[:512, :512]
    hard = (((xx - 250) / 170.0) ** 2 + ((yy - 280) / 210.0) ** 2 < 1).astype(np.float64)
    hard[:60, :] = 1  # touches the border too
    expected = cv2.GaussianBlur(cv2.GaussianBlur(hard * 255, (101, 101), 11), (101, 101), 11)
    expected[:10], expected[-10:], expected[:, :10], expected[:, -10:] = 0, 0, 0, 0
    ours = soften_parse_mask(torch.from_numpy(hard).float()[None, None])[0, 0].double().numpy()
    assert np.abs(ours - expected / 255).max() < 1e-4


# --- build_stages --------------------------------------------------------------------------


def _build(tmp_path, **face):
    cfg = build_config({"background": {"model": "none"}, "face": face,
                        "models": {"download": False, "dir": str(tmp_path)}})
    return cfg, build_stages(cfg, CPU, ModelStore(cfg.models))


def test_background_runs_before_the_face_stage(tmp_path):
    _, built = _build(tmp_path, model="passthrough", identity=False)
    assert [s.name for s in built.stages] == ["background", "faces"]
    assert built.models["face"]["name"] == "passthrough"
    assert built.models["detector"]["name"] == "retinaface-mobilenet0.25-onnx"  # offline
    assert built.models["parser"]["source"] is None  # no ParseNet weights here
    assert any("retinaface-resnet50" in w for w in built.warnings)


def test_missing_gfpgan_gets_the_bundled_stand_in_named_or_fails_when_strict(tmp_path):
    _, built = _build(tmp_path, identity=False)
    assert [s.name for s in built.stages] == ["background", "faces"]
    face = built.models["face"]
    assert (face["name"], face["requested"], face["source"]) == (
        "vidrestore-face-v2", "gfpgan-1.3", "bundled:vidrestore")
    assert "face model gfpgan-1.3 is not available; using vidrestore-face-v2 " \
        "(bundled:vidrestore) in its place" in built.warnings
    assert not [w for w in built.warnings if w.startswith("FACE RESTORATION IS OFF")]
    cfg = build_config({"background": {"model": "none"},
                        "models": {"download": False, "dir": str(tmp_path), "strict": True}})
    with pytest.raises(ModelError, match="gfpgan-1.3"):
        build_stages(cfg, CPU, ModelStore(cfg.models))


def test_face_model_none_skips_the_face_path(tmp_path):
    _, built = _build(tmp_path, model="none")
    assert [s.name for s in built.stages] == ["background"] and not built.warnings

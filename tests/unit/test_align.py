"""Alignment and paste-back: the template, the similarity fit against OpenCV, crops against
cv2.warpAffine, exact inverses, batching with 0, 1 and 2 faces a frame, and the identity
round trip (crop, paste back unchanged) on real frames at scales 1, 2 and 4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidrestore.stages.align import (
    FACEXLIB_GREY,
    FFHQ_TEMPLATE_512,
    _affine_grid,
    _crop_to_frame_theta,
    _paste_regions,
    _region_to_crop_theta,
    face_template,
    feather_mask,
    invert_affines,
    paste_faces,
    similarity_transforms,
    warp_faces,
)
from vidrestore.stages.upscale import resize

cv2 = pytest.importorskip("cv2")

# Round trip of an unchanged face (bilinear crop, bicubic paste), measured on the whole frame:
# sharp photo (Blake Lively, faces magnified ~1.5x and ~2x into the crop) 42.1 dB at scale 1,
# 42.9 / 42.8 at 2 / 4 (38.6 to 39.4 inside the faces); talk_real_1 frames 54 to 61 dB
# (51 to 58 inside the face). Two bilinear passes would give 38.5 dB on the photo.
MIN_PSNR_DB = 40.0
MIN_FACE_PSNR_DB = 37.0


def similarity(scale: float, angle: float, tx: float, ty: float) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty]])


def apply(affine: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(2, 3) or (K, 2, 3) affine applied to (..., P, 2) points."""
    return points @ affine[..., :2].transpose(-1, -2) + affine[..., None, :, 2]


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    err = (a - b) ** 2
    if where is not None:
        err = err[where.expand_as(err)]
    return 10 * math.log10(1 / max(err.mean().item(), 1e-20))


def face_interior(frames: torch.Tensor, frame_index, affines, scale: int) -> torch.Tensor:
    """(N, 1, sH, sW) bool: output pixels where the pasted faces are fully opaque."""
    n, _, h, w = frames.shape
    ones = torch.ones(len(frame_index), 3, 512, 512)
    alpha = paste_faces(torch.zeros(n, 3, h * scale, w * scale), ones, frame_index, affines,
                        scale)
    return alpha[:, :1] > 0.99


@pytest.fixture(scope="module")
def detector():
    from vidrestore.models.bundled_faces import bundled_retinaface
    from vidrestore.stages.detect import FaceDetector

    return FaceDetector(bundled_retinaface(), "cpu")


@pytest.fixture(scope="module")
def blake(media, detector):
    bgr = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    frame = to_tensor(bgr[..., ::-1])
    return frame, detector(frame)[0].landmarks


@pytest.fixture(scope="module")
def talk(media, detector):
    av = pytest.importorskip("av")
    frames = []
    with av.open(str(media / "video" / "talk_real_1.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 30 == 0:
                frames.append(to_tensor(frame.to_ndarray(format="rgb24")))
            if len(frames) == 4:
                break
    batch = torch.cat(frames)
    found = detector(batch)
    assert [len(d) for d in found] == [1] * 4
    return batch, torch.cat([d.landmarks for d in found])


# --------------------------------------------------------------------------- template, fit


def test_template_is_facexlibs():
    """facexlib FaceRestoreHelper, template_3points=False, 512 px (checked in its source)."""
    facexlib = torch.tensor([[192.98138, 239.94708], [318.90277, 240.1936],
                             [256.63416, 314.01935], [201.26117, 371.41043],
                             [313.08905, 371.15118]])
    assert torch.equal(FFHQ_TEMPLATE_512, facexlib)
    assert torch.allclose(face_template(256), FFHQ_TEMPLATE_512 / 2)


def test_similarity_recovers_a_known_transform():
    truth = torch.stack([similarity(1.7, 0.3, -400, 120), similarity(0.6, -1.2, 90, 510)])
    frame_points = apply(invert_affines(truth), face_template())  # where the template came from
    fitted = similarity_transforms(frame_points)
    assert fitted.shape == (2, 2, 3) and fitted.dtype == torch.float32
    assert torch.allclose(fitted, truth, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_similarity_matches_opencv_on_clean_landmarks(seed):
    """cv2.estimateAffinePartial2D refits the same squared error on its inliers, so with
    small noise every point is an inlier and the two agree. (facexlib calls it with LMEDS,
    whose threshold, about 9.9 times the median residual, can drop landmarks on real faces:
    tests/peer/test_equivalence.py; ours never drops one. This checks OpenCV's default,
    RANSAC.)"""
    gen = torch.Generator().manual_seed(seed)
    truth = similarity(0.5 + torch.rand(1, generator=gen).item() * 2,
                       (torch.rand(1, generator=gen).item() - 0.5) * 1.5, 300, -200)
    points = apply(invert_affines(truth[None])[0], face_template())
    points = points + torch.randn(5, 2, generator=gen) * 0.5
    theirs, inliers = cv2.estimateAffinePartial2D(points.double().numpy(),
                                                  face_template().double().numpy())
    assert inliers.all()
    ours = similarity_transforms(points[None])[0]
    assert np.allclose(ours.numpy(), theirs, atol=1e-3 * np.abs(theirs).max())


def test_similarity_never_reflects():
    mirrored = face_template() * torch.tensor([-1.0, 1.0]) + torch.tensor([600.0, 0.0])
    affine = similarity_transforms(mirrored[None])[0]
    assert torch.det(affine[:, :2]) > 0  # a least-squares rotation, not a flip


def test_similarity_of_coincident_points_is_finite():
    affine = similarity_transforms(torch.full((1, 5, 2), 7.0))
    assert torch.isfinite(affine).all()


def test_similarity_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K, P, 2"):
        similarity_transforms(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="template"):
        similarity_transforms(torch.zeros(1, 3, 2))


# --------------------------------------------------------------------------- exact inverses


def test_forward_and_back_is_exact():
    gen = torch.Generator().manual_seed(0)
    affines = torch.stack([similarity(2.3, 0.4, -700, 90), similarity(0.4, -2.0, 30, 400)])
    points = torch.rand(2, 50, 2, generator=gen) * 1000
    back = apply(invert_affines(affines), apply(affines, points))
    assert (back - points).abs().max() < 1e-3


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_warp_and_paste_grids_are_inverse(scale):
    """Crop pixel -> (warp grid) -> frame pixel -> output pixel -> (paste grid) -> crop pixel
    comes back to where it started, through both normalised coordinate systems."""
    height, width, size = 480, 640, 512
    affines = torch.stack([similarity(1.9, 0.35, -300, 50), similarity(1.2, -0.2, 40, -90)])
    crop = torch.tensor([[0.0, 0.0], [511.0, 0.0], [100.5, 300.25], [256.0, 256.0]])
    to_frame = _crop_to_frame_theta(affines, height, width, size)
    frame = pixels(apply(to_frame, normalised(crop, size, size)), width, height)
    assert torch.allclose(frame, apply(invert_affines(affines.double()), crop.double()))
    out = frame * scale + (scale - 1) / 2
    regions = _paste_regions(torch.zeros(2, dtype=torch.long), affines, scale, size,
                             torch.Size([height * scale, width * scale]))
    top, left, bottom, right = regions[:, 1:].double().unbind(1)
    local = out - torch.stack([left, top], -1)[:, None]
    region_size = torch.stack([right - left, bottom - top], -1)[:, None]
    to_crop = _region_to_crop_theta(affines, scale, size, regions)
    local_normalised = (2 * local + 1) / region_size - 1
    back = pixels(apply(to_crop, local_normalised), size, size)
    assert (back - crop).abs().max() < 1e-6


def test_affine_grid_is_torchs():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(3, 2, 3, generator=gen)
    ours = _affine_grid(theta, 37, 50)
    theirs = torch.nn.functional.affine_grid(theta, [3, 1, 37, 50], align_corners=False)
    assert torch.allclose(ours, theirs, atol=1e-6)


def normalised(points: torch.Tensor, width: float, height: float) -> torch.Tensor:
    size = torch.tensor([width, height], dtype=torch.float64)
    return (2 * points.double() + 1) / size - 1


def pixels(points: torch.Tensor, width: float, height: float) -> torch.Tensor:
    size = torch.tensor([width, height], dtype=torch.float64)
    return ((points + 1) * size - 1) / 2


# --------------------------------------------------------------------------- warp


def opencv_crop(frame: torch.Tensor, affine: torch.Tensor, size: int = 512) -> torch.Tensor:
    """facexlib's align_warp_face on a float RGB frame: bilinear, constant grey border."""
    image = frame.permute(1, 2, 0).numpy()
    crop = cv2.warpAffine(image, affine.double().numpy(), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=FACEXLIB_GREY)
    return torch.from_numpy(crop).permute(2, 0, 1)


def test_warp_matches_opencv(blake):
    frame, landmarks = blake
    affines = similarity_transforms(landmarks)
    # and one face shifted half out of the frame, to compare the grey border too
    shifted = affines[:1] + torch.tensor([[0.0, 0, -300], [0, 0, 200]])
    affines = torch.cat([affines, shifted])
    crops = warp_faces(frame, torch.zeros(3, dtype=torch.long), affines)
    assert crops.shape == (3, 3, 512, 512)
    for crop, affine in zip(crops, affines, strict=True):
        diff = (crop - opencv_crop(frame[0], affine)).abs()
        assert diff.mean() < 0.1 / 255  # OpenCV rounds positions to 1/32 pixel
        assert diff.max() < 2 / 255
    grey = torch.tensor(FACEXLIB_GREY).view(3, 1, 1)
    assert torch.allclose(crops[2, :, :5, :5], grey.expand(3, 5, 5), atol=1e-6)


def test_warp_batches_frames_with_0_1_and_2_faces(blake, talk):
    frames = torch.cat([torch.zeros(1, 3, 464, 700), blake[0], resize(talk[0][:1], 464, 700)])
    landmarks = torch.cat([blake[1], talk[1][:1] * torch.tensor([700 / 388, 464 / 512])])
    affines = similarity_transforms(landmarks)
    frame_index = torch.tensor([1, 2, 1])  # unordered on purpose: frame 0 has no face
    affines = affines[[0, 2, 1]]
    crops = warp_faces(frames, frame_index, affines)
    for crop, n, affine in zip(crops, frame_index, affines, strict=True):
        alone = warp_faces(frames[n:n + 1], torch.zeros(1, dtype=torch.long), affine[None])
        assert torch.equal(crop, alone[0])


def test_warp_of_no_faces():
    crops = warp_faces(torch.rand(2, 3, 64, 64), torch.zeros(0, dtype=torch.long),
                       torch.zeros(0, 2, 3), size=128)
    assert crops.shape == (0, 3, 128, 128)


# --------------------------------------------------------------------------- feather mask


def test_feather_mask_shape():
    mask = feather_mask(512)
    assert mask.shape == (512, 512) and mask.dtype == torch.float32
    assert mask[0].abs().max() == 0 and mask[:, -1].abs().max() == 0  # nothing at the border
    assert mask[52:460, 52:460].min() > 0.999  # opaque from ~size/10 inward
    assert torch.equal(mask, mask.T) and torch.allclose(mask, mask.flip(0))
    row = mask[256, :256]
    assert (row[1:] >= row[:-1]).all()  # rises monotonically towards the centre
    assert 0.4 < mask[256, 26].item() < 0.6  # half way at facexlib's erosion, size/20


# --------------------------------------------------------------------------- paste


def round_trip(frames, landmarks, frame_index, scale):
    affines = similarity_transforms(landmarks)
    crops = warp_faces(frames, frame_index, affines)
    background = resize(frames, frames.shape[-2] * scale, frames.shape[-1] * scale)
    pasted = paste_faces(background, crops, frame_index, affines, scale)
    return pasted, background, face_interior(frames, frame_index, affines, scale)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_unchanged_faces_paste_back_onto_the_photo(blake, scale):
    frame, landmarks = blake
    pasted, background, inside = round_trip(frame, landmarks, torch.zeros(2, dtype=torch.long),
                                            scale)
    assert pasted.shape == background.shape
    assert inside.float().mean() > 0.05  # the faces are a real part of the frame
    assert psnr(pasted, background) > MIN_PSNR_DB
    assert psnr(pasted, background, inside) > MIN_FACE_PSNR_DB


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_unchanged_faces_paste_back_onto_video_frames(talk, scale):
    frames, landmarks = talk
    pasted, background, inside = round_trip(frames, landmarks, torch.arange(4), scale)
    for n in range(4):
        assert psnr(pasted[n], background[n]) > MIN_PSNR_DB
        assert psnr(pasted[n], background[n], inside[n]) > MIN_FACE_PSNR_DB


def test_pixel_centres_line_up_when_upscaling(blake):
    """facexlib multiplies the inverse affine by s, which puts output pixel p at input
    p / s instead of (p + 0.5) / s - 0.5: (s - 1) / (2 s) input pixels off. On a sharp photo
    at scale 4 that costs several dB against the bicubic background; we do not pay it."""
    frame, landmarks = blake
    frame_index = torch.zeros(2, dtype=torch.long)
    affines = similarity_transforms(landmarks)
    crops = warp_faces(frame, frame_index, affines)
    background = resize(frame, 464 * 4, 700 * 4)
    ours = paste_faces(background, crops, frame_index, affines, 4)
    offset = torch.tensor([3 / 8, 3 / 8])  # (s - 1) / (2 s) at s = 4
    facexlib_like = torch.cat([affines[:, :, :2],
                               affines[:, :, 2:] + (affines[:, :, :2] @ offset)[..., None]], -1)
    theirs = paste_faces(background, crops, frame_index, facexlib_like, 4)
    assert psnr(ours, background) > psnr(theirs, background) + 3


def test_paste_batches_frames_with_0_1_and_2_faces(blake):
    frame, landmarks = blake
    frames = torch.cat([frame, frame.flip(-1), frame])
    frame_index = torch.tensor([2, 0, 2])  # frame 1: no face
    affines = similarity_transforms(landmarks[[0, 1, 1]])
    faces = 1 - warp_faces(frames, frame_index, affines)  # visibly changed faces
    pasted = paste_faces(frames, faces, frame_index, affines, 1)
    assert torch.equal(pasted[1], frames[1])
    for n in (0, 2):
        mine = frame_index == n
        alone = paste_faces(frames[n:n + 1], faces[mine], torch.zeros(int(mine.sum()),
                            dtype=torch.long), affines[mine], 1)
        assert torch.allclose(pasted[n], alone[0], atol=1e-6)
    assert psnr(pasted[0], frames[0]) < 25  # the inverted faces are there


def test_overlapping_faces_composite_in_order():
    frames = torch.full((1, 3, 200, 200), 0.5)
    affines = similarity_transforms(face_template()[None] * 0.3 + 20).expand(2, 2, 3)
    faces = torch.stack([torch.zeros(3, 512, 512), torch.ones(3, 512, 512)])
    pasted = paste_faces(frames, faces, torch.zeros(2, dtype=torch.long), affines, 1)
    centre = pasted[0, :, 95:105, 95:105]
    assert torch.allclose(centre, torch.ones_like(centre))  # the later face is on top
    pasted = paste_faces(frames, faces.flip(0), torch.zeros(2, dtype=torch.long), affines, 1)
    assert torch.allclose(pasted[0, :, 95:105, 95:105], torch.zeros(3, 10, 10))


def test_parse_mask_multiplies_the_feather():
    frames = torch.full((1, 3, 200, 200), 0.5)
    affines = similarity_transforms(face_template()[None] * 0.3 + 20)
    faces = torch.ones(1, 3, 512, 512)
    none = paste_faces(frames, faces, torch.zeros(1, dtype=torch.long), affines, 1,
                       masks=torch.zeros(1, 1, 512, 512))
    assert torch.equal(none, frames)
    half = paste_faces(frames, faces, torch.zeros(1, dtype=torch.long), affines, 1,
                       masks=torch.full((1, 1, 512, 512), 0.5))
    assert torch.allclose(half[0, :, 100, 100], torch.full((3,), 0.75), atol=1e-4)


def test_paste_leaves_its_inputs_alone_and_handles_odd_cases():
    frames = torch.rand(2, 3, 100, 120)
    before = frames.clone()
    outside = similarity_transforms(face_template()[None] * 0.2 - 500)  # far off the frame
    pasted = paste_faces(frames, torch.rand(1, 3, 512, 512), torch.ones(1, dtype=torch.long),
                         outside, 1)
    assert torch.equal(frames, before) and torch.equal(pasted, frames)
    assert pasted.data_ptr() != frames.data_ptr()
    empty = paste_faces(frames, torch.zeros(0, 3, 512, 512), torch.zeros(0, dtype=torch.long),
                        torch.zeros(0, 2, 3), 1)
    assert torch.equal(empty, frames)


def test_paste_rejects_mismatched_inputs():
    frames, faces = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 128, 128)
    affines = similarity_transforms(face_template(128)[None].expand(2, 5, 2))
    with pytest.raises(ValueError, match="frame_index"):
        paste_faces(frames, faces, torch.zeros(1, dtype=torch.long), affines)
    with pytest.raises(ValueError, match="masks"):
        paste_faces(frames, faces, torch.zeros(2, dtype=torch.long), affines,
                    masks=torch.ones(2, 1, 64, 64))


def test_bicubic_crops_get_the_fill_outside_the_frame():
    frames = torch.full((1, 3, 100, 100), 0.8)
    affines = similarity_transforms(face_template()[None] * 0.2 - 20)  # half off the frame
    crops = warp_faces(frames, torch.zeros(1, dtype=torch.long), affines, mode="bicubic")
    grey = torch.tensor(FACEXLIB_GREY).view(3, 1, 1)
    assert torch.allclose(crops[0, :, :20, :20], grey.expand(3, 20, 20), atol=1e-5)
    assert torch.allclose(crops[0, :, -20:, -20:], torch.full((3, 20, 20), 0.8), atol=1e-5)

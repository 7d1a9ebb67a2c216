"""Quality figures against OpenCV references on a real photo, and the per-track summary."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vidrestore.metrics.quality import PSNR_CAP_DB, laplacian_variance, psnr, ssim
from vidrestore.metrics.summary import FaceSummary


@pytest.fixture(scope="module")
def pair(media) -> tuple[np.ndarray, np.ndarray]:
    """A real photo and a blurred copy, (H, W, 3) float64 RGB in [0, 1]."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    sharp = bgr[:, :, ::-1].astype(np.float64) / 255
    return sharp, cv2.GaussianBlur(sharp, (5, 5), 1.2)


def tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()


def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM (11x11 Gaussian, sigma 1.5) over the valid window positions."""
    window = cv2.getGaussianKernel(11, 1.5)
    window = window @ window.T

    def blur(x):
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    c1, c2 = 0.01**2, 0.03**2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    return float((((2 * ma * mb + c1) * (2 * cov + c2))
                  / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean())


def test_ssim_matches_the_reference(pair):
    sharp, soft = pair
    ours = ssim(tensor(soft), tensor(sharp)).item()
    assert ours == pytest.approx(reference_ssim(grey(soft), grey(sharp)), abs=1e-4)
    assert 0.5 < ours < 0.99
    assert ssim(tensor(sharp), tensor(sharp)).item() == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(ssim(torch.rand(1, 3, 8, 40), torch.rand(1, 3, 8, 40)).item())


def test_psnr_of_known_error_and_identical_images(pair):
    sharp, _ = pair
    shifted = np.clip(sharp + 0.01, 0, 1)
    expected = 10 * math.log10(1 / np.mean((shifted - sharp) ** 2))
    assert psnr(tensor(shifted), tensor(sharp)).item() == pytest.approx(expected, abs=1e-3)
    assert psnr(tensor(sharp), tensor(sharp)).item() == PSNR_CAP_DB


def test_laplacian_variance_matches_opencv_inside_the_border(pair):
    sharp, soft = pair
    for image in (sharp, soft):
        laplacian = cv2.Laplacian(grey(image) * 255, cv2.CV_64F, ksize=1)[1:-1, 1:-1]
        ours = laplacian_variance(tensor(image)).item()
        assert ours == pytest.approx(laplacian.var(), rel=1e-4)
    assert laplacian_variance(tensor(sharp)).item() > 5 * laplacian_variance(tensor(soft)).item()


def test_batched_figures_are_per_image(pair):
    sharp, soft = pair
    a, b = tensor(sharp).expand(2, -1, -1, -1), torch.cat([tensor(soft), tensor(sharp)])
    assert ssim(b, a)[1].item() == pytest.approx(1.0, abs=1e-6)
    assert psnr(b, a)[0].item() == pytest.approx(psnr(tensor(soft), tensor(sharp)).item())


def _face(track, cosine=None, flagged=None, psnr=None, ssim=None, skipped=None):
    identity = None if cosine is None else {"encoder": "x", "cosine": cosine}
    return {"track": track, "identity": identity, "flagged": flagged, "psnr": psnr,
            "ssim": ssim, "skipped": skipped}


def test_face_summary_means_per_track_and_flagged_frames():
    summary = FaceSummary()
    summary.add({"faces": [_face(0, 0.95, False, 30.0, 0.9), _face(1, 0.80, True, 20.0, 0.5)]})
    summary.add({"faces": [_face(0, 0.93, False, 32.0, 0.8), _face(1, skipped="too small")]})
    summary.add({"faces": []})
    out = summary.as_dict()
    assert out["frames_with_faces"] == 2 and out["flagged_frames"] == 1
    zero, one = out["tracks"]["0"], out["tracks"]["1"]
    assert zero == {"frames": 2, "restored": 2, "flagged_frames": 0, "identity_cosine": 0.94,
                    "psnr": 31.0, "ssim": 0.85, "lpips": None}
    assert one["frames"] == 2 and one["restored"] == 1 and one["flagged_frames"] == 1
    assert one["identity_cosine"] == 0.8 and one["psnr"] == 20.0
    unscored = FaceSummary()
    unscored.add({"faces": [_face(0, psnr=30.0)]})
    assert unscored.as_dict()["flagged_frames"] is None
    assert unscored.as_dict()["tracks"]["0"]["flagged_frames"] is None

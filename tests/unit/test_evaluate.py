"""`evaluate()` on constructed pairs whose figures are known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.media import make_clip_of_images
from vidrestore.errors import InputError
from vidrestore.evaluate import Measures, evaluate, open_measures
from vidrestore.metrics.quality import PSNR_CAP_DB, SSIM_SIGMA, SSIM_WINDOW


def _save(path, rgb: np.ndarray):
    Image.fromarray(rgb).save(path)
    return path


def _photo(media, name="gfpgan_whole_imgs_Blake_Lively.jpg") -> np.ndarray:
    return np.asarray(Image.open(media / "images" / name).convert("RGB"))


def _ramp(offset: int, width: int = 200, height: int = 40) -> np.ndarray:
    """A grey ramp rising one level per pixel to the right, starting at `offset`."""
    row = (offset + np.arange(width)).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], height, 0), 3, 2)


def test_identical_images_give_the_capped_psnr_and_ssim_1(tmp_path, media):
    photo = _save(tmp_path / "a.png", _photo(media))
    result = evaluate(photo, photo, Measures())
    assert result["means"]["psnr"] == PSNR_CAP_DB == 100.0  # capped, not infinite
    assert result["means"]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["checks"]["psnr"]["pass"] and result["checks"]["ssim"]["pass"]
    assert result["checks"]["lpips"]["pass"] is None  # not measured: neither pass nor fail
    assert result["pass"] is True and result["resized"] is None


def test_a_ramp_moved_3_px_gives_the_psnr_and_ssim_of_a_3_level_offset(tmp_path):
    base = _ramp(20, width=203)
    reference = _save(tmp_path / "ref.png", np.ascontiguousarray(base[:, :200]))
    moved = _save(tmp_path / "moved.png", np.ascontiguousarray(base[:, 3:203]))  # = ref + 3
    result = evaluate(reference, moved, Measures())
    assert result["means"]["psnr"] == pytest.approx(10 * math.log10(255**2 / 3**2), abs=1e-3)
    # A ramp under a symmetric window: local means are the centre values, variances and
    # covariance equal, so SSIM is the luminance term alone, averaged over window centres.
    half = SSIM_WINDOW // 2
    centres = (20 + np.arange(half, 200 - half)) / 255.0
    shifted = centres + 3 / 255.0
    c1 = 0.01**2
    expected = np.mean((2 * centres * shifted + c1) / (centres**2 + shifted**2 + c1))
    assert SSIM_SIGMA == 1.5
    assert result["means"]["ssim"] == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_gaussian_noise_of_known_sigma_gives_the_expected_psnr(tmp_path, media, sigma):
    # the photo squeezed into levels 40-215, so that the noise (4 sigma at most) is not clipped
    photo = np.round(40 + _photo(media) * (175 / 255)).astype(np.uint8)
    noise = np.random.default_rng(int(sigma)).normal(0, sigma, photo.shape)
    noisy = np.clip(np.round(photo + noise), 0, 255).astype(np.uint8)
    result = evaluate(_save(tmp_path / "ref.png", photo), _save(tmp_path / "noisy.png", noisy),
                      Measures())
    # rounding to whole levels adds 1/12 of a level squared to the noise's variance
    expected = 10 * math.log10(255**2 / (sigma**2 + 1 / 12))
    assert result["means"]["psnr"] == pytest.approx(expected, abs=0.02)
    assert result["checks"]["psnr"]["pass"] is True


def test_a_larger_restored_image_is_resized_down_and_said_so(tmp_path, media):
    photo = _photo(media)
    reference = _save(tmp_path / "ref.png", photo)
    big = Image.fromarray(photo).resize((photo.shape[1] * 2, photo.shape[0] * 2),
                                        Image.BICUBIC)
    result = evaluate(reference, _save(tmp_path / "big.png", np.asarray(big)), Measures())
    assert "1400x928 resized to the reference's 700x464" in result["resized"]
    assert result["means"]["psnr"] > 35  # bicubic up and area down lose little
    squashed = _save(tmp_path / "squashed.png", np.asarray(Image.fromarray(photo).resize(
        (700, 300))))
    with pytest.raises(InputError, match="shape"):
        evaluate(reference, squashed, Measures())


def _panning_frames(media, count: int = 8, step: int = 4) -> list[np.ndarray]:
    photo = _photo(media)
    return [np.ascontiguousarray(photo[100:340, 100 + i * step:420 + i * step])
            for i in range(count)]


def test_video_pairs_flicker_equal_for_identical_and_higher_for_flickering(tmp_path, media):
    frames = _panning_frames(media)
    reference = make_clip_of_images(tmp_path / "ref.mp4", frames)
    same = evaluate(reference, reference, Measures())
    assert same["frame_count"] == 8 and same["frames"][0]["flicker"] is None
    flicker = same["means"]["flicker"]
    assert flicker["restored"] == flicker["reference"] and flicker["added"] == 0
    assert flicker["reference"] < 3  # the flow explains a pan
    # every other frame 6 levels brighter: the warping error must grow by about that much
    pulsing = [np.clip(f.astype(int) + 6 * (i % 2), 0, 255).astype(np.uint8)
               for i, f in enumerate(frames)]
    restored = make_clip_of_images(tmp_path / "pulsing.mp4", pulsing)
    result = evaluate(reference, restored, Measures())
    added = result["means"]["flicker"]
    expected = math.sqrt(added["reference"] ** 2 + 6**2)
    assert added["restored"] == pytest.approx(expected, rel=0.15)
    short = make_clip_of_images(tmp_path / "short.mp4", frames[:6])
    with pytest.raises(InputError, match="6 frames .* 8"):
        evaluate(reference, short, Measures())


def test_folders_pair_files_by_name_and_pool_the_frames(tmp_path, media):
    ref_dir, res_dir = tmp_path / "gt", tmp_path / "out"
    ref_dir.mkdir()
    res_dir.mkdir()
    photo = _photo(media)
    _save(ref_dir / "one.png", photo)
    _save(res_dir / "one.png", photo)
    _save(ref_dir / "two.png", _ramp(20))
    _save(res_dir / "two.png", _ramp(23))
    _save(ref_dir / "alone.png", photo)  # no counterpart: left out with a warning
    result = evaluate(ref_dir, res_dir, Measures())
    assert [p["file"] for p in result["pairs"]] == ["one.png", "two.png"]
    assert result["frame_count"] == 2
    two = result["pairs"][1]["means"]["psnr"]
    assert two == pytest.approx(38.588, abs=1e-3)
    assert result["means"]["psnr"] == pytest.approx((100 + two) / 2, abs=1e-3)
    with pytest.raises(InputError, match="folder"):
        evaluate(ref_dir, res_dir / "one.png", Measures())


def test_failing_targets_fail_and_identity_is_scored_per_track(tmp_path, media):
    from vidrestore.config import RunConfig

    photo = _photo(media)
    reference = _save(tmp_path / "ref.png", photo)
    blurred = np.asarray(Image.fromarray(photo).resize((70, 46)).resize((700, 464)))
    measures = open_measures(RunConfig(), torch.device("cpu"), lpips=False)
    result = evaluate(reference, _save(tmp_path / "blurred.png", blurred), measures)
    assert result["checks"]["psnr"]["pass"] is False and result["pass"] is False
    tracks = result["identity"]["tracks"]
    assert len(tracks) == 2  # the two faces of the photo
    same = evaluate(reference, reference, measures)["identity"]["tracks"]
    assert all(t["mean"] == pytest.approx(1.0, abs=1e-4) for t in same.values())
    assert min(t["mean"] for t in tracks.values()) < 0.99  # a 10x blur changes the face

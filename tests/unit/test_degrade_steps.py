"""The degradation steps one by one, and how a recipe's parameters are fixed by the seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidrestore.degrade import (
    Step,
    colour_cast,
    downscale,
    downscaled_size,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    motion_blur,
    motion_kernel,
    parse_step,
    poisson_noise,
    resolve,
)
from vidrestore.errors import ConfigError


def _photo(media) -> np.ndarray:
    rgb = Image.open(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg").convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2)))


def _spread(image: np.ndarray) -> tuple[float, float]:
    """Standard deviation of an impulse response's mass along x and along y, pixels."""
    weights = image / image.sum()
    ys, xs = np.indices(image.shape)
    mean_x, mean_y = (weights * xs).sum(), (weights * ys).sum()
    return (float(np.sqrt((weights * (xs - mean_x) ** 2).sum())),
            float(np.sqrt((weights * (ys - mean_y) ** 2).sum())))


def test_gaussian_blur_spreads_an_impulse_by_sigma():
    impulse = np.zeros((41, 41, 3), np.float32)
    impulse[20, 20] = 1
    for sigma in (0.8, 1.5, 3.0):
        spread_x, spread_y = _spread(gaussian_blur(impulse, sigma)[..., 0])
        assert spread_x == pytest.approx(sigma, rel=0.05)
        assert spread_y == pytest.approx(sigma, rel=0.05)


def test_motion_kernel_is_a_normalised_line_of_the_given_length_and_angle():
    flat = motion_kernel(9, 0)
    assert flat.sum() == pytest.approx(1) and flat.shape == (9, 9)
    assert np.flatnonzero(flat.sum(1)).tolist() == [4]  # one row: horizontal
    # a uniform line of length L has standard deviation L / sqrt(12) along itself
    assert _spread(flat)[0] == pytest.approx(9 / 12**0.5, rel=0.1)
    upright = motion_kernel(9, 90)
    assert np.flatnonzero(upright.sum(0)).tolist() == [4]  # one column: vertical
    impulse = np.zeros((31, 31, 3), np.float32)
    impulse[15, 15] = 1
    blurred = motion_blur(impulse, 11, 45)[..., 0]
    spread_x, spread_y = _spread(blurred)
    assert spread_x == pytest.approx(spread_y, rel=0.05)
    assert np.hypot(spread_x, spread_y) == pytest.approx(11 / 12**0.5, rel=0.15)


def test_downscale_sizes_and_even_sizes_for_video(media):
    photo = _photo(media)
    assert downscaled_size(700, 464, 2, even=False) == (350, 232)
    assert downscaled_size(388, 512, 4, even=False) == (97, 128)
    assert downscaled_size(388, 512, 4, even=True) == (96, 128)  # 97 is odd: 96 or 98
    small = downscale(photo, (350, 232), "area")
    assert small.shape == (232, 350, 3)
    # area averaging keeps the mean colour
    assert np.abs(small.mean((0, 1)) - photo.mean((0, 1))).max() < 1e-3


def test_gaussian_noise_has_the_asked_standard_deviation():
    grey = np.full((200, 200, 3), 0.5, np.float32)
    for sigma in (2.0, 5.0, 10.0):
        noisy = gaussian_noise(grey, sigma, np.random.default_rng(1))
        assert (noisy - grey).std() * 255 == pytest.approx(sigma, rel=0.02)
        assert abs((noisy - grey).mean() * 255) < 0.1


def test_poisson_noise_variance_follows_the_level():
    rng = np.random.default_rng(2)
    for level in (0.2, 0.8):
        image = np.full((200, 200, 3), level, np.float32)
        noisy = poisson_noise(image, 400.0, rng)
        assert noisy.mean() == pytest.approx(level, rel=0.01)
        assert noisy.var() == pytest.approx(level / 400.0, rel=0.05)  # Poisson: var = mean


def test_jpeg_quality_orders_the_damage(media):
    photo = _photo(media)
    psnrs = [_psnr(jpeg(photo, q), photo) for q in (10, 40, 90)]
    assert psnrs[0] < psnrs[1] < psnrs[2]
    assert psnrs[0] < 30 < psnrs[2]


def test_colour_cast_scales_the_channel_means(media):
    photo = _photo(media)
    cast = colour_cast(photo, 0.5, 0.7, 1.0)
    ratio = cast.mean((0, 1), dtype=np.float64) / photo.mean((0, 1), dtype=np.float64)
    assert ratio == pytest.approx([0.5, 0.7, 1.0], rel=1e-5)


def test_parameters_are_drawn_from_the_seed_and_given_ones_kept():
    steps = [parse_step("blur"), parse_step("noise:sigma=4"), parse_step("jpeg")]
    first, again = resolve(steps, 7, "image"), resolve(steps, 7, "image")
    other = resolve(steps, 8, "image")
    assert first == again and first != other
    assert first[1].params == {"sigma": 4} and other[1].params == {"sigma": 4}
    assert 0.5 <= first[0].params["sigma"] <= 2.0
    assert 30 <= first[2].params["quality"] <= 70 and isinstance(first[2].params["quality"], int)
    assert parse_step("cast:r=0.5,b=1.2") == Step("cast", {"r": 0.5, "b": 1.2})


def test_bad_recipes_are_named():
    with pytest.raises(ConfigError, match="blurr.*blur, motion"):
        parse_step("blurr")
    with pytest.raises(ConfigError, match="sigma"):
        parse_step("noise:sigmaa=3")
    with pytest.raises(ConfigError, match="codec compresses videos"):
        resolve([Step("codec")], 0, "image")
    with pytest.raises(ConfigError, match="last"):
        resolve([Step("codec"), Step("blur")], 0, "video")
    with pytest.raises(ConfigError, match="jpeg"):
        resolve([Step("jpeg", {"quality": 0})], 0, "image")

"""The colour-flicker metric on synthetic frames whose colour changes are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidrestore.metrics.colour_flicker import (
    colour_flicker,
    face_colours,
    inner_face_polygon,
    mean_lab,
    srgb_to_lab,
)

# RetinaFace order: left eye, right eye, nose, left and right mouth corners (x, y)
MARKS = np.array([[40.0, 40.0], [80.0, 40.0], [60.0, 60.0], [44.0, 80.0], [76.0, 80.0]])


def grey_lightness(value: int) -> float:
    """CIE L* of an 8-bit sRGB grey, from the sRGB and CIE formulas (a* = b* = 0)."""
    c = value / 255
    y = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 116 * y ** (1 / 3) - 16 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def frame(grey: int, background_seed: int = 0, shift=(0, 0)) -> np.ndarray:
    """A 160x160 frame: random pixels around a flat grey square that covers the inner face
    of MARKS moved by `shift`."""
    rng = np.random.default_rng(background_seed)
    image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    x, y = shift
    image[30 + y:90 + y, 30 + x:90 + x] = grey
    return image


def test_a_steady_face_has_no_flicker():
    frames = [frame(128, seed) for seed in range(5)]  # only the surroundings change
    result = colour_flicker(face_colours(frames, [MARKS] * 5))
    assert result.delta_e == 0 and result.lab == (0, 0, 0) and result.pairs == 4


def test_alternating_greys_flicker_by_their_lightness_difference():
    frames = [frame(118 if i % 2 else 128) for i in range(6)]
    result = colour_flicker(face_colours(frames, [MARKS] * 6))
    step = grey_lightness(128) - grey_lightness(118)  # 3.8
    assert result.delta_e == pytest.approx(step, abs=0.01)
    assert result.lab[0] == pytest.approx(step, abs=0.01) and max(result.lab[1:]) < 0.01


def test_one_step_in_ten_frames_is_spread_over_the_nine_pairs():
    frames = [frame(100)] * 5 + [frame(140)] * 5
    result = colour_flicker(face_colours(frames, [MARKS] * 10))
    assert result.delta_e == pytest.approx((grey_lightness(140) - grey_lightness(100)) / 9,
                                           abs=0.01)


def test_the_region_follows_the_landmarks():
    shifts = [(0, 0), (40, -5), (-9, 45), (50, 50)]
    frames = [frame(128, i, s) for i, s in enumerate(shifts)]
    moved = [MARKS + s for s in shifts]
    assert colour_flicker(face_colours(frames, moved)).delta_e == 0
    # left in place, the region takes in the random surroundings
    assert colour_flicker(face_colours(frames, [MARKS] * 4)).delta_e > 1


def test_known_lab_steps_and_missing_faces():
    colours = np.array([[50, 0, 0], [50, 0, 3], [50, 0, 0], [np.nan] * 3, [54, 3, 0]])
    result = colour_flicker(colours)  # the face is missing in frame 3: two pairs only
    assert result.pairs == 2 and result.delta_e == pytest.approx(3)
    assert result.lab == pytest.approx((0, 0, 3))
    assert colour_flicker(np.array([[50, 0, 0], [np.nan] * 3, [60, 0, 0]])).pairs == 0
    assert math.isnan(colour_flicker(np.zeros((1, 3))).delta_e)
    assert colour_flicker(np.array([[50, 0, 0], [53, 4, 0]])).delta_e == pytest.approx(5)


def test_lab_of_known_colours():
    """Reference values of sRGB white, black, red and blue in CIE L*a*b* (D65)."""
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_allclose(srgb_to_lab(rgb), [[100, 0, 0], [0, 0, 0],
                                                  [53.24, 80.09, 67.20],
                                                  [32.30, 79.19, -107.86]], atol=0.01)
    greys = np.arange(256, dtype=np.uint8)[:, None].repeat(3, 1)
    np.testing.assert_allclose(srgb_to_lab(greys)[:, 0], [grey_lightness(v) for v in range(256)],
                               atol=1e-6)
    assert np.abs(srgb_to_lab(greys)[:, 1:]).max() < 1e-6


def test_the_inner_face_lies_between_eyes_and_mouth_without_either():
    corners = inner_face_polygon(MARKS)
    np.testing.assert_allclose(corners, [[41, 50], [79, 50], [77, 70], [43, 70]])
    lab = mean_lab(frame(128), corners)
    assert lab[0] == pytest.approx(grey_lightness(128), abs=0.01)
    assert np.isnan(mean_lab(frame(128), corners + 500)).all()  # outside the frame

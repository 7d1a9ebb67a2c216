"""Pre-processing: gray-world white balance, non-local-means denoising, CLAHE on L*."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.media import make_clip
from vidrestore.batch import FrameBatch
from vidrestore.config import (
    ClaheConfig,
    DenoiseConfig,
    PreprocessConfig,
    WhiteBalanceConfig,
    build_config,
)
from vidrestore.errors import ConfigError
from vidrestore.metrics.quality import luma
from vidrestore.stages.preprocess import Preprocessor, clahe_lightness, denoise, gray_world_gains

NIGHT_CAST = (0.5, 0.7, 1.0)  # dark and blue, as night or thermal-palette footage looks
WB_CLAHE = PreprocessConfig(white_balance=WhiteBalanceConfig(enabled=True),
                            clahe=ClaheConfig(enabled=True))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255


def _uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames[0].permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).byte().numpy()


def _gray_world_error_deg(frames: torch.Tensor) -> float:
    """Angle between the frame's mean colour and the grey axis, degrees."""
    mean = frames.double().mean((0, 2, 3))
    cos = mean.sum() / (mean.norm() * 3**0.5)
    return float(torch.rad2deg(torch.acos(cos.clamp(max=1))))


def _skin_hues_deg(rgb: np.ndarray, landmarks: torch.Tensor) -> np.ndarray:
    """Hue angle (CIE a*b*, degrees) of each face's mean colour inside its landmarks' box:
    eyes to mouth, mostly skin."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    hues = []
    for points in landmarks.numpy():
        (x1, y1), (x2, y2) = points.min(0).astype(int), points.max(0).astype(int)
        a, b = lab[y1:y2, x1:x2, 1:].reshape(-1, 2).mean(0) - 128
        hues.append(np.degrees(np.arctan2(b, a)))
    return np.array(hues)


def _local_contrast(frames: torch.Tensor) -> float:
    """Mean absolute difference of the luma from its 15 x 15 local mean."""
    y = luma(frames)
    return float((y - F.avg_pool2d(y, 15, stride=1, padding=7, count_include_pad=False))
                 .abs().mean())


def _hue_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180) % 360 - 180)


def _preprocess(frames: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    return Preprocessor(config, torch.device("cpu"))(FrameBatch(frames, scale=1)).inputs


def test_blue_cast_on_a_real_photo_is_removed_and_skin_keeps_its_hue(media):
    from vidrestore.models.bundled_faces import bundled_retinaface
    from vidrestore.stages.detect import FaceDetector

    rgb = np.asarray(Image.open(media / "images" / "gfpgan_whole_imgs_00.jpg").convert("RGB"))
    original = _tensor(rgb)
    found = FaceDetector(bundled_retinaface())(original)[0]
    landmarks = found.landmarks[found.scores > 0.9]
    assert len(landmarks) == 2
    cast = torch.tensor(NIGHT_CAST).view(1, 3, 1, 1)
    cast_rgb = _uint8(original * cast)
    corrected = _preprocess(_tensor(cast_rgb), WB_CLAHE)

    before, after = _gray_world_error_deg(_tensor(cast_rgb)), _gray_world_error_deg(corrected)
    assert before > 10 and after < 2.0, (before, after)  # measured: 13.9 -> 0.2 degrees
    hue = _skin_hues_deg(rgb, landmarks)
    cast_shift = _hue_gap(_skin_hues_deg(cast_rgb, landmarks), hue)
    corrected_shift = _hue_gap(_skin_hues_deg(_uint8(corrected), landmarks), hue)
    assert (cast_shift > 90).all(), cast_shift  # the cast turns skin blue
    assert (corrected_shift < 20).all(), corrected_shift  # measured: 16 and 12 degrees
    # CLAHE brought back local contrast the dark cast took away
    assert _local_contrast(corrected) > _local_contrast(_tensor(cast_rgb)) * 1.2


def test_gray_world_inverts_a_channel_gain_cast_of_a_grey_scene():
    grey = torch.linspace(0.1, 0.8, 64).view(1, 1, 1, 64).expand(1, 3, 32, 64)
    cast = torch.tensor([0.6, 0.8, 1.0]).view(1, 3, 1, 1)
    gains = gray_world_gains(grey * cast, WhiteBalanceConfig(enabled=True))
    restored = grey * cast * gains[:, :, None, None]
    spread = restored.amax(1) - restored.amin(1)
    assert spread.max() < 1e-5
    half = gray_world_gains(grey * cast, WhiteBalanceConfig(enabled=True, strength=0.5))
    assert torch.allclose(half, gains.sqrt(), atol=1e-6)
    bounded = gray_world_gains(grey * torch.tensor([0.1, 1, 1]).view(1, 3, 1, 1),
                               WhiteBalanceConfig(enabled=True, max_gain=2.0))
    assert bounded.max() == pytest.approx(2.0)


def test_white_balance_gains_follow_a_change_of_cast_smoothly():
    grey = torch.full((6, 3, 16, 16), 0.4)
    cast = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5]).view(6, 1, 1, 1)
    frames = grey.clone()
    frames[:, 0] *= cast[:, 0]  # red halves from frame 3 on
    config = PreprocessConfig(white_balance=WhiteBalanceConfig(enabled=True, smoothing_s=1.0))
    stage = Preprocessor(config, torch.device("cpu"))
    times = tuple(i / 10 for i in range(6))  # 10 fps: a step of 0.1 s
    out = stage(FrameBatch(frames, scale=1, times_s=times))
    red_gain = [note["preprocess"]["gains"][0] for note in out.notes]
    assert red_gain[:3] == [1.0, 1.0, 1.0]
    # red mean 0.2 against 0.4 for the others: the gain 1/3 / 0.2 = 5/3 is reached in log
    # space at 1 - exp(-0.1) = 9.5 % of the remaining way each frame
    expected = np.exp(np.log(5 / 3) * (1 - np.exp(-0.1 * np.arange(1, 4))))
    assert red_gain[3:] == pytest.approx(expected, abs=2e-3)
    per_frame = Preprocessor(PreprocessConfig(
        white_balance=WhiteBalanceConfig(enabled=True, smoothing_s=0)), torch.device("cpu"))
    gains = per_frame(FrameBatch(frames, scale=1, times_s=times)).notes[4]["preprocess"]["gains"]
    assert gains[0] == pytest.approx(5 / 3, abs=1e-3)


def test_the_stage_leaves_its_input_alone_and_notes_what_ran():
    frames = torch.rand(2, 3, 24, 32)
    kept = frames.clone()
    batch = FrameBatch(frames, scale=2)
    out = Preprocessor(WB_CLAHE, torch.device("cpu"))(batch)
    assert torch.equal(frames, kept) and out.inputs is not frames
    assert out.inputs.shape == frames.shape and out.scale == 2
    assert out.notes[0]["preprocess"]["steps"] == ["white_balance", "clahe"]
    assert len(out.notes[1]["preprocess"]["gains"]) == 3


def test_clahe_changes_lightness_only_and_matches_opencv(media):
    rgb = np.asarray(Image.open(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg")
                     .convert("RGB"))
    config = ClaheConfig(enabled=True, clip_limit=2.0, grid=8)
    ours = _uint8(clahe_lightness(_tensor(rgb), config))
    lab_in = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    lab_out = cv2.cvtColor(ours, cv2.COLOR_RGB2LAB).astype(np.float64)
    assert np.abs(lab_out[..., 0] - lab_in[..., 0]).mean() > 5  # contrast did change
    # a*, b* kept up to 8-bit rounding and gamut clipping
    assert np.median(np.abs(lab_out[..., 1:] - lab_in[..., 1:])) <= 1
    opencv = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
        lab_in[..., 0].astype(np.uint8))
    assert np.abs(lab_out[..., 0] - opencv).mean() < 2.0


def test_denoise_removes_gaussian_noise_as_well_as_opencv(media):
    rgb = np.asarray(Image.open(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg")
                     .convert("RGB"))[100:300, 200:500]
    clean = cv2.GaussianBlur(rgb, (0, 0), 1.0)  # the JPEG's own noise out of the reference
    noisy = np.clip(np.round(clean + np.random.default_rng(0).normal(0, 12, clean.shape)),
                    0, 255).astype(np.uint8)

    def psnr(image):
        return 10 * np.log10(255**2 / np.mean((image.astype(np.float64) - clean) ** 2))

    ours = _uint8(denoise(_tensor(noisy), DenoiseConfig(enabled=True, strength=12)))
    opencv = cv2.fastNlMeansDenoisingColored(noisy, None, 10, 10, 7, 21)
    assert psnr(ours) > psnr(noisy) + 5  # measured: 26.7 -> 34.3 dB (OpenCV 31.0)
    assert psnr(ours) > psnr(opencv) - 0.5
    flat = torch.full((1, 3, 20, 20), 0.5)
    assert torch.allclose(denoise(flat, DenoiseConfig(enabled=True)), flat, atol=1e-6)


def test_preprocess_config_section_defaults_off_and_validated():
    cfg = build_config({})
    assert not cfg.preprocess.enabled
    on = build_config({"preprocess": {"clahe": {"enabled": True, "grid": 4}}})
    assert on.preprocess.enabled and on.preprocess.clahe.grid == 4
    for bad, name in [({"denoise": {"patch": 4}}, "preprocess.denoise.patch"),
                      ({"white_balance": {"strength": 2}}, "white_balance.strength"),
                      ({"clahe": {"clip": 2}}, "preprocess.clahe.clip")]:
        with pytest.raises(ConfigError, match=name):
            build_config({"preprocess": bad})


def test_cli_flags_turn_the_steps_on_and_the_log_records_them(cli, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=4, width=64, height=48)
    out = tmp_path / "out.mp4"
    result = cli(clip, out, "--bg-model", "none", "--face-model", "none", "--scale", "1",
                 "--white-balance", "--clahe", "--quiet")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.mp4.jsonl").read_text().splitlines()]
    frames = [r for r in records if "frame" in r]
    assert len(frames) == 4
    assert frames[0]["preprocess"]["steps"] == ["white_balance", "clahe"]
    assert "preprocess" in frames[0]["timings_ms"]

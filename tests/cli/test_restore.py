"""`vidrestore IN OUT`: bad inputs, destinations, images, the log, interruption."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAST, ROOT, frame_times, interrupted_run
from tests.media import (
    make_audio_only,
    make_clip,
    make_image,
    make_text_as_video,
    make_truncated_clip,
    make_zero_frame_clip,
)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("hello")
    return {
        "missing": (tmp_path / "nope.mp4", "no such file"),
        "directory": (folder, "is a directory"),
        "empty": (empty, "file is empty"),
        "text as mp4": (make_text_as_video(tmp_path / "text.mp4"), "not a readable video"),
        "truncated, index lost": (make_truncated_clip(tmp_path / "t1.mp4", faststart=False),
                                  "not a readable video"),
        "truncated, index kept": (make_truncated_clip(tmp_path / "t2.mp4", faststart=True),
                                  "truncated"),
        "audio only": (make_audio_only(tmp_path / "audio.mp4"), "has no video stream"),
        "zero frames": (make_zero_frame_clip(tmp_path / "zero.mp4"), "zero frames"),
        "unknown extension": (unknown, "unknown extension"),
        "broken image": (tmp_path / "broken.png", "not a readable image"),
    }


def test_bad_inputs_get_one_line_exit_2_and_no_output(cli, tmp_path):
    bad = _bad_inputs(tmp_path)
    good_png = make_image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(good_png.read_bytes()[:60])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for label, (path, message) in bad.items():
        out = out_dir / ("out.png" if path.suffix == ".png" else "out.mp4")
        result = cli(path, out, *FAST)
        assert result.exit_code == 2, (label, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, (label, result.output)
        assert lines[0].startswith("vidrestore: error: ") and str(path) in lines[0], label
        assert message in lines[0], (label, lines[0])
        assert "Traceback" not in result.output
        assert list(out_dir.iterdir()) == [], label


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "vidrestore", str(tmp_path / "nope.mp4"),
                           str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"vidrestore: error: {tmp_path / 'nope.mp4'}: no such file"
    assert not out.exists()


def test_output_equal_to_input_is_refused(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    before = src.read_bytes()
    result = cli(src, src, *FAST, "--overwrite")
    assert result.exit_code == 2 and "is the input file" in result.output
    assert src.read_bytes() == before


def test_existing_output_needs_overwrite(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = cli(src, out, *FAST)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == b"precious"
    assert cli(src, out, *FAST, "--overwrite").exit_code == 0
    assert len(frame_times(out)) == 3


def test_video_to_image_is_refused(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    result = cli(src, tmp_path / "out.png", *FAST)
    assert result.exit_code == 2 and "must be one too" in result.output


def test_unknown_config_key_names_its_path(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("background:\n  modle: none\n")
    result = cli(src, tmp_path / "out.mp4", *FAST, "--config", cfg)
    assert result.exit_code == 2
    assert "background.modle" in result.output


@pytest.mark.parametrize("preset", ["default", "fast", "quality"])
def test_presets_load(preset):
    from vidrestore.config import load_config, preset_path

    cfg = load_config("default", preset_path(preset), {})
    assert cfg.scale in (1, 2, 4)


def test_log_has_one_record_per_frame_then_a_summary(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=7, audio="aac")
    out = tmp_path / "out.mp4"
    log = tmp_path / "run.jsonl"
    assert cli(src, out, *FAST, "--log", log).exit_code == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [r["frame"] for r in frames] == list(range(7))
    times = frame_times(src)
    for record, t in zip(frames, times, strict=True):
        assert set(record) >= {"frame", "pts", "time", "faces", "timings_ms", "warnings"}
        assert record["time"] == pytest.approx(float(t))
        assert {"decode", "background", "encode"} <= set(record["timings_ms"])
    assert summary["frames_in"] == summary["frames_out"] == 7
    assert summary["models"]["background"]["name"] == "none"
    assert not (tmp_path / "out.mp4.jsonl").exists()  # --log moved it


def test_quiet_prints_nothing(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    result = cli(src, tmp_path / "out.mp4", *FAST)
    assert result.exit_code == 0 and result.output == ""


@pytest.mark.parametrize("mode,suffix", [("RGB", ".jpg"), ("L", ".png"), ("I;16", ".png"),
                                         ("P", ".png"), ("RGB", ".webp"), ("RGB", ".bmp"),
                                         ("RGB", ".tiff")])
def test_images_are_a_stream_of_one_frame(cli, tmp_path, mode, suffix):
    src = make_image(tmp_path / f"in{suffix}", mode=mode, size=(40, 30))
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *FAST, "--scale", "2")
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (80, 60)
    records = (tmp_path / f"out{suffix}.jsonl").read_text().splitlines()
    assert len(records) == 2


def test_alpha_survives_into_png(cli, tmp_path):
    src = make_image(tmp_path / "in.png", mode="RGBA", size=(40, 30))
    out = tmp_path / "out.png"
    assert cli(src, out, *FAST, "--scale", "2").exit_code == 0
    with Image.open(out) as img:
        assert img.mode == "RGBA"
        alpha = np.asarray(img)[..., 3]
    assert alpha[:, 0].max() < 20 and alpha[:, -1].min() > 235  # the ramp is still there


def test_tiny_and_exif_rotated_images(cli, tmp_path):
    tiny = make_image(tmp_path / "tiny.png", size=(3, 2))
    assert cli(tiny, tmp_path / "tiny_out.png", *FAST, "--scale", "4").exit_code == 0
    with Image.open(tmp_path / "tiny_out.png") as img:
        assert img.size == (12, 8)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), "red").save(rotated, exif=exif)
    assert cli(rotated, tmp_path / "rot_out.png", *FAST, "--scale", "1").exit_code == 0
    with Image.open(tmp_path / "rot_out.png") as img:
        assert img.size == (20, 40)  # upright, as a viewer shows it


def test_real_photos(cli, media, tmp_path):
    for name in ("gfpgan_whole_imgs_Blake_Lively.jpg", "codeformer_gray_faces_Einstein01.png"):
        out = tmp_path / f"{name}.png"
        result = cli(media / "images" / name, out, *FAST, "--scale", "2")
        assert result.exit_code == 0, result.output
        with Image.open(media / "images" / name) as a, Image.open(out) as b:
            assert b.size == (a.size[0] * 2, a.size[1] * 2)


def test_interrupt_exits_130_and_leaves_nothing(tmp_path):
    returncode, stderr, out_dir = interrupted_run(tmp_path, signal.SIGINT)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


def test_sigterm_leaves_nothing(tmp_path):
    returncode, _, out_dir = interrupted_run(tmp_path, signal.SIGTERM)
    assert returncode == 130
    assert list(out_dir.iterdir()) == []


def _tiny_compact_file(path: Path, scale: int = 4) -> Path:
    """A random-initialised SRVGGNetCompact in Real-ESRGAN's official {'params': ...} layout."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    torch.save({"params": net.state_dict()}, path)
    return path


def test_very_large_image_is_upscaled_in_tiles(cli, tmp_path):
    weights = _tiny_compact_file(tmp_path / "tiny_x4.pth")
    src = make_image(tmp_path / "big.png", size=(3000, 2000))
    out = tmp_path / "big_out.png"
    result = cli(src, out, "--bg-model", weights, "--face-model", "none", "--scale", "2",
                 "--tile", "512", "--quiet")
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (6000, 4000)
    summary = json.loads((tmp_path / "big_out.png.jsonl").read_text().splitlines()[-1])
    assert summary["summary"]["models"]["background"]["source"] == "file"


def test_a_weight_file_that_is_not_a_model_is_one_line(cli, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    src = make_clip(tmp_path / "in.mp4", frames=2)
    result = cli(src, tmp_path / "out.mp4", "--bg-model", junk, "--face-model", "none")
    assert result.exit_code == 3
    assert result.output.startswith("vidrestore: error: junk.pth") or "junk.pth" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow
def test_sample_with_the_bundled_background_model(cli, tmp_path):
    """The README's main job, offline: bundled Real-ESRGAN and vidrestore-face-v2 stand in
    and say so."""
    out = tmp_path / "sample_restored.mp4"
    result = cli(ROOT / "samples" / "sample.mp4", out, "--config", "fast", "--no-download")
    assert result.exit_code == 0, result.output
    assert "FACE RESTORATION IS OFF" not in result.output
    assert "using vidrestore-face-v2 (bundled:vidrestore) in its place" in result.output
    assert "realesr-animevideov3-ncnn" in result.output
    assert frame_times(out) == frame_times(ROOT / "samples" / "sample.mp4")
    from tests.conftest import packets

    assert packets(out, "audio") == packets(ROOT / "samples" / "sample.mp4", "audio")


@pytest.mark.slow
def test_real_photo_with_bundled_x4plus_is_sharper_than_bicubic(cli, media, tmp_path):
    import cv2

    src = media / "images" / "codeformer_whole_imgs_01.jpg"
    out = tmp_path / "out.png"
    result = cli(src, out, "--no-download", "--face-model", "none", "--quiet")
    assert result.exit_code == 0, result.output
    restored = np.asarray(Image.open(out).convert("L"))
    with Image.open(src) as img:
        bicubic = np.asarray(img.convert("L").resize(restored.shape[::-1], Image.BICUBIC))
    sharp = cv2.Laplacian(restored.astype(np.float64), cv2.CV_64F).var()
    soft = cv2.Laplacian(bicubic.astype(np.float64), cv2.CV_64F).var()
    assert sharp > 3 * soft

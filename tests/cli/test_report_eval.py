"""`vidrestore eval` and `vidrestore report` on real runs: a photo and a short real clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.media import first_frames, make_clip_of_images

RESTORE = ["--face-model", "passthrough", "--bg-model", "none", "--quiet"]


def _dpi(path) -> tuple[float, float]:
    with Image.open(path) as image:
        return image.info["dpi"]


@pytest.fixture
def restored_clip(cli, media, tmp_path):
    """The first 6 frames of a real talking-head clip, restored with the whole face path."""
    clip = make_clip_of_images(tmp_path / "talk.mp4",
                               first_frames(media / "video" / "talk_real_1.mp4", 6))
    out = tmp_path / "talk_out.mp4"
    result = cli(clip, out, *RESTORE)
    assert result.exit_code == 0, result.output
    return clip, out


def test_report_of_a_real_video_log_writes_500_dpi_plots_and_grids(cli, restored_clip,
                                                                   tmp_path):
    clip, out = restored_clip
    eval_json = tmp_path / "eval.json"
    result = cli("eval", "--reference", clip, "--restored", out, "--json", eval_json)
    assert result.exit_code == 0, result.output
    assert "restored 776x1024 resized to the reference's 388x512" in result.output
    figures = json.loads(eval_json.read_text())
    assert figures["frame_count"] == 6 and figures["identity"]["tracks"]["0"]["frames"] == 6
    assert figures["means"]["flicker"]["reference"] is not None

    report = tmp_path / "report"
    result = cli("report", f"{out}.jsonl", "--out", report, "--reference", clip,
                 "--eval", eval_json, "--frame", 2)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in report.iterdir())
    assert names == ["eval.png", "grid_000002.png", "identity.png", "quality.png",
                     "timings.png"]
    for path in report.iterdir():
        assert _dpi(path) == pytest.approx((500, 500), abs=0.01)
    with Image.open(report / "timings.png") as image:
        assert image.size[0] >= 3000  # 7.5 in at 500 DPI
    with Image.open(report / "grid_000002.png") as image:
        grid = np.asarray(image.convert("L"))
    assert grid.std() > 20  # pictures, not an empty canvas


def test_eval_and_report_of_a_real_photo(cli, media, tmp_path):
    photo = media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"
    degraded = tmp_path / "degraded.png"
    assert cli("degrade", photo, degraded, "--seed", 1).exit_code == 0
    restored = tmp_path / "restored.png"
    result = cli(degraded, restored, *RESTORE)
    assert result.exit_code == 0, result.output
    result = cli("eval", "--reference", photo, "--restored", restored, "--check")
    assert "PSNR (dB)" in result.output and "track 1" in result.output
    assert result.exit_code in (0, 1)
    assert (result.exit_code == 1) == ("overall: FAIL" in result.output)
    result = cli("report", f"{restored}.jsonl", "--reference", photo)
    assert result.exit_code == 0, result.output
    report = tmp_path / "restored.png.report"
    written = sorted(p.name for p in report.iterdir())
    assert written == ["grid_000000.png", "identity.png", "quality.png", "timings.png"]
    assert all(_dpi(report / name) == pytest.approx((500, 500), abs=0.01) for name in written)


def test_report_refuses_what_is_not_a_log(cli, tmp_path):
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"hello": 1}\n')
    result = cli("report", bogus)
    assert result.exit_code == 2 and "no frame records" in result.output

"""`vidrestore degrade IN OUT`: reproducible for a seed, parameters written, video kept whole."""

from __future__ import annotations

import json

import av
import numpy as np
from PIL import Image

from tests.conftest import packets, video_frames
from tests.media import make_clip


def _pixels(path) -> np.ndarray:
    if path.suffix == ".png":
        return np.asarray(Image.open(path).convert("RGB"))
    return np.stack([frame.to_ndarray(format="rgb24") for _, frame in video_frames(path)])


def test_image_degradation_is_reproducible_for_a_seed(cli, media, tmp_path):
    photo = media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"
    outs = [tmp_path / name for name in ("a.png", "b.png", "c.png")]
    for out, seed in zip(outs, (5, 5, 6), strict=True):
        result = cli("degrade", photo, out, "--seed", seed)
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert not np.array_equal(_pixels(outs[0]), _pixels(outs[2]))
    params = json.loads((tmp_path / "a.png.degrade.json").read_text())
    assert params["seed"] == 5 and params["size_out"] == [350, 232]
    assert [s["name"] for s in params["steps"]] == ["blur", "downscale", "noise", "jpeg"]
    assert set(params["steps"][2]["params"]) == {"sigma"}
    assert Image.open(outs[0]).size == (350, 232)
    # the parameters file replays the same degradation
    replay = tmp_path / "replay.png"
    assert cli("degrade", photo, replay, "--recipe", tmp_path / "a.png.degrade.json").exit_code == 0
    assert replay.read_bytes() == outs[0].read_bytes()


def test_video_degradation_is_reproducible_and_keeps_frames_and_audio(cli, tmp_path):
    # 48 frames of 192 x 128: enough for x264's lookahead to differ between runs when on
    clip = make_clip(tmp_path / "in.mp4", frames=48, width=192, height=128, audio="aac")
    steps = ["--step", "cast", "--step", "motion", "--step", "downscale", "--step", "poisson",
             "--step", "jpeg", "--step", "codec"]
    outs = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    for out, seed in zip(outs, (1, 1, 2), strict=True):
        result = cli("degrade", clip, out, "--seed", seed, *steps)
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    first, other = _pixels(outs[0]), _pixels(outs[2])
    assert first.shape == (48, 64, 96, 3) and not np.array_equal(first, other)
    assert [t for t, _ in video_frames(outs[0])] == [t for t, _ in video_frames(clip)]
    assert [p for _, p in packets(outs[0], "audio")] == [p for _, p in packets(clip, "audio")]
    params = json.loads((tmp_path / "a.mp4.degrade.json").read_text())
    codec = params["steps"][-1]["params"]
    assert 28 <= codec["crf"] <= 38 and params["written_as"]["crf"] == codec["crf"]
    with av.open(str(outs[0])) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_degrade_refuses_bad_steps_and_existing_outputs(cli, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out.mp4"
    result = cli("degrade", clip, out, "--step", "blurr")
    assert result.exit_code == 2 and "unknown" in result.output and not out.exists()
    assert cli("degrade", clip, out, "--step", "noise:sigma=3").exit_code == 0
    result = cli("degrade", clip, out)
    assert result.exit_code == 2 and "--overwrite" in result.output
    image = tmp_path / "still.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = cli("degrade", image, tmp_path / "o.png", "--step", "codec")
    assert result.exit_code == 2 and "jpeg" in result.output

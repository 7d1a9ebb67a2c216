"""`vidrestore IN OUT` through the face path, end to end, on real media.

Passthrough (the whole path with faces unchanged) measures alignment and paste-back; a
random-initialised GFPGAN in the official file layout runs the real restorer's code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import frame_times
from tests.media import first_frames, make_clip_of_images
from tests.model_files import RFPP_SMALL, gfpgan_checkpoint, restoreformer_pp_checkpoint
from vidrestore import run
from vidrestore.models import REGISTRY, ModelStore
from vidrestore.models.registry import build_registry

PASSTHROUGH = ["--face-model", "passthrough", "--bg-model", "none", "--no-download",
               "--quiet"]
FACE_FIELDS = {"track", "box", "landmarks_raw", "landmarks", "score", "skipped", "identity",
               "flagged", "guard_fidelity", "psnr", "ssim", "lpips", "sharpness"}


def records(log: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    return lines[:-1], lines[-1]["summary"]


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.float64) for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def talk_clip(media, tmp_path_factory) -> Path:
    """The first 40 frames of talk_real_1 (388x512, one face), re-encoded near-losslessly."""
    frames = first_frames(media / "video" / "talk_real_1.mp4", 40)
    return make_clip_of_images(tmp_path_factory.mktemp("talk") / "talk40.mp4", frames)


@pytest.fixture
def no_identity(tmp_path) -> Path:
    config = tmp_path / "no_identity.yaml"
    config.write_text("face:\n  identity: false\n")
    return config


def test_passthrough_gives_the_input_back_on_every_frame(cli, talk_clip, tmp_path,
                                                         no_identity):
    """Against a --face-model none run of the same input, so the encoder's own loss cancels
    and what is left is alignment and paste-back (about 42 dB after x264, 53 dB before)."""
    outputs = {}
    for model in ("none", "passthrough"):
        outputs[model] = tmp_path / f"{model}.mp4"
        result = cli(talk_clip, outputs[model], *PASSTHROUGH, "--face-model", model,
                     "--scale", "1", "--config", no_identity)
        assert result.exit_code == 0, result.output
    figures = [psnr(a, b) for a, b in zip(decoded(outputs["none"]),
                                          decoded(outputs["passthrough"]), strict=True)]
    assert len(figures) == 40 and min(figures) > 40, min(figures)
    frames, summary = records(tmp_path / "passthrough.mp4.jsonl")
    assert [len(r["faces"]) for r in frames] == [1] * 40
    assert {r["faces"][0]["track"] for r in frames} == {0}
    assert min(r["faces"][0]["psnr"] for r in frames) > 45  # in the face box, before x264
    assert summary["faces"]["tracks"]["0"]["restored"] == 40
    assert frame_times(outputs["passthrough"]) == frame_times(talk_clip)


def test_a_gfpgan_weight_file_runs_through_the_cli(cli, media, tmp_path):
    """GFPGAN at 512 px is seconds a face on a CPU: three frames of a real clip."""
    clip = make_clip_of_images(tmp_path / "talk3.mp4",
                               first_frames(media / "video" / "talk_real_1.mp4", 3))
    weights = gfpgan_checkpoint(tmp_path / "GFPGANv1.3.pth")
    out = tmp_path / "out.mp4"
    result = cli(clip, out, "--face-model", weights, "--bg-model", "none", "--scale", "1",
                 "--no-download", "--quiet", "--fidelity", "0.9", "--identity-guard")
    assert result.exit_code == 0, result.output
    assert frame_times(out) == frame_times(clip)
    frames, summary = records(tmp_path / "out.mp4.jsonl")
    assert summary["models"]["face"]["source"] == "file"
    for record in frames:
        (face,) = record["faces"]
        assert FACE_FIELDS <= set(face) and face["skipped"] is None
        assert face["identity"]["encoder"] == "dlib_resnet_v1"
        assert face["flagged"]  # random weights paint noise: not the same person
        assert face["guard_fidelity"] < 1.0 and 0 < face["psnr"] < 40
        assert set(face["sharpness"]) == {"input", "upscaled", "output"}
        assert {"faces.restore", "faces.identity"} <= set(record["timings_ms"])
    assert summary["faces"]["flagged_frames"] == 3
    assert summary["faces"]["tracks"]["0"]["identity_cosine"] >= 0.91  # the guard's work


def test_restoreformer_pp_from_the_model_cache_runs_through_the_cli(cli, media, tmp_path,
                                                                    monkeypatch, no_identity):
    """`--face-model restoreformer++` with a random RestoreFormer++ in the release's layout
    (every key of it, at width 32) placed in the cache under the release's file name. The
    store checks the release's size, which a random file of other widths cannot have, so
    the registry entry is given this file's size; the rest is the real path."""
    (tmp_path / "models").mkdir()  # the cli fixture's VIDRESTORE_HOME
    weights = restoreformer_pp_checkpoint(tmp_path / "models" / "RestoreFormer++.ckpt",
                                          **RFPP_SMALL)
    spec = dataclasses.replace(REGISTRY["restoreformer++"], size_bytes=weights.stat().st_size)
    registry = build_registry(*(spec if s.name == spec.name else s for s in REGISTRY.values()))
    monkeypatch.setattr(run, "ModelStore", lambda config: ModelStore(config, registry=registry))
    clip = make_clip_of_images(tmp_path / "talk2.mp4",
                               first_frames(media / "video" / "talk_real_1.mp4", 2))
    out = tmp_path / "out.mp4"
    result = cli(clip, out, "--face-model", "restoreformer++", "--bg-model", "none",
                 "--scale", "1", "--no-download", "--quiet", "--config", no_identity)
    assert result.exit_code == 0, result.output
    assert frame_times(out) == frame_times(clip)
    frames, summary = records(tmp_path / "out.mp4.jsonl")
    face_model = summary["models"]["face"]
    assert (face_model["name"], face_model["source"]) == ("restoreformer++", "cache")
    assert face_model["path"] == str(weights)
    for record in frames:
        (face,) = record["faces"]
        assert face["skipped"] is None and "faces.restore" in record["timings_ms"]
        assert face["psnr"] < 40  # random weights paint another face, colour-matched


def test_faces_entering_and_leaving_a_clip(cli, media, tmp_path, no_identity):
    """A real photo for 4 frames, blank for 6, the photo again: faces only where it shows,
    new tracks after the gap."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    photo = np.ascontiguousarray(bgr[: bgr.shape[0] // 2 * 2, : bgr.shape[1] // 2 * 2, ::-1])
    blank = np.full_like(photo, 128)
    clip = make_clip_of_images(tmp_path / "in.mp4", [photo] * 4 + [blank] * 6 + [photo] * 4)
    out = tmp_path / "out.mp4"
    result = cli(clip, out, *PASSTHROUGH, "--scale", "1", "--config", no_identity)
    assert result.exit_code == 0, result.output
    frames, summary = records(tmp_path / "out.mp4.jsonl")
    counts = [len(r["faces"]) for r in frames]
    assert counts == [2] * 4 + [0] * 6 + [2] * 4
    first = {f["track"] for r in frames[:4] for f in r["faces"]}
    second = {f["track"] for r in frames[10:] for f in r["faces"]}
    assert len(first) == len(second) == 2 and first.isdisjoint(second)
    assert summary["faces"]["frames_with_faces"] == 8 and len(summary["faces"]["tracks"]) == 4
    assert len(frame_times(out)) == 14


@pytest.mark.parametrize("name,faces,restored", [("codeformer_whole_imgs_02.png", 4, 4),
                                                 ("gfpgan_whole_imgs_10045.png", 4, 3)])
def test_every_face_of_a_group_photo_is_logged(cli, media, tmp_path, name, faces, restored):
    out = tmp_path / "out.png"
    result = cli(media / "images" / name, out, *PASSTHROUGH, "--scale", "1")
    assert result.exit_code == 0, result.output
    (record,), summary = records(tmp_path / "out.png.jsonl")
    assert len(record["faces"]) == faces and len({f["track"] for f in record["faces"]}) == faces
    done = [f for f in record["faces"] if f["skipped"] is None]
    assert len(done) == restored
    assert all(f["identity"]["cosine"] > 0.99 and not f["flagged"] for f in done)
    assert all(f["identity"] is None for f in record["faces"] if f["skipped"])
    with Image.open(media / "images" / name) as a, Image.open(out) as b:
        assert psnr(np.asarray(a.convert("RGB"), np.float64),
                    np.asarray(b.convert("RGB"), np.float64)) > 40


def test_a_still_photo_through_the_face_path(cli, media, tmp_path):
    src = media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"
    out = tmp_path / "blake.png"
    result = cli(src, out, *PASSTHROUGH, "--scale", "2")
    assert result.exit_code == 0, result.output
    with Image.open(src) as a, Image.open(out) as b:
        assert b.size == (a.size[0] * 2, a.size[1] * 2)
    (record,), summary = records(tmp_path / "blake.png.jsonl")
    assert len(record["faces"]) == 2 and all(f["psnr"] > 30 for f in record["faces"])
    assert summary["models"]["face"]["name"] == "passthrough"
    assert "faces.detect" in summary["mean_ms_per_frame"]

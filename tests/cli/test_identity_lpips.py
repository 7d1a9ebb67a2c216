"""`vidrestore IN OUT` with ArcFace and the LPIPS trunk in the model cache (random weights in
the official layouts), and `--identity-encoder`, end to end on a real clip."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from tests.media import first_frames, make_clip_of_images
from tests.model_files import random_alexnet_trunk, random_buffalo_l, registry_accepting
from vidrestore import run as run_module
from vidrestore.models.store import ModelStore

ARGS = ["--face-model", "passthrough", "--bg-model", "none", "--scale", "1", "--no-download",
        "--quiet"]


@pytest.fixture(scope="module")
def talk_clip(media, tmp_path_factory) -> Path:
    frames = first_frames(media / "video" / "talk_real_1.mp4", 3)
    return make_clip_of_images(tmp_path_factory.mktemp("talk") / "talk3.mp4", frames)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    return {"arcface-buffalo_l": random_buffalo_l(folder / "buffalo_l.zip"),
            "alexnet-imagenet": random_alexnet_trunk(folder / "alexnet-owt-7be5be79.pth")}


@pytest.fixture
def accepting_store(monkeypatch, model_files):
    """Runs build their store on a registry that accepts the random files' digests."""
    registry = registry_accepting(**model_files)
    monkeypatch.setattr(run_module, "ModelStore", functools.partial(ModelStore,
                                                                    registry=registry))


def records(log: Path) -> tuple[list[dict], dict]:
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    return lines[:-1], lines[-1]["summary"]


def test_arcface_and_lpips_from_the_cache_reach_every_face_record(cli, talk_clip, tmp_path,
                                                                  model_files, accepting_store):
    cache = tmp_path / "models"  # the cli fixture's VIDRESTORE_HOME
    cache.mkdir()
    for path in model_files.values():
        (cache / path.name).symlink_to(path)
    out = tmp_path / "out.mp4"
    result = cli(talk_clip, out, *ARGS)
    assert result.exit_code == 0, result.output
    frames, summary = records(tmp_path / "out.mp4.jsonl")
    assert len(frames) == 3
    for record in frames:
        (face,) = record["faces"]
        assert face["identity"]["encoder"] == "arcface-buffalo_l"
        assert face["identity"]["cosine"] > 0.99  # passthrough: the face pasted is the input
        assert isinstance(face["lpips"], float) and face["lpips_reason"] is None
        assert "faces.lpips" in record["timings_ms"]
    assert summary["models"]["identity"]["name"] == "arcface-buffalo_l"
    assert summary["models"]["lpips"]["name"] == "lpips-alex-v0.1"
    track = summary["faces"]["tracks"]["0"]
    assert track["identity_cosine"] > 0.99 and track["lpips"] is not None

    out = tmp_path / "dlib.mp4"
    result = cli(talk_clip, out, *ARGS, "--identity-encoder", "dlib")
    assert result.exit_code == 0, result.output
    frames, _ = records(tmp_path / "dlib.mp4.jsonl")
    assert {r["faces"][0]["identity"]["encoder"] for r in frames} == {"dlib_resnet_v1"}


def test_without_the_files_dlib_scores_and_lpips_says_why(cli, talk_clip, tmp_path):
    result = cli(talk_clip, tmp_path / "out.mp4", *ARGS)
    assert result.exit_code == 0, result.output
    frames, summary = records(tmp_path / "out.mp4.jsonl")
    face = frames[0]["faces"][0]
    assert face["identity"]["encoder"] == "dlib_resnet_v1"
    assert face["lpips"] is None and "vidrestore models download alexnet-imagenet" in (
        face["lpips_reason"])
    assert summary["faces"]["tracks"]["0"]["lpips"] is None


def test_asking_for_arcface_without_it_is_one_line_and_exit_3(cli, talk_clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = cli(talk_clip, out, *ARGS, "--identity-encoder", "arcface")
    assert result.exit_code == 3
    assert result.output.count("\n") == 1 and "arcface-buffalo_l" in result.output
    assert "vidrestore models download arcface-buffalo_l" in result.output
    assert not out.exists()

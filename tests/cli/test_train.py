"""`vidrestore faces extract` and `vidrestore train` on a tiny dataset, on the CPU.

A session dataset holds the one-face clean photos of ../shared/media/clean/images (split by
source) and a short clip of a moving face. Runs are tens of steps on 64 px patches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT
from tests.media import make_face_clip

PHOTOS = ["liveportrait_s1.jpg", "liveportrait_s2.jpg", "liveportrait_s3.jpg",
          "liveportrait_s4.jpg", "liveportrait_s9.jpg", "liveportrait_s10.jpg",
          "liveportrait_s12.jpg", "liveportrait_s42.jpg", "liveportrait_s25.jpg"]
VAL = ["liveportrait_s12.jpg", "liveportrait_s42.jpg"]


def _tiny_config(folder: Path, **sections) -> Path:
    config = {"seed": 3, "threads": 1,
              "model": {"arch": "unet", "widths": [8, 16, 16, 16], "blocks": 1},
              "data": {"patch": 64, "batch": 4, "degradation": "video", "val_faces": 2,
                       "degradation_overrides": {"prob": {"codec": 0.0}}},
              "loss": {"rec": "l1", "identity_weight": 0.1, "identity_every": 5},
              "optim": {"steps": 12, "lr": 2e-3, "warmup": 2, "ema_decay": 0.9},
              "checkpoint_every": 6, "val_every": 1000}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def dataset(media, tmp_path_factory) -> Path:
    from click.testing import CliRunner

    from vidrestore.cli import main

    folder = tmp_path_factory.mktemp("faces")
    clip = make_face_clip(folder / "clip.mp4", media, 12, width=480, height=360)
    inputs = [str(media / "clean" / "images" / name) for name in PHOTOS] + [str(clip)]
    args = ["faces", "extract", *inputs, "-o", str(folder / "ds"), "--dedupe", "0.001",
            "--min-eye-px", "16", "--min-sharpness", "0.5"]
    for name in VAL:
        args += ["--val", name]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "ds"


def test_extract_cuts_aligned_faces_with_a_manifest_split_by_source(dataset):
    records = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    by_source = {}
    for r in records:
        by_source.setdefault(Path(r["source"]).name, []).append(r)
    assert "liveportrait_s25.jpg" not in by_source  # the dog: no face
    assert len(by_source["clip.mp4"]) >= 2  # frames of one tracked face
    assert len({r["track"] for r in by_source["clip.mp4"]}) == 1
    for name, rows in by_source.items():
        assert {r["split"] for r in rows} == {"val" if name in VAL else "train"}, name
    for r in records:
        assert set(r) >= {"source", "frame", "landmarks", "box", "identity", "chip_affine",
                          "score", "sharpness", "split"}
        assert abs(np.linalg.norm(r["identity"]) - 1) < 1e-3
        crop = dataset / "faces" / r["file"]
        from PIL import Image

        assert Image.open(crop).size == (512, 512)
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["faces"] == len(records)


def test_extract_resumes_without_redoing_finished_sources(dataset, media, monkeypatch):
    from vidrestore import faces_dataset

    calls = []
    monkeypatch.setattr(faces_dataset.FaceCutter, "cut",
                        lambda self, path, out, on_face=None: calls.append(path) or [])
    photo = media / "clean" / "images" / PHOTOS[0]
    settings = faces_dataset.ExtractSettings(val_sources=tuple(VAL))
    faces_dataset.extract_faces([photo], dataset, settings)
    assert calls == []  # its part file exists: skipped


def _train(cli, dataset, run, config, *extra):
    result = cli("train", "--data", dataset, "--out", run, "--config", config, "--device",
                 "cpu", *extra)
    return result


def _steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "train.jsonl").read_text().splitlines())
            if r["kind"] == "step"]


def test_loss_falls_and_the_model_beats_passthrough(cli, dataset, tmp_path):
    # a dark cast and a little blur: learnable in tens of steps by a tiny net
    config = _tiny_config(tmp_path, optim={"steps": 40, "lr": 3e-3, "warmup": 2},
                          data={"degradation_overrides": {
                              "prob": {"codec": 0.0, "jpeg": 0.0, "motion": 0.0, "cast": 1.0,
                                       "blur": 1.0, "downscale": 0.0, "noise": 0.0,
                                       "clean": 0.0, "light": 0.0},
                              "ranges": {"cast.gain": [0.75, 0.8], "blur.sigma": [0.8, 1.0]}}})
    result = _train(cli, dataset, tmp_path / "run", config)
    assert result.exit_code == 0, result.output
    steps = _steps(tmp_path / "run")
    assert len(steps) == 40
    first, last = np.mean([s["rec"] for s in steps[:8]]), np.mean([s["rec"] for s in steps[-8:]])
    assert last < 0.9 * first, (first, last)
    val = [r for r in map(json.loads, (tmp_path / "run" / "train.jsonl").read_text()
                          .splitlines()) if r["kind"] == "val"][-1]
    assert val["psnr_model"] > val["psnr_passthrough"], val
    assert (tmp_path / "run" / "val" / "step_000040.png").is_file()


def test_resume_continues_exactly_where_it_stopped(cli, dataset, tmp_path):
    # with every loss term on, the temporal one on pairs of the clip's frames
    config = _tiny_config(tmp_path, loss={"temporal_weight": 0.5, "temporal_batch": 2})
    assert _train(cli, dataset, tmp_path / "straight", config).exit_code == 0
    assert _train(cli, dataset, tmp_path / "split", config, "--stop-at", "6").exit_code == 0
    assert torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=True)["step"] == 6
    again = cli("train", "--data", dataset, "--out", tmp_path / "split", "--resume",
                "--device", "cpu")
    assert again.exit_code == 0, again.output
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    losses_a = [(s["step"], s["rec"], s["identity"], s["temporal"])
                for s in _steps(tmp_path / "straight")]
    losses_b = [(s["step"], s["rec"], s["identity"], s["temporal"])
                for s in _steps(tmp_path / "split")]
    assert losses_a == losses_b  # one curve, no step twice
    assert all(t is not None and t > 0 for *_, t in losses_a)


def test_a_run_that_exists_is_not_overwritten_without_resume(cli, dataset, tmp_path):
    config = _tiny_config(tmp_path, optim={"steps": 2})
    assert _train(cli, dataset, tmp_path / "run", config).exit_code == 0
    result = _train(cli, dataset, tmp_path / "run", config)
    assert result.exit_code != 0 and "--resume" in result.output


def test_an_interrupted_run_leaves_a_loadable_checkpoint(dataset, tmp_path):
    config = _tiny_config(tmp_path, optim={"steps": 100000}, checkpoint_every=100000)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIDRESTORE_HOME": str(tmp_path / "models")}
    proc = subprocess.Popen([sys.executable, "-m", "vidrestore", "train", "--data", str(dataset),
                             "--out", str(run), "--config", str(config), "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = run / "train.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count('"kind": "step"') >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "--resume" in output
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] >= 3 and state["step"] == len(_steps(run))
    from vidrestore.models.arch.face_unet import face_unet_from_state_dict

    face_unet_from_state_dict(state["ema"])  # the weights load


def test_a_trained_checkpoint_restores_a_face_through_the_cli(cli, dataset, tmp_path, media):
    config = _tiny_config(tmp_path, optim={"steps": 4})
    assert _train(cli, dataset, tmp_path / "run", config).exit_code == 0
    weights = tmp_path / "mine.safetensors"
    exported = cli("train", "export", tmp_path / "run", weights)
    assert exported.exit_code == 0, exported.output
    card = (tmp_path / "mine.md").read_text()
    assert "4 steps" in card and "liveportrait_s12.jpg" in card
    photo = media / "clean" / "images" / "liveportrait_s2.jpg"
    out = tmp_path / "restored.png"
    result = cli(photo, out, "--face-model", weights, "--bg-model", "none", "--quiet")
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["failed_frames"] == 0
    assert summary["models"]["face"]["name"] == "mine.safetensors"
    assert summary["models"]["face"]["source"] == "file"
    assert sum(t["restored"] for t in summary["faces"]["tracks"].values()) >= 1


def test_offline_default_run_restores_faces_with_the_bundled_stand_in(cli, tmp_path, media):
    photo = media / "clean" / "images" / "liveportrait_s2.jpg"
    out = tmp_path / "restored.png"
    result = cli(photo, out, "--bg-model", "none", "--no-download")
    assert result.exit_code == 0, result.output
    assert "using vidrestore-face-v2 (bundled:vidrestore) in its place" in result.output
    summary = _summary(out)
    assert summary["failed_frames"] == 0
    face = summary["models"]["face"]
    assert (face["name"], face["requested"]) == ("vidrestore-face-v2", "gfpgan-1.3")
    assert any("vidrestore-face-v2" in w for w in summary["warnings"])
    assert not any("FACE RESTORATION IS OFF" in w for w in summary["warnings"])
    assert sum(t["restored"] for t in summary["faces"]["tracks"].values()) >= 1


def test_gfpgan_fine_tune_runs_a_few_steps_on_random_official_weights(cli, dataset, tmp_path):
    from tests.official_weights import gfpgan_v13
    from vidrestore.models import ModelStore, load_image_model

    official = tmp_path / "GFPGANv1.3.pth"
    torch.save(gfpgan_v13(), official)
    config = _tiny_config(tmp_path, model={"arch": "gfpgan", "init": str(official)},
                          data={"batch": 1, "val_faces": 0},
                          loss={"identity_every": 2, "identity_batch": 1},
                          optim={"steps": 2, "lr": 1e-5, "warmup": 1})
    result = _train(cli, dataset, tmp_path / "run", config)
    assert result.exit_code == 0, result.output
    steps = _steps(tmp_path / "run")
    assert len(steps) == 2 and all(np.isfinite(s["total"]) for s in steps)
    assert steps[0]["identity"] is not None
    weights = tmp_path / "tuned.safetensors"
    assert cli("train", "export", tmp_path / "run", weights).exit_code == 0
    descriptor = load_image_model(ModelStore().user_file(weights, "face_restorer"))
    assert descriptor.architecture.id == "GFPGAN"


def _summary(out: Path) -> dict:
    log = out.with_name(out.name + ".jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    last = records[-1]
    return last.get("summary", last)


@pytest.mark.needs_cuda
def test_training_runs_bf16_channels_last_on_cuda(cli, dataset, tmp_path):
    config = _tiny_config(tmp_path, optim={"steps": 3})
    result = cli("train", "--data", dataset, "--out", tmp_path / "run", "--config", config,
                 "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert len(_steps(tmp_path / "run")) == 3


def test_the_lpips_term_trains_with_an_alexnet_trunk_in_the_official_layout(
        cli, dataset, tmp_path, monkeypatch):
    """With AlexNet's trunk cached (a random torchvision AlexNet saved as the release file
    is, accepted by digest), `loss.lpips_weight` adds LPIPS to the loss on every step and
    LPIPS to the validation figures; the log says it is on."""
    import vidrestore.models
    from tests.model_files import random_alexnet_trunk, registry_accepting

    cache = tmp_path / "cache"
    (cache / "vidrestore" / "models").mkdir(parents=True)
    trunk = random_alexnet_trunk(cache / "vidrestore" / "models" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    accepting = registry_accepting(**{"alexnet-imagenet": trunk})

    class Store(vidrestore.models.ModelStore):  # the trainer's store, with that digest
        def __init__(self, config=None, **kwargs):
            super().__init__(config, registry=accepting, **kwargs)

    monkeypatch.setattr(vidrestore.models, "ModelStore", Store)
    config = _tiny_config(tmp_path, loss={"lpips_weight": 0.5}, optim={"steps": 4},
                          val_every=4)
    result = cli("train", "--data", dataset, "--out", tmp_path / "run", "--config", config)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").read_text()
               .splitlines()]
    assert records[0]["lpips"] == "on"
    steps = _steps(tmp_path / "run")
    assert len(steps) == 4 and all(s["lpips"] is not None and s["lpips"] > 0 for s in steps)
    assert all(abs(s["total"] - s["rec"] - 0.5 * s["lpips"] - 0.1 * (s["identity"] or 0))
               < 1e-5 for s in steps)
    val = [r for r in records if r["kind"] == "val"][-1]
    assert val["lpips_model"] > 0 and val["lpips_passthrough"] > 0

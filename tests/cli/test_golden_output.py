"""The CLI's decoded output frames and face records, against references recorded from the
code before the face path was split into stages (commit ec8983a): a refactor that changes
one output pixel or one logged figure fails here.

Two runs, each with the face path on:

- clip: the first 8 frames of a real talking-head video (talk_real_1.mp4, 388 x 512), made
  lossless here, restored with `--face-model passthrough` at x2 over a plain resize, batches
  of 4 (so tracker, landmark smoothing and a 3-frame colour history cross a batch), the
  feathered-square paste (no parsing), identity
  scored by the bundled dlib encoder;
- photo: gfpgan_whole_imgs_Blake_Lively.jpg, restored at x2 by random-initialised GFPGANv1.3
  and realesr-general-x4v3 files in the official layouts, with random ParseNet paste masks
  and the identity guard on (random GFPGAN fails the identity check, so the guard's blends
  are in the pixels).

Output is lossless (libx264rgb CRF 0, PNG), so the decoded frames are the pipeline's own.
Everything runs on the CPU in float32 with fixed seeds; two runs on the recording machine
(2-core x86) gave identical bytes, so the frames are compared bit for bit (per-frame
SHA-256). On a mismatch the message says how far off the frame is, from a 1/8-size
thumbnail of the reference kept beside its digest.

To re-record after a deliberate change of the output:
    VIDRESTORE_REGEN_GOLDEN=1 python -m pytest tests/cli/test_golden_output.py -m "slow or not slow"
then review and commit tests/cli/golden/.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml

from tests.model_files import registry_accepting
from tests.official_weights import write_official

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("VIDRESTORE_REGEN_GOLDEN") == "1"
CLIP_FRAMES = 8
THUMB = 8  # thumbnails are 1/THUMB of the output's side (area average)
LOSSLESS = {"codec": "libx264rgb", "crf": 0, "pix_fmt": "rgb24", "preset": "ultrafast"}
# Log fields that depend on the clock, not on the pixels.
UNTIMED = ("timings_ms",)


MODELS_DIR = "<models>"  # the models folder, in the log's figures (it is a tmp folder)


@pytest.fixture
def golden_cli(cli, monkeypatch, tmp_path):
    """`golden_cli(models, *args)`: the CLI over a folder of random official-layout files
    for the registry names `models` (the detector file holds the real bundled MobileNet
    weights), with a registry carrying their digests; downloads off, models strict."""
    import vidrestore.run
    from vidrestore.models import ModelStore

    def run(models: list[str], *args):
        folder = tmp_path / "models"
        registry = registry_accepting(**write_official(folder, models))
        monkeypatch.setattr(vidrestore.run, "ModelStore",
                            functools.partial(ModelStore, registry=registry))
        run.folder = folder
        return cli(*args, "--models-dir", folder, "--no-download", "--strict-models",
                   "--quiet", "--device", "cpu")

    return run


def config_file(tmp_path: Path, face: dict) -> Path:
    data = {"encode": LOSSLESS, "face": {"detector": "retinaface-mobilenet0.25",
                                         "identity_encoder": "dlib", **face}}
    path = tmp_path / "golden.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def first_frames_lossless(source: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of `source`, re-encoded losslessly (RGB) at its rate."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        stream_in = src.streams.video[0]
        stream = dst.add_stream("libx264rgb", rate=stream_in.average_rate)
        stream.width, stream.height = stream_in.width, stream_in.height
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for i, frame in enumerate(src.decode(stream_in)):
            if i == frames:
                break
            image = frame.to_ndarray(format="rgb24")
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        dst.mux(stream.encode())
    return out


def decoded_frames(path: Path) -> list[np.ndarray]:
    if path.suffix == ".png":
        return [cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()]
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def face_records(log: Path, models_dir: Path) -> list[list[dict]]:
    """Per frame, its face records (all figures, no timings; the models folder named
    MODELS_DIR)."""
    text = log.read_text().replace(str(models_dir), MODELS_DIR)
    lines = [json.loads(line) for line in text.splitlines()]
    return [[{k: v for k, v in face.items() if k not in UNTIMED} for face in r["faces"]]
            for r in lines if "summary" not in r]


def thumbnail(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, w // THUMB), max(1, h // THUMB)),
                      interpolation=cv2.INTER_AREA)


def sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def check_against_golden(name: str, frames: list[np.ndarray], faces: list[list[dict]]) -> None:
    meta_path, thumbs_path = GOLDEN / f"{name}.json", GOLDEN / f"{name}.npz"
    meta = {"shapes": [list(f.shape) for f in frames], "sha256": [sha256(f) for f in frames],
            "faces": faces}
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=None, separators=(",", ":")) + "\n")
        np.savez_compressed(thumbs_path, *[thumbnail(f) for f in frames])
        pytest.skip(f"re-recorded {meta_path.name} and {thumbs_path.name}: review and commit")
    reference = json.loads(meta_path.read_text())
    assert meta["shapes"] == reference["shapes"]
    with np.load(thumbs_path) as stored:
        thumbs = [stored[f"arr_{i}"] for i in range(len(frames))]
    wrong = []
    for i, (frame, digest) in enumerate(zip(frames, reference["sha256"], strict=True)):
        if sha256(frame) != digest:
            diff = np.abs(thumbnail(frame).astype(np.int16) - thumbs[i].astype(np.int16))
            wrong.append(f"frame {i}: 1/{THUMB} thumbnail off by max {diff.max()}, "
                         f"mean {diff.mean():.4f} levels")
    assert not wrong, f"{name}: output differs from the recorded one; " + "; ".join(wrong)
    assert meta["faces"] == reference["faces"]


def test_clip_with_faces_left_unchanged_matches_the_recorded_output(golden_cli, media,
                                                                     tmp_path):
    clip = first_frames_lossless(media / "video" / "talk_real_1.mp4", tmp_path / "in.mkv",
                                 CLIP_FRAMES)
    out = tmp_path / "out.mkv"
    cfg = config_file(tmp_path, {"colour_history": 3, "parse": False})
    result = golden_cli(["retinaface-mobilenet0.25"], clip, out, "--config", cfg,
                        "--face-model", "passthrough",
                        "--bg-model", "none", "--scale", 2, "--batch-size", 4)
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert summary["fallbacks"] == [], summary
    faces = face_records(Path(f"{out}.jsonl"), golden_cli.folder)
    assert len(faces) == CLIP_FRAMES and all(len(f) == 1 for f in faces)  # one face a frame
    check_against_golden("clip_passthrough", decoded_frames(out), faces)


@pytest.mark.slow  # random GFPGAN at 512 px and the guard's re-embeddings: ~15 s on a CPU
def test_photo_restored_by_gfpgan_matches_the_recorded_output(golden_cli, media, tmp_path):
    out = tmp_path / "out.png"
    cfg = config_file(tmp_path, {"identity_guard": True, "parse": True})
    models = ["gfpgan-1.3", "realesr-general-x4v3", "parsenet", "retinaface-mobilenet0.25"]
    result = golden_cli(models, media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg", out,
                        "--config", cfg, "--face-model", "gfpgan-1.3",
                        "--bg-model", "realesr-general-x4v3", "--scale", 2)
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert summary["fallbacks"] == [], summary
    assert summary["models"]["parser"]["name"] == "parsenet"
    faces = face_records(Path(f"{out}.jsonl"), golden_cli.folder)
    restored = [f for f in faces[0] if f["skipped"] is None]
    assert restored and any(f["guard_fidelity"] < 1 for f in restored)  # the guard stepped in
    check_against_golden("photo_gfpgan", decoded_frames(out), faces)

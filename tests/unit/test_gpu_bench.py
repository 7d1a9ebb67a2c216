"""bench/gpu_throughput.py and the peer harness in bench/peer: the figures' arithmetic, the
result files, the peer's import shim, and (slow) both run end to end on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench" / "peer"))
from bench import gpu_throughput as bench  # noqa: E402

PEER_PYTHON = ROOT / "bench" / "peer" / ".venv" / "bin" / "python"


def test_fps_counts_the_frames_after_the_first_batch():
    written = [1.0, 1.5, 2.0, 2.5, 3.0]  # frames 3-5 took 1.5 s after batch 1 was out
    assert bench.steady_fps(written, batch=2, started=0.0) == {
        "fps": 2.0, "steady": True, "startup_s": 1.5}
    whole = bench.steady_fps([1.0, 2.0], batch=2, started=0.0)
    assert whole == {"fps": 1.0, "steady": False, "startup_s": None}


@pytest.mark.parametrize("requested,batch,frames", [(240, 8, 240), (5, 4, 8), (1, 1, 2),
                                                    (2, 2, 4)])
def test_clips_are_whole_batches_and_at_least_two(requested, batch, frames):
    assert bench.frames_for(requested, batch) == frames


def test_device_time_sums_the_workers_stages_not_their_parts():
    records = [{"timings_ms": {"decode": 2, "upload": 1, "background": 10, "faces": 6,
                               "faces.restore": 4, "download": 1, "encode": 5}},
               {"timings_ms": {"decode": 4, "upload": 1, "background": 12, "faces": 8,
                               "faces.restore": 6, "download": 1, "encode": 7}}]
    means = bench.stage_means(records)
    assert means["device"] == 1 + 11 + 7 + 1 and means["faces.restore"] == 5
    assert means["decode"] == 3 and means["encode"] == 6


def _result(device: str, config: str, commit: str) -> dict:
    return {"device": device, "commit": commit, "settings": {"frames": 2},
            "configs": {config: {"ours": {"short": {"fps": 1.0}}}}}


def test_results_of_separate_calls_merge_by_configuration(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_result("NVIDIA H100", "hq", "aaa")))
    second.write_text(json.dumps(_result("NVIDIA H100", "fast", "bbb")))
    merged = bench.merge_files([first, second])
    assert set(merged["configs"]) == {"hq", "fast"}
    assert merged["configs"]["hq"]["commit"] == "aaa"
    assert merged["configs"]["fast"]["commit"] == "bbb"
    other = tmp_path / "c.json"
    other.write_text(json.dumps(_result("CPU only", "general", "ccc")))
    with pytest.raises(SystemExit, match="cannot merge"):
        bench.merge_files([first, other])


def test_the_peer_shim_adds_only_the_removed_module(monkeypatch):
    import torchvision.transforms.functional as functional
    import torchvision_shim

    monkeypatch.delitem(sys.modules, torchvision_shim.MODULE, raising=False)
    assert torchvision_shim.install() is True
    shim = sys.modules[torchvision_shim.MODULE]
    assert isinstance(shim, types.ModuleType)
    assert shim.rgb_to_grayscale is functional.rgb_to_grayscale
    assert torchvision_shim.install() is False  # once is enough


def test_vidrestore_never_loads_the_peer_shim():
    code = ("import sys, vidrestore.cli, vidrestore.run, vidrestore.compose; "
            "print('torchvision_shim' in sys.modules, "
            "'torchvision.transforms.functional_tensor' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.slow  # GFPGAN + ParseNet + general-x4v3 on 640x480 frames: minutes on a CPU
def test_the_benchmark_runs_a_configuration_end_to_end_on_the_cpu(tmp_path, media):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_throughput.py"), "--device", "cpu",
         "--configs", "fast", "--frames", "2", "--long-frames", "0", "--batch-size", "1",
         "--media", str(media), "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    run = result["configs"]["fast"]["ours"]["short"]
    assert result["device"] == "CPU only" and run["frames"] == 2 and run["steady"]
    assert run["fps"] > 0 and run["faces_restored"] == 2 and run["size_out"] == [1280, 960]
    assert run["models"]["face"] == {"name": "gfpgan-1.3", "source": "cache",
                                     "dtype": "float32", "channels_last": False,
                                     "compile": "off"}
    assert run["models"]["parser"]["source"] == "cache"
    assert {"background", "faces", "faces.restore", "decode", "encode", "device"} \
        <= set(run["ms_per_frame"])


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no peer venv: bench/peer/setup_peer.sh")
def test_the_peer_restores_the_same_clip_frame_by_frame(tmp_path, media):
    from tests.media import make_face_clip
    from tests.official_weights import write_weights

    clip = make_face_clip(tmp_path / "clip.mp4", media, 2, width=640, height=480)
    weights = write_weights(tmp_path / "weights")
    out = tmp_path / "peer.json"
    done = subprocess.run(
        [str(PEER_PYTHON), str(ROOT / "bench" / "peer" / "run_peer.py"), "--input", str(clip),
         "--weights", str(weights), "--bg-model", "realesr-general-x4v3", "--frames", "2",
         "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    peer = json.loads(out.read_text())
    assert peer["frames"] == 2 and peer["fps"] > 0 and peer["faces_per_frame"] == 1
    assert peer["size_out"] == [1280, 960]
    assert {"detect", "restore", "background", "paste", "enhance"} <= set(peer["ms_per_frame"])

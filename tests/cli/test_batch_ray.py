"""`vidrestore batch --ray auto` on a local Ray (2 CPUs): outputs equal to plain runs, a
rerun that skips them all, a worker killed mid-task and retried with each output written
once, and `--segments 3` joined into what a single run writes (pixels, pts, audio, tracks).

One Ray for the module (starting one costs ~5 s here); clips are small and the face path
runs with `--face-model passthrough`, so each job takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import packets, video_frames
from tests.media import make_clip, make_face_clip
from vidrestore.config import preset_path

ray = pytest.importorskip("ray", reason="Ray is the `ray` extra: pip install 'vidrestore[ray]'")

CHEAP = ["--bg-model", "none", "--face-model", "passthrough", "--no-download", "--scale",
         "1", "--quiet"]
LOSSLESS = {"codec": "libx264rgb", "crf": 0, "pix_fmt": "rgb24", "preset": "ultrafast"}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def fast_config(tmp_path: Path, **encode) -> Path:
    """The fast preset (identity scoring off), with `encode` keys, as a YAML file."""
    data = yaml.safe_load(preset_path("fast").read_text())
    data["encode"] = {**data.get("encode", {}), **encode}
    path = tmp_path / f"fast-{len(list(tmp_path.glob('fast-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def decoded(path: Path) -> list[tuple[object, np.ndarray]]:
    return [(t, f.to_ndarray(format="rgb24")) for t, f in video_frames(path)]


def psnr(frames: list[tuple[object, np.ndarray]], reference: list[tuple[object, np.ndarray]]
         ) -> float:
    mse = np.mean([np.mean((a.astype(float) - b) ** 2)
                   for (_, a), (_, b) in zip(frames, reference, strict=True)])
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-9)))


def events(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / ".vidrestore-batch.jsonl").read_text()
            .splitlines()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name
                  or p.name.endswith(".segments"))


def test_batch_equals_plain_runs_and_a_rerun_skips_everything(cli, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    clips = [make_clip(src / "a.mp4", frames=20, audio="aac"),
             make_clip(src / "b.mkv", frames=14, audio="opus", vfr=True),
             make_clip(src / "c.mp4", width=64, height=48, frames=9)]
    # Lossless, so "equal" can mean every pixel: x264's lossy output of the VFR clip was
    # seen to differ between two identical runs (1 time in 3 here), batch or not.
    config = fast_config(tmp_path, **LOSSLESS)
    out = tmp_path / "out"
    result = cli("batch", src / "*.mp4", src / "b.mkv", "-o", out, "--ray", "auto",
                 "--config", config, *CHEAP)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "batch-summary.json").read_text())
    assert (summary["files"], summary["done"], summary["failed"]) == (3, 3, 0)
    assert all(row["failed_frames"] == 0 and row["where"]["ray_node"]
               for row in summary["rows"])
    for clip in clips:
        plain = tmp_path / "plain" / clip.name
        plain.parent.mkdir(exist_ok=True)
        assert cli(clip, plain, "--config", config, *CHEAP).exit_code == 0
        mine, theirs = decoded(out / clip.name), decoded(plain)
        assert [t for t, _ in mine] == [t for t, _ in theirs] == [t for t, _ in
                                                                  video_frames(clip)]
        worst = max(int(np.abs(a.astype(int) - b).max())
                    for (_, a), (_, b) in zip(mine, theirs, strict=True))
        assert worst == 0, (clip.name, worst)
        assert packets(out / clip.name, "audio") == packets(plain, "audio")
        assert json.loads((out / f"{clip.name}.jsonl").read_text().splitlines()[-1]
                          )["summary"]["frames_out"] == len(theirs)

    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()
              if p.suffix in (".mp4", ".mkv", ".jsonl") and not p.name.startswith(".")}
    again = cli("batch", src / "*.mp4", src / "b.mkv", "-o", out, "--ray", "auto",
                "--config", config, *CHEAP)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "batch-summary.json").read_text())
    assert (rerun["skipped"], rerun["done"], rerun["frames_written"]) == (3, 0, 0)
    assert {p: (out / p).stat().st_ino for p in before} == \
        {p: ino for p, (ino, _) in before.items()}
    assert {p: (out / p).stat().st_mtime_ns for p in before} == \
        {p: mtime for p, (_, mtime) in before.items()}
    assert sum(e["event"] == "committed" for e in events(out)) == 3


def test_a_killed_worker_is_retried_and_each_output_is_written_once(tmp_path):
    from vidrestore.api import load_config
    from vidrestore.jobs.batch_run import BatchOptions, run_batch

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "long.mp4", width=320, height=240, frames=150, audio="aac")
    make_clip(src / "short.mp4", frames=12)
    out = tmp_path / "out"
    out.mkdir()
    cfg = load_config("fast", scale=1, background={"model": "none"},
                      face={"model": "passthrough"}, models={"download": False,
                                                            "dir": str(tmp_path / "models")},
                      encode={"preset": "slow"})
    results: list[dict] = []
    seen: list[tuple[int, int]] = []
    batch = threading.Thread(target=lambda: results.append(
        run_batch([str(src)], out, cfg, BatchOptions(ray="auto"),
                  progress=lambda done, total: seen.append((done, total)))))
    batch.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        started = [e for e in events(out) if e["event"] == "started"
                   and e["key"] == "long.mp4"] if (out / ".vidrestore-batch.jsonl").exists() \
            else []
        if started and any(p.name.startswith(".long.mp4.partial-") for p in out.iterdir()):
            victim = started[0]["pid"]
        time.sleep(0.05)
    assert victim is not None, "the long job never started writing"
    time.sleep(0.5)  # well into the encoding
    os.kill(victim, signal.SIGKILL)
    batch.join(240)
    assert not batch.is_alive() and results
    summary = results[0]
    assert [(r["key"], r["status"]) for r in summary["rows"]] == [("long.mp4", "done"),
                                                                   ("short.mp4", "done")]
    log = events(out)
    attempts = [e["pid"] for e in log if e["event"] == "started" and e["key"] == "long.mp4"]
    assert len(attempts) == 2 and attempts[0] == victim != attempts[1]
    assert sorted(e["key"] for e in log if e["event"] == "committed") == ["long.mp4",
                                                                          "short.mp4"]
    assert leftovers(out) == []  # the killed attempt's partials were removed by the retry
    assert len(video_frames(out / "long.mp4")) == 150
    assert [t for t, _ in video_frames(out / "long.mp4")] == \
        [t for t, _ in video_frames(src / "long.mp4")]
    assert packets(out / "long.mp4", "audio") == packets(src / "long.mp4", "audio")
    assert seen[-1] == (162, 162)  # the bar over both files ends full


def test_segments_join_into_a_single_runs_pixels_pts_and_audio(cli, tmp_path):
    clip = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=60, audio="aac", gop=10)
    lossless = fast_config(tmp_path, **LOSSLESS)
    out = tmp_path / "out"
    # A batch stopped after its first segment: that one is kept, the others are made.
    import vidrestore
    from vidrestore.io.probe import probe
    from vidrestore.jobs.segments import plan_segments, segment_path

    first = segment_path(out / "in.mp4", 0)
    first.parent.mkdir(parents=True)
    cfg = vidrestore.load_config(lossless, scale=1, background={"model": "none"},
                                 face={"model": "passthrough"}, models={"download": False})
    vidrestore.restore(clip, first, config=cfg, segment=plan_segments(probe(clip), 3, 6)[0])
    result = cli("batch", clip, "-o", out, "--ray", "auto", "--segments", "3",
                 "--warmup-frames", "6", "--config", lossless, *CHEAP)
    assert result.exit_code == 0, result.output
    ends = sorted((e["key"], e["event"]) for e in events(out)
                  if "#" in e["key"] and e["event"] != "started")
    assert ends == [("in.mp4#0", "skipped"), ("in.mp4#1", "committed"),
                    ("in.mp4#2", "committed")]
    row = json.loads((out / "batch-summary.json").read_text())["rows"][0]
    assert (row["status"], row["segments"], row["frames"], row["failed_frames"]) == \
        ("done", 3, 60, 0)
    assert cli(clip, tmp_path / "single.mp4", "--config", lossless, *CHEAP).exit_code == 0
    joined, single = decoded(out / "in.mp4"), decoded(tmp_path / "single.mp4")
    assert [t for t, _ in joined] == [t for t, _ in single] == [t for t, _ in
                                                                video_frames(clip)]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(joined, single, strict=True))
    assert packets(out / "in.mp4", "audio") == packets(clip, "audio") != []
    records = [json.loads(line) for line in (out / "in.mp4.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records[:-1]] == list(range(60))
    segments = records[-1]["summary"]["segments"]
    assert [s["warmup_frames"] for s in segments] == [0, 6, 6]
    assert sum(s["frames"] for s in segments) == 60
    assert leftovers(out) == []

    # The default (lossy) codec: the cuts change the GOPs, so pixels differ a little; the
    # joined output is as close to the input as the single run's is.
    lossy = fast_config(tmp_path)
    out2 = tmp_path / "out2"
    assert cli("batch", clip, "-o", out2, "--ray", "auto", "--segments", "3", "--config",
               lossy, *CHEAP).exit_code == 0
    assert cli(clip, tmp_path / "single2.mp4", "--config", lossy, *CHEAP).exit_code == 0
    joined, single = decoded(out2 / "in.mp4"), decoded(tmp_path / "single2.mp4")
    assert [t for t, _ in joined] == [t for t, _ in single] == [t for t, _ in
                                                                video_frames(clip)]
    assert packets(out2 / "in.mp4", "audio") == packets(clip, "audio")
    source = decoded(clip)
    joined_db, single_db = psnr(joined, source), psnr(single, source)
    assert joined_db > 30 and abs(joined_db - single_db) < 1.0, (joined_db, single_db)


def test_segments_keep_one_track_per_person_across_the_joins(cli, tmp_path, media):
    clip = make_face_clip(tmp_path / "face.mp4", media, 48, width=320, height=240, gop=12)
    config = fast_config(tmp_path)
    out = tmp_path / "out"
    result = cli("batch", clip, "-o", out, "--ray", "auto", "--segments", "3", "--config",
                 config, *CHEAP)
    assert result.exit_code == 0, result.output
    assert cli(clip, tmp_path / "single.mp4", "--config", config, *CHEAP).exit_code == 0

    def tracks(log: Path) -> list[list[int]]:
        lines = log.read_text().splitlines()[:-1]
        return [[face["track"] for face in json.loads(line)["faces"]] for line in lines]

    joined, single = tracks(out / "face.mp4.jsonl"), tracks(tmp_path / "single.mp4.jsonl")
    assert len(joined) == 48 and all(joined)
    assert {t for frame in joined for t in frame} == {t for frame in single for t in frame}
    assert joined == single
    summary = json.loads((out / "face.mp4.jsonl").read_text().splitlines()[-1])["summary"]
    assert len(summary["segments"]) == 3 and len(summary["faces"]["tracks"]) == 1

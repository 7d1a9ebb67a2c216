"""`vidrestore batch` on this machine's worker processes (no Ray): several files at once,
a bad one failing alone with one line and its exit code, and a rerun that skips the rest."""

from __future__ import annotations

import json

from tests.conftest import packets, video_frames
from tests.media import make_clip, make_text_as_video

CHEAP = ["--bg-model", "none", "--face-model", "none", "--no-download", "--scale", "2",
         "--quiet", "--config", "fast"]


def test_local_workers_restore_all_but_the_bad_file_and_a_rerun_skips_them(cli, tmp_path):
    src = tmp_path / "in"
    (src / "day2").mkdir(parents=True)
    good = [make_clip(src / "a.mp4", frames=10, audio="aac"),
            make_clip(src / "day2" / "b.mov", frames=8)]
    make_text_as_video(src / "broken.mp4")
    out = tmp_path / "out"
    result = cli("batch", src, "-o", out, "--jobs", "2", *CHEAP)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].count("broken.mp4") == 1, result.output
    assert "not a readable video" in errors[0]
    summary = json.loads((out / "batch-summary.json").read_text())
    status = {row["key"]: row["status"] for row in summary["rows"]}
    assert status == {"a.mp4": "done", "b.mov": "done", "broken.mp4": "failed"}
    assert not (out / "broken.mp4").exists() and not (out / "broken.mp4.jsonl").exists()
    for clip, made in ((good[0], out / "a.mp4"), (good[1], out / "day2" / "b.mov")):
        assert [t for t, _ in video_frames(made)] == [t for t, _ in video_frames(clip)]
        assert packets(made, "audio") == packets(clip, "audio")
        assert video_frames(made)[0][1].width == 2 * video_frames(clip)[0][1].width
    places = {row["where"]["pid"] for row in summary["rows"] if row["status"] == "done"}
    assert len(places) == 2  # each file in its own worker process

    again = cli("batch", src, "-o", out, "--jobs", "2", *CHEAP)
    assert again.exit_code == 2
    rerun = json.loads((out / "batch-summary.json").read_text())
    assert {row["key"]: row["status"] for row in rerun["rows"]} == {
        "a.mp4": "skipped", "b.mov": "skipped", "broken.mp4": "failed"}


def test_an_output_without_a_finished_log_is_left_alone(cli, tmp_path):
    clip = make_clip(tmp_path / "a.mp4", frames=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.mp4").write_bytes(b"someone else's file")
    result = cli("batch", clip, "-o", out, *CHEAP)
    assert result.exit_code == 2
    assert "does not end with a summary" in result.output
    assert (out / "a.mp4").read_bytes() == b"someone else's file"


def test_a_killed_local_worker_fails_its_file_only_and_a_rerun_finishes_it(tmp_path):
    import os
    import signal
    import threading
    import time

    from vidrestore.api import load_config
    from vidrestore.jobs.batch_run import BatchOptions, run_batch

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "long.mp4", width=320, height=240, frames=100)
    make_clip(src / "short.mp4", frames=8)
    out = tmp_path / "out"
    out.mkdir()
    cfg = load_config("fast", scale=1, background={"model": "none"}, face={"model": "none"},
                      models={"download": False, "dir": str(tmp_path / "models")},
                      encode={"preset": "slow"})
    results: list[dict] = []
    batch = threading.Thread(target=lambda: results.append(
        run_batch([str(src)], out, cfg, BatchOptions(jobs=1))))
    batch.start()
    journal = out / ".vidrestore-batch.jsonl"
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        started = [json.loads(line) for line in journal.read_text().splitlines()] \
            if journal.exists() else []
        started = [e for e in started if e["event"] == "started" and e["key"] == "long.mp4"]
        if started and any(p.name.startswith(".long.mp4.partial-") for p in out.iterdir()):
            victim = started[0]["pid"]
        time.sleep(0.05)
    assert victim is not None, "the long job never started writing"
    os.kill(victim, signal.SIGKILL)
    batch.join(120)
    rows = {row["key"]: row for row in results[0]["rows"]}
    assert rows["long.mp4"]["status"] == "failed"
    assert "worker process died" in rows["long.mp4"]["error"]
    assert rows["short.mp4"]["status"] == "done"  # in the slot's new worker process
    assert not (out / "long.mp4").exists()

    seen: list[tuple[int, int]] = []
    again = run_batch([str(src)], out, cfg, BatchOptions(jobs=1),
                      progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (100, 100) and seen == sorted(seen)  # one bar over the batch
    assert {row["key"]: row["status"] for row in again["rows"]} == {"long.mp4": "done",
                                                                    "short.mp4": "skipped"}
    assert len(video_frames(out / "long.mp4")) == 100
    assert not [p for p in out.iterdir() if ".partial-" in p.name]

"""The batch's plain parts: which files, which outputs, what counts as finished, where a
video is cut, and how tracks are renumbered across the joins."""

from __future__ import annotations

import json

import pytest

from tests.media import make_clip
from vidrestore.cli_batch import format_table
from vidrestore.errors import ConfigError, InputError
from vidrestore.io.probe import probe
from vidrestore.jobs.finished import finished_summary
from vidrestore.jobs.inputs import plan_files
from vidrestore.jobs.join import renumber_tracks
from vidrestore.jobs.segments import plan_segments, segment_count


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_files_folders_and_globs_map_to_outputs(tmp_path):
    a = touch(tmp_path / "tapes" / "a.mp4")
    b = touch(tmp_path / "tapes" / "1999" / "b.MKV")
    touch(tmp_path / "tapes" / "notes.txt")
    touch(tmp_path / "tapes" / ".hidden.mp4")
    c = touch(tmp_path / "clips" / "c.jpg")
    out = tmp_path / "tapes" / "restored"  # inside an input folder: never an input
    touch(out / "a.mp4")
    jobs = plan_files([str(tmp_path / "tapes"), str(tmp_path / "clips" / "*.jpg")], out)
    assert [(j.input, j.output.relative_to(out.resolve())) for j in jobs] == [
        (b, b.relative_to(tmp_path / "tapes")), (a, a.relative_to(tmp_path / "tapes")),
        (c, c.relative_to(tmp_path / "clips"))]
    assert jobs[1].log.name == "a.mp4.jsonl"


def test_two_inputs_for_one_output_and_missing_paths_are_refused(tmp_path):
    touch(tmp_path / "x" / "clip.mp4")
    touch(tmp_path / "y" / "clip.mp4")
    with pytest.raises(ConfigError, match="clip.mp4"):
        plan_files([str(tmp_path / "x" / "clip.mp4"), str(tmp_path / "y" / "clip.mp4")],
                   tmp_path / "out")
    with pytest.raises(InputError, match="no such file"):
        plan_files([str(tmp_path / "nope.mp4")], tmp_path / "out")
    with pytest.raises(InputError, match="no video or image"):
        plan_files([str(tmp_path / "*.webm")], tmp_path / "out")


def test_finished_means_output_and_a_log_ending_in_a_summary(tmp_path):
    out, log = tmp_path / "o.mp4", tmp_path / "o.mp4.jsonl"
    assert finished_summary(out, log) is None
    out.write_bytes(b"video")
    log.write_text(json.dumps({"frame": 0}) + "\n")
    assert finished_summary(out, log) is None  # a run still going, or killed
    log.write_text(json.dumps({"frame": 0}) + "\n" + '{"summary": {"frames_out": 1')
    assert finished_summary(out, log) is None  # cut short
    log.write_text(json.dumps({"frame": 0}) + "\n"
                   + json.dumps({"summary": {"frames_out": 1}}) + "\n")
    assert finished_summary(out, log) == {"frames_out": 1}
    out.unlink()
    assert finished_summary(out, log) is None


def test_segments_start_at_keyframes_and_cover_the_video_once(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=60, gop=10)
    info = probe(clip)
    ranges = plan_segments(info, 3, warmup_frames=6)
    assert len(ranges) == 3
    starts = [r.start_index for r in ranges]
    assert starts[0] == 0 and starts == sorted(starts)
    assert [r.warmup_frames for r in ranges] == [0, 6, 6]
    for before, after in zip(ranges, ranges[1:], strict=False):
        assert before.end_pts == after.start_pts
        assert after.seek_dts is not None and after.seek_dts <= after.warmup_pts
    assert ranges[-1].end_pts is None
    one_keyframe = probe(make_clip(tmp_path / "one.mp4", frames=30))
    assert len(plan_segments(one_keyframe, 3, warmup_frames=6)) == 1
    assert segment_count("auto", frames=600, workers=4) == 2
    assert segment_count("auto", frames=100, workers=4) == 1
    assert segment_count(3, frames=100, workers=1) == 3


def face(track, x):
    return {"track": track, "box": [x, 10, x + 40, 50]}


def test_tracks_are_matched_in_the_overlap_and_renumbered():
    # Segment 0: people at x=0 (track 0) and x=100 (track 1). Segment 1's tracker numbered
    # them the other way round, and a third person appears after the cut.
    seg0 = [{"frame": f, "faces": [face(0, 0), face(1, 100)]} for f in range(4)]
    warm1 = [{"frame": f, "faces": [face(0, 101), face(1, 1)]} for f in (2, 3)]
    seg1 = [{"frame": 4, "faces": [face(0, 102), face(1, 2), face(2, 200)]}]
    renumber_tracks([seg0, seg1], [[], warm1])
    assert [f["track"] for f in seg1[0]["faces"]] == [1, 0, 2]
    assert [f["track"] for f in seg0[0]["faces"]] == [0, 1]
    # No overlap at all (the person left during the cut): a new id, never a reused one.
    seg2 = [{"frame": 9, "faces": [face(0, 300)]}]
    renumber_tracks([seg0, seg2], [[], [{"frame": 3, "faces": [face(0, 300)]}]])
    assert seg2[0]["faces"][0]["track"] == 2


def test_table_has_a_line_per_file():
    rows = [{"output": "/o/a.mp4", "status": "done", "frames": 20, "fps": 5.0, "faces": 1,
             "failed_frames": 0, "fallbacks": 0,
             "where": {"host": "n1", "pid": 7, "device": "cuda", "ray_node": "abcdef123456"}},
            {"output": "/o/b.mp4", "status": "failed", "where": None}]
    table = format_table(rows).splitlines()
    assert table[0].split() == ["file", "status", "frames", "fps", "faces", "failures",
                                "where"]
    assert table[1].split() == ["a.mp4", "done", "20", "5.0", "1", "0", "n1:7", "cuda",
                                "ray", "abcdef12"]
    assert table[2].split()[:3] == ["b.mp4", "failed", "-"]


def test_each_ray_task_asks_for_a_gpu_where_the_cluster_has_them():
    from vidrestore.jobs.ray_cluster import task_resources

    class Cluster:
        def __init__(self, resources):
            self.resources = resources

        def cluster_resources(self):
            return self.resources

    gpus = Cluster({"CPU": 64, "GPU": 8})
    assert task_resources(gpus, "auto", 1) == {"num_gpus": 1, "num_cpus": 1}
    assert task_resources(gpus, "cpu", 2) == {"num_cpus": 2}
    assert task_resources(Cluster({"CPU": 2}), "auto", 1) == {"num_cpus": 1}


def test_local_slots_are_one_per_device_unless_told():
    from vidrestore.jobs.local import local_slots

    assert local_slots("cpu", None) == ["cpu"]
    assert local_slots("cpu", 3) == ["cpu", "cpu", "cpu"]


def test_models_are_fetched_once_on_the_driver_and_never_on_workers(tmp_path, monkeypatch):
    from vidrestore.api import load_config
    from vidrestore.jobs.models import prepare_models
    from vidrestore.models import ModelStore

    fetched = []
    monkeypatch.setattr(ModelStore, "download", lambda self, name: fetched.append(name))
    cfg = load_config("fast", face={"model": "passthrough"},
                      models={"dir": str(tmp_path / "shared")})
    workers = prepare_models(cfg)
    # the upscaler, the MobileNet detector and ParseNet are missing: the driver fetches them
    assert fetched == ["realesr-general-x4v3", "retinaface-mobilenet0.25", "parsenet"]
    assert (workers.models.dir, workers.models.download) == (str(tmp_path / "shared"), False)
    present = ModelStore(cfg.models).path_for("realesr-general-x4v3")
    present.parent.mkdir(parents=True, exist_ok=True)
    present.write_bytes(b"weights")
    fetched.clear()
    prepare_models(cfg)
    assert fetched == ["retinaface-mobilenet0.25", "parsenet"]  # what is there is kept
    fetched.clear()
    prepare_models(load_config("fast", models={"download": False}))
    assert fetched == []  # --no-download: nobody fetches

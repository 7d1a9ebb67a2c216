"""The public API: the README's library example runs; `restore` can be cancelled and reports
progress; `Restorer` keeps stream state across calls; `import vidrestore` stays light."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

import vidrestore
from tests.conftest import ROOT, frame_times
from tests.media import make_clip


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## As a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_library_example_runs(tmp_path, monkeypatch, capsys):
    make_clip(tmp_path / "in.mp4", frames=6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "models"))
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("6 0 ")  # six frames written, none failed
    assert printed[1].startswith("(240, 320, 3) [] 0")  # fast preset: scale 2
    assert frame_times(tmp_path / "out.mp4") == frame_times(tmp_path / "in.mp4")


def cheap():
    return vidrestore.load_config("default", background={"model": "none"},
                                  face={"model": "none"}, batch_size=2)


def test_progress_is_reported_and_cancel_stops_the_run_leaving_nothing(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=40)
    cancel, seen = threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        if done == 4:
            cancel.set()

    with pytest.raises(vidrestore.Cancelled):
        vidrestore.restore(clip, tmp_path / "out.mp4", config=cheap(), progress=progress,
                           cancel=cancel)
    assert seen[:4] == [(i, 40) for i in range(1, 5)] and len(seen) < 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    assert vidrestore.Cancelled.exit_code == 130


def test_restorer_keeps_tracks_across_calls_and_counts_failures(media):
    bgr = cv2.imread(str(media / "images" / "gfpgan_whole_imgs_Blake_Lively.jpg"))
    photo = np.ascontiguousarray(bgr[:232, :350, ::-1])
    cfg = vidrestore.load_config("default", scale=1, background={"model": "none"},
                                 face={"model": "passthrough", "identity": False,
                                       "detector": "retinaface-mobilenet0.25"})
    with vidrestore.Restorer(cfg) as restorer:
        first = restorer.process([photo, photo])
        second = restorer.process([photo])
    assert [f.shape for f in first + second] == [photo.shape] * 3
    tracks = [[face["track"] for face in r["faces"]] for r in restorer.records]
    assert len(tracks) == 3 and tracks[0] and tracks[0] == tracks[1] == tracks[2]
    assert [r["frame"] for r in restorer.records] == [0, 1, 2]
    assert restorer.summary()["failed_frames"] == 0


def test_restorer_refuses_frames_it_cannot_take():
    restorer = vidrestore.Restorer(cheap())
    with pytest.raises(vidrestore.ConfigError, match="uint8 RGB"):
        restorer.process([np.zeros((8, 8), np.uint8)])
    restorer.process([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(vidrestore.ConfigError, match="differs from the first"):
        restorer.process([np.zeros((16, 8, 3), np.uint8)])


def test_import_vidrestore_is_light_and_only_the_public_names_resolve():
    code = ("import sys, vidrestore; print('torch' in sys.modules, 'av' in sys.modules); "
            "print(sorted(n for n in vidrestore.__all__ if n != '__version__')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out[0] == "False False"
    with pytest.raises(AttributeError):
        vidrestore.build_stages  # noqa: B018 - internal, not exported

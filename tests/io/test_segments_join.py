"""Segments restored on their own and joined by stream copy keep a whole run's timing,
audio and rotation, in each container a segmented batch may write (no Ray needed here)."""

from __future__ import annotations

import av
import pytest

import vidrestore
from tests.conftest import frame_times, packets
from tests.media import make_clip
from vidrestore.io.plan import plan_output
from vidrestore.io.probe import probe
from vidrestore.io.segments import join_segments
from vidrestore.jobs.segments import plan_segments, segment_folder, segment_path


@pytest.mark.parametrize(("suffix", "clip"), [
    (".mp4", {"audio": "aac", "rotation": 90}),
    (".mp4", {"audio": "aac", "vfr": True}),  # B-frames and uneven steps across the cuts
    (".mkv", {"audio": "opus"}),
    (".mov", {"audio": "aac"}),
    (".webm", {"audio": "opus", "codec": "libvpx-vp9"}),
])
def test_joined_segments_keep_the_inputs_timing_audio_and_rotation(tmp_path, suffix, clip):
    src = make_clip(tmp_path / f"in{suffix}", frames=40, gop=8, **clip)
    cfg = vidrestore.load_config("fast", scale=1, background={"model": "none"},
                                 face={"model": "none"}, models={"download": False})
    single = tmp_path / f"single{suffix}"
    vidrestore.restore(src, single, config=cfg)
    info, out = probe(src), tmp_path / f"joined{suffix}"
    ranges = plan_segments(info, 3, warmup_frames=4)
    assert len(ranges) == 3
    segment_folder(out).mkdir()
    parts = []
    for n, frame_range in enumerate(ranges):
        parts.append(segment_path(out, n))
        vidrestore.restore(src, parts[-1], config=cfg, segment=frame_range)
    join_segments(info, plan_output(info, out, 1, cfg.encode), cfg.encode, parts, out)
    assert frame_times(out) == frame_times(single) == frame_times(src)
    assert packets(out, "audio") == packets(single, "audio") != []
    with av.open(str(out)) as joined, av.open(str(single)) as whole:
        assert next(joined.decode(video=0)).rotation == next(whole.decode(video=0)).rotation

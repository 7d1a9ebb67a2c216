"""Nothing lost: frame count, timestamps, duration, audio packets, rotation, colour, depth."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from tests.conftest import FAST, frame_times, packets, video_frames
from tests.media import damaged_frames, frame_index_of, make_clip, make_damaged_clip


def _duration(path) -> Fraction:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.duration * s.time_base


def _restore(cli, src, dst, *extra):
    result = cli(src, dst, *FAST, "--scale", "1", *extra)
    assert result.exit_code == 0, result.output
    return dst


@pytest.mark.parametrize("name", ["talk_real_1.mp4", "talk_real_3.mp4"])
def test_real_video_keeps_every_frame_and_timestamp(cli, media, tmp_path, name):
    src = media / "video" / name
    out = _restore(cli, src, tmp_path / "out.mp4")
    assert frame_times(out) == frame_times(src)
    assert _duration(out) == _duration(src)


def test_scale_two_doubles_size_and_keeps_timing(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=10)
    out = tmp_path / "out.mp4"
    assert cli(src, out, *FAST, "--scale", "2").exit_code == 0
    frames = video_frames(out)
    assert (frames[0][1].width, frames[0][1].height) == (192, 128)
    assert [t for t, _ in frames] == frame_times(src)


def test_frames_come_out_in_order_with_their_content(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=128, height=96, frames=20)
    out = _restore(cli, src, tmp_path / "out.mp4")
    indices = [frame_index_of(f.to_ndarray(format="rgb24")) for _, f in video_frames(out)]
    assert indices == list(range(20))


def test_variable_frame_rate_timestamps_are_kept_exactly(cli, tmp_path):
    src = make_clip(tmp_path / "vfr.mkv", frames=15, vfr=True)
    times = frame_times(src)
    assert len({b - a for a, b in zip(times, times[1:], strict=False)}) > 1  # really irregular
    out = _restore(cli, src, tmp_path / "out.mkv")
    assert frame_times(out) == times


@pytest.mark.parametrize("codec,container", [("aac", "mp4"), ("mp3", "mkv"), ("opus", "mkv"),
                                             ("flac", "mkv")])
def test_audio_is_copied_packet_for_packet(cli, tmp_path, codec, container):
    src = make_clip(tmp_path / f"in.{container}", frames=25, audio=codec)
    out = _restore(cli, src, tmp_path / f"out.{container}")
    assert packets(out, "audio") == packets(src, "audio")
    assert len(packets(out, "audio")) > 10
    assert frame_times(out) == frame_times(src)


def test_audio_the_container_refuses_is_reencoded_with_a_warning(cli, tmp_path):
    src = make_clip(tmp_path / "in.mov", frames=25, audio="pcm_s16le")
    out = tmp_path / "out.mp4"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    assert result.exit_code == 0, result.output
    assert "re-encoded as aac" in result.output
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert audio.codec_context.name == "aac"
        decoded = sum(f.samples for f in c.decode(audio))
    with av.open(str(src)) as c:
        expected = sum(f.samples for f in c.decode(c.streams.audio[0]))
    assert abs(decoded - expected) <= 2048  # encoder priming and padding only


def test_audio_longer_than_video_is_kept_whole(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=10, audio="aac", audio_seconds=2.0)
    out = _restore(cli, src, tmp_path / "out.mp4")
    assert packets(out, "audio") == packets(src, "audio")


def test_rotation_tag_and_orientation_are_kept(cli, tmp_path):
    src = make_clip(tmp_path / "rot.mp4", width=96, height=64, frames=6, rotation=90)
    out = _restore(cli, src, tmp_path / "out.mp4")
    (_, a), (_, b) = video_frames(src)[0], video_frames(out)[0]
    assert b.rotation == a.rotation == 90
    assert (b.width, b.height) == (a.width, a.height)  # stored the same way
    diff = np.abs(a.to_ndarray(format="rgb24").astype(int) - b.to_ndarray(format="rgb24"))
    assert diff.mean() < 4


def test_ten_bit_video_stays_ten_bit(cli, tmp_path):
    src = make_clip(tmp_path / "deep.mkv", frames=6, bit_depth=10)
    out = _restore(cli, src, tmp_path / "out.mkv")
    assert video_frames(out)[0][1].format.name == "yuv420p10le"
    assert frame_times(out) == frame_times(src)


@pytest.mark.parametrize("size", [(97, 65), (33, 21)])
def test_odd_sizes_are_kept(cli, tmp_path, size):
    src = make_clip(tmp_path / "odd.mkv", width=size[0], height=size[1], frames=5,
                    pix_fmt="yuv444p")
    out = _restore(cli, src, tmp_path / "out.mp4")
    frame = video_frames(out)[0][1]
    assert (frame.width, frame.height) == size


def test_colour_tags_are_kept_and_colours_survive(cli, tmp_path):
    tags = {"colorspace": 1, "color_primaries": 1, "color_trc": 1, "color_range": 2}
    src = make_clip(tmp_path / "709.mp4", width=128, height=96, frames=4, color=tags)
    out = _restore(cli, src, tmp_path / "out.mp4")
    with av.open(str(out)) as c:
        ctx = c.streams.video[0].codec_context
        assert (int(ctx.colorspace), int(ctx.color_primaries), int(ctx.color_trc),
                int(ctx.color_range)) == (1, 1, 1, 2)
    a, b = video_frames(src)[0][1], video_frames(out)[0][1]
    rgb = [f.to_ndarray(format="rgb24", src_colorspace=1, src_color_range=2).astype(float)
           for f in (a, b)]
    assert np.abs(rgb[0].mean(axis=(0, 1)) - rgb[1].mean(axis=(0, 1))).max() < 2


def test_damaged_frame_in_the_middle_costs_no_frame(cli, tmp_path):
    src = make_damaged_clip(tmp_path / "damaged.mp4", frames=24, damaged=2)
    out = tmp_path / "out.mp4"
    assert cli(src, out, *FAST, "--scale", "1").exit_code == 0
    times = frame_times(out)
    assert len(times) == 24
    with av.open(str(src)) as c:
        expected = sorted(p.pts * p.time_base for p in c.demux(video=0) if p.size)
    assert times == expected
    import json
    records = [json.loads(x) for x in (tmp_path / "out.mp4.jsonl").read_text().splitlines()]
    warned = [r["frame"] for r in records[:-1] if r["warnings"]]
    assert warned == damaged_frames(24, 8, 2)

"""The synthetic clips of tests/media.py are what their docstrings say they are."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from tests import media

av.logging.set_level(av.logging.FATAL)  # the damaged clips make the h264 decoder chatty


def decode_all(path, *, threads: bool = False):
    """(frames, errors) of the first video stream; a packet that fails counts as an error."""
    frames, errors = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                frames.extend(packet.decode())
            except av.InvalidDataError:
                errors += 1
    return frames, errors


def indices(frames) -> list[int]:
    return [media.frame_index_of(f.to_ndarray(format="rgb24")) for f in frames]


def test_default_clip_frames_are_distinct_and_in_order(tmp_path):
    path = media.make_clip(tmp_path / "a.mp4")
    assert path == tmp_path / "a.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 12
        assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
        assert stream.average_rate == 25
        assert float(stream.duration * stream.time_base) == pytest.approx(12 / 25)
        assert not container.streams.audio
    frames, errors = decode_all(path)
    assert errors == 0
    assert indices(frames) == list(range(12))
    # the content also moves outside the index strip
    a, b = (f.to_ndarray(format="rgb24")[16:].astype(int) for f in frames[:2])
    assert np.abs(a - b).mean() > 5
    # and is close to what was drawn
    drawn = media.make_frame(5, 96, 64).astype(int)
    assert np.abs(frames[5].to_ndarray(format="rgb24") - drawn).mean() < 6


@pytest.mark.parametrize("size", [(64, 48), (160, 120)])
def test_sizes_and_frame_counts(tmp_path, size):
    path = media.make_clip(tmp_path / "s.mkv", width=size[0], height=size[1], frames=30, rate=24)
    frames, _ = decode_all(path)
    assert (frames[0].width, frames[0].height) == size
    assert indices(frames) == list(range(30))
    assert frames[-1].time == pytest.approx(29 / 24, abs=1e-3)


def test_odd_size_needs_444(tmp_path):
    path = media.make_clip(tmp_path / "odd.mp4", width=97, height=65, pix_fmt="yuv444p")
    frames, _ = decode_all(path)
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (97, 65, "yuv444p")
    assert indices(frames) == list(range(12))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_vfr_intervals_are_irregular(tmp_path, suffix):
    path = media.make_clip(tmp_path / f"vfr{suffix}", frames=12, vfr=True)
    frames, _ = decode_all(path)
    assert indices(frames) == list(range(12))
    times = np.array([float(f.pts * f.time_base) for f in frames])
    gaps = np.diff(times)
    assert gaps[0::2] == pytest.approx([0.02] * 6, abs=1.5e-3)  # 0.5 x 1/25 s
    assert gaps[1::2] == pytest.approx([0.06] * 5, abs=1.5e-3)  # 1.5 x 1/25 s
    if suffix == ".mp4":  # mp4 keeps the 1/90000 it was given
        with av.open(str(path)) as container:
            assert container.streams.video[0].time_base == Fraction(1, 90000)


@pytest.mark.parametrize("degrees, read_back", [(90, 90), (180, -180), (270, -90)])
def test_rotation_reads_back(tmp_path, degrees, read_back):
    path = media.make_clip(tmp_path / "r.mp4", rotation=degrees)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert frame.rotation == read_back  # FFmpeg reports the angle in [-180, 180)
    assert (frame.width, frame.height) == (96, 64)  # pixels are stored unrotated


def test_ten_bit(tmp_path):
    path = media.make_clip(tmp_path / "ten.mkv", bit_depth=10)
    frames, _ = decode_all(path)
    assert frames[0].format.name == "yuv420p10le"
    assert max(c.bits for c in frames[0].format.components) == 10
    assert indices(frames) == list(range(12))


def test_colour_tags(tmp_path):
    bt709_full = {"colorspace": 1, "color_primaries": 1, "color_trc": 1, "color_range": 2}
    path = media.make_clip(tmp_path / "c.mp4", color=bt709_full)
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.color_primaries, ctx.color_trc) == (1, 1)
        frame = next(container.decode(video=0))
    assert int(frame.colorspace) == 1
    assert int(frame.color_range) == 2
    rgb = frame.to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb - media.make_frame(0, 96, 64)).mean() < 6


@pytest.mark.parametrize(
    "codec, suffix, decoder",
    [("aac", ".mp4", "aac"), ("mp3", ".mp4", "mp3"), ("opus", ".mkv", "opus"),
     ("pcm_s16le", ".mov", "pcm_s16le"), ("flac", ".mkv", "flac"), ("opus", ".mp4", "opus")],
)
def test_audio_track(tmp_path, codec, suffix, decoder):
    path = media.make_clip(tmp_path / f"a{suffix}", frames=25, audio=codec)
    with av.open(str(path)) as container:
        (audio,) = container.streams.audio
        assert audio.codec_context.codec.canonical_name == decoder
        assert audio.sample_rate == 48000
        assert audio.channels == 2
        decoded = list(container.decode(audio=0))
    seconds = sum(f.samples for f in decoded) / 48000
    assert seconds == pytest.approx(1.0, abs=0.05)  # 25 frames at 25 fps; codec padding aside
    samples = np.concatenate([planar(f) for f in decoded], axis=1)
    middle = samples[:, 12000:36000]  # half a second: 220 and 330 periods
    assert np.sqrt((middle**2).mean(axis=1)) == pytest.approx([0.3 / 2**0.5] * 2, abs=0.03)
    spectrum = np.abs(np.fft.rfft(middle, axis=1))
    assert list(np.argmax(spectrum, axis=1) * 2) == [440, 660]  # bins are 2 Hz apart


def planar(frame: av.AudioFrame) -> np.ndarray:
    """(channels, samples) float of an audio frame, whatever its sample format."""
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, frame.layout.nb_channels).T
    if data.dtype.kind != "f":
        data = data / np.iinfo(data.dtype).max
    return data


def test_audio_seconds_overrides(tmp_path):
    path = media.make_clip(tmp_path / "long_audio.mp4", frames=10, audio="aac", audio_seconds=2.0)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.03)


def test_vfr_with_audio_matches_video_length(tmp_path):
    path = media.make_clip(tmp_path / "va.mp4", frames=12, vfr=True, audio="aac")
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        end = float(video.duration * video.time_base)
        assert end == pytest.approx(6 * 0.02 + 6 * 0.06, abs=2e-3)
        assert float(audio.duration * audio.time_base) == pytest.approx(end, abs=0.03)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16", "P"])
def test_images(tmp_path, mode):
    path = media.make_image(tmp_path / "i.png", mode, size=(80, 60))
    with Image.open(path) as img:
        assert img.mode == mode
        assert img.size == (80, 60)
        if mode == "I;16":
            assert img.getextrema() == (0, 65535)
        if mode == "RGBA":
            assert img.getextrema()[3] == (0, 255)
    jpg = media.make_image(tmp_path / "i.jpg", "RGB")
    assert Image.open(jpg).format == "JPEG"


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_damaged_clip_loses_one_frame_and_recovers(tmp_path, suffix):
    path = media.make_damaged_clip(tmp_path / f"d{suffix}")
    assert media.damaged_frames() == [12]
    with av.open(str(path)) as container:  # the container itself is intact
        assert sum(1 for p in container.demux(video=0) if p.size) == 24
    for threads in (False, True):
        frames, errors = decode_all(path, threads=threads)
        assert errors == 1
        assert len(frames) == 23
        got = indices(frames)
        assert got[:12] == list(range(12))
        assert got[-8:] == list(range(16, 24))  # exact again from the next keyframe


def test_damaged_clip_several_packets(tmp_path):
    path = media.make_damaged_clip(tmp_path / "d3.mp4", frames=30, gop=10, damaged=3)
    assert media.damaged_frames(30, 10, 3) == [15, 16, 17]
    frames, errors = decode_all(path)
    assert (errors, len(frames)) == (3, 27)
    assert indices(frames)[-10:] == list(range(20, 30))


def test_truncated_faststart_opens_and_stops_early(tmp_path):
    path = media.make_truncated_clip(tmp_path / "t.mp4")
    size = path.stat().st_size
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 30  # the index still claims them all
        last = stream.index_entries[len(stream.index_entries) - 1]
        assert last.pos + last.size > size
    frames, _ = decode_all(path)
    assert 3 <= len(frames) < 20
    assert indices(frames) == list(range(len(frames)))


def test_truncated_without_faststart_has_no_index(tmp_path):
    path = media.make_truncated_clip(tmp_path / "t.mp4", faststart=False)
    with pytest.raises(av.InvalidDataError, match="moov atom not found"):
        av.open(str(path))


def test_text_as_video(tmp_path):
    path = media.make_text_as_video(tmp_path / "notes.mp4")
    assert path.read_text().startswith("This is not a video.")
    with pytest.raises(av.InvalidDataError):
        av.open(str(path))


@pytest.mark.parametrize("name", ["sound.mp4", "sound.m4a"])
def test_audio_only(tmp_path, name):
    path = media.make_audio_only(tmp_path / name, seconds=1.0)
    with av.open(str(path)) as container:
        assert not container.streams.video
        (audio,) = container.streams.audio
        assert audio.codec_context.name == "aac"
        assert float(audio.duration * audio.time_base) == pytest.approx(1.0, abs=0.03)


def test_zero_frame_clip(tmp_path):
    path = media.make_zero_frame_clip(tmp_path / "z.mp4")
    with av.open(str(path)) as container:
        (stream,) = container.streams.video
        assert (stream.codec_context.width, stream.codec_context.height) == (96, 64)
        assert stream.frames == 0
        assert list(container.decode(stream)) == []
    with pytest.raises(ValueError):
        media.make_zero_frame_clip(tmp_path / "z.mkv")


def test_long_clip_helper(tmp_path):
    path = media.make_long_clip(tmp_path / "long.mp4", frames=5, width=320, height=240)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.frames == 5
        assert stream.codec_context.width == 320
    frames, _ = decode_all(path)
    assert indices(frames) == list(range(5))

"""Hostile files, full disks and odd containers (issue 13): nothing lost, nothing
half-written, one line and the right exit code."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, ROOT, frame_times, interrupted_run
from tests.media import make_clip


def _summary(log: Path) -> dict:
    return json.loads(log.read_text().splitlines()[-1])["summary"]


def _ok(result, log: Path) -> dict:
    assert result.exit_code == 0, result.output
    summary = _summary(log)
    assert summary["failed_frames"] == 0
    return summary


def _one_error_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidrestore: error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


# --- 1. a full disk --------------------------------------------------------------------


@pytest.mark.parametrize("first", ["video", "log"])
def test_disk_full_mid_run_exits_5_with_one_line_and_nothing_left(tmp_path, first):
    """RLIMIT_FSIZE stands in for a full disk: a write past it fails with EFBIG. Big
    lossless frames fill the video first; tiny frames at crf 51 fill the log first."""
    size, frames, crf, limit = (((320, 240), 40, "0", 60_000) if first == "video"
                                else ((64, 48), 300, "51", 20_000))
    src = make_clip(tmp_path / "in.mp4", width=size[0], height=size[1], frames=frames,
                    options={"preset": "ultrafast"})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "VIDRESTORE_HOME": str(tmp_path / "models")}
    proc = subprocess.run([sys.executable, "-m", "vidrestore", str(src), str(out_dir / "o.mp4"),
                           *FAST, "--scale", "1", "--crf", crf],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=_limit_file_size(limit), timeout=120)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidrestore: error: "), proc.stderr
    assert "o.mp4" in lines[0]
    assert list(out_dir.iterdir()) == []


def test_log_disk_full_exits_5_and_leaves_nothing(cli, tmp_path, monkeypatch):
    import vidrestore.runlog as runlog

    class FullFile:
        """A text file on a disk with room for `room` characters."""

        def __init__(self, path, *args, **kwargs):
            self.raw = open(path, *args, **kwargs)  # noqa: SIM115
            self.room = 300

        def write(self, text):
            self.room -= len(text)
            if self.room < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.raw.write(text)

        def close(self):
            self.raw.close()
            if self.room < 0:
                raise OSError(errno.ENOSPC, "No space left on device")

        @property
        def buffer(self):
            return self.raw.buffer

    monkeypatch.setattr(runlog, "open", FullFile, raising=False)
    src = make_clip(tmp_path / "in.mp4", frames=8)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli(src, out_dir / "o.mp4", *FAST, "--scale", "1")
    _one_error_line(result, 5, "o.mp4.jsonl", "No space left")
    assert list(out_dir.iterdir()) == []


# --- 2. the log and OUT in one place -----------------------------------------------------


def test_log_equal_to_out_or_its_partial_is_refused(cli, tmp_path):
    from vidrestore.destination import partial_path

    src = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    for log in (out, out.parent / "." / "o.mp4", partial_path(out)):
        result = cli(src, out, *FAST, "--log", log)
        _one_error_line(result, 2, "--log")
        assert list(out.parent.iterdir()) == []


# --- 8. OUT that appears during the run ----------------------------------------------------


def test_out_that_appears_during_the_run_is_not_replaced(cli, tmp_path, monkeypatch):
    import vidrestore.run as run

    src = make_clip(tmp_path / "in.mp4", frames=4)
    out = tmp_path / "o.mp4"
    real = run.Pipeline.run

    def run_then_someone_writes_out(self, *args, **kwargs):
        stats = real(self, *args, **kwargs)
        out.write_bytes(b"precious")
        return stats

    monkeypatch.setattr(run.Pipeline, "run", run_then_someone_writes_out)
    result = cli(src, out, *FAST, "--scale", "1")
    _one_error_line(result, 2, "appeared", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "o.mp4"]
    result = cli(src, out, *FAST, "--scale", "1", "--overwrite")
    _ok(result, tmp_path / "o.mp4.jsonl")
    assert len(frame_times(out)) == 4


# --- 14. a long but legal OUT name -----------------------------------------------------------


def test_long_output_name_works_and_a_too_long_log_name_is_one_line(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / ("x" * 251 + ".mp4")  # 255 bytes: the most ext4 and tmpfs take
    log = tmp_path / "run.jsonl"
    _ok(cli(src, out, *FAST, "--scale", "1", "--log", log), log)
    assert len(frame_times(out)) == 3
    out.unlink()
    _one_error_line(cli(src, out, *FAST, "--scale", "1"), 2, "--log")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "run.jsonl"]


# --- 17. SIGHUP and partials of killed runs ------------------------------------------------


def test_sighup_leaves_nothing(tmp_path):
    returncode, stderr, out_dir = interrupted_run(tmp_path, signal.SIGHUP)
    assert returncode == 130, stderr
    assert list(out_dir.iterdir()) == []
    assert "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []


def test_partials_of_killed_runs_are_removed_by_the_next_run(cli, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    live = str(os.getppid())  # a process that is surely running
    stale = [tmp_path / f".o.mp4.partial-{dead}.mp4",
             tmp_path / f".o.mp4.jsonl.partial-{dead}.jsonl"]
    running = tmp_path / f".b.mp4.partial-{live}.mp4"
    for path in (*stale, running):
        path.write_bytes(b"half")
    src = make_clip(tmp_path / "in.mp4", frames=3)
    _ok(cli(src, tmp_path / "o.mp4", *FAST, "--scale", "1"), tmp_path / "o.mp4.jsonl")
    assert not any(p.exists() for p in stale)
    assert running.exists()


# --- 7. file names with a colon ---------------------------------------------------------------


def test_names_with_a_colon_are_files_not_urls(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip12:30.mp4", frames=4)
    make_clip(tmp_path / "pipe:0.mp4", frames=5)
    for src, out in (("clip12:30.mp4", "out12:30.mp4"), ("pipe:0.mp4", "pipe:1.mp4")):
        _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / f"{out}.jsonl")
        assert len(frame_times(tmp_path / out)) == len(frame_times(tmp_path / src))


# --- 13. bad encoder options ------------------------------------------------------------------


@pytest.mark.parametrize("suffix,args,needle", [
    (".mp4", ["--codec", "aac"], "audio encoder"),
    (".mp4", ["--codec", "h264_cuvid"], "not an encoder"),
    (".mkv", ["--codec", "png"], "cannot be written to .mkv"),
    (".mp4", ["--codec", "rawvideo"], "cannot be written to .mp4"),
    (".mp4", ["--preset", "bogus"], "'bogus' is not a preset"),
])
def test_bad_encoder_options_are_one_line_exit_2(cli, tmp_path, suffix, args, needle):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    _one_error_line(cli(src, tmp_path / f"o{suffix}", *FAST, *args), 2, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mjpeg"), (".mkv", "rawvideo")])
def test_encoders_that_need_their_own_pixel_format_still_work(cli, tmp_path, suffix, codec):
    src = make_clip(tmp_path / "in.mp4", frames=3)
    out = tmp_path / f"o{suffix}"
    _ok(cli(src, out, *FAST, "--scale", "1", "--codec", codec), tmp_path / f"o{suffix}.jsonl")
    assert frame_times(out) == frame_times(src)


# --- 3. a stream that ends early ------------------------------------------------------------


def _truncated(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _garbage_in_the_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start:start + 2000] = b"\xab" * 2000
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("suffix,damage", [(".mkv", "truncated"), (".webm", "truncated"),
                                           (".mkv", "garbage"), (".webm", "garbage")])
def test_a_stream_that_ends_early_is_filled_to_its_declared_end_and_says_so(
        cli, tmp_path, suffix, damage):
    codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    whole = make_clip(tmp_path / f"whole{suffix}", frames=30, width=160, height=120,
                      codec=codec, options={"bf": "0"} if codec == "libx264" else {})
    src = tmp_path / f"in{suffix}"
    src.write_bytes(whole.read_bytes())
    (_truncated(src, 0.5) if damage == "truncated" else _garbage_in_the_middle(src))
    assert len(frame_times(src)) < 30  # the demuxer stops early, without an error
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    summary = _ok(result, tmp_path / f"out{suffix}.jsonl")
    assert "ends before the 1.200 s its container declares" in result.output
    assert frame_times(out) == frame_times(whole)
    assert summary["frames_declared"] == 30 and summary["frames_out"] == 30
    assert any("ends before" in w for w in summary["warnings"])
    records = [json.loads(x) for x in (tmp_path / f"out{suffix}.jsonl").read_text().splitlines()]
    assert any("stream ended early" in " ".join(r.get("warnings", [])) for r in records[:-1])


def _point_a_chunk_past_the_end(path: Path) -> Path:
    """An mp4 whose second chunk offset (stco) points past the end of the file."""
    data = bytearray(path.read_bytes())
    at = data.index(b"stco")
    count = int.from_bytes(data[at + 8:at + 12], "big")
    assert count > 2
    entry = at + 12 + 4  # the second entry
    data[entry:entry + 4] = (len(data) + 4096).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_mp4_with_a_chunk_offset_past_the_end_is_refused(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=60, width=160, height=120, faststart=True,
                    options={"bf": "0"}, audio="aac")  # audio interleaved: several chunks
    _point_a_chunk_past_the_end(src)
    result = cli(src, tmp_path / "o.mp4", *FAST)
    _one_error_line(result, 2, "truncated", str(src))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --- 9. a damaged first keyframe ----------------------------------------------------------


def test_damaged_first_keyframe_does_not_refuse_a_clip_that_decodes(cli, tmp_path):
    import numpy as np

    from tests.media import _packet_payloads

    src = make_clip(tmp_path / "in.mp4", frames=60, gop=10, options={"bf": "0"})
    expected = frame_times(src)
    offset, size, key, _ = _packet_payloads(src)[0]
    assert key
    with open(src, "r+b") as f:  # keep NAL length and header, scramble the slice
        f.seek(offset + 8)
        f.write(np.random.default_rng(7).integers(0, 256, size - 8, dtype=np.uint8).tobytes())
    out = tmp_path / "o.mp4"
    summary = _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / "o.mp4.jsonl")
    assert frame_times(out) == expected
    assert summary["frames_out"] == 60


# --- 11 (and 4, 5). every container the README lists keeps every timestamp ---------------


def _video_timeline(path: Path) -> tuple[list, object]:
    """Sorted presentation times of the video packets and where the last one ends."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        packets = [p for p in c.demux(stream) if p.size]
        times = sorted(p.pts * p.time_base for p in packets)
        end = max((p.pts + p.duration) * p.time_base for p in packets)
    return times, end


def _audio_packets(path: Path) -> list:
    from tests.conftest import packets

    return packets(path, "audio")


@pytest.mark.parametrize("suffix,video,audio,vfr", [
    (".mp4", "libx264", "aac", False), (".m4v", "libx264", "aac", False),
    (".mov", "libx264", "aac", False), (".mkv", "libx264", "aac", False),
    (".avi", "libx264", "mp3", False), (".webm", "libvpx-vp9", "opus", False),
    (".mp4", "libx264", "aac", True), (".mkv", "libx264", "opus", True),
])
def test_round_trip_keeps_frames_timestamps_duration_and_audio(cli, tmp_path, suffix, video,
                                                               audio, vfr):
    src = make_clip(tmp_path / f"in{suffix}", frames=25, codec=video, audio=audio, vfr=vfr)
    out = tmp_path / f"out{suffix}"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / f"out{suffix}.jsonl")
    assert _video_timeline(out) == _video_timeline(src)
    assert len(frame_times(out)) == 25
    assert sorted(frame_times(out)) == sorted(frame_times(src))
    assert _audio_packets(out) == _audio_packets(src)


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_mp3_in_avi_is_copied_not_reencoded(cli, tmp_path, suffix):
    src = make_clip(tmp_path / "in.avi", frames=25, audio="mp3")
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / f"out{suffix}.jsonl")
    assert "re-encoded" not in result.output
    assert [p for _, p in _audio_packets(out)] == [p for _, p in _audio_packets(src)]


def test_aac_from_mp4_into_mkv_does_not_shift_the_video(cli, tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=25, audio="aac")
    out = tmp_path / "out.mkv"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / "out.mkv.jsonl")
    assert frame_times(out) == frame_times(src)


# --- 4. re-encoded audio starts where it started and keeps its holes -----------------------


def _clip_with_audio_segments(path: Path, segments: list[tuple[float, float]]) -> Path:
    """25 frames (1 s) of video and pcm_s16le audio only within `segments` (seconds)."""
    from fractions import Fraction

    import av
    import numpy as np

    from tests.media import make_frame

    rate = 48000
    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = c.add_stream("pcm_s16le", rate=rate)
        audio.layout = "stereo"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(make_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in video.encode(frame):
                c.mux(packet)
        for start, end in segments:
            for at in range(round(start * rate), round(end * rate), 1024):
                n = min(1024, round(end * rate) - at)
                t = np.arange(at, at + n) / rate
                tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(np.repeat(tone[None], 2, 0).T.reshape(1, -1),
                                                   format="s16", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = rate, at, Fraction(1, rate)
                for packet in audio.encode(frame):
                    c.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                c.mux(packet)
    return path


def _decoded_audio(path: Path) -> tuple[float, float, object]:
    """First sample's time, last sample's end, and the mono samples of the first audio."""
    import av
    import numpy as np

    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    first = float(frames[0].pts * frames[0].time_base)
    last = frames[-1]
    end = float(last.pts * last.time_base) + last.samples / last.sample_rate
    samples = np.concatenate([f.to_ndarray().reshape(-1, f.samples)[0] for f in frames])
    return first, end, samples


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_reencoded_audio_keeps_its_start_and_its_holes(cli, tmp_path, suffix):
    import numpy as np

    src = _clip_with_audio_segments(tmp_path / "in.mkv", [(0.2, 0.5), (0.7, 1.0)])
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / f"out{suffix}.jsonl")
    assert "re-encoded as" in result.output
    first, end, samples = _decoded_audio(out)
    assert abs(first - 0.2) < 0.03 and abs(end - 1.0) < 0.03
    rate = 48000
    loud = np.abs(samples.astype(np.float64)) > 0.05 * np.abs(samples).max()
    # the hole (0.5-0.7 s) is silent, the sound on either side of it is where it was
    hole = slice(round((0.55 - first) * rate), round((0.65 - first) * rate))
    assert not loud[hole].any()
    assert loud[round((0.75 - first) * rate):round((0.95 - first) * rate)].mean() > 0.5
    assert frame_times(out) == frame_times(src)


@pytest.mark.parametrize("suffix,codec", [(".webm", "mp3"), (".mp4", "adpcm_ms"),
                                          (".mov", "adpcm_ms")])
def test_audio_with_a_coarse_time_base_is_reencoded_in_step(cli, tmp_path, suffix, codec):
    src = make_clip(tmp_path / "in.avi", frames=25, audio=codec)  # time base 3/125, 253/12000
    out = tmp_path / f"out{suffix}"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / f"out{suffix}.jsonl")
    first, end, _ = _decoded_audio(out)
    src_first, src_end, _ = _decoded_audio(src)
    assert abs(first - src_first) < 0.03 and abs(end - src_end) < 0.03
    assert len(frame_times(out)) == 25


# --- 6. subtitles the output container cannot hold ------------------------------------------

_ASS = (b"[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize, "
        b"PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, "
        b"StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
        b"MarginL, MarginR, MarginV, Encoding\nStyle: Default,Arial,16,&Hffffff,&Hffffff,&H0,"
        b"&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n[Events]\nFormat: Layer, Start, End, "
        b"Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")


def _clip_with_mov_text(path: Path, cues: dict[int, str]) -> Path:
    """25 frames of video and a mov_text stream with `cues` (frame index -> text, 0.4 s)."""
    from fractions import Fraction

    import av

    from tests.media import make_frame

    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        subs = c.add_stream("mov_text")
        subs.codec_context.subtitle_header = _ASS
        subs.time_base = Fraction(1, 1000)
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(make_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in video.encode(frame):
                c.mux(packet)
            if i in cues:
                text = cues[i].encode()
                packet = av.Packet(len(text).to_bytes(2, "big") + text)
                packet.pts = packet.dts = i * 40
                packet.duration, packet.time_base, packet.stream = 400, Fraction(1, 1000), subs
                c.mux(packet)
        for packet in video.encode(None):
            c.mux(packet)
    return path


def _subtitle_cues(path: Path) -> list[tuple]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.subtitles:
            return []
        stream = c.streams.subtitles[0]
        return [(bytes(p)[-7:].lstrip(b"\x00\x06\x07"), p.pts * p.time_base,
                 p.duration * p.time_base) for p in c.demux(stream) if p.size > 2]


@pytest.mark.parametrize("suffix,verb", [(".mkv", "converted to subrip"),
                                         (".webm", "converted to webvtt"),
                                         (".avi", "dropped")])
def test_mov_text_is_converted_where_it_can_be_and_dropped_with_a_warning_elsewhere(
        cli, tmp_path, suffix, verb):
    from fractions import Fraction

    src = _clip_with_mov_text(tmp_path / "in.mp4", {0: "line 0", 12: "line 12"})
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / f"out{suffix}.jsonl")
    assert verb in result.output
    expected = [] if verb == "dropped" else [(b"line 0", 0, Fraction(2, 5)),
                                            (b"line 12", Fraction(12, 25), Fraction(2, 5))]
    assert _subtitle_cues(out) == expected
    assert len(frame_times(out)) == 25


# --- 18. stderr closed or full ----------------------------------------------------------


def test_exit_code_does_not_depend_on_stderr(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    env = {**os.environ, "VIDRESTORE_HOME": str(tmp_path / "models")}

    def run(stderr, *args):
        kwargs = {}
        if stderr == "closed":
            kwargs["preexec_fn"] = lambda: os.close(2)
        else:
            kwargs["stderr"] = open("/dev/full", "w")  # noqa: SIM115
        return subprocess.run([sys.executable, "-m", "vidrestore", *map(str, args)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, timeout=120, **kwargs)

    for stderr in ("closed", "full"):
        out = tmp_path / f"{stderr}.mp4"
        assert run(stderr, src, out, *FAST[:-3], "--scale", "1").returncode == 0  # not -q
        assert frame_times(out) == frame_times(src)
        assert _summary(tmp_path / f"{stderr}.mp4.jsonl")["failed_frames"] == 0
    assert run("full", tmp_path / "nope.mp4", tmp_path / "p.mp4").returncode == 2


# --- 12, 15, 16. images and streams that were quietly changed -----------------------------


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "pages.tiff"])
def test_multi_frame_images_are_refused_with_one_line(cli, tmp_path, name):
    from PIL import Image

    frames = [Image.new("RGB", (32, 24), (40 * i, 80, 200 - 40 * i)) for i in range(3)]
    src = tmp_path / name
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / f"o{src.suffix}"
    _one_error_line(cli(src, out, *FAST), 2, "has 3 frames", str(src))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_float_tiff_is_not_black(cli, tmp_path):
    import numpy as np
    from PIL import Image

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    src = tmp_path / "f.tif"
    Image.fromarray(ramp, "F").save(src)
    out = tmp_path / "o.png"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / "o.png.jsonl")
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert abs(rgb[..., 0].mean() - 127.5) < 3 and rgb[:, -1, 0].min() > 250


def test_yuv444_video_stays_444(cli, tmp_path):
    import av

    src = make_clip(tmp_path / "in.mkv", frames=4, pix_fmt="yuv444p")
    out = tmp_path / "o.mkv"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / "o.mkv.jsonl")
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_a_second_video_stream_is_dropped_with_a_warning(cli, tmp_path):
    from fractions import Fraction

    import av

    from tests.media import make_frame

    src = tmp_path / "two.mkv"
    with av.open(str(src), "w") as c:
        streams = [c.add_stream("libx264", rate=25) for _ in range(2)]
        for s in streams:
            s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(5):
            for s in streams:
                frame = av.VideoFrame.from_ndarray(make_frame(i, 96, 64), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 25)
                for packet in s.encode(frame):
                    c.mux(packet)
        for s in streams:
            for packet in s.encode(None):
                c.mux(packet)
    out = tmp_path / "o.mkv"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / "o.mkv.jsonl")
    assert "video stream 1 (h264) is not restored" in result.output
    assert len(frame_times(out)) == 5


def test_stray_output_is_one_line_per_problem(cli, tmp_path, capfd):
    import warnings

    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"  # 92 Mpx: over Pillow's warning threshold, under its limit
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).resize((9600, 9600)).save(big,
                                                                              compress_level=1)
    src = make_clip(tmp_path / "in.mp4", frames=4)
    capfd.readouterr()
    chatty = [a for a in FAST if a != "--quiet"]
    _ok(cli(src, tmp_path / "o.mp4", *chatty, "--scale", "1", "--codec", "libx265"),
        tmp_path / "o.mp4.jsonl")
    captured = capfd.readouterr()
    assert "x265 [info]" not in captured.err + captured.out
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        result = cli(big, tmp_path / "o.png", *chatty, "--scale", "1")
    _ok(result, tmp_path / "o.png.jsonl")
    assert not [w for w in escaped if issubclass(w.category, Image.DecompressionBombWarning)]
    assert result.output.count("a very large image") == 1


# --- 10. huge frames: queue memory bounded by bytes -----------------------------------------


def test_queues_and_batches_of_huge_frames_are_bounded_by_bytes():
    from fractions import Fraction

    import torch

    from vidrestore.config import EncodeConfig
    from vidrestore.io.plan import OutputPlan
    from vidrestore.io.probe import MediaInfo
    from vidrestore.pipeline import QUEUE_BYTES, Pipeline

    side = 12000
    info = MediaInfo(path=Path("huge.mkv"), kind="video", width=side, height=side,
                     time_base=Fraction(1, 25), rate=Fraction(25))
    plan = OutputPlan(Path("o.mkv"), "video", side, side, "matroska", "libx264", "yuv420p")
    pipe = Pipeline(info, plan, [], torch.device("cpu"), batch_size=4, queue_frames=16,
                    encode_config=EncodeConfig())
    frame_bytes = 3 * side * side
    held = (pipe._frames.maxsize + pipe._out.maxsize + pipe.batch_size) * frame_bytes
    assert held <= 3 * QUEUE_BYTES  # was (16 + 16 + 4) frames: 15.5 GB
    assert pipe.batch_size == 1 and pipe._frames.maxsize >= 1
    small = MediaInfo(path=Path("s.mkv"), kind="video", width=96, height=64,
                      time_base=Fraction(1, 25), rate=Fraction(25))
    plan = OutputPlan(Path("o.mkv"), "video", 96, 64, "matroska", "libx264", "yuv420p")
    pipe = Pipeline(small, plan, [], torch.device("cpu"), batch_size=4, queue_frames=16,
                    encode_config=EncodeConfig())
    assert (pipe._frames.maxsize, pipe._out.maxsize, pipe.batch_size) == (16, 16, 4)


def test_video_frames_over_the_image_pixel_limit_are_refused(monkeypatch, tmp_path):
    import vidrestore.io.probe as probe_module
    from vidrestore.errors import InputError

    src = make_clip(tmp_path / "in.mp4", frames=2, width=96, height=64)
    monkeypatch.setattr(probe_module, "MAX_VIDEO_PIXELS", 96 * 64 - 1)
    with pytest.raises(InputError, match="larger than"):
        probe_module.probe(src)


# --- 19. progress that can be followed without a terminal -----------------------------------


def test_plain_progress_lines_and_a_log_flushed_record_by_record(cli, tmp_path, monkeypatch):
    import vidrestore.cli as cli_module

    seen: list[int] = []
    real_update = cli_module._Progress.update

    def update(self, done, total):
        partial = next(tmp_path.glob(".o.mp4.jsonl.partial-*"))
        seen.append(len(partial.read_text().splitlines()))  # on disk already
        real_update(self, done, total)

    monkeypatch.setattr(cli_module._Progress, "update", update)
    monkeypatch.setattr(cli_module._Progress, "plain_every_s", 0.0)
    src = make_clip(tmp_path / "in.mp4", frames=6)
    result = cli(src, tmp_path / "o.mp4", *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / "o.mp4.jsonl")
    assert seen == [1, 2, 3, 4, 5, 6]
    lines = [x for x in result.output.splitlines() if " frames, " in x and "fps" in x]
    assert lines[0].startswith("vidrestore: 1/6 frames, "), lines
    assert "ETA" in lines[0] and lines[-1].startswith("vidrestore: 6/6 frames")


# --- 20. slips a newcomer meets -----------------------------------------------------------


def test_report_of_a_photo_or_of_pretty_json_is_one_line(cli, tmp_path):
    from tests.media import make_image

    photo = make_image(tmp_path / "photo.jpg")
    _one_error_line(cli("report", photo), 2, "not a vidrestore log", "not text")
    pretty = tmp_path / "eval.json"
    pretty.write_text(json.dumps({"frames": [], "checks": {}}, indent=2))
    _one_error_line(cli("report", pretty), 2, "pretty-printed", "--eval")


def test_a_mistyped_command_names_the_one_probably_meant(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_error_line(cli("model", "list"), 2, "did you mean 'vidrestore models'")
    _one_error_line(cli("degrad", "a.mp4", "b.mp4"), 2, "did you mean 'vidrestore degrade'")
    # a file that is there, or a name with an extension, is still restored
    result = cli("clip.mp4", "out.mp4", *FAST)
    _one_error_line(result, 2, "clip.mp4: no such file")


def test_restore_help_says_bg_model_takes_a_file_and_the_preset_default(cli):
    text = " ".join(cli("restore", "--help").output.split())
    assert "a weight file (.pth or .safetensors" in text
    assert "(default: medium)" in text


def test_eval_mentions_the_psnr_cap_only_when_a_frame_hit_it():
    from vidrestore.cli_eval import format_result

    check = {"value": 30.0, "target": "> 25", "pass": True}
    result = {"reference": "a.png", "restored": "b.png", "frame_count": 1, "psnr_cap_db": 100.0,
              "checks": {k: check for k in ("psnr", "ssim", "lpips", "identity")},
              "means": {"psnr": 30.0}, "identity": None, "pass": True,
              "frames": [{"psnr": 30.0}], "resized": None}
    assert not any("capped" in line for line in format_result(result))
    result["frames"] = [{"psnr": 30.0}, {"psnr": 100.0}]
    assert any("capped at 100 dB" in line for line in format_result(result))


def test_last_frame_duration_is_kept_after_a_timestamp_jump(cli, tmp_path):
    from fractions import Fraction

    import av

    from tests.media import make_frame

    src = tmp_path / "jump.mkv"
    pts = list(range(10)) + list(range(40, 50))  # a 1.2 s jump after frame 9
    with av.open(str(src), "w") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 25)
        stream.options = {"bf": "0"}
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(make_frame(i, 96, 64), format="rgb24")
            frame.pts, frame.time_base = p, Fraction(1, 25)
            for packet in stream.encode(frame):
                packet.duration = 3 if packet.pts == pts[-1] else 1  # a long last frame
                c.mux(packet)
        for packet in stream.encode(None):
            packet.duration = 3 if packet.pts == pts[-1] else 1
            c.mux(packet)
    out = tmp_path / "out.mkv"
    _ok(cli(src, out, *FAST, "--scale", "1"), tmp_path / "out.mkv.jsonl")
    assert _video_timeline(out) == _video_timeline(src)
    assert _video_timeline(out)[1] == Fraction(52, 25)


def _avi_slots(path: Path) -> tuple[list, object]:
    """AVI keeps frame slots (dts), not presentation times: FFmpeg's reader adds the
    decoder's reorder delay to every pts it reports."""
    import av

    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
        times = sorted(p.dts * p.time_base for p in packets)
        end = max((p.dts + p.duration) * p.time_base for p in packets)
    return times, end


@pytest.mark.parametrize("suffix", [".mkv", ".mov", ".m4v", ".webm", ".avi"])
def test_mp4_into_every_container_keeps_timing_and_audio(cli, tmp_path, suffix):
    from fractions import Fraction

    src = make_clip(tmp_path / "in.mp4", frames=25, audio="aac")  # B-frames, AAC priming
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    _ok(result, tmp_path / f"out{suffix}.jsonl")
    timeline = _avi_slots(out) if suffix == ".avi" else _video_timeline(out)
    assert timeline == _video_timeline(src)
    assert len(frame_times(out)) == 25
    if "re-encoded" in result.output:
        assert suffix in (".webm", ".avi")
        first, end, _ = _decoded_audio(out)
        src_first, src_end, _ = _decoded_audio(src)
        assert abs(first - src_first) < 0.05 and abs(end - src_end) < 0.06, (first, end)
    else:  # every packet, at its time (Matroska keeps milliseconds)
        got, want = _audio_packets(out), _audio_packets(src)
        assert [p for _, p in got] == [p for _, p in want]
        pairs = zip(got, want, strict=True)
        assert all(abs(a - b) <= Fraction(1, 1000) for (a, _), (b, _) in pairs)


def _decodable_times(path: Path) -> list:
    import av

    times = []
    with av.open(str(path)) as c:
        for packet in c.demux(video=0):
            try:
                times += [f.pts * f.time_base for f in packet.decode()]
            except av.FFmpegError:
                pass
    return times


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_a_damaged_region_the_demuxer_skips_is_filled_and_says_so(cli, tmp_path, suffix):
    """Longer clips than above: the demuxer resyncs at the next cluster, so the frames lost
    are in the middle; only the jump in byte positions shows it."""
    codec, frames = ("libvpx-vp9", 250) if suffix == ".webm" else ("libx264", 100)
    whole = make_clip(tmp_path / f"whole{suffix}", frames=frames, width=160, height=120,
                      codec=codec, gop=25, options={"deadline": "realtime"}
                      if codec == "libvpx-vp9" else None)
    src = tmp_path / f"in{suffix}"
    data = bytearray(whole.read_bytes())
    start = len(data) // 2
    data[start:start + 3000] = b"\xab" * 3000
    src.write_bytes(bytes(data))
    times = _decodable_times(src)
    assert len(times) < frames and times[-1] == frame_times(whole)[-1]  # lost mid-way
    out = tmp_path / f"out{suffix}"
    result = cli(src, out, *[a for a in FAST if a != "--quiet"], "--scale", "1")
    summary = _ok(result, tmp_path / f"out{suffix}.jsonl")
    assert "skipped by the demuxer" in result.output
    assert frame_times(out) == frame_times(whole)
    assert any("skipped by the demuxer" in w for w in summary["warnings"])


def test_without_hard_links_the_final_rename_still_never_replaces(tmp_path, monkeypatch):
    import vidrestore.destination as destination
    from vidrestore.errors import OutputError

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(destination.os, "link", no_links)
    partial, final = tmp_path / ".o.mp4.partial-1.mp4", tmp_path / "o.mp4"
    partial.write_bytes(b"new")
    final.write_bytes(b"precious")
    with pytest.raises(OutputError, match="appeared"):
        destination.commit(partial, final, overwrite=False)
    assert final.read_bytes() == b"precious"
    final.unlink()
    destination.commit(partial, final, overwrite=False)
    assert final.read_bytes() == b"new" and not partial.exists()

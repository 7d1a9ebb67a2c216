"""GPU decoding through PyAV's hwaccel (with its software fallback) and x264's frame threads.

Without a GPU decoder (this CPU machine: FFmpeg's CUDA device cannot be created), `auto`
decodes in software after one log line and `cuda` is a device error; with one, the GPU
decodes what software decodes.
"""

from __future__ import annotations

import json
import logging

import av
import numpy as np
import pytest
from av.codec.hwaccel import HWAccel

from tests.conftest import FAST, frame_times
from tests.media import make_clip
from vidrestore.config import EncodeConfig
from vidrestore.errors import DeviceError
from vidrestore.io.decode import HardwareDecode, read_frames
from vidrestore.io.encode import open_writer
from vidrestore.io.plan import plan_output
from vidrestore.io.probe import probe


def gpu_decoder_opens(path) -> bool:
    try:
        with av.open(str(path), hwaccel=HWAccel("cuda", allow_software_fallback=False)) as c:
            return c.streams.video[0].codec_context.is_hwaccel
    except (av.FFmpegError, NotImplementedError, RuntimeError):
        return False


@pytest.fixture
def clip(tmp_path):
    return make_clip(tmp_path / "in.mp4", width=128, height=96, frames=12, audio="aac")


def decode(clip, kind: str) -> tuple[list[np.ndarray], list[str]]:
    decoders: list[str] = []
    frames = [f.image for f in read_frames(probe(clip), hwaccel=HardwareDecode(kind),
                                           on_decoder=decoders.append)]
    return frames, decoders


def test_auto_falls_back_to_software_with_one_log_line(clip, caplog):
    if gpu_decoder_opens(clip):
        pytest.skip("this machine has a GPU decoder")
    software, _ = decode(clip, "none")
    with caplog.at_level(logging.WARNING, logger="vidrestore.io.decode"):
        frames, decoders = decode(clip, "auto")
    lines = [r.getMessage() for r in caplog.records if r.name == "vidrestore.io.decode"]
    assert len(lines) == 1 and "decoding in software" in lines[0], lines
    assert decoders == ["software"] and len(frames) == len(software) == 12
    assert all(np.array_equal(a, b) for a, b in zip(frames, software, strict=True))


def test_cuda_without_a_gpu_decoder_is_a_device_error(clip):
    if gpu_decoder_opens(clip):
        pytest.skip("this machine has a GPU decoder")
    with pytest.raises(DeviceError, match="cannot decode on the GPU.*--hwdecode"):
        decode(clip, "cuda")


@pytest.mark.needs_cuda
def test_gpu_decoding_gives_the_software_frames(clip):
    if not gpu_decoder_opens(clip):
        pytest.skip("FFmpeg cannot open a CUDA decoder here (no NVDEC, or no libnvcuvid)")
    software, _ = decode(clip, "none")
    frames, decoders = decode(clip, "cuda")
    assert decoders == ["cuda"] and len(frames) == len(software)
    for a, b in zip(frames, software, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5


def test_the_cli_flag_runs_and_the_summary_names_the_decoder(cli, clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = cli(clip, out, *FAST, "--scale", "1", "--hwdecode", "auto")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out.mp4.jsonl").read_text().splitlines()[-1])["summary"]
    assert summary["decoder"] == ("cuda" if gpu_decoder_opens(clip) else "software")
    assert frame_times(out) == frame_times(clip)


@pytest.mark.parametrize("threads", [0, 3])
def test_x264_encodes_with_frame_threads(clip, tmp_path, threads):
    info = probe(clip)
    config = EncodeConfig(threads=threads)
    dst = tmp_path / "out.mp4"
    plan = plan_output(info, dst, 1, config)
    writer = open_writer(dst, plan, info, config)
    ctx = writer.video.codec_context
    assert (ctx.thread_type.name, ctx.thread_count) == ("FRAME", threads)
    for frame in read_frames(info, writer.add_side, plan.reencode_indices):
        writer.write(frame.image, frame)
    writer.close()
    assert frame_times(dst) == frame_times(clip)

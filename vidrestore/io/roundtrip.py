"""One image through a video codec and back, in memory: the codec step of on-the-fly
training degradation (`vidrestore.train.degradation`)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

_DECODERS = {"libx264": "h264", "libx265": "hevc", "libaom-av1": "av1"}


def codec_roundtrip(image: np.ndarray, crf: int, codec: str = "libx264",
                    preset: str = "veryfast") -> np.ndarray:
    """(H, W, 3) uint8 RGB, even H and W -> the same frame encoded as a yuv420p intra frame
    at `crf` and decoded again (chroma subsampling, block transform, quantisation)."""
    height, width = image.shape[:2]
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.options = {"crf": str(int(crf))}
    if codec == "libx264":
        context.options = {**context.options, "preset": preset, "tune": "zerolatency"}
    context.thread_count = 1
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts = 0
    packets = list(context.encode(frame.reformat(format="yuv420p"))) + list(context.encode())
    decoder = av.CodecContext.create(_DECODERS.get(codec, codec), "r")
    decoder.thread_count = 1
    frames = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
    return frames[-1].to_ndarray(format="rgb24")

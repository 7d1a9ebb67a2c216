"""`FrameRange`: the part of a video one segment run restores, and the warm-up before it.

A long video restored on many workers is cut at keyframes into segments. Each segment's
run decodes from a keyframe at or before its warm-up, processes the warm-up frames (so
the tracker, the landmark smoothing and the colour history are where a whole run would
have them) but does not write them, then writes the frames of its own range. Frames keep
their whole-video index, so the segments' logs join into one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .frames import Frame


@dataclass(frozen=True)
class FrameRange:
    """Frames with `warmup_pts <= pts < end_pts` are processed; from `start_pts` on they are
    written. Timestamps are in the video stream's time base.

    `seek_dts`: the decode timestamp of the keyframe the decoder starts from (None: the
    file's start; a dts, never later than its pts, so the seek cannot land past it).
    `first_index`: the whole video's index of the frame at `warmup_pts`, and
    `warmup_frames` how many frames there are before `start_pts`.
    `end_pts`: None for the last segment (to the end of the stream).
    """

    seek_dts: int | None
    warmup_pts: int
    start_pts: int
    end_pts: int | None
    first_index: int
    warmup_frames: int = 0

    @property
    def start_index(self) -> int:
        """The whole video's index of the first frame written."""
        return self.first_index + self.warmup_frames

    def __post_init__(self) -> None:
        if not self.warmup_pts <= self.start_pts or (self.end_pts is not None
                                                     and self.end_pts <= self.start_pts):
            raise ValueError(f"frame range out of order: {self}")

    def select(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """The decoded `frames` inside the range, numbered as in the whole video; the
        decoder is closed as soon as the range ends."""
        index = self.first_index
        try:
            for frame in frames:
                if frame.pts < self.warmup_pts:
                    continue  # decoded from the keyframe only to reach the warm-up
                if self.end_pts is not None and frame.pts >= self.end_pts:
                    return
                frame.index = index
                index += 1
                yield frame
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def is_warmup(self, frame: Frame) -> bool:
        return frame.pts < self.start_pts

    def as_dict(self) -> dict[str, int | None]:
        return {"seek_dts": self.seek_dts, "warmup_pts": self.warmup_pts,
                "start_pts": self.start_pts, "end_pts": self.end_pts,
                "first_index": self.first_index, "warmup_frames": self.warmup_frames}

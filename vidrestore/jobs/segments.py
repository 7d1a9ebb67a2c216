"""Where a long video is cut: N segments starting at keyframes, each with its warm-up.

The cut points are the keyframes nearest to equal shares of the frames (a segment must
start at a keyframe: it is decoded from there and its encoded copy is joined by stream
copy). Each segment after the first is preceded by `warmup_frames` frames that its run
processes but does not write; its decoder starts at the keyframe at or before them.
"""

from __future__ import annotations

import bisect
from pathlib import Path

from ..errors import ConfigError
from ..frame_range import FrameRange
from ..io.probe import MediaInfo

AUTO_MIN_FRAMES = 250  # `--segments auto`: a segment per worker, each at least this long


def segment_count(requested: int | str, frames: int, workers: int) -> int:
    """How many segments `--segments N|auto` means for a video of `frames` frames."""
    if requested == "auto":
        return max(1, min(workers, frames // AUTO_MIN_FRAMES))
    return int(requested)


def plan_segments(info: MediaInfo, count: int, warmup_frames: int) -> list[FrameRange]:
    """`count` frame ranges covering the whole video (fewer where it has too few
    keyframes). A video that cannot be cut (one keyframe) is one range."""
    from ..io.segments import video_index

    if count < 1:
        raise ConfigError(f"--segments: {count} is not a number of segments (1 or more)")
    index = video_index(info)
    pts = index.pts
    if not pts:
        raise ConfigError(f"{info.path}: no video packets to cut into segments")
    key_pts = [p for p, _ in index.keyframes]
    key_dts = dict(index.keyframes)
    position = {p: i for i, p in enumerate(pts)}
    starts = [0]
    for k in range(1, count):
        wanted = round(k * len(pts) / count)
        at = min((p for p in key_pts if p in position), default=None,
                 key=lambda p: abs(position[p] - wanted))
        if at is not None and position[at] > starts[-1]:
            starts.append(position[at])
    starts = sorted(set(starts))
    ranges = []
    for n, first in enumerate(starts):
        warm = max(0, first - warmup_frames) if n else 0
        end = starts[n + 1] if n + 1 < len(starts) else None
        seek = None
        if warm > 0:  # the keyframe at or before the warm-up's first frame
            k = bisect.bisect_right(key_pts, pts[warm]) - 1
            seek = key_dts[key_pts[k]] if k >= 0 else None
        ranges.append(FrameRange(seek_dts=seek, warmup_pts=pts[warm], start_pts=pts[first],
                                 end_pts=pts[end] if end is not None else None,
                                 first_index=warm, warmup_frames=first - warm))
    return ranges


def segment_folder(output: Path) -> Path:
    """Where the segments of `output` are kept until they are joined (beside it, hidden)."""
    return output.with_name(f".{output.name}.segments")


def segment_path(output: Path, n: int) -> Path:
    return segment_folder(output) / f"segment-{n:03d}{output.suffix}"

"""`FaceSummary`: per-track means of the per-frame face records, for the run summary."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

_MEANS = ("psnr", "ssim", "lpips")


class FaceSummary:
    """Fed one log record per frame (`add`), in any order; `as_dict` for the summary.

    Per track: frames seen, frames restored (not skipped), frames flagged by the identity
    check, and the means of the identity cosine, PSNR, SSIM and LPIPS over the frames that have
    them. Overall: frames with any face and frames with any flagged face. Flag counts are
    null where no face was scored (identity scoring off).
    """

    def __init__(self) -> None:
        self._tracks: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"frames": 0, "restored": 0, "flagged": 0,
                     "sums": defaultdict(float), "counts": defaultdict(int)})
        self.frames_with_faces = 0
        self.flagged_frames = 0
        self.scored = False

    def add(self, record: dict[str, Any]) -> None:
        faces = record.get("faces") or []
        self.frames_with_faces += bool(faces)
        self.flagged_frames += any(f.get("flagged") for f in faces)
        for face in faces:
            track = self._tracks[face["track"]]
            track["frames"] += 1
            track["restored"] += face.get("skipped") is None
            track["flagged"] += bool(face.get("flagged"))
            identity = face.get("identity") or {}
            self.scored |= bool(identity)
            values = {"identity_cosine": identity.get("cosine"),
                      **{k: face.get(k) for k in _MEANS}}
            for name, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    track["sums"][name] += value
                    track["counts"][name] += 1

    def as_dict(self) -> dict[str, Any]:
        tracks = {}
        for track_id, t in sorted(self._tracks.items()):
            means = {name: (round(t["sums"][name] / t["counts"][name], 4)
                            if t["counts"][name] else None)
                     for name in ("identity_cosine", *_MEANS)}
            flagged = t["flagged"] if t["counts"]["identity_cosine"] else None
            tracks[str(track_id)] = {"frames": t["frames"], "restored": t["restored"],
                                     "flagged_frames": flagged, **means}
        return {"tracks": tracks, "frames_with_faces": self.frames_with_faces,
                "flagged_frames": self.flagged_frames if self.scored else None}

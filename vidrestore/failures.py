"""What went wrong in a run and what it fell back to, and when failures are systematic.

A frame that fails is written unprocessed and counted here under its cause (the error's
type and first line). A run stops with `ProcessingError` when failures stop looking like
accidents: more failed frames than `--max-failed-frames` allows, or the same cause failing
frames in `STREAK_BATCHES` batches in a row. Fallbacks (stand-in models, out-of-memory
tile halving, a batch retried frame by frame) are counted too, so the summary says what the
run really did.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from .errors import ConfigError, ProcessingError

STREAK_BATCHES = 3  # the same cause in this many consecutive batches is systematic
VIDEO_SHARE = 0.01  # `auto` for a video: 1% of its frames (at least one) may fail
_LIMIT = re.compile(r"(?:(\d+)|(\d+(?:\.\d+)?)%)")


@dataclass(frozen=True)
class FailureLimit:
    """How many failed frames a run accepts: a count, or a share of the frames.

    `auto`: none for a still image (its one frame is the whole result), 1% of a video's
    frames, rounded up, so a one-off failure in a long clip does not throw the run away.
    """

    count: int | None = None
    share: float | None = None  # 0-1

    @classmethod
    def parse(cls, text: str | int, *, still_image: bool) -> FailureLimit:
        text = str(text).strip()
        if text == "auto":
            return cls(count=0) if still_image else cls(share=VIDEO_SHARE)
        match = _LIMIT.fullmatch(text)
        if not match:
            raise ConfigError(f"max_failed_frames: {text!r} is not N, P% or auto")
        if match.group(1) is not None:
            return cls(count=int(match.group(1)))
        share = float(match.group(2)) / 100
        if share > 1:
            raise ConfigError(f"max_failed_frames: {text!r} is more than 100%")
        return cls(share=share)

    def allowed(self, frames: int) -> int:
        """Failed frames accepted among `frames` (the whole stream's count)."""
        if self.count is not None:
            return self.count
        return math.ceil(self.share * frames) if self.share else 0

    def describe(self) -> str:
        return str(self.count) if self.count is not None else f"{self.share * 100:g}%"


@dataclass
class FrameFailure:
    """Frames that failed with one cause."""

    cause: str
    count: int
    first_frame: int

    def as_dict(self) -> dict[str, object]:
        return {"error": self.cause, "count": self.count, "first_frame": self.first_frame}


def cause_of(exc: BaseException) -> str:
    """`Type: first line of the message`, the key failures are grouped by."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


@dataclass
class FailureLog:
    """Failed frames by cause and fallbacks by kind; `check` applies the limits."""

    failures: dict[str, FrameFailure] = field(default_factory=dict)
    fallbacks: Counter[str] = field(default_factory=Counter)
    _announced: set[str] = field(default_factory=set)  # already said on the console
    _streaks: Counter[str] = field(default_factory=Counter)

    @property
    def failed_frames(self) -> int:
        return sum(f.count for f in self.failures.values())

    def frame_failed(self, frame: int, exc: BaseException) -> str:
        cause = cause_of(exc)
        if cause in self.failures:
            self.failures[cause].count += 1
        else:
            self.failures[cause] = FrameFailure(cause, 1, frame)
        return cause

    def fell_back(self, what: str, *, announced: bool = False) -> None:
        self.fallbacks[what] += 1
        if announced:
            self._announced.add(what)

    def batch_done(self, causes: set[str]) -> None:
        """Track which causes failed frames in this batch, for the streak rule."""
        self._streaks = Counter({c: self._streaks[c] + 1 for c in causes})

    def check(self, limit: FailureLimit | None, *, expected_frames: int, seen_frames: int,
              label: str, final: bool = False) -> None:
        """Raise `ProcessingError` when the failures are systematic. During the run a share
        is taken of the stream's declared frame count (when it has one); at the end of the
        frames actually seen."""
        if limit is None or not self.failures:
            return
        streak = next((c for c, n in self._streaks.items() if n >= STREAK_BATCHES), None)
        if streak is not None:
            self._stop(label, streak, f"in {STREAK_BATCHES} batches in a row")
        total = seen_frames if final or not expected_frames else expected_frames
        if limit.share is not None and not final and not expected_frames:
            return  # the share of an unknown total is judged at the end
        if self.failed_frames > limit.allowed(total):
            worst = max(self.failures.values(), key=lambda f: f.count).cause
            self._stop(label, worst, f"more than --max-failed-frames {limit.describe()} "
                                     f"allows")

    def _stop(self, label: str, cause: str, why: str) -> None:
        failure = self.failures[cause]
        raise ProcessingError(
            f"{label}: frames fail systematically ({why}): {cause} ({failure.count} frame"
            f"{'s' if failure.count != 1 else ''}, first at frame {failure.first_frame}); "
            "nothing written (--debug shows the traceback; --max-failed-frames sets how "
            "many failed frames a run accepts)")

    def summary(self) -> dict[str, list[dict[str, object]]]:
        return {"failures": [f.as_dict() for f in self.failures.values()],
                "fallbacks": [{"what": what, "count": n} for what, n in self.fallbacks.items()]}

    def console_lines(self) -> list[str]:
        """One line per distinct cause, with its count."""
        lines = [f"{f.count} frame{'s' if f.count != 1 else ''} written unprocessed after "
                 f"{f.cause} (first at frame {f.first_frame})" for f in self.failures.values()]
        lines += [f"fallback: {what}" + (f" ({n} times)" if n > 1 else "")
                  for what, n in self.fallbacks.items() if what not in self._announced]
        return lines

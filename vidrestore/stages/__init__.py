"""Pipeline stages: each a small class with a `name` and `__call__(batch) -> batch`.

A stage that remembers something from batch to batch (the face tracker and colour history,
the white balance's smoothed gains) says so by being a `StreamStage`: its `state` is all it
carries, and the runner snapshots it before each batch so a retry starts from where the
batch did.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..batch import FrameBatch


class Stage(Protocol):
    name: str

    def __call__(self, batch: FrameBatch, /) -> FrameBatch: ...


@runtime_checkable
class StreamStage(Protocol):
    """A stage whose output depends on the batches before: everything it carries between
    batches is in `state`, which the runner may copy and put back."""

    name: str
    state: Any

    def __call__(self, batch: FrameBatch, /) -> FrameBatch: ...

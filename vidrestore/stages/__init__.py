"""Pipeline stages: each a small class with a `name` and `__call__(batch) -> batch`."""

from __future__ import annotations

from typing import Protocol

from ..batch import FrameBatch


class Stage(Protocol):
    name: str

    def __call__(self, batch: FrameBatch, /) -> FrameBatch: ...

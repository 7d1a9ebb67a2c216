"""`NewestItems`: a hand-over between two threads where the newest items win.

A live source must never wait for a slow consumer, and the consumer must never work on a
stale frame while a newer one is there. So the buffer holds at most `capacity` items; a
`put` into a full buffer evicts the oldest, and the evictions are counted (they are the
dropped frames). Memory is bounded by the capacity, whatever the speeds.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class NewestItems(Generic[T]):
    """Bounded, newest-wins hand-over from one producer thread to one consumer thread."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.evicted = 0  # items pushed out unread by newer ones
        self.peak = 0  # most items ever held at once (never above capacity)
        self._items: deque[T] = deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: T) -> int:
        """Hand over `item`; returns how many older items it pushed out (0 or more)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put on a closed NewestItems")
            evicted = 0
            while len(self._items) >= self.capacity:
                self._items.popleft()
                evicted += 1
            self._items.append(item)
            self.evicted += evicted
            self.peak = max(self.peak, len(self._items))
            self._cond.notify()
            return evicted

    def take(self, timeout: float | None = None) -> list[T] | None:
        """Everything held, oldest first, once there is at least one item.

        Returns [] when `timeout` seconds pass with nothing to take, and None once the
        buffer is closed and empty (the producer has finished).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return []
            if not self._items:
                return None
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        """No more items will come; what is held can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Empty the buffer without counting the items as evicted; returns how many."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            return count

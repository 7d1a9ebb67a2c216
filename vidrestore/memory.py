"""Process-wide settings for long runs on a shared CPU: flat memory, no spinning threads.

Frames are a few MB each and are allocated in one thread and freed in another. With glibc's
default (a dynamic mmap threshold that rises to the frame size), they land in per-thread
heaps that fragment and grow for a while before levelling off (measured: +15% peak on a 4x
longer clip). A fixed 1 MB threshold hands every frame-sized buffer straight back to the
OS when it is freed; peak memory then does not depend on the length of the video.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def release_large_buffers() -> bool:
    """Set glibc's mmap threshold (a process-wide setting: call it from the program's entry)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # musl and others have no mallopt
        log.debug("mallopt is not available; memory may grow a little with video length")
        return False


def quiet_idle_threads() -> None:
    """Let torch's OpenMP workers sleep between operations instead of spinning.

    Spinning workers take CPU from the decoder and the x264 threads, which share the same
    cores; on 2 cores this cut the pipeline's overhead over plain decode+encode from 21% to
    6% (bench/pipeline_overhead.py). Effective only before torch is first imported; a
    value the user set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def settle_process() -> None:
    """Both settings above, for a long run's entry point (before torch is imported)."""
    quiet_idle_threads()
    release_large_buffers()

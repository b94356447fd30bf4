"""Keep freed memory in the process, so that training steps stop page-faulting their activations back in.

glibc returns large blocks (above 128 KB-32 MB, adaptively) to the kernel with munmap as soon as they are
freed; a training step allocates and frees the same hundreds of MB of activations every time, so the next
step takes every page as a fresh page fault that the kernel zeroes. On the 2-core machine we measure on,
that was 8-25% of a step's CPU time as system time. ``mallopt`` turns mmap off for new blocks and stops
trimming, so the heap stays at its high-water mark and is reused (what jemalloc or tcmalloc do by default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """True if glibc took the settings; elsewhere (macOS, musl, Windows) nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))

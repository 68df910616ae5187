"""Keep a long-lived backend's memory from growing with fills of varied sizes.

Two native causes, both measured in one process running fills like the server's worker thread:

1. Free memory kept by glibc malloc's arenas (released by `release_free_memory` after each fill).

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so after the first
big fill every later window-sized buffer is carved from the heap arenas instead of being mapped, and
fills of other sizes leave the arenas fragmented: measured here, 100 varied fills in one worker thread
left 380 MB free-but-held in the arenas (VmRSS 700 MB). Until session 7 the server fixed the threshold
at 128 KiB, so that large buffers lived in their own mappings and went back when freed; but then every
large tensor of a fill is a fresh mapping whose pages the kernel faults in and zeroes, and the patch
search of backend.texture allocates many: a warm 512² fill took 1.24 s against 0.72-0.87 s with
glibc's own threshold, a 4K fill 3.1 s against 1.7-1.9 s (AMD EPYC, 2 cores). Now the heap serves the
fill and ``malloc_trim(0)`` after it hands every free page back (glibc madvises free pages inside the
arenas too): VmRSS after each fill stays at 330-370 MB over 512², 4K and 1024 px fills in turn.

2. Per-shape caches in torch's CPU libraries (bounded by `bound_library_caches`). Every generator
input shape (one per attention-grid shape, so it follows the hole's size and aspect) makes oneDNN
convolutions build and keep new primitives: ~1.4 MB of malloc in use per new shape, up to the default
1,024 entries (+37 MB measured after 50 shapes), and the evict/rebuild churn beyond that kept
fragmenting the heap (VmRSS +30 MB over the next 175 new shapes while malloc in use stayed flat). MKL's
fast memory manager (under torch.bmm) kept ~40 KB more per new shape. With both kernel caches at 256
entries and MKL's pool off, malloc in use stops ~8 MB above the first shape's and stays there (225 new
shapes: VmRSS 278 -> 280 MB), and a 512² fill costs the same within noise (0.52-0.57 s wall, 1.04-1.14
CPU-s, against 0.54-0.57 s / 1.07-1.14 CPU-s with the defaults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("hifill.allocator")

LIBRARY_CACHE_SETTINGS = {
    # One generator pass uses 96 convolutions, so 256 entries hold a pass or two (fewer would rebuild
    # every kernel on every pass).
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256",  # oneDNN's primitive cache (default 1,024 entries)
    "LRU_CACHE_CAPACITY": "256",  # PyTorch's ideep convolution cache in front of it (default 1,024)
    "MKL_DISABLE_FAST_MM": "1",  # MKL's buffer pool, which keeps buffers per matrix shape
}


_libc: ctypes.CDLL | None = None


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is
    no such call (another C library or platform). Cheap (milliseconds): run it between fills."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = _libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True


def bound_library_caches() -> str:
    """Bound oneDNN's and ideep's kernel caches and turn MKL's buffer pool off. Returns what was done.

    The libraries read their variables when torch first builds a convolution or multiplies matrices, so
    this must run before the engine is loaded; a variable already set in the environment is left alone
    (the user's choice).
    """
    chosen = []
    for name, value in LIBRARY_CACHE_SETTINGS.items():
        if os.environ.get(name):
            chosen.append(f"{name}={os.environ[name]} (environment)")
        else:
            os.environ[name] = value
            chosen.append(f"{name}={value}")
    return "library caches bounded: " + ", ".join(chosen)

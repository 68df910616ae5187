"""Keep a long-lived backend's memory from growing with fills of varied sizes.

Two native causes, both measured in one process running fills like the server's worker thread:

1. glibc malloc's dynamic mmap threshold (fixed by `fix_mmap_threshold`).

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so after the first
big fill every later window-sized buffer is carved from the heap arenas instead of being mapped, and
fills of other sizes leave the arenas fragmented: measured here, 100 varied fills in one worker thread
left 380 MB free-but-held in the arenas (VmRSS 700 MB) against 2 MB (VmRSS 310 MB) with a fixed
threshold. Fixing the threshold with mallopt keeps large buffers in their own mappings, which go back
to the system when freed.

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

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's <malloc.h>
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, now kept fixed
ENVIRONMENT_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # glibc's environment variable for the same setting

LIBRARY_CACHE_SETTINGS = {
    # One generator pass uses 96 convolutions, so 256 entries hold a pass or two (fewer would rebuild
    # every kernel on every pass).
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "256",  # oneDNN's primitive cache (default 1,024 entries)
    "LRU_CACHE_CAPACITY": "256",  # PyTorch's ideep convolution cache in front of it (default 1,024)
    "MKL_DISABLE_FAST_MM": "1",  # MKL's buffer pool, which keeps buffers per matrix shape
}


def fix_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> str:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process. Returns what was done.

    Does nothing on other C libraries or when MALLOC_MMAP_THRESHOLD_ is set (the user's choice wins).
    """
    if not sys.platform.startswith("linux"):
        return "not Linux: allocator left as is"
    if os.environ.get(ENVIRONMENT_OVERRIDE):
        return f"{ENVIRONMENT_OVERRIDE}={os.environ[ENVIRONMENT_OVERRIDE]} set by the environment"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "no mallopt in this C library: allocator left as is"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) failed; memory may grow with varied fills.", threshold)
        return "mallopt refused the threshold"
    return f"glibc mmap threshold fixed at {threshold // 1024} KiB"


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

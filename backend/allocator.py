"""Keep a long-lived backend's memory from growing with fills of varied sizes.

Two native causes, both measured in one process running fills like the server's worker thread:

1. Free memory kept by glibc malloc's arenas (released by `release_free_memory` after a fill that grew
   the process by more than 64 MB, `HeapTrimmer`, with the mmap threshold fixed at 32 MB by
   `fix_mmap_threshold`).

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so after the first
big fill every later window-sized buffer is carved from the heap arenas instead of being mapped, and
fills of other sizes leave the arenas fragmented: measured here, 100 varied fills in one worker thread
left 380 MB free-but-held in the arenas (VmRSS 700 MB). Until session 7 the server fixed the threshold
at 128 KiB, so that large buffers lived in their own mappings and went back when freed; but then every
large tensor of a fill is a fresh mapping whose pages the kernel faults in and zeroes, and the patch
search of backend.texture allocates many: a warm 512² fill took 1.24 s against 0.72-0.87 s with
glibc's own threshold, a 4K fill 3.1 s against 1.7-1.9 s (AMD EPYC, 2 cores; a 4 MB threshold still
cost 0.2 s / 0.6 s). Now blocks below 32 MB come from the heap from the first fill on (the dynamic
threshold would climb there over the first few hundred fills, and memory with it), and
``malloc_trim(0)`` before a reply hands every free page back (glibc madvises free pages inside the
arenas too) once the process has grown 64 MB since the last trim: smaller fills keep their pages for
the next one (HeapTrimmer).

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


M_MMAP_THRESHOLD = -3  # mallopt parameter number from glibc's <malloc.h>
HEAP_BLOCK_LIMIT = 32 << 20  # blocks below this come from the heap: glibc's own ceiling for its threshold
ENVIRONMENT_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # glibc's environment variable for the same setting
_libc: ctypes.CDLL | None = None


def _c_library() -> ctypes.CDLL | None:
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return _libc
    except OSError:
        return None


def fix_mmap_threshold(threshold: int = HEAP_BLOCK_LIMIT) -> str:
    """Fix glibc's mmap threshold at ``threshold`` bytes from the start. Returns what was done.

    glibc's dynamic threshold climbs towards the same 32 MB as a process frees larger and larger
    blocks, so a fresh backend's memory drifts up over its first few hundred fills; fixed from the
    start it does not. Leaves MALLOC_MMAP_THRESHOLD_ (the user's choice) alone.
    """
    if os.environ.get(ENVIRONMENT_OVERRIDE):
        return f"{ENVIRONMENT_OVERRIDE}={os.environ[ENVIRONMENT_OVERRIDE]} set by the environment"
    libc = _c_library()
    if libc is None or not hasattr(libc, "mallopt"):
        return "no mallopt in this C library: allocator left as is"
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.warning(
            "mallopt(M_MMAP_THRESHOLD, %d) failed; memory may drift up over the first fills.", threshold
        )
        return "mallopt refused the threshold"
    return f"glibc mmap threshold fixed at {threshold >> 20} MB"


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is
    no such call (another C library or platform). Cheap (milliseconds): run it between fills."""
    libc = _c_library()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident memory (VmRSS) in bytes, from /proc/self/statm; None where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Trim the heap after a fill (release_free_memory) only when the process has grown more than
    ``keep_bytes`` since the last trim; a smaller growth stays resident for the next fill.

    Trimming after every fill cost a warm 512² fill 0.02 s of its ~0.3 s (AMD EPYC, 2 cores): 4.5 ms
    for the trim itself, the rest the next fill's page faults on the pages handed back. Such a fill
    grows the process by ~40 MB; a 25 % hole at 512² by ~90 MB, a 2K fill by ~110 MB, and those are
    handed back as before.
    """

    def __init__(self, keep_bytes: int = 64 << 20) -> None:
        self.keep_bytes = keep_bytes
        self.after_last_trim: int | None = None

    def after_fill(self) -> bool:
        """Trim if the process grew more than keep_bytes since the last trim (or never trimmed).
        Returns whether it trimmed."""
        resident = resident_bytes()
        known = resident is not None and self.after_last_trim is not None
        if known and resident <= self.after_last_trim + self.keep_bytes:
            return False
        done = release_free_memory()
        self.after_last_trim = resident_bytes()
        return done


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

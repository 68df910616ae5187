"""backend.allocator: blocks under 32 MB come from the heap from the start, its free pages go back to
the system between fills, and bounded library caches keep per-shape kernels and buffers from piling
up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.allocator import LIBRARY_CACHE_SETTINGS

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter: free a 16 MB block (glibc then raises its mmap threshold, so later megabyte
# blocks come from the heap), allocate and touch 200 such blocks, free all but the last, and read VmRSS
# before and after releasing the free memory.
PROBE = """
import ctypes, json, sys
from backend.allocator import release_free_memory
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
libc.free(libc.malloc(16 << 20))
blocks = [libc.malloc(1 << 20) for _ in range(200)]
for block in blocks:
    ctypes.memset(block, 1, 1 << 20)
for block in blocks[:-1]:
    libc.free(block)
held = rss_mb()
done = release_free_memory() if sys.argv[1] == "release" else False
print(json.dumps({"done": done, "held_mb": held, "after_mb": rss_mb()}))
"""


def run_probe(script: str, mode: str, settings: set[str], env: dict[str, str]) -> dict:
    """Run a probe script in a fresh interpreter with the given settings unset, then ``env`` applied."""
    environment = {k: v for k, v in os.environ.items() if k not in settings} | env
    out = subprocess.run(
        [sys.executable, "-c", script, mode], cwd=REPO, env=environment, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def probe(mode: str) -> dict:
    return run_probe(PROBE, mode, {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}, {})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux only")
def test_releasing_free_memory_gives_freed_heap_blocks_back_to_the_system():
    kept = probe("keep")
    assert kept["after_mb"] > kept["held_mb"] - 20  # glibc keeps the freed megabyte blocks mapped in
    released = probe("release")
    assert released["done"] is True
    assert released["held_mb"] - released["after_mb"] > 150, released  # ~199 MB free pages went back


# In a fresh interpreter: a trimmer that keeps 64 MB; after its first trim, free 40 MB (kept resident),
# then 150 MB (beyond what it keeps) of touched heap blocks, and report what each after_fill did.
TRIMMER_PROBE = """
import ctypes, json
from backend.allocator import HeapTrimmer, fix_mmap_threshold, resident_bytes
fix_mmap_threshold()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def churn(megabytes):
    blocks = [libc.malloc(1 << 20) for _ in range(megabytes + 1)]
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)
    for block in blocks[:-1]:  # the last one pins the heap's top, as a live object would
        libc.free(block)
trimmer = HeapTrimmer(keep_bytes=64 << 20)
steps = [("first", trimmer.after_fill(), resident_bytes())]
churn(40)
steps.append(("small", trimmer.after_fill(), resident_bytes()))
churn(150)
held = resident_bytes()
steps.append(("large", trimmer.after_fill(), resident_bytes()))
print(json.dumps({"steps": steps, "held": held}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux only")
def test_the_trimmer_keeps_a_small_fills_pages_and_hands_a_large_ones_back():
    out = run_probe(TRIMMER_PROBE, "-", {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}, {})
    (_, first, base), (_, small, after_small), (_, large, after_large) = out["steps"]
    mb = 1 << 20
    assert first is True  # nothing to compare with yet: it trims
    assert small is False and after_small > base + 30 * mb  # the 40 MB stayed resident for the next fill
    assert large is True and out["held"] > base + 140 * mb  # grown past the 64 MB it keeps: trimmed
    assert after_large < out["held"] - 120 * mb, out


# In a fresh interpreter: fix the threshold (or not), then see whether a 40 MB block is mapped and
# whether a 1 MB block is (mallinfo2().hblks grows with each mapped block).
THRESHOLD_PROBE = """
import ctypes, json, sys
from backend.allocator import fix_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
done = fix_mmap_threshold() if sys.argv[1] == "fixed" else "left as is"
def mapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    was = libc.mallinfo2().hblks > before
    libc.free(block)
    return was
print(json.dumps({"done": done, "small": mapped(1 << 20), "large": mapped(40 << 20)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux only")
def test_the_fixed_threshold_keeps_megabyte_blocks_in_the_heap_from_the_start():
    fresh = run_probe(THRESHOLD_PROBE, "default", {"MALLOC_MMAP_THRESHOLD_"}, {})
    assert fresh == {"done": "left as is", "small": True, "large": True}  # glibc starts at 128 KiB
    fixed = run_probe(THRESHOLD_PROBE, "fixed", {"MALLOC_MMAP_THRESHOLD_"}, {})
    assert fixed == {"done": "glibc mmap threshold fixed at 32 MB", "small": False, "large": True}
    chosen = run_probe(THRESHOLD_PROBE, "fixed", set(), {"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert chosen["done"].startswith("MALLOC_MMAP_THRESHOLD_=131072") and chosen["small"] is True


# In a fresh interpreter: run the generator once per new input shape (as fills of varied holes do) and
# report how much more malloc holds afterwards; the first shapes fill a bounded cache (256 entries
# hold about two generator passes) and warm everything that is not per shape.
KERNEL_PROBE = """
import ctypes, json, random, sys
from backend.allocator import bound_library_caches
done = bound_library_caches() if sys.argv[1] == "bounded" else "left as is"
import torch
from backend.network import Generator
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
torch.set_num_threads(1)
generator = Generator().eval()
shapes = [(16 * h, 16 * w) for h in range(2, 10) for w in range(2, 10)]
random.Random(0).shuffle(shapes)  # warm-up sees small and large shapes (entries grow with the shape)
WARM = 20
def run(h, w):
    with torch.no_grad():
        generator(torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w))
for shape in shapes[:WARM]:
    run(*shape)
before = libc.mallinfo2().uordblks
for shape in shapes[WARM:]:
    run(*shape)
grown_mb = (libc.mallinfo2().uordblks - before) / 2**20
print(json.dumps({"done": done, "shapes": len(shapes) - WARM, "grown_mb": grown_mb}))
"""


def kernel_probe(mode: str, **env: str) -> dict:
    return run_probe(KERNEL_PROBE, mode, set(LIBRARY_CACHE_SETTINGS), env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallinfo2 is glibc's")
def test_bounded_library_caches_stop_growing_with_new_generator_shapes():
    """oneDNN keeps ~1 MB of kernels per new input shape by default; bounded, the total stays put."""
    default = kernel_probe("default")
    bounded = kernel_probe("bounded")
    assert default["shapes"] == bounded["shapes"] == 44
    assert default["grown_mb"] > 10, default  # the growth this guards against is real here
    assert bounded["grown_mb"] < 1, bounded  # -0.03 MB measured (44 shapes; 23 MB with the defaults)
    assert bounded["done"] == "library caches bounded: " + ", ".join(
        f"{k}={v}" for k, v in LIBRARY_CACHE_SETTINGS.items()
    )


def test_library_cache_variables_set_by_the_user_win():
    result = kernel_probe("bounded", LRU_CACHE_CAPACITY="512")
    assert "LRU_CACHE_CAPACITY=512 (environment)" in result["done"]
    capacity = LIBRARY_CACHE_SETTINGS["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    assert f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={capacity}" in result["done"]

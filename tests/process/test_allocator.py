"""backend.allocator: a fixed mmap threshold keeps large buffers out of the heap arenas, and bounded
library caches keep per-shape kernels and buffers from piling up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.allocator import LIBRARY_CACHE_SETTINGS

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter: free a 16 MB block (glibc then raises its threshold to 16 MB unless it is
# fixed), then allocate a 1 MB block and see whether it was mapped (mallinfo2().hblks grew).
PROBE = """
import ctypes, json, sys
from backend.allocator import fix_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
done = fix_mmap_threshold() if sys.argv[1] == "fixed" else "left as is"
libc.free(libc.malloc(16 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblks > before
libc.free(block)
print(json.dumps({"done": done, "mapped": mapped}))
"""


def run_probe(script: str, mode: str, settings: set[str], env: dict[str, str]) -> dict:
    """Run a probe script in a fresh interpreter with the given settings unset, then ``env`` applied."""
    environment = {k: v for k, v in os.environ.items() if k not in settings} | env
    out = subprocess.run(
        [sys.executable, "-c", script, mode], cwd=REPO, env=environment, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def probe(mode: str, **env: str) -> dict:
    return run_probe(PROBE, mode, {"MALLOC_MMAP_THRESHOLD_"}, env)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux only")
def test_after_fixing_the_threshold_a_megabyte_buffer_is_mapped_not_carved_from_the_heap():
    assert probe("default") == {"done": "left as is", "mapped": False}  # glibc's dynamic threshold
    fixed = probe("fixed")
    assert fixed["mapped"] is True and "fixed at 128 KiB" in fixed["done"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux only")
def test_the_environment_variable_wins():
    result = probe("fixed", MALLOC_MMAP_THRESHOLD_="33554432")
    assert result["done"].startswith("MALLOC_MMAP_THRESHOLD_=33554432") and result["mapped"] is False


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

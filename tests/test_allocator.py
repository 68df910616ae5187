"""backend.allocator: a fixed mmap threshold keeps large buffers out of the heap arenas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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


def probe(mode: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=REPO, env=environment, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux only")
def test_after_fixing_the_threshold_a_megabyte_buffer_is_mapped_not_carved_from_the_heap():
    assert probe("default") == {"done": "left as is", "mapped": False}  # glibc's dynamic threshold
    fixed = probe("fixed")
    assert fixed["mapped"] is True and "fixed at 128 KiB" in fixed["done"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux only")
def test_the_environment_variable_wins():
    result = probe("fixed", MALLOC_MMAP_THRESHOLD_="33554432")
    assert result["done"].startswith("MALLOC_MMAP_THRESHOLD_=33554432") and result["mapped"] is False

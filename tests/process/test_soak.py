"""Soak: many real fills of varied sizes through one real backend process; memory must not creep.

Opt-in (`pytest -m soak tests/test_soak.py -s`). HIFILL_SOAK_FIGURE=path.png plots the series.
HIFILL_SOAK_FILLS overrides the number of fills
(default 1,000); the first HIFILL_SOAK_WARMUP fills (default 50) are warm-up and include every
size/channels/dtype combination once, so allocator pools and caches reach their working size before
the baseline is read. The median VmRSS over the last tenth of the fills must be less than 5 % above
the median over the first tenth after warm-up.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

from shared_protocol import Client
from tests.backend_process import rss_mb

FILLS = int(os.environ.get("HIFILL_SOAK_FILLS", "1000"))
WARMUP = int(os.environ.get("HIFILL_SOAK_WARMUP", "50"))
MAX_GROWTH = 0.05
SIDES = (64, 128, 256, 512, 768, 1024)
KINDS = tuple(itertools.product((3, 4), ("u8", "u16")))
NUMPY_DTYPE = {"u8": np.uint8, "u16": np.uint16}


def fill_case(index: int, rng: np.random.Generator) -> tuple[int, int, int, str]:
    """(width, height, channels, dtype): warm-up visits every combination with the largest sides first."""
    if index < len(KINDS) * 2:
        side = SIDES[-1] if index < len(KINDS) else SIDES[-2]
        channels, dtype = KINDS[index % len(KINDS)]
        return side, side, channels, dtype
    channels, dtype = KINDS[int(rng.integers(len(KINDS)))]
    return int(rng.choice(SIDES)), int(rng.choice(SIDES)), channels, dtype


def one_fill(client: Client, width: int, height: int, channels: int, dtype: str, rng: np.random.Generator):
    """A real fill of a random rectangle (2-20 % of each side); checks the region and the kept pixels."""
    top = 65535 if dtype == "u16" else 255
    image = rng.integers(0, top + 1, (height, width, channels), dtype=NUMPY_DTYPE[dtype])
    mask = np.zeros((height, width), np.uint8)
    hole_w = max(2, int(width * rng.uniform(0.02, 0.2)))
    hole_h = max(2, int(height * rng.uniform(0.02, 0.2)))
    x0 = int(rng.integers(0, width - hole_w))
    y0 = int(rng.integers(0, height - hole_h))
    mask[y0 : y0 + hole_h, x0 : x0 + hole_w] = 255
    mask[y0 + hole_h // 2, x0 + hole_w // 2] = 0  # one kept pixel inside the region
    result = client.inpaint(image.tobytes(), width, height, channels, dtype, mask.tobytes())
    assert (result.x, result.y, result.width, result.height) == (x0, y0, hole_w, hole_h)
    region = np.frombuffer(result.pixels, NUMPY_DTYPE[dtype]).reshape(hole_h, hole_w, channels)
    kept = (y0 + hole_h // 2, x0 + hole_w // 2)
    assert np.array_equal(region[hole_h // 2, hole_w // 2], image[kept])


@pytest.mark.soak
def test_many_fills_do_not_grow_backend_memory(backend) -> None:
    pid, endpoint = backend.pid, backend.endpoint
    rng = np.random.default_rng(7)
    warmup = min(WARMUP, max(len(KINDS) * 2, FILLS // 4))
    samples: list[float] = []  # VmRSS after each fill past warm-up
    started = time.monotonic()
    with Client(endpoint, timeout_s=600) as client:
        for index in range(FILLS):
            one_fill(client, *fill_case(index, rng), rng)
            if index >= warmup:
                samples.append(rss_mb(pid))
    # RSS after one fill depends on the allocator's state after that fill's size, so single readings
    # jump by a few percent; a leak shows as a rise of the median from the first to the last tenth.
    window = max(5, len(samples) // 10)
    first, last = float(np.median(samples[:window])), float(np.median(samples[-window:]))
    growth = (last - first) / first
    print(
        f"\nsoak: {FILLS} fills ({warmup} warm-up) in {time.monotonic() - started:.0f} s; backend VmRSS "
        f"median of the first {window} fills after warm-up {first:.1f} MB -> last {window} {last:.1f} MB "
        f"({growth:+.2%}); single readings {samples[0]:.1f} -> {samples[-1]:.1f} MB, "
        f"peak {max(samples):.1f} MB"
    )
    figure = os.environ.get("HIFILL_SOAK_FIGURE")
    if figure:
        plot_rss(samples, warmup, window, growth, figure)
    assert growth < MAX_GROWTH


def plot_rss(samples: list[float], warmup: int, window: int, growth: float, path: str) -> None:
    """VmRSS after every fill past warm-up, with the two medians the test compares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fills = np.arange(warmup + 1, warmup + len(samples) + 1)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(fills, samples, lw=0.8, label="backend VmRSS after each fill")
    for index, part in enumerate((slice(None, window), slice(-window, None))):  # first/last tenth
        label = "median of the first and last tenth" if index == 0 else None
        ax.hlines(np.median(samples[part]), fills[part][0], fills[part][-1], colors="C1", lw=2, label=label)
    ax.set_title(f"{len(samples) + warmup} varied fills ({warmup} warm-up): median growth {growth:+.1%}")
    ax.set_xlabel("fill")
    ax.set_ylabel("MB")
    ax.set_ylim(0, max(samples) * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

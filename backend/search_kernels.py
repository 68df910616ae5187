"""Compiled inner loops of the patch path: the guided patch search (backend.texture.patch_match) and
the per-pixel part of the full-resolution transfer (transfer_taps, for backend.texture.transfer_pixels).

The search makes ~340 passes per 512² fill over a few thousand to a few ten thousand hole pixels.
As torch operations each pass was ~15 calls, whose fixed cost dominated at the coarse levels and
whose temporaries (gathered descriptors, costs, masks) at the fine ones. Here one compiled call
(numba) runs all passes of a search, each pass one loop over the pixels.

Each pass does what the torch pass did, so the matches are the same up to float rounding of near
ties (a descriptor distance's 16 terms are summed in another order than torch's vectorised sum;
tests/unit/test_search_kernels.py compares them with an explicit torch implementation): a candidate is clamped
into the image, its cost is the squared distance of its descriptor to the pixel's target (inf where
the source is invalid), and it replaces the pixel's source when strictly cheaper. A propagation pass reads the
neighbours' sources as they were before the pass, so no result depends on the order of the pixels.

Why numba: it compiles this loop on any machine from wheels (a C extension would need a compiler
at install time), and caches the machine code beside the module. One thread: measured through whole
512² fills (AMD EPYC, 2 cores, AVX2, 8 pairs each, same process), the serial loop saved 0.089 s a
fill, numba's OpenMP layer 0.095 s (a second OpenMP runtime beside torch's), its "workqueue" threads
0.004 s (they left torch's next parallel regions slower), so the serial loop, with no threads or
locks to manage, runs. transfer_taps releases the GIL (nogil): transfer_pixels runs it on two threads.
The first run on a machine compiles all kernels (~12 s, then cached in backend/__pycache__); a
start loads them in ~0.3 s (the engine's warm_up, beside the generator's first pass).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

try:
    from numba import njit

    COMPILED = True
except ImportError:  # e.g. a lent GPU machine's image: the vectorised passes below run instead
    COMPILED = False

    def njit(*_args, **_kwargs):  # type: ignore[no-redef]  # leaves the functions as plain Python
        return lambda function: function


@njit(cache=True, nogil=True, boundscheck=False)
def _cost(sources: np.ndarray, invalid: np.ndarray, targets: np.ndarray, pixel: int, flat: int) -> np.float32:
    """Squared descriptor distance of source row ``flat`` to target row ``pixel`` (inf if invalid)."""
    if invalid[flat]:
        return np.float32(np.inf)
    total = np.float32(0.0)
    for k in range(targets.shape[1]):
        difference = sources[flat, k] - targets[pixel, k]
        total += difference * difference
    return total


@njit(cache=True, nogil=True, boundscheck=False)
def search_passes(
    nnf: np.ndarray,
    sources: np.ndarray,
    invalid: np.ndarray,
    targets: np.ndarray,
    pixels: np.ndarray,
    neighbours: np.ndarray,
    bounds: np.ndarray,
    shifts: np.ndarray,
    jitters: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """PatchMatch passes in place on nnf; returns the final costs (N,) float32.

    nnf: (N, 2) int64 (y, x) start sources (inside the image); sources: (H*W, K) float32 projected
    descriptors; invalid: (H*W,) bool; targets: (N, K) float32. Propagation d (of D): the hole pixels
    pixels[bounds[d]:bounds[d+1]] try their hole neighbour neighbours[...]'s source minus shifts[d]
    (D, 2). jitters: (I, R, N, 2) int32 random offsets. Each of the I iterations runs the D
    propagations, then R random-search passes (every pixel tries its source plus jitters[i, r]).
    """
    count = nnf.shape[0]
    cost = np.empty(count, np.float32)
    for pixel in range(count):
        cost[pixel] = _cost(sources, invalid, targets, pixel, nnf[pixel, 0] * width + nnf[pixel, 1])
    for iteration in range(jitters.shape[0]):
        for d in range(shifts.shape[0]):
            before = nnf.copy()
            dy, dx = shifts[d, 0], shifts[d, 1]
            for i in range(bounds[d], bounds[d + 1]):
                pixel, neighbour = pixels[i], neighbours[i]
                y = min(max(before[neighbour, 0] - dy, 0), height - 1)
                x = min(max(before[neighbour, 1] - dx, 0), width - 1)
                candidate = _cost(sources, invalid, targets, pixel, y * width + x)
                if candidate < cost[pixel]:
                    nnf[pixel, 0], nnf[pixel, 1], cost[pixel] = y, x, candidate
        for r in range(jitters.shape[1]):
            for pixel in range(count):
                y = min(max(nnf[pixel, 0] + jitters[iteration, r, pixel, 0], 0), height - 1)
                x = min(max(nnf[pixel, 1] + jitters[iteration, r, pixel, 1], 0), width - 1)
                candidate = _cost(sources, invalid, targets, pixel, y * width + x)
                if candidate < cost[pixel]:
                    nnf[pixel, 0], nnf[pixel, 1], cost[pixel] = y, x, candidate
    return cost


@njit(cache=True, nogil=True, boundscheck=False)
def transfer_taps(
    y0: np.ndarray,
    y1: np.ndarray,
    wy: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    wx: np.ndarray,
    matched: np.ndarray,
    key: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-pixel part of backend.texture.transfer_pixels, in its float32 operations and order.

    y0, y1 / x0, x1: (N,) flat lower / upper taps along each axis (y already times the row stride);
    wy, wx: (N,) float32 weights of the upper taps; matched (h*w,) float32 0/1; key (h*w,) int64 packed
    offsets; shift (C, h*w) float32. Returns taps (4, N) int64 flat search pixels, weights (4, N)
    float32 (bilinear, 0 where unmatched, merged into the first of the taps that share an offset), and
    total (C, N) float32, the weighted sum of the taps' shifts.
    """
    count = y0.shape[0]
    channels = shift.shape[0]
    taps = np.empty((4, count), np.int64)
    weights = np.empty((4, count), np.float32)
    total = np.empty((channels, count), np.float32)
    one = np.float32(1.0)
    for n in range(count):
        taps[0, n], taps[1, n] = y0[n] + x0[n], y0[n] + x1[n]
        taps[2, n], taps[3, n] = y1[n] + x0[n], y1[n] + x1[n]
        weights[0, n] = (one - wy[n]) * (one - wx[n]) * matched[taps[0, n]]
        weights[1, n] = (one - wy[n]) * wx[n] * matched[taps[1, n]]
        weights[2, n] = wy[n] * (one - wx[n]) * matched[taps[2, n]]
        weights[3, n] = wy[n] * wx[n] * matched[taps[3, n]]
        for c in range(channels):
            value = shift[c, taps[0, n]] * weights[0, n]
            for t in range(1, 4):
                value += shift[c, taps[t, n]] * weights[t, n]
            total[c, n] = value
        # Taps that share an offset read the same pixel: the first of them carries their summed weight.
        for later in range(1, 4):
            for earlier in range(later):
                if key[taps[later, n]] == key[taps[earlier, n]] and weights[earlier, n] > 0:
                    weights[earlier, n] += weights[later, n]
                    weights[later, n] = np.float32(0.0)
    return taps, weights, total


def search_passes_vectorised(
    nnf: np.ndarray,
    sources: np.ndarray,
    invalid: np.ndarray,
    targets: np.ndarray,
    pixels: np.ndarray,
    neighbours: np.ndarray,
    bounds: np.ndarray,
    shifts: np.ndarray,
    jitters: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """search_passes as NumPy passes over all pixels at once (the same candidates, order and test):
    what runs where numba is not installed, and the tests' second implementation."""

    def cost_of(candidates: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        flat = candidates[:, 0] * width + candidates[:, 1]
        cost = np.square(sources[flat] - wanted).sum(1, dtype=np.float32)
        cost[invalid[flat]] = np.inf
        return cost

    def clamp(candidates: np.ndarray) -> np.ndarray:
        np.clip(candidates[:, 0], 0, height - 1, out=candidates[:, 0])
        np.clip(candidates[:, 1], 0, width - 1, out=candidates[:, 1])
        return candidates

    cost = cost_of(nnf, targets)
    for iteration in range(jitters.shape[0]):
        for d in range(shifts.shape[0]):
            rows = pixels[bounds[d] : bounds[d + 1]]
            candidates = clamp(nnf[neighbours[bounds[d] : bounds[d + 1]]] - shifts[d])
            candidate_cost = cost_of(candidates, targets[rows])
            better = candidate_cost < cost[rows]
            nnf[rows[better]], cost[rows[better]] = candidates[better], candidate_cost[better]
        for r in range(jitters.shape[1]):
            candidates = clamp(nnf + jitters[iteration, r])
            candidate_cost = cost_of(candidates, targets)
            better = candidate_cost < cost
            nnf[better], cost[better] = candidates[better], candidate_cost[better]
    return cost


def transfer_taps_vectorised(
    y0: np.ndarray,
    y1: np.ndarray,
    wy: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    wx: np.ndarray,
    matched: np.ndarray,
    key: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """transfer_taps as NumPy array operations, bit-identical (the code it replaced): what runs where
    numba is not installed, and the tests' second implementation."""
    taps = (y0 + x0, y0 + x1, y1 + x0, y1 + x1)
    one = np.float32(1)
    weights = [(one - wy) * (one - wx), (one - wy) * wx, wy * (one - wx), wy * wx]
    for tap, weight in zip(taps, weights, strict=True):
        weight *= matched.take(tap)
    total = np.empty((shift.shape[0], len(y0)), np.float32)
    for channel, channel_shift in enumerate(shift):
        total[channel] = channel_shift.take(taps[0]) * weights[0]
        for tap, weight in zip(taps[1:], weights[1:], strict=True):
            total[channel] += channel_shift.take(tap) * weight
    keys = [key.take(tap) for tap in taps]
    for later in range(1, 4):
        for earlier in range(later):
            same = (keys[later] == keys[earlier]) & (weights[earlier] > 0)
            weights[earlier] += weights[later] * same
            weights[later] *= ~same
    return np.stack(taps), np.stack(weights), total


if not COMPILED:
    log.warning(
        "numba is not installed: the patch search and the full-resolution transfer run as NumPy passes "
        "(the same fills, slower). pip install numba to compile them."
    )
    search_passes = search_passes_vectorised  # noqa: F811
    transfer_taps = transfer_taps_vectorised  # noqa: F811


def warm_up() -> None:
    """Load (or, the first time on a machine, compile) this module's kernels with tiny inputs."""
    nnf = np.zeros((1, 2), np.int64)
    search_passes(
        nnf, np.zeros((4, 2), np.float32), np.zeros(4, bool), np.zeros((1, 2), np.float32),
        np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([0, 1], np.int64), np.zeros((1, 2), np.int64),
        np.zeros((1, 1, 1, 2), np.int32), 2, 2,
    )  # fmt: skip
    taps = np.zeros(1, np.int64)
    weight = np.zeros(1, np.float32)
    transfer_taps(
        taps, taps, weight, taps, taps, weight, np.ones(1, np.float32), taps, np.zeros((3, 1), np.float32)
    )

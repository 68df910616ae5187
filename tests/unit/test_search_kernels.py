"""The compiled patch search (backend.search_kernels) against an explicit torch implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend import texture


def reference_patch_match(space, targets, nnf, iterations, generator, jumps=(4, 2, 1), max_radius=None):
    """PatchMatch as vectorised torch passes (the implementation before session 13), slow and plain."""
    height, width = space.valid.shape
    invalid_cost = torch.zeros(height * width).masked_fill_(~space.valid.flatten(), math.inf)

    def clamp(candidates):
        candidates[:, 0].clamp_(0, height - 1)
        candidates[:, 1].clamp_(0, width - 1)
        return candidates

    def cost_of(candidates, wanted):
        flat = candidates[:, 0] * width + candidates[:, 1]
        return (space.sources[flat] - wanted).square().sum(1) + invalid_cost[flat]

    nnf, cost = nnf.clone(), None
    cost = cost_of(nnf, targets)
    for _ in range(iterations):
        for jump in jumps:
            for direction in torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]]) * jump:
                row = space.hole_index[tuple(clamp(space.hole_yx + direction).T)]
                pixels = torch.nonzero(row >= 0).flatten()
                candidates = clamp(nnf[row[pixels]] - direction)
                candidate_cost = cost_of(candidates, targets[pixels])
                better = candidate_cost < cost[pixels]
                nnf[pixels[better]] = candidates[better]
                cost[pixels[better]] = candidate_cost[better]
        radius = max(height, width) if max_radius is None else max_radius
        while radius >= 1:
            candidates = clamp(nnf + torch.randint(-radius, radius + 1, nnf.shape, generator=generator))
            candidate_cost = cost_of(candidates, targets)
            better = candidate_cost < cost
            nnf[better], cost[better] = candidates[better], candidate_cost[better]
            radius //= 2
    return nnf, cost


def search_case(height: int, width: int, seed: int):
    """A SearchSpace, targets and random valid starts as match_level builds them, on a random image."""
    generator = torch.Generator().manual_seed(seed)
    features = texture.gaussian_blur(torch.rand(4, height, width, generator=generator), 1.0)
    hole = torch.zeros(height, width, dtype=torch.bool)
    hole[height // 4 : height // 2, width // 3 : width // 3 + width // 4] = True
    reach = texture.PATCH_RADIUS
    valid = texture.valid_sources(hole, reach)
    hole_yx = torch.nonzero(hole)
    hole_index = torch.full((height, width), -1, dtype=torch.long)
    hole_flat = hole_yx[:, 0] * width + hole_yx[:, 1]
    hole_index.view(-1)[hole_flat] = torch.arange(len(hole_yx))
    offsets = texture.patch_offsets(reach, 1)
    valid_yx = torch.nonzero(valid)
    picks = valid_yx[torch.randint(len(valid_yx), (512,), generator=generator)]
    mean, basis = texture.pca_basis(
        texture.gather_descriptors(features, picks[:, 0], picks[:, 1], offsets), 16
    )
    sources = texture.project_patches(features, mean, basis, reach)
    space = texture.SearchSpace(valid, hole_yx, hole_index, sources)
    start = valid_yx[torch.randint(len(valid_yx), (len(hole_yx),), generator=generator)]
    return space, sources[hole_flat], start


@pytest.mark.parametrize(
    ("shape", "jumps", "max_radius"),
    [((40, 52), (4, 2, 1), None), ((64, 48), (1,), 8), ((33, 70), (2, 1), 3)],
)
def test_the_compiled_search_finds_the_same_matches_as_the_torch_passes(shape, jumps, max_radius) -> None:
    space, targets, start = search_case(*shape, seed=sum(shape))
    expected, expected_cost = reference_patch_match(
        space, targets, start, 3, torch.Generator().manual_seed(7), jumps, max_radius
    )
    nnf, cost = texture.patch_match(
        space, targets, start, 3, torch.Generator().manual_seed(7), jumps, max_radius
    )
    # The same matches, but for near ties that float rounding may break the other way (the kernel sums
    # a distance's terms in another order than torch): there the costs agree to rounding.
    differ = (nnf != expected).any(1)
    assert int(differ.sum()) <= max(1, len(nnf) // 200), int(differ.sum())
    torch.testing.assert_close(cost, expected_cost, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nnf, start)  # the search moved something: the case is not trivial
    assert bool(space.valid[nnf[:, 0], nnf[:, 1]].all())  # every pixel ends on a valid source


def test_zero_iterations_leave_the_start_and_return_its_cost() -> None:
    space, targets, start = search_case(32, 32, seed=1)
    nnf, cost = texture.patch_match(space, targets, start, 0, torch.Generator().manual_seed(0))
    assert torch.equal(nnf, start)
    expected = (space.sources[start[:, 0] * 32 + start[:, 1]] - targets).square().sum(1)
    torch.testing.assert_close(cost, expected, rtol=1e-5, atol=1e-6)


def test_the_compiled_transfer_taps_are_bit_identical_to_the_numpy_code() -> None:
    from backend.search_kernels import COMPILED, transfer_taps, transfer_taps_vectorised

    if not COMPILED:
        pytest.skip("numba is not installed: transfer_taps is the NumPy code")

    rng = np.random.default_rng(5)
    height, width, count = 30, 40, 5000
    ys, xs = rng.integers(0, height * 4, count), rng.integers(0, width * 4, count)
    y0, y1, wy = texture.bilinear_axis(ys, 4.0, height, width)
    x0, x1, wx = texture.bilinear_axis(xs, 4.0, width, 1)
    matched = (rng.random(height * width) < 0.8).astype(np.float32)
    key = rng.integers(0, 6, height * width) * matched.astype(np.int64)  # many shared offsets
    shift = rng.standard_normal((3, height * width)).astype(np.float32)
    got = transfer_taps(y0, y1, wy, x0, x1, wx, matched, key, shift)
    expected = transfer_taps_vectorised(y0, y1, wy, x0, x1, wx, matched, key, shift)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)


def test_the_numpy_passes_used_without_numba_find_the_same_matches() -> None:
    from backend import search_kernels

    space, targets, start = search_case(50, 60, seed=9)
    generator = torch.Generator().manual_seed(3)
    expected, expected_cost = reference_patch_match(space, targets, start, 2, generator, (2, 1), None)
    compiled = search_kernels.search_passes
    try:
        search_kernels_passes = search_kernels.search_passes_vectorised
        texture.search_passes = search_kernels_passes  # what texture.patch_match calls
        nnf, cost = texture.patch_match(
            space, targets, start, 2, torch.Generator().manual_seed(3), (2, 1), None
        )
    finally:
        texture.search_passes = compiled
    assert int((nnf != expected).any(1).sum()) <= max(1, len(nnf) // 200)
    torch.testing.assert_close(cost, expected_cost, rtol=1e-5, atol=1e-6)

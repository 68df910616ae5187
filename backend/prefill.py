"""A classical first guess for the hole: the harmonic fill from its boundary (Laplace's equation).

Our own CPU-trained generators (ModelConfig.prefill == "harmonic") start from this guess instead of
a blank hole and learn a correction on top of it (backend.network.Generator). It is not part of the
paper: official weights run without it.

Every hole pixel is set to the mean of its 4 neighbours (image edges replicated), with the known
pixels as boundary values: one sparse, symmetric linear system per image, for all colour channels at
once (solvers below). An earlier iterative version (pull-push
plus 8 Jacobi sweeps per level) stayed 3.5 levels (0-255) off the exact fill on 256² photos with
13-30 % holes, and its fills scored 2.0 in-hole L1 worse on the evaluation at 512² (prefill alone,
working size 512); a factorisation costs ~0.05 s for such a hole at 256² and 0.3-0.8 s for a 25-56 %
hole at 512², no more than the iterations that came close.

What solves it since session 13: conjugate gradients preconditioned by a multigrid V-cycle
(backend.multigrid), to a relative residual of 1e-6. Against the exact (double precision) fill, on
the bench's blob holes in a 512² window: within 1e-6 … 2e-6 at 10 / 25 / 50 / 75 % holes, where the
direct single-precision solve is 1.2e-5 / 6.3e-5 / 9.8e-5 / 3.5e-4 off. In 10 / 11 / 11 / 16
iterations, 0.05 / 0.15 / 0.34 / 0.6-0.8 s against 0.10-0.15 / 0.24-0.38 / 0.54-0.85 / 0.9-1.5 s for
the direct solve (AMD EPYC, 2 cores, AVX2, a noisy stretch; docs/bench-2026-12-07-s13.md). Its time
grows in proportion to the hole's area, the factorisation's faster.

But each iteration sweeps the hole's whole bounding box, so scattered holes cost more: on 12 masks
of the evaluation (lab.masks "mixed", 11-30 % of a 512² window, strokes and shapes spread over it,
holes 0.17-0.57 of their box), 0.1-1.1 s against 0.1-0.37 s for the direct solve (12-21
iterations); on the bench's blobs (0.74-0.75 of their box) 0.04 / 0.08 / 0.19 / 0.39 s at 5 / 10 /
25 / 50 % against 0.05 / 0.13 / 0.36 / 0.85 s. Equal at 0.57. So multigrid runs for holes that cover
at least 0.6 of their bounding box (a selection around an object, as editors' users make), the
direct solve for the rest.

The direct solve (harmonic_fill_direct) stays, as the tests' reference and as a backstop should the
iterations ever stop short of a 1e-4 residual. Its history: sessions 8-12 kept it against
smoothed-aggregation AMG + CG (pyamg: 0.79 s at 10 %, setup included) and a cascade (0.37 s), then
made it single precision (25-30 % faster) and numbered the unknowns in a nested-dissection order
(nested_dissection_order: SuperLU factorises them in that order instead of its own minimum-degree
order, 25-34 % faster). Not taken: qdldl's LDL^T (a new dependency for 0.038 s at 10 %), cholespy's
CHOLMOD (slower).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

PREFILL_KINDS = ("none", "harmonic")
NEIGHBOUR_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


ND_LEAF_SIDE = 4  # boxes of at most this side stay whole (measured: 2-8 differ by < 15 % in time)


def nested_dissection_order(ys: np.ndarray, xs: np.ndarray, leaf_side: int = ND_LEAF_SIDE) -> np.ndarray:
    """A fill-reducing elimination order of grid points (ys, xs): (N,) indices into them.

    Geometric nested dissection (George 1973): the points' bounding box is cut across its longer side
    by one row or column of points (the separator); both halves come first, each ordered the same way
    until its box is at most leaf_side wide and high, then the separator. Eliminating in this order
    keeps the factor of a grid Laplacian sparse: O(n log n) entries against O(n^1.5) for a band.
    All boxes of one level are cut at once: each point carries its box and a base-3 key (0 lower half,
    1 upper half, 2 separator, one digit per level), and sorting the keys gives the order.
    """
    count = len(ys)
    if count == 0:
        return np.empty(0, np.intp)
    top, bottom = np.full(count, ys.min()), np.full(count, ys.max() + 1)
    left, right = np.full(count, xs.min()), np.full(count, xs.max() + 1)
    key = np.zeros(count, np.int64)
    open_box = np.ones(count, bool)  # not yet a separator or in a leaf
    while True:
        height, width = bottom - top, right - left
        open_box &= np.maximum(height, width) > leaf_side
        if not open_box.any():
            break
        across_rows = height >= width
        middle = np.where(across_rows, (top + bottom) // 2, (left + right) // 2)
        coordinate = np.where(across_rows, ys, xs)
        lower = open_box & (coordinate < middle)
        upper = open_box & (coordinate > middle)
        separator = open_box & (coordinate == middle)
        key = key * 3 + upper + 2 * separator  # closed points take a 0 digit: their order stays
        open_box &= ~separator
        bottom = np.where(lower & across_rows, middle, bottom)
        top = np.where(upper & across_rows, middle + 1, top)
        right = np.where(lower & ~across_rows, middle, right)
        left = np.where(upper & ~across_rows, middle + 1, left)
    return np.argsort(key, kind="stable")


MULTIGRID_ACCEPTED_RESIDUAL = 1e-4  # above this relative residual the direct solve is used instead
MULTIGRID_MIN_FILL = 0.6  # multigrid when the hole covers at least this share of its bounding box


def hole_fill_ratio(hole_hw: np.ndarray) -> float:
    """Hole pixels over the area of their bounding box (1 for a rectangle, low for scattered strokes)."""
    rows, cols = np.nonzero(hole_hw.any(axis=1))[0], np.nonzero(hole_hw.any(axis=0))[0]
    return float(hole_hw.sum()) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))


def harmonic_fill_one(image_chw: np.ndarray, known_hw: np.ndarray) -> np.ndarray:
    """Harmonic fill of one image. image_chw: (C, H, W) float; known_hw: (H, W) bool.

    Returns (C, H, W) float64 with known pixels unchanged; zeros when nothing is known. A compact hole
    (hole_fill_ratio >= MULTIGRID_MIN_FILL) is solved by multigrid-preconditioned conjugate gradients
    (backend.multigrid) to a relative residual of 1e-6 (should that ever stop short of 1e-4: by the
    direct solve), a scattered one by the direct solve (harmonic_fill_direct): the multigrid works on
    the whole bounding box, the factorisation on the hole's pixels only (module docstring).
    """
    if not (~known_hw).any():
        return image_chw.astype(np.float64, copy=True)
    if not known_hw.any():
        return np.zeros(image_chw.shape)
    if hole_fill_ratio(~known_hw) < MULTIGRID_MIN_FILL:
        return harmonic_fill_direct(image_chw, known_hw)
    try:
        from backend import multigrid  # numba: absent on a lent GPU machine, whose training solves on the GPU
    except ImportError:
        return harmonic_fill_direct(image_chw, known_hw)
    filled, _, residual = multigrid.harmonic_fill_box(image_chw, known_hw)
    if np.isfinite(residual) and residual <= MULTIGRID_ACCEPTED_RESIDUAL:
        return filled
    return harmonic_fill_direct(image_chw, known_hw)


def harmonic_fill_direct(image_chw: np.ndarray, known_hw: np.ndarray) -> np.ndarray:
    """Exact harmonic fill of one image by a sparse LU factorisation (the module docstring).

    image_chw: (C, H, W) float; known_hw: (H, W) bool. Returns (C, H, W) float64 with known pixels
    unchanged; zeros when nothing is known.
    """
    channels, height, width = image_chw.shape
    out = image_chw.astype(np.float64, copy=True)
    hole = ~known_hw
    if not hole.any():
        return out
    if not known_hw.any():
        return np.zeros_like(out)
    ys, xs = np.nonzero(hole)
    order = nested_dissection_order(ys, xs)
    ys, xs = ys[order], xs[order]  # unknowns numbered in elimination order
    unknowns = len(ys)
    index_hw = np.full((height, width), -1, dtype=np.int64)
    index_hw[ys, xs] = np.arange(unknowns)
    own = np.arange(unknowns)
    rows, cols, values = [own], [own], [np.ones(unknowns)]
    rhs = np.zeros((unknowns, channels))
    for dy, dx in NEIGHBOUR_STEPS:
        ny, nx = np.clip(ys + dy, 0, height - 1), np.clip(xs + dx, 0, width - 1)
        neighbour = index_hw[ny, nx]
        in_hole = neighbour >= 0
        rows.append(own[in_hole])
        cols.append(neighbour[in_hole])
        values.append(np.full(int(in_hole.sum()), -0.25))
        rhs[~in_hole] += 0.25 * out[:, ny[~in_hole], nx[~in_hole]].T
    # Duplicates (an edge pixel's replicated neighbour is itself) are summed by the conversion.
    system = scipy.sparse.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(unknowns, unknowns)
    )
    # The unknowns' own order (nested dissection) and diagonal pivots only: the matrix is symmetric and
    # diagonally dominant, so no row exchange is needed. Single precision: within 6e-4 of the double
    # precision solve even for a 75 % hole at 512² (module docstring), 25-30 % faster.
    factors = scipy.sparse.linalg.splu(system.astype(np.float32), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    solution = factors.solve(rhs.astype(np.float32))
    out[:, ys, xs] = solution.T
    return out


def harmonic_fill(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill where ``known`` is 0 harmonically from where it is 1; known pixels are returned unchanged.

    image: (B, C, H, W) float (hole contents ignored); known: (B, 1, H, W) in {0, 1}.
    Returns (B, C, H, W) float32 on the image's device. An image with no known pixel comes back as zeros.
    """
    with torch.no_grad():
        image_np = image.detach().float().cpu().numpy()
        known_np = known.detach().cpu().numpy()[:, 0] > 0.5
        filled = np.stack([harmonic_fill_one(i, k) for i, k in zip(image_np, known_np, strict=True)])
        # Known pixels went float32 -> float64 -> float32 untouched: they come back bit-exact.
        return torch.from_numpy(filled.astype(np.float32)).to(image.device)

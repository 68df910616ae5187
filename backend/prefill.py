"""A classical first guess for the hole: the harmonic fill from its boundary (Laplace's equation).

Our own CPU-trained generators (ModelConfig.prefill == "harmonic") start from this guess instead of
a blank hole and learn a correction on top of it (backend.network.Generator). It is not part of the
paper: official weights run without it.

Every hole pixel is set to the mean of its 4 neighbours (image edges replicated), with the known
pixels as boundary values: one sparse, symmetric linear system per image, solved exactly by SuperLU
(scipy.sparse.linalg.splu) for all colour channels at once. An earlier iterative version (pull-push
plus 8 Jacobi sweeps per level) stayed 3.5 levels (0-255) off the exact fill on 256² photos with
13-30 % holes, and its fills scored 2.0 in-hole L1 worse on the evaluation at 512² (prefill alone,
working size 512); a factorisation costs ~0.05 s for such a hole at 256² and 0.3-0.8 s for a 25-56 %
hole at 512², no more than the iterations that came close.

Why the direct solve stays (issue 15, AMD EPYC, 2 cores, bench's blob holes in a 512² window, the
largest the default working size gives), in double precision: 0.08 s for a 10 % hole, 0.29 s for
25 %, 0.71 s for 50 %, 1.19 s for 75 %. Measured against it: smoothed-aggregation AMG + CG (pyamg,
session 8) 0.79 s at 10 % and 2.2 s at 50 % (setup included); a cascade (the exact solve at half size,
upsampled, then CG at full size to 1e-6) 0.37 s at 10 % and 2.6 s at 50 %, within 3e-5 of the direct
solve. What runs now is the same direct solve in single precision (session 10): 0.064 / 0.25 / 0.54 /
0.89 s at 10 / 25 / 50 / 75 %, against 0.089 / 0.33 / 0.75 / 1.23 s in double precision in the same
run, and within 3.4e-5 / 7.7e-5 / 1.8e-4 / 5.4e-4 of it (images in [-1, 1]; 5.4e-4 is 0.07 of a level
in 0-255). Fills change through the patch search (a guide a few 1e-5 off draws other matches) but
score the same on the validation photos: in-hole L1 / PSNR / detail 19.55 / 18.85 / 0.69 at 512²
(double: 19.55 / 18.86 / 0.69) and 18.31 / 19.40 / 0.76 at HD (18.30 / 19.40 / 0.76).

Since session 12 the unknowns are numbered in a nested-dissection order (nested_dissection_order) and
SuperLU factorises them in that order, in place of its own minimum-degree ordering (MMD_AT_PLUS_A).
Paired, in the same minutes (AMD EPYC, 2 cores, a slow stretch of the machine): 0.066 / 0.19 / 0.47 /
0.78 s at 10 / 25 / 50 / 75 % against 0.083-0.093 / 0.24-0.27 / 0.66-0.73 / 1.17-1.18 s, 0.43-0.44
against 0.50-0.63 s for a 10 % hole at 1024²; within 9e-6 / 6e-5 / 8e-5 / 3.4e-4 of the double
precision solve. Through the engine, a 512² fill with a 10 % hole: 0.025 s less (median of 15 pairs).
Scores unchanged: 512² 19.55 / 18.85 / 0.69 (paired differences -0.002 ± 0.009 L1), HD 18.30 / 19.41 /
0.76. Left as measured, not taken: qdldl's LDL^T (AMD order, double) at 0.038 / 0.15 / 0.44 / 0.84 s
(a new dependency for less), cholespy's CHOLMOD at 0.10 / 0.39 / 0.71 / 1.28 s.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from backend import multigrid

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


def harmonic_fill_one(image_chw: np.ndarray, known_hw: np.ndarray) -> np.ndarray:
    """Harmonic fill of one image. image_chw: (C, H, W) float; known_hw: (H, W) bool.

    Returns (C, H, W) float64 with known pixels unchanged; zeros when nothing is known. Solved by
    multigrid-preconditioned conjugate gradients (backend.multigrid) to a relative residual of 1e-6;
    should that ever stop short of 1e-4, by the direct solve (harmonic_fill_direct).
    """
    if not (~known_hw).any():
        return image_chw.astype(np.float64, copy=True)
    if not known_hw.any():
        return np.zeros(image_chw.shape)
    filled, _, residual = multigrid.harmonic_fill_box(image_chw, known_hw)
    if residual <= MULTIGRID_ACCEPTED_RESIDUAL:
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

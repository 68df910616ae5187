"""The multigrid-preconditioned prefill solver (backend.multigrid) against the direct sparse solve."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")  # a lent GPU machine's image lacks it: the prefill then solves directly

from backend import multigrid  # noqa: E402
from backend.prefill import harmonic_fill_direct  # noqa: E402


def holes(kind: str, height: int, width: int) -> np.ndarray:
    """(H, W) bool holes of a few kinds: a disc, a disc touching two image edges, rings, scattered."""
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "disc":
        return (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (0.3 * min(height, width)) ** 2
    if kind == "corner":
        return yy**2 + (xx - width) ** 2 < (0.6 * min(height, width)) ** 2
    if kind == "ring":
        radius = np.hypot(yy - height / 2, xx - width / 3)
        return (radius > 10) & (radius < 30) | ((yy > height - 20) & (xx < 25))
    if kind == "nearly_all":  # all but a few pixels on the image's edge
        hole = np.ones((height, width), bool)
        hole[0, :5] = hole[-1, -3:] = False
        return hole
    if kind == "pixel":
        return (yy == height // 2) & (xx == width // 3)
    if kind == "left_edge":  # touches one image edge, big enough for several levels
        return (yy > 20) & (yy < 80) & (xx < 60)
    rng = np.random.default_rng(3)
    return rng.random((height, width)) < 0.4


@pytest.mark.parametrize("kind", ["disc", "corner", "ring", "nearly_all", "scattered", "pixel", "left_edge"])
def test_the_multigrid_fill_matches_the_exact_solve(kind: str) -> None:
    rng = np.random.default_rng(0)
    height, width = 97, 130  # odd and even sides: coarse levels with half-empty cells
    image = rng.standard_normal((3, height, width))
    known = ~holes(kind, height, width)
    exact = harmonic_fill_direct(image, known)
    filled, iterations, residual = multigrid.harmonic_fill_box(image, known)
    assert residual <= multigrid.RELATIVE_TOLERANCE and iterations < 40
    assert np.abs(filled - exact).max() < 1e-4  # values of order 1; the direct solve runs in float32
    assert np.array_equal(filled[:, known], image[:, known])  # known pixels untouched


def test_the_v_cycle_is_a_symmetric_operator() -> None:
    """Conjugate gradients needs a symmetric preconditioner: <u, M v> = <M u, v> to rounding."""
    rng = np.random.default_rng(1)
    mask = holes("ring", 70, 90)
    edges = (True, False, True, False)
    levels = multigrid.Levels(multigrid.pyramid(mask, edges), edges, 1)
    assert len(levels.rows) >= 3  # a real hierarchy
    applied = []
    for _ in range(2):
        rhs = rng.standard_normal((1, 70, 90)) * mask
        levels.grids(levels.rhss, 0)[:, 1:-1, 1:-1] = rhs
        multigrid.v_cycle(
            levels.rows, levels.degrees, levels.inverse_degrees, levels.on_masks, np.array(edges),
            levels.rhss, levels.zs, levels.residuals, 1,
            multigrid.SMOOTHING_SWEEPS, multigrid.COARSEST_SWEEPS,
        )  # fmt: skip
        applied.append((rhs, levels.grids(levels.zs, 0)[:, 1:-1, 1:-1].copy()))
    (u, mu), (v, mv) = applied
    assert abs(np.sum(u * mv) - np.sum(mu * v)) < 1e-9 * np.sqrt(np.sum(u * mu) * np.sum(v * mv))
    assert np.sum(u * mu) > 0 and np.sum(v * mv) > 0  # and positive: a definite preconditioner


def test_compact_holes_go_to_multigrid_and_scattered_ones_to_the_direct_solve(monkeypatch) -> None:
    import backend.prefill as prefill

    used = []
    monkeypatch.setattr(prefill, "harmonic_fill_direct", lambda image, known: used.append("direct") or image)
    real = multigrid.harmonic_fill_box
    monkeypatch.setattr(
        multigrid, "harmonic_fill_box", lambda image, known: used.append("multigrid") or real(image, known)
    )
    image = np.random.default_rng(2).standard_normal((3, 97, 130))
    prefill.harmonic_fill_one(image, ~holes("disc", 97, 130))
    prefill.harmonic_fill_one(image, ~holes("scattered", 97, 130))
    assert used == ["multigrid", "direct"]


def test_hole_contents_are_never_read_and_bad_known_pixels_are_refused() -> None:
    image = np.random.default_rng(4).standard_normal((3, 40, 50))
    known = ~holes("disc", 40, 50)
    clean, _, _ = multigrid.harmonic_fill_box(image, known)
    image[:, ~known] = np.nan  # garbage in the hole: the same fill
    filled, _, residual = multigrid.harmonic_fill_box(image, known)
    assert np.array_equal(filled, clean) and residual <= multigrid.RELATIVE_TOLERANCE
    ys, xs = np.nonzero(~known)
    image[0, ys[0], xs[0] - 1] = np.inf  # a bad known pixel at the hole's border: no residual to accept
    assert not np.isfinite(multigrid.harmonic_fill_box(image, known)[2])

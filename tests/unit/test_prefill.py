"""The harmonic prefill (backend.prefill) against an exact Laplace solve, and the generator's use of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.network import Generator, init_official, zero_residual_outputs
from backend.prefill import harmonic_fill
from backend.weights import ModelConfig, load_generator, save_generator
from shared_protocol import ErrorKind, HiFillError

torch.set_num_threads(1)


def exact_harmonic(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The slow reference: solve u = mean of 4 neighbours (edges replicated) at every hole pixel.

    image: (H, W) float64; known: (H, W) bool. One dense linear system, fine for small images.
    """
    height, width = image.shape
    holes = list(zip(*np.nonzero(~known), strict=True))
    index = {p: i for i, p in enumerate(holes)}
    a = np.zeros((len(holes), len(holes)))
    b = np.zeros(len(holes))
    for i, (y, x) in enumerate(holes):
        a[i, i] = 1.0
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            ny, nx = min(max(ny, 0), height - 1), min(max(nx, 0), width - 1)
            if (ny, nx) in index:
                a[i, index[(ny, nx)]] -= 0.25
            else:
                b[i] += 0.25 * image[ny, nx]
    out = image.copy()
    out[~known] = np.linalg.solve(a, b)
    return out


def harmonic_fill_2d(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """backend.prefill.harmonic_fill of one (H, W) float64 image with (H, W) bool known pixels."""
    batch = torch.from_numpy(image).float()[None, None]
    return harmonic_fill(batch, torch.from_numpy(known).float()[None, None])[0, 0].double().numpy()


def blob_mask(height: int, width: int, seed: int) -> np.ndarray:
    """A few random rectangles of hole (True = known)."""
    rng = np.random.default_rng(seed)
    known = np.ones((height, width), bool)
    for _ in range(3):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        known[y : y + rng.integers(4, 14), x : x + rng.integers(4, 14)] = False
    return known


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fill_equals_the_dense_harmonic_solution(seed: int):
    rng = np.random.default_rng(seed)
    # A smooth image plus texture: the hole's exact solution depends on the boundary only.
    yy, xx = np.mgrid[0:40, 0:48] / 40.0
    image = np.sin(3 * yy + 2 * xx + seed) + 0.1 * rng.standard_normal((40, 48))
    known = blob_mask(40, 48, seed)
    exact = exact_harmonic(image, known)
    filled = harmonic_fill_2d(image, known)
    hole_error = np.abs(filled - exact)[~known]
    value_range = image.max() - image.min()
    assert hole_error.max() < 1e-5 * value_range, hole_error.max()  # float32 output of an exact solve


def test_nested_dissection_orders_each_half_before_the_line_that_separates_them():
    from backend.prefill import nested_dissection_order

    ys, xs = np.nonzero(np.ones((9, 7), bool))  # a 9 x 7 box: cut across its rows at row 4
    order = nested_dissection_order(ys, xs, leaf_side=2)
    assert sorted(order.tolist()) == list(range(63))  # a permutation
    position = np.empty(63, int)
    position[order] = np.arange(63)
    separator = ys == 4
    assert position[separator].min() > position[~separator].max()  # the first cut comes last
    assert position[ys < 4].max() < position[ys > 4].min()  # the lower half before the upper
    # within the upper half (rows 5-8, 4 x 7: cut across its columns at column 3), the same again
    upper = ys > 4
    assert position[upper & (xs == 3)].min() > position[upper & (xs != 3)].max()
    ragged = nested_dissection_order(np.array([5, 5, 6, 40]), np.array([1, 2, 1, 9]))
    assert sorted(ragged.tolist()) == [0, 1, 2, 3]
    assert len(nested_dissection_order(np.empty(0, int), np.empty(0, int))) == 0


def test_nested_dissection_makes_the_factor_sparser_than_row_by_row_numbering():
    """What the order is for: fewer entries in SuperLU's factors of a hole's Laplacian."""
    import scipy.sparse
    import scipy.sparse.linalg

    from backend.prefill import nested_dissection_order

    yy, xx = np.mgrid[0:64, 0:64]
    ys, xs = np.nonzero((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 30**2)  # a disk, row by row

    def factor_entries(order: np.ndarray) -> int:
        index = -np.ones((64, 64), int)
        index[ys[order], xs[order]] = np.arange(len(order))
        rows, cols = [np.arange(len(ys))], [np.arange(len(ys))]
        values = [np.ones(len(ys))]
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            neighbour = index[ys[order] + dy, xs[order] + dx]
            rows.append(np.flatnonzero(neighbour >= 0))
            cols.append(neighbour[neighbour >= 0])
            values.append(np.full(len(rows[-1]), -0.25))
        system = scipy.sparse.csc_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), (len(ys), len(ys))
        )
        factors = scipy.sparse.linalg.splu(system, permc_spec="NATURAL", diag_pivot_thresh=0.0)
        return factors.L.nnz + factors.U.nnz

    row_by_row = factor_entries(np.arange(len(ys)))
    dissected = factor_entries(nested_dissection_order(ys, xs))
    assert dissected < 0.6 * row_by_row, (dissected, row_by_row)


def test_a_large_hole_stays_within_1e_3_of_the_double_precision_solve():
    """The single-precision factorisation against the same system solved in float64 (a 60 % hole)."""
    import scipy.sparse
    import scipy.sparse.linalg

    rng = np.random.default_rng(7)
    height, width = 192, 224
    yy, xx = np.mgrid[0:height, 0:width] / 60.0
    image = np.sin(3 * yy) * np.cos(2 * xx) + 0.2 * rng.standard_normal((height, width))
    known = np.ones((height, width), bool)
    known[20:170, 15:200] = False  # 150 x 185 of 192 x 224: ~65 %
    hole = ~known
    index = -np.ones((height, width), int)
    index[hole] = np.arange(hole.sum())
    rows, cols, values, rhs = [], [], [], np.zeros(hole.sum())
    for i, (y, x) in enumerate(zip(*np.nonzero(hole), strict=True)):
        rows.append(i), cols.append(i), values.append(1.0)
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            ny, nx = min(max(ny, 0), height - 1), min(max(nx, 0), width - 1)
            if hole[ny, nx]:
                rows.append(i), cols.append(index[ny, nx]), values.append(-0.25)
            else:
                rhs[i] += 0.25 * image[ny, nx]
    system = scipy.sparse.csc_matrix((values, (rows, cols)), shape=(hole.sum(), hole.sum()))
    exact = image.copy()
    exact[hole] = scipy.sparse.linalg.spsolve(system, rhs)
    filled = harmonic_fill_2d(image, known)
    error = np.abs(filled - exact)[hole].max()
    assert error < 1e-3, error


def test_known_pixels_come_back_bit_exact_and_a_linear_ramp_is_kept():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    ramp = (0.01 * yy - 0.005 * xx).expand(2, 3, 64, 80).contiguous()  # harmonic: its own exact fill
    known = torch.ones(2, 1, 64, 80)
    known[:, :, 20:44, 30:60] = 0
    known[1, :, 5:15, 5:15] = 0
    blanked = ramp * known + 7.0 * (1 - known)  # garbage in the hole must not matter
    filled = harmonic_fill(blanked, known)
    assert torch.equal(filled[known.expand_as(filled) > 0], ramp[known.expand_as(ramp) > 0])
    assert (filled - ramp).abs().max() < 1e-5  # the ramp spans 0.63 + 0.4


def test_an_image_without_known_pixels_fills_with_zeros():
    filled = harmonic_fill(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
    assert torch.equal(filled, torch.zeros_like(filled))


def test_a_harmonic_generator_with_zeroed_outputs_returns_its_prefill():
    torch.manual_seed(0)
    generator = Generator("harmonic")
    init_official(generator)
    zero_residual_outputs(generator)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:40, 8:56] = 1
    out = generator(image, mask)
    expected = harmonic_fill(image * (1 - mask), 1 - mask).clamp(-1, 1)
    assert torch.equal(out.refined, expected) and torch.equal(out.coarse, expected)
    # The paper's generator ("none") with the same weights does not: it paints the hole itself.
    generator.prefill = "none"
    assert not torch.allclose(generator(image, mask).refined, expected, atol=0.05)


def test_the_prefill_travels_with_the_weights_and_an_unknown_one_is_refused(tmp_path: Path):
    generator = Generator("harmonic")
    init_official(generator)
    path = tmp_path / "g.safetensors"
    save_generator(path, generator, ModelConfig(prefill="harmonic"))
    loaded, config = load_generator(path)
    assert config.prefill == "harmonic" and loaded.prefill == "harmonic"
    save_generator(path, generator, dataclasses.replace(config, prefill="telepathic"))
    with pytest.raises(HiFillError) as error:
        load_generator(path)
    assert error.value.kind == ErrorKind.NO_WEIGHTS and "telepathic" in error.value.message
    with pytest.raises(ValueError, match="unknown prefill"):
        Generator("telepathic")


def test_each_image_and_channel_of_a_batch_is_solved_with_its_own_mask_including_holes_at_edges():
    rng = np.random.default_rng(7)
    images = rng.standard_normal((2, 3, 24, 30))
    known = np.ones((2, 24, 30), bool)
    known[0, 0:9, 0:12] = False  # a corner hole: replicated edges
    known[1, 10:24, 5:9] = False  # touches the bottom edge
    known[1, 3:6, 20:30] = False  # touches the right edge
    filled = harmonic_fill(torch.from_numpy(images).float(), torch.from_numpy(known[:, None]).float())
    for b in range(2):
        for c in range(3):
            exact = exact_harmonic(images[b, c], known[b])
            assert np.abs(filled[b, c].double().numpy() - exact).max() < 1e-5


def test_a_harmonic_generator_corrects_only_inside_the_hole():
    torch.manual_seed(1)
    generator = Generator("harmonic")
    init_official(generator)
    with torch.no_grad():  # visible corrections in both stages
        for name in Generator.RESIDUAL_OUTPUTS:
            dict(generator.named_modules())[name].feature.bias.fill_(0.3)
    image = torch.rand(1, 3, 64, 64) * 1.6 - 0.8
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 10:30, 20:50] = 1
    out = generator(image, mask)
    outside = (1 - mask).expand_as(image) > 0
    assert torch.equal(out.coarse[outside], image[outside])
    assert torch.equal(out.refined[outside], image[outside])
    prefill = harmonic_fill(image * (1 - mask), 1 - mask)
    assert (out.refined - prefill)[~outside].abs().mean() > 0.1

"""The hole detail measure (lab.metrics.hole_detail) and the third-party baselines of the evaluation
(Resynthesizer's Heal Selection, PatchMatch), with the detail column of the evaluation's report."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab import evaluate as ev
from lab import metrics

# ------------------------------------------------------------------------------------------ hole detail


def slow_hole_detail(image: np.ndarray, mask: np.ndarray) -> float:
    """hole_detail written out: a direct 2-D Gaussian sum over a mirrored border, and loops for the
    eroded hole and the ring."""
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    height, width = grey.shape
    radius = 6  # 4 sigma
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets**2) / (2 * 1.5**2))
    weights /= weights.sum()
    padded = np.pad(grey, radius, mode="symmetric")  # scipy's "reflect": d c b a | a b c d
    high_pass = np.zeros_like(grey)
    for y in range(height):
        for x in range(width):
            window = padded[y : y + 2 * radius + 1, x : x + 2 * radius + 1]
            high_pass[y, x] = abs(grey[y, x] - np.sum(np.outer(weights, weights) * window))
    hole = mask > 127
    band = metrics.detail_ring_width(height, width)
    hole_points = np.argwhere(hole)
    inner, ring = [], []
    for y in range(height):
        for x in range(width):
            if hole[y, x]:
                near = [
                    hole[y + dy, x + dx]
                    for dy in range(-2, 3)
                    for dx in range(-2, 3)
                    if dy * dy + dx * dx <= 4 and 0 <= y + dy < height and 0 <= x + dx < width
                ]
                if all(near):
                    inner.append(high_pass[y, x])
            elif hole_points.size and (((hole_points - (y, x)) ** 2).sum(axis=1) <= band * band).any():
                ring.append(high_pass[y, x])
    if not inner or not ring:
        return math.nan
    return float(np.mean(inner) / np.mean(ring))


def _blob_mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(3):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        ry, rx = rng.integers(3, 9, size=2)
        mask[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1] = 255
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hole_detail_equals_the_written_out_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (30 + 4 * seed, 44 - 3 * seed)  # rings reach the border in some cases, holes too
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = _blob_mask(shape, seed)
    mask[2:5, 3:20] = 255  # a sliver: eroded away entirely
    expected = slow_hole_detail(image, mask)
    assert math.isfinite(expected)
    assert metrics.hole_detail(image, mask) == pytest.approx(expected, rel=1e-10)


def test_hole_detail_crops_to_the_hole_without_changing_the_value() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), np.uint8)
    mask[40:52, 60:75] = 255  # far from every border: the function works on a crop
    assert metrics.hole_detail(image, mask) == pytest.approx(slow_hole_detail(image, mask), rel=1e-10)


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(128, 30, (*shape, 3)), 0, 255).astype(np.uint8)


def test_a_flat_hole_in_a_textured_ring_has_no_detail() -> None:
    image = _texture((160, 160))
    mask = np.zeros((160, 160), np.uint8)
    mask[40:120, 50:110] = 255
    image[mask > 0] = 128
    assert 0 <= metrics.hole_detail(image, mask) < 0.01  # only the blur's tail reaches past 2 px


def test_the_same_texture_everywhere_gives_one() -> None:
    image = _texture((200, 200), seed=1)
    mask = np.zeros((200, 200), np.uint8)
    mask[60:140, 70:130] = 255
    assert metrics.hole_detail(image, mask) == pytest.approx(1.0, abs=0.03)


def test_hole_detail_ignores_contrast_and_brightness() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 128, (64, 64, 3)).astype(np.float64)
    mask = _blob_mask((64, 64), 7)
    base = metrics.hole_detail(image, mask)
    assert metrics.hole_detail(2.0 * image + 40.0, mask) == pytest.approx(base, rel=1e-12)
    grey = image @ np.array(metrics.GREY_WEIGHTS)
    assert metrics.hole_detail(grey, mask) == pytest.approx(base, rel=1e-12)  # (H, W) is grey already


def test_hole_detail_is_nan_without_an_eroded_hole_or_a_ring() -> None:
    image = _texture((40, 40))
    empty = np.zeros((40, 40), np.uint8)
    assert math.isnan(metrics.hole_detail(image, empty))
    line = empty.copy()
    line[:, 20] = 255  # nothing is left after a 2 px erosion
    assert math.isnan(metrics.hole_detail(image, line))
    assert math.isnan(metrics.hole_detail(image, np.full((40, 40), 255, np.uint8)))  # no ring
    flat = np.full((40, 40, 3), 90, np.uint8)
    hole = empty.copy()
    hole[10:30, 10:30] = 255
    assert math.isnan(metrics.hole_detail(flat, hole))  # a flat ring: no ratio
    with pytest.raises(ValueError, match="does not match"):
        metrics.hole_detail(image, np.zeros((40, 41), np.uint8))


def test_ring_width_scales_with_the_long_side() -> None:
    assert metrics.detail_ring_width(512, 512) == 16
    assert metrics.detail_ring_width(1080, 1920) == 60
    assert metrics.detail_ring_width(96, 128) == 8  # at least 8 px


# ------------------------------------------------------------------------------------------ baselines


def _small_case() -> ev.Case:
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:112, 0:128]
    smooth = np.stack([128 + 90 * np.sin(x / 7), 128 + 80 * np.cos(y / 5), 90 + 60 * np.sin((x + y) / 9)], -1)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    photo = ev.Photo("synthetic", pixels)
    return ev.make_case(photo, ev.SizeSpec("96", "square", 96), seed=2, hole_fraction=(0.1, 0.2))


BASELINES = [("resynth", "resynthesizer"), ("patchmatch", "patchmatch_cython")]
INSTALL = {"resynth": "resynthesizer==1.2", "patchmatch": "patchmatch-cython==0.2.1"}


@pytest.mark.parametrize(("name", "module"), BASELINES)
def test_baseline_fills_the_hole_deterministically(name: str, module: str) -> None:
    pytest.importorskip(module)
    case = _small_case()
    method = ev.build_methods([name], ev.MethodConfig())[name]
    blanked = ev.blank_hole(case.image, case.mask)
    hole = case.mask > 127
    output = method(blanked.copy(), case.mask.copy())
    assert output.shape == case.image.shape and output.dtype == np.uint8
    pasted = ev.paste_back(output, case.image, case.mask)
    np.testing.assert_array_equal(pasted[~hole], case.image[~hole])
    np.testing.assert_array_equal(method(blanked.copy(), case.mask.copy()), output)  # same fill again
    assert output[hole].mean() > 40  # filled from the surroundings, not left black
    assert np.abs(output[hole].astype(float) - case.image[hole]).mean() < 60
    assert getattr(method, "description", "")  # its settings appear in results.md
    result, _ = ev.run_case(case, name, method)
    assert math.isfinite(result.scores["l1_hole"]) and math.isfinite(result.scores["detail_hole"])


def test_heal_selection_samples_only_its_context_band() -> None:
    """Heal Selection's corpus is the 50 px band around the hole: colours beyond it never appear."""
    pytest.importorskip("resynthesizer")
    from lab.evaluation.methods import heal_selection_corpus

    image = np.zeros((150, 160, 3), np.uint8)
    image[:] = (255, 0, 0)  # far away: red
    mask = np.zeros((150, 160), np.uint8)
    mask[55:95, 60:100] = 255
    hole = mask > 0
    band = heal_selection_corpus(hole)
    assert band.sum() > 0 and not (band & hole).any()
    image[band] = (0, 0, 255)  # the context band: blue
    output = ev.build_methods(["resynth"], ev.MethodConfig())["resynth"](ev.blank_hole(image, mask), mask)
    assert (output[hole] == (0, 0, 255)).all()


@pytest.mark.parametrize(("name", "module"), BASELINES)
def test_a_missing_baseline_package_says_how_to_install_it(
    name: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ev.EvaluationError, match=f"pip install {INSTALL[name]}"):
        ev.build_methods([name], ev.MethodConfig())


def test_bench_and_evaluation_share_the_patchmatch_call() -> None:
    from lab.bench.peers import peer_function
    from lab.peer_fills import patchmatch_fill

    pytest.importorskip("patchmatch_cython")
    assert peer_function("patchmatch") is patchmatch_fill


# ------------------------------------------------------------------------------------------ the report


def test_report_has_a_ground_truth_detail_row_and_the_target_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(2):
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(
            _texture((90, 110), seed=index) // 2 + rng.integers(0, 60, (90, 110, 3), np.uint8)
        ).save(path)
        paths.append(path)
    methods = ev.build_methods(["mean", "telea"], ev.MethodConfig())
    report = ev.evaluate(paths, methods, ev.parse_sizes("64"), tmp_path / "out", progress=False)
    truth = {r.photo: r.scores["detail_truth"] for r in report.results}
    mean_rows = [r for r in report.results if r.method == "mean"]
    assert all(r.scores["detail_hole"] < 0.05 for r in mean_rows)  # one flat colour: no detail
    assert all(0.5 < value < 2 for value in truth.values())  # the photo's own texture
    row = next(line for line in report.markdown.splitlines() if line.startswith("| ground truth |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    header = next(line for line in report.markdown.splitlines() if line.startswith("| method |"))
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    detail = titles.index("detail ≈ truth")
    assert cells[1] == "2" and cells[detail].startswith(f"{np.mean(list(truth.values())):.2f} ±")
    assert all(cell == "–" for i, cell in enumerate(cells) if i not in (0, 1, detail))
    assert "within the target band (0.7x–1.3x" in report.markdown and "mean colour 0 of 2" in report.markdown
    with (tmp_path / "out" / "cases.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"detail_hole", "detail_truth"} <= set(rows[0])
    for r in rows:
        assert float(r["detail_truth"]) == pytest.approx(truth[r["photo"]], rel=1e-5)


# ------------------------------------------------------------------------------------ baseline cache


def test_a_cached_baseline_runs_once_per_input_and_gives_back_the_same_pixels(tmp_path: Path) -> None:
    from lab.evaluation.methods import MethodConfig, build_methods, cached_method

    calls = []

    def slow(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        calls.append(1)
        out = image.copy()
        out[mask > 127] = np.arange(3, dtype=np.uint8) + 7 * len(calls)
        return out

    slow.description = "a slow fake"
    method = cached_method(slow, "resynth", tmp_path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:9, 6:12] = 255
    first = method(image, mask)
    again = method(image.copy(), mask.copy())
    assert len(calls) == 1 and np.array_equal(first, again) and again.dtype == np.uint8
    other_mask = mask.copy()
    other_mask[0, 0] = 255
    method(image, other_mask)
    assert len(calls) == 2  # another hole is another case
    assert len(list((tmp_path / "resynth").glob("*.png"))) == 2
    assert not list((tmp_path / "resynth").glob("*.part.png"))
    assert "cached" in method.description and "a slow fake" in method.description
    # Only the slow deterministic baselines are cached: our own fill always runs.
    methods = build_methods(["mean", "ns"], MethodConfig(cache=tmp_path))
    assert not hasattr(methods["ns"], "description") or "cached" not in methods["ns"].description

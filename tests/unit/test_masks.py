"""Training/evaluation masks: shapes, hole fraction, determinism, the two families, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from lab.masks import KINDS, contact_sheet, mask_batch, random_mask, write_contact_sheet


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 160), (200, 72)])
def test_shape_dtype_and_binary_values(kind: str, height: int, width: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = random_mask(rng, height, width, kind)
        assert mask.shape == (height, width)
        assert mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hole_fraction", [(0.05, 0.35), (0.01, 0.03), (0.4, 0.6), (0.2, 0.201)])
def test_hole_fraction_lands_in_requested_range(kind: str, hole_fraction: tuple[float, float]) -> None:
    rng = np.random.default_rng(2)
    for _ in range(25):
        mask = random_mask(rng, 96, 128, kind, hole_fraction)
        fraction = np.count_nonzero(mask) / mask.size
        assert hole_fraction[0] <= fraction <= hole_fraction[1]


def test_hole_fractions_spread_over_the_range() -> None:
    rng = np.random.default_rng(3)
    fractions = [np.count_nonzero(random_mask(rng, 128, 128)) / 128**2 for _ in range(60)]
    assert min(fractions) < 0.12 and max(fractions) > 0.25


def test_degenerate_ranges_are_exact() -> None:
    rng = np.random.default_rng(4)
    assert not random_mask(rng, 32, 40, "object", (0.0, 0.0)).any()
    assert (random_mask(rng, 32, 40, "free_form", (1.0, 1.0)) == 255).all()


@pytest.mark.parametrize("kind", KINDS)
def test_same_generator_state_gives_same_mask(kind: str) -> None:
    first = [random_mask(np.random.default_rng(7), 128, 96, kind) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    rng = np.random.default_rng(7)
    a, b = random_mask(rng, 128, 96, kind), random_mask(rng, 128, 96, kind)
    assert not np.array_equal(a, b)  # the generator advances: consecutive masks differ


@pytest.mark.parametrize("kind", ["free_form", "object"])
def test_both_families_produce_non_empty_masks(kind: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        assert np.count_nonzero(random_mask(rng, 64, 64, kind)) >= 0.05 * 64 * 64


def test_object_masks_are_more_compact_than_free_form_strokes() -> None:
    """Objects are solid silhouettes; strokes are thin: a 7x7 erosion keeps more of an object mask."""

    def kept_after_erosion(kind: str) -> float:
        rng = np.random.default_rng(6)
        shares = []
        for _ in range(30):
            hole = random_mask(rng, 128, 128, kind) > 0
            shares.append(ndimage.binary_erosion(hole, np.ones((7, 7))).sum() / hole.sum())
        return float(np.mean(shares))

    assert kept_after_erosion("object") > kept_after_erosion("free_form") + 0.1


def test_mask_batch_matches_random_mask_sequence() -> None:
    batch = mask_batch(np.random.default_rng(8), 3, 48, 80, "mixed", (0.1, 0.3))
    assert batch.shape == (3, 1, 48, 80) and batch.dtype == np.float32
    assert set(np.unique(batch).tolist()) <= {0.0, 1.0}
    rng = np.random.default_rng(8)
    for index in range(3):
        expected = random_mask(rng, 48, 80, "mixed", (0.1, 0.3)) == 255
        np.testing.assert_array_equal(batch[index, 0], expected.astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "squares"}, "kind"),
        ({"hole_fraction": (0.5, 0.2)}, "hole_fraction"),
        ({"hole_fraction": (-0.1, 0.2)}, "hole_fraction"),
        ({"height": 4}, "8x8"),
        ({"height": 10, "width": 10, "hole_fraction": (0.211, 0.219)}, "no pixel count"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    arguments = {"height": 64, "width": 64, **kwargs}
    with pytest.raises(ValueError, match=message):
        random_mask(np.random.default_rng(0), **arguments)


def test_speed_is_fine_for_on_the_fly_training() -> None:
    """Target is < 5 ms at 256² and < 20 ms at 512²; the bound here is loose for a busy machine."""
    rng = np.random.default_rng(9)
    for size, bound_ms in ((256, 25.0), (512, 60.0)):
        start = time.perf_counter()
        for _ in range(20):
            random_mask(rng, size, size)
        assert (time.perf_counter() - start) / 20 * 1000 < bound_ms


def test_contact_sheet(tmp_path) -> None:
    sheet = contact_sheet(seed=1, rows_per_kind=1, columns=3, tile=64)
    assert sheet.mode == "RGB" and sheet.size == (3 * 68 + 4, 2 * (64 + 18 + 4) + 4)
    path = tmp_path / "masks.png"
    write_contact_sheet(str(path), seed=1)
    with Image.open(path) as written:
        assert written.size == contact_sheet(seed=1).size

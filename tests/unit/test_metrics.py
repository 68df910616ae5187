"""Metrics against hand-computed values, analytic SSIM cases and an explicit per-window loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.metrics import (
    MS_SSIM_WEIGHTS,
    gaussian_window,
    hole_l1,
    ms_ssim,
    psnr,
    ssim,
    ssim_map,
)

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def slow_ssim_terms(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and contrast-structure of every fully contained 11x11 window, one at a time."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    g = gaussian_window()
    weights = np.outer(g, g)
    rows, cols = a.shape[0] - 10, a.shape[1] - 10
    luminance, contrast_structure = np.empty((rows, cols)), np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            x, y = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mx, my = (weights * x).sum(), (weights * y).sum()
            vx, vy = (weights * (x - mx) ** 2).sum(), (weights * (y - my) ** 2).sum()
            cov = (weights * (x - mx) * (y - my)).sum()
            luminance[i, j] = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
            contrast_structure[i, j] = (2 * cov + C2) / (vx + vy + C2)
    return luminance, contrast_structure


def slow_ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    luminance, contrast_structure = slow_ssim_terms(a, b)
    return luminance * contrast_structure


def luminance_term(mean_a: float, mean_b: float) -> float:
    return (2 * mean_a * mean_b + C1) / (mean_a**2 + mean_b**2 + C1)


def test_gaussian_window_is_normalised_symmetric_and_peaked() -> None:
    g = gaussian_window()
    assert g.shape == (11,)
    assert g.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(g, g[::-1])
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_hole_l1_counts_only_hole_pixels_without_uint8_wraparound() -> None:
    target = np.full((6, 8, 3), 200, np.uint8)
    prediction = np.full((6, 8, 3), 100, np.uint8)  # off by 100 everywhere outside the hole
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:6] = 255
    prediction[1:3, 2:6] = 210  # off by 10 in the hole
    prediction[1, 2, 0] = 170  # one channel value off by 30
    expected = (10 * (2 * 4 * 3 - 1) + 30) / (2 * 4 * 3)
    assert hole_l1(prediction, target, mask) == pytest.approx(expected)
    assert hole_l1(target, prediction, mask > 0) == pytest.approx(expected)  # bool mask, symmetric


def test_psnr_known_values() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(10, 240, (16, 20, 3)).astype(np.uint8)
    shifted = target + 5  # MSE 25 everywhere
    assert psnr(shifted, target) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(target, target) == math.inf
    mask = np.zeros((16, 20), bool)
    mask[4:9, 3:11] = True
    changed = target.astype(np.int16)
    changed[mask] += 3  # MSE 9 in the hole, 0 outside
    whole_mse = 9 * mask.sum() / mask.size
    assert psnr(changed, target, mask) == pytest.approx(10 * math.log10(255**2 / 9))
    assert psnr(changed, target) == pytest.approx(10 * math.log10(255**2 / whole_mse))
    assert psnr(changed / 255, target / 255, mask, data_range=1.0) == pytest.approx(
        psnr(changed, target, mask)
    )


def test_ssim_of_identical_images_is_one() -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 33, 3)).astype(np.uint8)
    assert ssim(image, image) == pytest.approx(1.0)
    assert ms_ssim(np.tile(image, (6, 6, 1)), np.tile(image, (6, 6, 1))) == pytest.approx(1.0)


def test_ssim_of_constant_images_with_a_shift_is_the_luminance_formula() -> None:
    a = np.full((20, 24), 100.0)
    b = a + 40
    assert ssim(a, b) == pytest.approx(luminance_term(100, 140), rel=1e-12)


def test_ssim_of_a_shifted_texture_is_the_mean_luminance_term() -> None:
    """A constant shift keeps variance and covariance equal, so contrast-structure is exactly 1."""
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 200, (19, 23))
    b = a + 30
    means = np.array(
        [
            [
                (np.outer(gaussian_window(), gaussian_window()) * a[i : i + 11, j : j + 11]).sum()
                for j in range(13)
            ]
            for i in range(9)
        ]
    )
    expected = np.mean([luminance_term(m, m + 30) for m in means.ravel()])
    assert ssim(a, b) == pytest.approx(expected, rel=1e-10)


def test_ssim_map_matches_explicit_window_loop() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (17, 21, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    expected = np.mean([slow_ssim_map(a[..., c], b[..., c]) for c in range(3)], axis=0)
    fast = ssim_map(a, b)
    assert fast.shape == (7, 11)
    np.testing.assert_allclose(fast, expected, rtol=1e-9, atol=1e-12)
    assert ssim(a, b) == pytest.approx(expected.mean())


def test_ssim_over_the_hole_averages_windows_centred_in_it() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (20, 20)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    mask = np.zeros((20, 20), np.uint8)
    mask[7:12, 4:9] = 255
    explicit = slow_ssim_map(a, b)[2:7, 0:4]  # centres (7..11, 5..8): the hole minus the border strip
    assert ssim(a, b, mask) == pytest.approx(explicit.mean())
    assert ssim(a, b, np.full((20, 20), 255, np.uint8)) == pytest.approx(ssim(a, b))


def test_ssim_is_symmetric_bounded_and_falls_with_noise() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (48, 48)).astype(np.float64)
    scores = [ssim(image + rng.normal(0, sigma, image.shape), image) for sigma in (2, 10, 40)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    noisy = image + rng.normal(0, 10, image.shape)
    assert ssim(noisy, image) == pytest.approx(ssim(image, noisy))


def test_ms_ssim_of_shifted_constant_images_is_luminance_to_last_weight() -> None:
    a = np.full((176, 190, 3), 90.0)
    assert ms_ssim(a, a + 20) == pytest.approx(luminance_term(90, 110) ** MS_SSIM_WEIGHTS[-1], rel=1e-12)


def test_ms_ssim_two_scales_match_explicit_window_loops() -> None:
    """MS-SSIM = mean(cs at full scale)^w1 * (mean(l) * mean(cs) at half scale)^w2 per channel."""
    rng = np.random.default_rng(6)
    a = rng.uniform(0, 255, (27, 24, 2))
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
    weights = (0.4, 0.6)

    def halve(x: np.ndarray) -> np.ndarray:  # 2x2 mean, odd last row dropped
        x = x[:26]
        return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4

    per_channel = []
    for c in range(2):
        _, cs_full = slow_ssim_terms(a[..., c], b[..., c])
        l_half, cs_half = slow_ssim_terms(halve(a[..., c]), halve(b[..., c]))
        per_channel.append(cs_full.mean() ** 0.4 * (l_half.mean() * cs_half.mean()) ** 0.6)
    assert ms_ssim(a, b, weights=weights) == pytest.approx(np.mean(per_channel), rel=1e-10)


def test_ms_ssim_falls_with_noise() -> None:
    rng = np.random.default_rng(7)
    base = np.kron(rng.uniform(0, 255, (24, 24)), np.ones((8, 8)))  # blocky 192x192 texture
    scores = [ms_ssim(np.clip(base + rng.normal(0, s, base.shape), 0, 255), base) for s in (5, 20, 60)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hole_l1(np.zeros((4, 4)), np.zeros((4, 5)), np.ones((4, 4), bool)), "differ in shape"),
        (lambda: hole_l1(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), bool)), "no hole"),
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), np.ones((3, 4), bool)), "does not match"),
        (lambda: ssim(np.zeros((10, 30)), np.zeros((10, 30))), "at least 11"),
        (lambda: ms_ssim(np.zeros((100, 300)), np.zeros((100, 300))), "176"),
        (lambda: ssim(np.zeros((20, 20)), np.zeros((20, 20)), np.eye(20, dtype=bool) & False), "hole"),
    ],
)
def test_invalid_inputs_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_scipy_and_opencv_filtering_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optional OpenCV filter path is an accelerator only: scores match the scipy path."""
    import lab.metrics as module

    if module._cv2 is None:
        pytest.skip("OpenCV is not installed, so only the scipy path exists")
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (180, 190, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 15, a.shape), 0, 255)
    with_cv2 = (ssim_map(a, b), ms_ssim(a, b, weights=(0.5, 0.5)), ssim(a[..., 0], b[..., 0]))
    monkeypatch.setattr(module, "_cv2", None)
    with_scipy = (ssim_map(a, b), ms_ssim(a, b, weights=(0.5, 0.5)), ssim(a[..., 0], b[..., 0]))
    np.testing.assert_allclose(with_cv2[0], with_scipy[0], rtol=0, atol=1e-12)
    assert with_cv2[1] == pytest.approx(with_scipy[1], abs=1e-12)
    assert with_cv2[2] == pytest.approx(with_scipy[2], abs=1e-12)

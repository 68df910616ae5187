"""Image-quality metrics for inpainting evaluation: in-hole L1, PSNR, SSIM, MS-SSIM and hole detail.

All functions are pure and take images on the 0–255 scale, shaped (H, W) or (H, W, C), of any real
dtype (uint8 is widened first, so differences never wrap around). A `mask` is (H, W): bool, uint8
(hole where > 127) or float (hole where > 0.5). Colour metrics are averaged over channels.

SSIM follows Wang et al. 2004: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
population (not sample) statistics, and only windows lying fully inside the image ("valid"), as in
the authors' reference implementation. MS-SSIM follows Wang, Simoncelli & Bovik 2003: five scales
with the published weights, 2x2 average pooling between scales.

`hole_detail` needs no ground truth: it compares the fine texture inside the hole with that of the
hole's surroundings (1 = as much detail as the ring around the hole, 0 = a flat fill).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

try:  # optional: only speeds up the Gaussian filtering of SSIM
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the environment
    _cv2 = None

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DETAIL_SIGMA = 1.5  # Gaussian blur whose residual is hole_detail's high-pass
DETAIL_TRUNCATE = 4.0  # the blur's kernel reaches 4 sigma (scipy's default): radius 6 px
DETAIL_EROSION = 2  # hole pixels within this many px of a known pixel (the seam) are not counted
DETAIL_RING_AT_512, DETAIL_RING_MIN = 16, 8  # ring width: 16 px at a long side of 512, at least 8 px
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as Pillow's convert("L")


def hole_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool hole map of a bool / uint8 (> 127) / float (> 0.5) mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask > 127
    return mask > 0.5


def hole_l1(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over hole pixels (and all channels), 0–255 scale.

    prediction, target: (H, W) or (H, W, C); mask: (H, W). Raises ValueError for an empty hole.
    """
    a, b = _pair(prediction, target)
    hole = _hole_for(a, mask)
    return float(np.abs(a[hole] - b[hole]).mean())


def psnr(
    prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 255.0
) -> float:
    """Peak signal-to-noise ratio in dB, over the hole if a mask is given, else over the whole image.

    prediction, target: (H, W) or (H, W, C); mask: (H, W) or None. Identical pixels give +inf.
    """
    a, b = _pair(prediction, target)
    if mask is not None:
        hole = _hole_for(a, mask)
        a, b = a[hole], b[hole]
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian (size,) whose outer product is SSIM's 2-D window."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim_map(prediction: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-window SSIM, averaged over channels: (H - 10, W - 10) float64.

    Entry (i, j) belongs to the 11x11 window whose centre is pixel (i + 5, j + 5).
    """
    luminance, contrast_structure = _ssim_terms(*_pair(prediction, target), data_range)
    return _channel_mean(luminance * contrast_structure)


def ssim(
    prediction: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 255.0
) -> float:
    """Mean SSIM (Wang et al. 2004) over all valid windows, or over windows centred in the hole.

    prediction, target: (H, W) or (H, W, C) with H, W >= 11; mask: (H, W) or None.
    """
    values = ssim_map(prediction, target, data_range)
    if mask is None:
        return float(values.mean())
    radius = SSIM_WINDOW // 2
    hole = hole_mask(mask)[radius:-radius, radius:-radius]
    if hole.shape != values.shape:
        raise ValueError(f"mask shape {np.shape(mask)} does not match the image")
    if not hole.any():
        raise ValueError("the hole has no pixel at least 5 pixels away from the border")
    return float(values[hole].mean())


def ms_ssim(
    prediction: np.ndarray,
    target: np.ndarray,
    data_range: float = 255.0,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of whole images, averaged over channels.

    prediction, target: (H, W) or (H, W, C) with min(H, W) >= 11 * 2 ** (len(weights) - 1) (176 for
    the five standard scales). Negative contrast-structure means are clipped to 0.
    """
    a, b = _pair(prediction, target)
    smallest = SSIM_WINDOW * 2 ** (len(weights) - 1)
    if min(a.shape[:2]) < smallest:
        raise ValueError(f"MS-SSIM with {len(weights)} scales needs images of at least {smallest}px a side")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    result = np.ones(a.shape[2])
    for scale, weight in enumerate(weights):
        luminance, contrast_structure = _ssim_terms(a, b, data_range)
        cs = np.clip(contrast_structure.mean(axis=(0, 1)), 0.0, None)  # (C,)
        if scale == len(weights) - 1:
            result *= (np.clip(luminance.mean(axis=(0, 1)), 0.0, None) * cs) ** weight
        else:
            result *= cs**weight
            a, b = _halve(a), _halve(b)
    return float(result.mean())


def detail_ring_width(height: int, width: int) -> int:
    """Width in px of hole_detail's ring: 16 px at a long side of 512, scaled with it, at least 8."""
    return max(DETAIL_RING_MIN, round(DETAIL_RING_AT_512 * max(height, width) / 512))


def hole_detail(image: np.ndarray, mask: np.ndarray) -> float:
    """Fine texture inside the hole relative to its surroundings; needs no ground truth.

    image: (H, W, 3) or (H, W), 0–255; mask: (H, W) (see hole_mask). The high-pass is the grey image
    (BT.601 luma) minus its Gaussian blur (sigma 1.5, kernel radius 6, borders mirrored). Returns the
    mean |high-pass| over the hole eroded by 2 px (hole pixels more than 2 px, Euclidean, from every
    known pixel; the image border is no seam) divided by the same mean over the ring of known pixels
    within detail_ring_width(H, W) px (Euclidean) of the hole. ~0 for a flat fill, ~1 for a fill as
    textured as its surroundings, above 1 for noisier ones. nan when the eroded hole or the ring is
    empty, or the ring is perfectly flat.
    """
    grey = np.asarray(image, dtype=np.float64)
    if grey.ndim == 3:
        grey = grey[..., :3] @ np.asarray(GREY_WEIGHTS)
    hole = hole_mask(mask)
    if hole.shape != grey.shape:
        raise ValueError(f"mask shape {hole.shape} does not match image shape {grey.shape}")
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0:
        return math.nan
    band = detail_ring_width(*hole.shape)
    # Every pixel that counts, and every pixel its blur reads, lies within band + radius of the
    # hole's bounding box: cropping there gives the same numbers (mirroring only at image borders).
    margin = band + int(DETAIL_TRUNCATE * DETAIL_SIGMA + 0.5) + 1
    crop = (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
    )
    grey, hole = grey[crop], hole[crop]
    high_pass = np.abs(grey - ndimage.gaussian_filter(grey, DETAIL_SIGMA, truncate=DETAIL_TRUNCATE))
    inner = ndimage.distance_transform_edt(hole) > DETAIL_EROSION
    ring = ~hole & (ndimage.distance_transform_edt(~hole) <= band)
    if not inner.any() or not ring.any():
        return math.nan
    surroundings = float(high_pass[ring].mean())
    return float(high_pass[inner].mean()) / surroundings if surroundings > 0 else math.nan


def _pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(prediction, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"images must be (H, W) or (H, W, C), got shape {a.shape}")
    return a, b


def _hole_for(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hole = hole_mask(mask)
    if hole.shape != image.shape[:2]:
        raise ValueError(f"mask shape {hole.shape} does not match image shape {image.shape[:2]}")
    if not hole.any():
        raise ValueError("the mask has no hole pixels")
    return hole


def _ssim_terms(a: np.ndarray, b: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and contrast-structure maps over valid windows, per channel: (H - 10, W - 10[, C])."""
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = _local_mean(a), _local_mean(b)
    mu_ab = mu_a * mu_b
    mu_a2, mu_b2 = np.square(mu_a, out=mu_a), np.square(mu_b, out=mu_b)  # means are not needed again
    var_a = np.subtract(_local_mean(a * a), mu_a2)
    var_b = np.subtract(_local_mean(b * b), mu_b2)
    cov = np.subtract(_local_mean(a * b), mu_ab)
    # luminance = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), computed in place
    luminance = np.multiply(mu_ab, 2.0, out=mu_ab)
    luminance += c1
    luminance /= np.add(mu_a2, mu_b2, out=mu_a2) + c1
    # contrast-structure = (2 cov + C2) / (var_a + var_b + C2)
    contrast_structure = np.multiply(cov, 2.0, out=cov)
    contrast_structure += c2
    var_a += var_b
    var_a += c2
    contrast_structure /= var_a
    return luminance, contrast_structure


def _local_mean(image: np.ndarray) -> np.ndarray:
    """Gaussian-weighted mean of each fully contained 11x11 window (separable, along H and W only).

    image: (H, W) or (H, W, C) float64 -> (H - 10, W - 10[, C]). Uses OpenCV's separable filter when
    it is installed (about 5x faster than scipy; the same sums to ~1e-13), else scipy.ndimage.
    """
    window = gaussian_window()
    radius = SSIM_WINDOW // 2
    if _cv2 is not None and (image.ndim == 2 or image.shape[2] <= 4):
        filtered = _cv2.sepFilter2D(
            np.ascontiguousarray(image), _cv2.CV_64F, window, window, borderType=_cv2.BORDER_REFLECT
        )
        if image.ndim == 3 and filtered.ndim == 2:  # OpenCV drops a single channel axis
            filtered = filtered[..., None]
    else:
        filtered = ndimage.correlate1d(image, window, axis=0, mode="constant")
        filtered = ndimage.correlate1d(filtered, window, axis=1, mode="constant")
    return filtered[radius:-radius, radius:-radius]


def _channel_mean(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=2) if values.ndim == 3 else values


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (H, W, C), dropping an odd last row/column."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = image[:h, :w]
    return 0.25 * (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2])

"""Contextual Residual Aggregation at any size (sections 3.1-3.2), memory bounded by the hole's window.

For each hole (or group of nearby holes) a context window is chosen around it (backend.windows),
clamped to the image, and covered by an exact grid of gh x gw attention cells of ch x cw
full-resolution pixels (the grid keeps the window's aspect ratio; the window may reach a few pixels
past the image edge, which is read mirrored). The generator sees the window averaged down to
(16 gh) x (16 gw) -- about 512 x 512 -- and returns its fill plus attention scores over the
gh x gw cells. Then, Eq. 4:

    blurry    = bilinear_up(average_down(window))
    residual  = window - blurry                               (contextual residuals, background cells)
    R_j       = sum_i s_ji R_i   for every hole cell j         (residual aggregation)
    result    = bilinear_up(fill) + R   in the hole, blended with the soft mask

The window is streamed in bands of cell rows, so only uint8 views of the image exist for the whole
picture; float copies exist for one band at a time plus the aggregated residuals of hole cells.
Pixels with mask 0 are never written, so they come back bit-exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from backend.network import background_patches
from backend.texture import (
    ISOPHOTE_RADIUS,
    TextureConfig,
    continue_into_band,
    gaussian_blur,
    isophotes_beside,
    isophotes_chw,
    low_frequency_shift,
    match_context,
    mix_seam,
    seam_weights,
    transfer_pixels,
    upsample_box,
)
from backend.windows import CELL_DOWNSCALE, DEFAULT_MODEL_SIDE, Window, block_any, plan_windows

BAND_FLOATS = 16_000_000  # float32 values per streamed band (about 64 MB)

# run_generator(image (1,3,h,w) in [-1,1], hole mask (1,1,h,w) in {0,1}) -> (fill (1,3,h,w), scores (1,L,L))
GeneratorFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class FillCancelled(Exception):
    """Raised between bands when the caller's cancel check returns True."""


# ---------------------------------------------------------------------------------------------
# Pixel access and resampling
# ---------------------------------------------------------------------------------------------


def mirror_indices(start: int, length: int, limit: int) -> np.ndarray:
    """Indices start .. start+length-1 folded into [0, limit) by mirror reflection (edge pixel repeated)."""
    idx = np.arange(start, start + length)
    period = 2 * limit
    idx = np.mod(idx, period)
    return np.where(idx >= limit, period - 1 - idx, idx)


UNIT_SCALE = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.uint16): 1.0 / 65535.0}  # integer pixel -> [0, 1]


def to_unit_float(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8/uint16/float32 (..., C) -> float32 in [0, 1] (float input passes through).

    One pass on all of torch's threads (the integer-to-float cast happens in the copy); ``out``
    (float32, same shape) may receive the result. Values equal ``pixels.astype(np.float32) * (1 / max)``
    exactly (a float32 product, as numpy computes it).
    """
    scale = UNIT_SCALE.get(pixels.dtype)
    if scale is None:
        if out is None:
            return pixels.astype(np.float32, copy=False)
        out[...] = pixels
        return out
    target = torch.empty(pixels.shape) if out is None else torch.from_numpy(out)
    if pixels.flags.writeable:
        source = torch.from_numpy(pixels)
    else:  # pixels from a message are read-only; they are only read here
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            source = torch.from_numpy(pixels)
    target.copy_(source).mul_(float(np.float32(scale)))
    return target.numpy()


def _bilinear_taps(
    n_out: int, n_in: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half-pixel bilinear taps (i0, i1, weight of i1) for outputs start..stop-1 (as F.interpolate)."""
    pos = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = pos.clamp(min=0.0)
    i0 = pos.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (pos - i0).float()


def upsample_rows(
    low: torch.Tensor, out_hw: tuple[int, int], row0: int, row1: int, cols: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows row0..row1-1 of bilinear_up(low) to out_hw, equal to F.interpolate(..., 'bilinear').

    low: (C, h, w) -> (C, row1 - row0, out_w), or only the output columns ``cols`` (1-D long tensor)
    when given. Only the needed low-resolution rows are touched; every value is computed the same way
    whichever rows and columns are asked for.
    """
    _, h, w = low.shape
    y0, y1, wy = _bilinear_taps(out_hw[0], h, row0, row1)
    rows = low[:, y0] * (1 - wy)[None, :, None] + low[:, y1] * wy[None, :, None]
    x0, x1, wx = _bilinear_taps(out_hw[1], w, 0, out_hw[1])
    if cols is not None:
        x0, x1, wx = x0[cols], x1[cols], wx[cols]
    out = rows.index_select(2, x0).mul_(1 - wx)
    return out.add_(rows.index_select(2, x1).mul_(wx))


# ---------------------------------------------------------------------------------------------
# Filling one window
# ---------------------------------------------------------------------------------------------


class WindowReader:
    """Reads cell-row bands of a window from the (H, W, C) image and (H, W) mask, mirrored at edges."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, window: Window) -> None:
        self.image, self.mask, self.window = image, mask, window
        h, w = mask.shape
        self.rows = mirror_indices(window.top, window.height, h)
        self.cols = mirror_indices(window.left, window.width, w)
        self.cols_contiguous = bool(np.all(np.diff(self.cols) == 1))

    def _take(self, array: np.ndarray, r0: int, r1: int, cols: np.ndarray | None = None) -> np.ndarray:
        """Window rows r0..r1-1 (window columns ``cols``, default all) of ``array``; a view if possible."""
        rows = self.rows[r0:r1]
        contiguous = np.all(np.diff(rows) == 1)
        block = array[rows[0] : rows[-1] + 1] if contiguous else array[rows]
        if cols is not None:
            return block[:, self.cols[cols]]
        if self.cols_contiguous:
            return block[:, self.cols[0] : self.cols[-1] + 1]
        return block[:, self.cols]

    def colour(self, r0: int, r1: int, cols: np.ndarray | None = None) -> torch.Tensor:
        """Window rows r0..r1-1 (columns ``cols`` or all) as float32 (3, n, width) in [0, 1]."""
        block = self._take(self.image, r0, r1, cols)[..., :3].transpose(2, 0, 1)
        return torch.from_numpy(to_unit_float(block, np.empty(block.shape, np.float32)))

    def pixels_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(N, 3) colour of window pixels (ys, xs), mirrored at the image's edges (same dtype).

        np.take on the flattened image when it is contiguous: 3x faster than two-array indexing.
        """
        rows, cols = self.rows[ys], self.cols[xs]
        image = self.image
        if not image.flags.c_contiguous:
            return image[rows, cols, :3]
        height, width, channels = image.shape
        picked = np.take(image.reshape(height * width, channels), rows * width + cols, axis=0)
        return picked if channels == 3 else picked[:, :3]

    def hole(self, r0: int, r1: int) -> np.ndarray:
        """Mask rows r0..r1-1 > 0 as bool (n, width)."""
        return self._take(self.mask, r0, r1) > 0

    def band_rows(self) -> list[tuple[int, int, int]]:
        """(first cell row, first pixel row, last pixel row + 1) per band of whole cell rows."""
        w = self.window
        per_band = max(1, BAND_FLOATS // (3 * w.cell_h * w.width))
        return [
            (g, g * w.cell_h, min(g + per_band, w.grid_h) * w.cell_h) for g in range(0, w.grid_h, per_band)
        ]


def downsample_window(reader: WindowReader) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaging down-sample (Sec. 4.1) of the window: image (1, 3, h, w) in [0,1], hole (1, 1, h, w)."""
    w = reader.window
    low_h, low_w = w.low_res
    image_parts, hole_parts = [], []
    for _, r0, r1 in reader.band_rows():
        n_cells = (r1 - r0) // w.cell_h
        size = (n_cells * CELL_DOWNSCALE, low_w)
        image_parts.append(F.adaptive_avg_pool2d(reader.colour(r0, r1), size))
        hole = torch.from_numpy(reader.hole(r0, r1)).float()[None]
        hole_parts.append(F.adaptive_max_pool2d(hole, size))
    image = torch.cat(image_parts, 1)[None]
    hole = torch.cat(hole_parts, 1)[None]
    assert image.shape[2:] == (low_h, low_w)
    return image, hole


def aggregation_weights(scores: torch.Tensor, hole_low: torch.Tensor, window: Window) -> tuple:
    """Rows of the attention scores for hole cells, over valid background cells, renormalised (Eq. 2).

    scores: (L, L) query x source; hole_low: (1, 1, h, w). Returns (hole_cells (J,), source_cells (N,),
    weights (J, N)). A source cell has no hole pixel within one cell (the ACM's own background test);
    the official softmax leaves a little weight on masked cells, which is dropped here so that the
    aggregated residual keeps the contextual residuals' amplitude.
    """
    hole_cells = F.adaptive_max_pool2d(hole_low, (window.grid_h, window.grid_w)).flatten() > 0
    valid = background_patches(hole_low, window.grid_h, window.grid_w)[0] > 0
    hole_idx = torch.nonzero(hole_cells).flatten()
    source_idx = torch.nonzero(valid).flatten()
    weights = scores[hole_idx][:, source_idx].float()
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    return hole_idx, source_idx, weights


def _cell_columns(cells: torch.Tensor, cell_w: int) -> torch.Tensor:
    """Window pixel columns of the cells (grid columns) ``cells``, cell after cell: (len(cells) * cell_w,)."""
    return (cells[:, None] * cell_w + torch.arange(cell_w)).flatten()


def cell_residuals(
    reader: WindowReader, blurry_low: torch.Tensor, row: int, cells: torch.Tensor
) -> torch.Tensor:
    """Contextual residuals (window - bilinear_up(blurry)) of grid cells ``cells`` of cell row ``row``.

    Returns (len(cells), 3*ch*cw): one row per cell, channel-major inside the cell.
    Only those cells' pixels are read and resampled.
    """
    w = reader.window
    r0, r1 = row * w.cell_h, (row + 1) * w.cell_h
    cols = _cell_columns(cells, w.cell_w)
    residual = upsample_rows(blurry_low, (w.height, w.width), r0, r1, cols)  # (3, ch, n*cw)
    torch.sub(reader.colour(r0, r1, cols.numpy()), residual, out=residual)
    n = len(cells)
    return residual.view(3, w.cell_h, n, w.cell_w).permute(2, 0, 1, 3).reshape(n, -1)


def aggregate_residuals(
    reader: WindowReader,
    blurry_low: torch.Tensor,
    hole_idx: torch.Tensor,
    source_idx: torch.Tensor,
    weights: torch.Tensor,
    cancelled: Callable[[], bool],
) -> torch.Tensor:
    """Eq. 4: R_j = sum_i s_ji R_i for hole cells j over source cells i. Returns (J, 3*ch*cw).

    Residuals are formed for source cells only, a band of cell rows at a time (one matrix product per
    band, accumulated in band order).
    """
    w = reader.window
    aggregated = torch.zeros(len(hole_idx), 3 * w.cell_h * w.cell_w)
    if len(source_idx) == 0 or len(hole_idx) == 0:
        return aggregated
    source_rows = source_idx // w.grid_w
    for g0, r0, r1 in reader.band_rows():
        g1 = g0 + (r1 - r0) // w.cell_h
        in_band = (source_rows >= g0) & (source_rows < g1)
        if not bool(in_band.any()):
            continue
        if cancelled():
            raise FillCancelled
        cells = torch.cat(
            [
                cell_residuals(reader, blurry_low, g, source_idx[source_rows == g] % w.grid_w)
                for g in range(g0, g1)
                if bool((source_rows == g).any())
            ]
        )  # (source cells in band, 3*ch*cw), row-major cell order
        aggregated += weights[:, in_band] @ cells
    return aggregated


def compose_window(
    reader: WindowReader,
    fill_low: torch.Tensor,
    hole_idx: torch.Tensor,
    aggregated: torch.Tensor,
    region: np.ndarray,
    region_origin: tuple[int, int],
    cancelled: Callable[[], bool],
) -> None:
    """Write bilinear_up(fill) + aggregated residuals into ``region`` where the mask is > 0 (soft blend).

    Only hole pixels inside the real image are written; everything else in ``region`` is untouched.
    Every mask > 0 pixel of the window lies in a hole cell, so each cell row is composed only over
    the bounding box of its mask > 0 pixels.
    """
    w = reader.window
    oy, ox = region_origin
    hole_rows, hole_cols = hole_idx // w.grid_w, hole_idx % w.grid_w
    for g in torch.unique(hole_rows).tolist():
        if cancelled():
            raise FillCancelled
        sel = hole_rows == g
        cols = hole_cols[sel]
        # The cell row's hole cells, as image rows/columns, inside the image and the region.
        y0, y1 = max(w.top + g * w.cell_h, oy), min(w.top + (g + 1) * w.cell_h, oy + region.shape[0])
        x0 = max(w.left + int(cols.min()) * w.cell_w, ox)
        x1 = min(w.left + (int(cols.max()) + 1) * w.cell_w, ox + region.shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        inside = reader.mask[y0:y1, x0:x1] > 0
        ys, xs = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = y0 + int(ys[0]), y0 + int(ys[-1]) + 1, x0 + int(xs[0]), x0 + int(xs[-1]) + 1
        # Window coordinates of that box: rows wy0..wy1-1, columns wx0..wx1-1.
        wy0, wy1, wx0, wx1 = y0 - w.top, y1 - w.top, x0 - w.left, x1 - w.left
        filled = upsample_rows(fill_low, (w.height, w.width), wy0, wy1, torch.arange(wx0, wx1))
        for cell, residual in zip(cols.tolist(), aggregated[sel], strict=True):
            c0, c1 = max(cell * w.cell_w, wx0), min((cell + 1) * w.cell_w, wx1)
            if c0 >= c1:
                continue
            cell_pixels = residual.view(3, w.cell_h, w.cell_w)
            filled[:, :, c0 - wx0 : c1 - wx0] += cell_pixels[
                :, wy0 - g * w.cell_h : wy1 - g * w.cell_h, c0 - cell * w.cell_w : c1 - cell * w.cell_w
            ]
        _blend_box(filled, reader.mask[y0:y1, x0:x1], region[y0 - oy : y1 - oy, x0 - ox : x1 - ox])


TEXTURE_BAND_PIXELS = 1 << 20  # hole pixels composed at a time by compose_window_texture


def compose_window_texture(
    reader: WindowReader,
    base_low: torch.Tensor,
    source_low: torch.Tensor,
    sources: torch.Tensor,
    search_factor: int,
    region: np.ndarray,
    region_origin: tuple[int, int],
    cancelled: Callable[[], bool],
) -> None:
    """Write bilinear_up(base_low) + matched full-resolution detail where the mask is > 0 (soft blend).

    base_low: (3, h, w) the fill's low frequencies at the working size; source_low: (3, h, w) the
    image's below the detail split (the context gives what lies above it); sources: (h/f, w/f, 2)
    matches found at 1/search_factor of the working size (backend.texture.match_context). A hole
    pixel gets the context pixel at its match's offset plus base_low at the pixel minus source_low
    at its match (backend.texture.low_frequency_shift, at the search size): the fill's low
    frequencies, the context's detail. Bands of rows are composed one at a time.
    """
    w = reader.window
    out_hw = (w.height, w.width)
    scale = (w.cell_h * search_factor / CELL_DOWNSCALE, w.cell_w * search_factor / CELL_DOWNSCALE)
    oy, ox = region_origin
    y0, y1 = max(w.top, oy), min(w.top + w.height, oy + region.shape[0])
    x0, x1 = max(w.left, ox), min(w.left + w.width, ox + region.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    rows_per_band = max(1, TEXTURE_BAND_PIXELS // (x1 - x0))

    def colour_at(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(N, 3) float32 in [0, 1]; NumPy only (transfer_pixels calls it on two threads), the same values
        as to_unit_float."""
        pixels = reader.pixels_at(np.clip(ys, 0, w.height - 1), np.clip(xs, 0, w.width - 1))
        scale = UNIT_SCALE.get(pixels.dtype)
        return pixels.astype(np.float32) if scale is None else pixels.astype(np.float32) * np.float32(scale)

    def at_search_size(image: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(image[None], search_factor)[0] if search_factor > 1 else image

    base_search = at_search_size(base_low)
    source_search = base_search if source_low is base_low else at_search_size(source_low)
    shift = low_frequency_shift(base_search, sources, source_search)
    for band_top in range(y0, y1, rows_per_band):
        if cancelled():
            raise FillCancelled
        band_bottom = min(band_top + rows_per_band, y1)
        used = np.flatnonzero((reader.mask[band_top:band_bottom, x0:x1] > 0).any(0))
        if used.size == 0:
            continue
        # the band's own hole columns: a round hole's bands are narrower than its bounding box (8K 25 %
        # bench hole: 9.2 of 10.8 M pixels), and everything below is per pixel
        c0, c1 = x0 + int(used[0]), x0 + int(used[-1]) + 1
        alpha = reader.mask[band_top:band_bottom, c0:c1]
        ys_local, xs_local = np.nonzero(alpha > 0)
        ys, xs = ys_local + (band_top - w.top), xs_local + (c0 - w.left)
        columns = torch.arange(c0 - w.left, c1 - w.left)
        filled = upsample_rows(base_low, out_hw, band_top - w.top, band_bottom - w.top, columns)
        at = torch.from_numpy(ys_local * (c1 - c0) + xs_local)  # flat, in the band's (rows, columns)
        flat = filled.view(filled.shape[0], -1)  # index_select / index_copy_: ~2x faster than indexing
        fallback = flat.index_select(1, at).numpy()
        flat.index_copy_(
            1, at, torch.from_numpy(transfer_pixels(colour_at, sources, shift, scale, ys, xs, fallback))
        )
        target = region[band_top - oy : band_bottom - oy, c0 - ox : c1 - ox]
        _blend_box(filled, alpha, target)


SEAM_FULL_PIXELS = 4_000_000  # a box up to this many pixels (any long side 1920) gets a full-resolution seam
SEAM_SCALED_PIXELS = 1_000_000  # a larger one gets it at 1/2^k of the resolution, at most this many pixels
SEAM_CHUNK = 256  # full-resolution pixels per side of the chunks a scaled seam is applied in


def blend_seam(
    reader: WindowReader,
    region: np.ndarray,
    region_origin: tuple[int, int],
    share: float,
    reach: float,
    sigma: float = 0.0,
) -> None:
    """Mix a full-resolution Navier-Stokes seam into the window's composed fill near the hole's border.

    The band of hole pixels within SEAM_REACHES reaches of the border is inpainted from everything
    around it (the context outside, the composed fill inside: backend.texture.continue_into_band) and
    mixed in with backend.texture.seam_weights times the mask's alpha; pixels with mask 0 are never
    written. Only this window's part of the region is touched. A box of more than SEAM_FULL_PIXELS
    (large 4K and 8K holes) with a low-frequency seam (sigma > 0) gets it computed at 1/2^k of the
    resolution and applied in chunks that touch the band only (scaled_seam).
    """
    w = reader.window
    oy, ox = region_origin
    height, width = reader.mask.shape
    y0, y1 = max(w.top, oy, 0), min(w.top + w.height, oy + region.shape[0], height)
    x0, x1 = max(w.left, ox, 0), min(w.left + w.width, ox + region.shape[1], width)
    if y0 >= y1 or x0 >= x1:
        return
    scale, area = 1, (y1 - y0) * (x1 - x0)
    if sigma > 0 and area > SEAM_FULL_PIXELS:
        scale = 2
        while area > SEAM_SCALED_PIXELS * scale * scale:
            scale *= 2
    if scale > 1:
        scaled_seam(reader, region, region_origin, (y0, y1, x0, x1), scale, share, reach, sigma)
        return
    pad = ISOPHOTE_RADIUS + 1  # the known ring the inpainting reads around the box
    py0, py1, px0, px1 = max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)
    pixels, alpha = composed_box(reader, region, region_origin, (py0, py1, px0, px1))
    weights = seam_weights(alpha > 0, share, reach)
    inner = np.zeros_like(weights, dtype=bool)
    inner[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] = True
    weights[~inner] = 0.0
    if not weights.any():
        return
    continued = continue_into_band(pixels, weights > 0)
    box = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
    target = region[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    unit = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
    seam = torch.from_numpy(np.ascontiguousarray(continued[box]) / np.float32(unit))
    composed = torch.from_numpy(to_unit_float(np.ascontiguousarray(target[..., :3])))
    mixed = mix_seam(composed.permute(2, 0, 1), seam.permute(2, 0, 1), torch.from_numpy(weights[box]), sigma)
    _blend_box(mixed, (alpha[box] * (weights[box] > 0)).astype(alpha.dtype), target)


def composed_box(
    reader: WindowReader, region: np.ndarray, region_origin: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The image's RGB in box (top, bottom, left, right) with the region's composed fill pasted over
    it where they overlap (a copy), and the mask there (a view)."""
    top, bottom, left, right = box
    oy, ox = region_origin
    pixels = reader.image[top:bottom, left:right, :3].copy()
    ry0, rx0 = max(top, oy), max(left, ox)
    ry1, rx1 = min(bottom, oy + region.shape[0]), min(right, ox + region.shape[1])
    pixels[ry0 - top : ry1 - top, rx0 - left : rx1 - left] = region[
        ry0 - oy : ry1 - oy, rx0 - ox : rx1 - ox, :3
    ]
    return pixels, reader.mask[top:bottom, left:right]


def scaled_seam(
    reader: WindowReader,
    region: np.ndarray,
    region_origin: tuple[int, int],
    bounds: tuple[int, int, int, int],
    scale: int,
    share: float,
    reach: float,
    sigma: float,
) -> None:
    """blend_seam's low-frequency seam of a large box (y0, y1, x0, x1) at 1/scale of the resolution.

    The box (with the region's composed fill in it) and its mask are averaged down by ``scale``; the
    seam's change to the fill's low frequencies, share * (blur(seam) - blur(fill)), is found there
    (reach and sigma scaled alike) and added back bilinearly upsampled, chunk by chunk, only in
    chunks where it is non-zero and only where the mask is > 0.
    """
    y0, y1, x0, x1 = bounds
    oy, ox = region_origin
    height, width = reader.mask.shape
    pad = (ISOPHOTE_RADIUS + 1) * scale
    py0, px0 = max(0, y0 - pad), max(0, x0 - pad)  # whole low-resolution pixels: a last partial row or
    py1 = py0 + (min(height, y1 + pad) - py0) // scale * scale  # column at the image's edge gets no seam
    px1 = px0 + (min(width, x1 + pad) - px0) // scale * scale
    pixels, alpha = composed_box(reader, region, region_origin, (py0, py1, px0, px1))
    low = F.avg_pool2d(torch.from_numpy(to_unit_float(pixels)).permute(2, 0, 1)[None], scale)[0]  # (3, h, w)
    hole_low = block_any(alpha > 0, scale, scale)
    weights = seam_weights(hole_low, share, reach / scale)
    if not weights.any():
        return
    band = weights > 0
    # 8 bits at any depth: one colour pass of the inpainting; the low-frequency change is smooth
    low_u8 = low.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    continued = torch.from_numpy(continue_into_band(low_u8, band)).permute(2, 0, 1) / 255.0
    weights_low = torch.from_numpy(weights)
    change = mix_seam(low, continued, weights_low, sigma / scale) - low  # (3, h, w), 0 far from the band
    reach_low = int(math.ceil(3 * sigma / scale)) + 1  # the blur spreads the change this far
    near = F.max_pool2d(torch.from_numpy(band).float()[None, None], 2 * reach_low + 1, 1, reach_low)[0, 0] > 0
    for top in range(max(y0, py0), min(y1, py1), SEAM_CHUNK):
        bottom = min(top + SEAM_CHUNK, y1, py1)
        for left in range(max(x0, px0), min(x1, px1), SEAM_CHUNK):
            right = min(left + SEAM_CHUNK, x1, px1)
            ly0, ly1 = (top - py0) // scale, -(-(bottom - py0) // scale)
            lx0, lx1 = (left - px0) // scale, -(-(right - px0) // scale)
            if not bool(near[max(0, ly0 - 1) : ly1 + 1, max(0, lx0 - 1) : lx1 + 1].any()):
                continue
            chunk_alpha = alpha[top - py0 : bottom - py0, left - px0 : right - px0]
            if not chunk_alpha.any():
                continue
            target = region[top - oy : bottom - oy, left - ox : right - ox]
            composed = torch.from_numpy(to_unit_float(np.ascontiguousarray(target[..., :3]))).permute(2, 0, 1)
            up = upsample_box(change, scale, (top - py0, bottom - py0, left - px0, right - px0))
            _blend_box(composed + up, chunk_alpha, target)


def _blend_box(filled: torch.Tensor, alpha: np.ndarray, target: np.ndarray) -> None:
    """Soft-blend ``filled`` (3, h, w) in [0, 1] into ``target`` (h, w, C) where ``alpha`` (h, w) > 0.

    target = target + (fill - target) * alpha / 255, computed over the box and written only where
    alpha > 0; colour channels only (alpha, if any, is never touched).
    """
    rgb = target[..., :3]  # a view into region
    original = torch.from_numpy(to_unit_float(rgb))  # (h, w, 3)
    values = filled.permute(1, 2, 0)
    if target.dtype != np.float32:
        values = values.clamp(0.0, 1.0)
    a = torch.from_numpy(np.multiply(alpha, np.float32(1.0 / 255.0), dtype=np.float32))[..., None]
    blended = torch.sub(values, original).mul_(a).add_(original)
    if target.dtype == np.uint8:
        result = blended.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    elif target.dtype == np.uint16:
        result = blended.mul_(65535.0).round_().clamp_(0, 65535).to(torch.int32).numpy()
    else:
        result = blended.numpy().astype(target.dtype, copy=False)
    np.copyto(rgb, result, where=(alpha > 0)[..., None], casting="unsafe")


def fill_window(
    image: np.ndarray,
    mask: np.ndarray,
    window: Window,
    run_generator: GeneratorFn,
    region: np.ndarray,
    region_origin: tuple[int, int],
    cancelled: Callable[[], bool] = lambda: False,
    progress: Callable[[float, str], None] = lambda f, m: None,
    texture: TextureConfig | None = None,
) -> None:
    """The full CRA pipeline of Fig. 2 for one window; writes into ``region`` (a crop of the image copy).

    texture=None aggregates residuals with the generator's attention scores (Eq. 4, the paper's
    path); a TextureConfig copies full-resolution detail through a guided patch search instead
    (backend.texture).
    """
    reader = WindowReader(image, mask, window)
    progress(0.0, "Reading the context")
    low_image, hole_low = downsample_window(reader)  # (1,3,h,w) in [0,1], (1,1,h,w)
    if cancelled():
        raise FillCancelled
    progress(0.15, "Running the generator")
    isophotes = None
    if texture is not None and texture.isophote_share > 0:  # lines that meet the border, carried on
        isophotes = isophotes_beside(low_image[0], hole_low[0, 0] > 0, texture)
    fill, scores = run_generator(low_image * 2.0 - 1.0, hole_low)
    fill = (fill.float() + 1.0) * 0.5
    fill_low = (fill * hole_low + low_image * (1.0 - hole_low))[0]  # paste back at low resolution
    if cancelled():
        raise FillCancelled
    if texture is not None:
        progress(0.5, "Matching texture in the context")
        factor = texture.search_factor(fill_low.shape[1:])
        search_image = F.avg_pool2d(fill_low[None], factor)[0]  # (3, h/f, w/f); h, w are multiples of 16
        search_hole = F.max_pool2d(hole_low, factor)[0, 0] > 0
        sources = match_context(search_image, search_hole, texture)
        progress(0.8, "Composing the full-resolution fill")
        if isophotes is not None:
            continued_hwc, share_hw = isophotes.result()
            continued, share = isophotes_chw(continued_hwc), torch.from_numpy(share_hw)
            fill_low = fill_low * (1.0 - share) + continued * share
        base_low = gaussian_blur(fill_low, texture.base_sigma * factor)
        same_split = texture.split_sigma == texture.base_sigma  # the shipped setting: one blur
        source_low = base_low if same_split else gaussian_blur(fill_low, texture.split_sigma * factor)
        compose_window_texture(
            reader, base_low, source_low, sources, factor, region, region_origin, cancelled
        )
        if texture.seam_share > 0:
            blend_seam(
                reader, region, region_origin, texture.seam_share, texture.seam_reach, texture.seam_sigma
            )
        return
    progress(0.6, "Aggregating contextual residuals")
    hole_idx, source_idx, weights = aggregation_weights(scores[0].float(), hole_low, window)
    aggregated = aggregate_residuals(reader, low_image[0], hole_idx, source_idx, weights, cancelled)
    progress(0.8, "Composing the full-resolution fill")
    compose_window(reader, fill_low, hole_idx, aggregated, region, region_origin, cancelled)


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of mask > 0, or None for an empty mask."""
    rows = np.flatnonzero(np.any(mask > 0, axis=1)) if mask.size else np.empty(0)
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(np.any(mask[top:bottom] > 0, axis=0))
    return top, int(cols[0]), bottom, int(cols[-1]) + 1


def inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    run_generator: GeneratorFn,
    context_px: int | None = None,
    model_side: int = DEFAULT_MODEL_SIDE,
    cancelled: Callable[[], bool] = lambda: False,
    progress: Callable[[float, str], None] = lambda f, m: None,
    texture: TextureConfig | None = None,
) -> tuple[int, int, np.ndarray]:
    """Fill every hole of ``mask`` (H, W) uint8 in ``image`` (H, W, 3|4). Returns (top, left, region).

    region is a new array: image[top:bottom, left:right] with hole pixels filled; alpha untouched.
    """
    bounds = mask_bounds(mask)
    if bounds is None:
        return 0, 0, image[:0, :0].copy()
    top, left, bottom, right = bounds
    region = image[top:bottom, left:right].copy()
    windows = plan_windows(mask, context_px, model_side)
    for n, window in enumerate(windows):

        def window_progress(f: float, message: str, n: int = n) -> None:
            progress((n + f) / len(windows), message)

        fill_window(
            image, mask, window, run_generator, region, (top, left), cancelled, window_progress, texture
        )
    progress(1.0, "Done")
    return top, left, region

"""Texture from the context: a patch search guided by the generator's low frequencies.

The generator gets colour and structure right at its working size but paints little detail: alone
it is a smooth smear, and CRA's attention-weighted sums of residual cells (Eq. 4) paste mixed edge
fragments on top. This module replaces that sum with whole-offset copies chosen per pixel:

1. At the working size (the window averaged down, about 512²), every hole pixel gets a source pixel
   in the known context whose neighbourhood matches in two feature kinds: the *guide* (the image with
   the generator's fill, blurred by GUIDE_SIGMA: colour and structure) and the *detail* (the image
   minus that blur, grey). The search is PatchMatch (Barnes et al. 2009: propagation and random
   search) on all hole pixels at once, on PCA-compressed patch descriptors, coarse to fine over a
   pyramid (Wexler et al. 2007). At the coarsest level the first pass matches the guide alone (the
   hole has no detail yet) and the second also the detail copied by the first; finer levels start
   from the coarser matches and refine them with both.
2. At full resolution, result = bilinear_up(blur(fill)) + the full-resolution detail found at the
   matched offset (scaled to full resolution), blended over the four nearest working-size offsets
   with bilinear weights: inside a coherent region that is an exact copy of context texture; only
   at seams between regions are copies mixed. Before the blur, OpenCV's Navier-Stokes continuation
   of the hole (isophotes carried in from the border) is mixed into the fill near the border
   (share 0.8 falling e-fold per 24 working pixels): the generator at this training budget leaves
   lines that meet the border broken and colours off, and the mix lowers the in-hole L1 at 512²
   from 20.25 to 19.87 (24 validation photos) while a blind study could not tell it from the fill
   without it (54 % of 108 judgements for the latter; docs/study-2026-12-07).
3. A full-resolution seam (backend.cra.blend_seam): the band within 48 px of the border is
   inpainted by Navier-Stokes from the context outside and the composed fill inside, and the fill's
   frequencies below a 2-px blur move to the inpainting's with share exp(-d/12) (1 at the border):
   edges and colours meet the border, the copied detail stays. In-hole L1 at 512² 19.87 -> 19.55,
   at HD 19.44 -> 18.30 (Navier-Stokes 19.64 / 18.60), detail 0.70 -> 0.69 / 0.76 -> 0.76; a blind
   round could not tell it from the fill without it (51 of 108 judgements; docs/study-2026-12-07,
   round 6). A box of over 4 MP (large 4K and 8K holes) gets it at a lower resolution (scaled_seam).

Measured on 6 validation photos at 512² (AMD EPYC, session 6): hole detail 0.66 of the ring's
(truth 0.87; the attention path 0.04), in-hole L1 19.05 (attention 18.56). 7x7 descriptors, a
detail weight of 2 and several rounds per level make neighbouring matches agree (regular stripes
come out in phase: tests/unit/test_texture.py); 5x5 ones, fewer rounds or a weak detail weight gave
more detail energy but fragments; a guide sigma of 1-2 made matches prefer flat areas.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from backend.search_kernels import search_passes, transfer_taps

GUIDE_SIGMA = 4.0  # search pixels: the generator's fill is trusted below this frequency
PATCH_RADIUS = 3  # descriptors span (2r+1)² search pixels
DESCRIPTOR_DIMS = 16  # PCA components kept of each patch descriptor
REFINE_RADIUS = 8  # random search radius at levels that start from a coarser level's matches
DETAIL_WEIGHT = 2.0  # weight of the grey detail channel against the guide's RGB
ISOPHOTE_RADIUS = 3  # pixels of known neighbourhood OpenCV's inpainting weighs per hole pixel
SEAM_REACHES = 4.0  # the seam runs this many reaches into the hole (its share is < 2 % beyond)
GREY = (0.299, 0.587, 0.114)
# Why this path runs only the coarse stage of weights that start from a prefill (ModelConfig.prefill):
# their refine stage adds a correction to the coarse fill whose effect through this path is nil or
# unmeasurable, while its contextual attention over the 64² cells of a 512² window costs 0.33 s of
# the generator's 0.47 s on two cores (AMD EPYC, bf16). With the shipped 4,562-step weights the fills
# of all 36 committed removal cases are bit-identical with and without it. With the 10,044-step
# weights of the CPU run (refine adds 4/255 in the hole) the in-hole L1, PSNR and detail are the same
# on the 24 validation photos at 512² (19.48, 18.97/18.98, 0.68) but pixels differ (the search matches
# a changed guide: mean |difference| 2.5-21 levels on 6 removal cases), so weights with a live refine
# stage are to be judged both ways (refine_stage) before they ship. Weights without a prefill (the
# official checkpoint) paint the hole in the refine stage and always run it.


@dataclass(frozen=True)
class TextureConfig:
    """Knobs of the guided patch search (defaults measured on the validation photos)."""

    guide_sigma: float = GUIDE_SIGMA
    split_sigma: float = GUIDE_SIGMA  # the context gives its detail above this blur (search pixels)
    base_sigma: float = GUIDE_SIGMA  # the fill keeps what this blur keeps (0: all of it)
    isophote_share: float = 0.8  # share of Navier-Stokes continuation in the fill at the hole's border
    isophote_reach: float = 24.0  # working-size pixels over which that share falls by a factor e
    patch_radius: int = PATCH_RADIUS
    descriptor_dims: int = DESCRIPTOR_DIMS
    detail_weight: float = DETAIL_WEIGHT
    em_rounds: int = 4  # passes of search + copy at the coarsest level (the first: guide alone)
    search_iterations: int = 3  # PatchMatch iterations per pass
    levels: int = 3  # pyramid levels of the search (coarse to fine)
    fine_rounds: int = 2  # passes at each finer level
    seed: int = 0
    search_side: int = 1024  # the search runs at 1/f of the working size, f = min side // search_side
    seam_share: float = 1.0  # share of a full-resolution Navier-Stokes seam at the hole's border
    seam_reach: float = 12.0  # full-resolution pixels over which that share falls by a factor e
    seam_sigma: float = 2.0  # > 0: the seam moves only the fill's frequencies below this blur (full px)
    refine_stage: bool = False  # run the generator's refine stage for weights that start from a prefill
    # (why not by default: the note above TextureConfig)

    def search_factor(self, working_hw: tuple[int, int]) -> int:
        """How much smaller than the working size the search runs (1, 2 or 4: sizes stay whole)."""
        factor = max(1, min(working_hw) // self.search_side)
        return 4 if factor >= 4 else 2 if factor >= 2 else 1


def gaussian_blur(image_chw: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W), edges reflected (replicated when tiny); sigma 0: a copy."""
    if sigma <= 0:
        return image_chw.clone()
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = image_chw.shape[0]
    mode = "reflect" if min(image_chw.shape[1:]) > radius else "replicate"
    x = F.pad(image_chw[None], (radius, radius, radius, radius), mode=mode)
    x = x.contiguous(memory_format=torch.channels_last)  # the same sums, ~1.5x faster than planar here
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)
    return x[0].contiguous()


def grey(image_chw: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) luma (BT.601 weights)."""
    weights = torch.tensor(GREY, dtype=image_chw.dtype).view(3, 1, 1)
    return (image_chw * weights).sum(0, keepdim=True)


def valid_sources(hole_hw: torch.Tensor, reach: int) -> torch.Tensor:
    """(H, W) bool: pixels whose whole (2 reach + 1)² neighbourhood is known and inside the image."""
    grown = dilate(dilate(hole_hw, reach, 1), reach, 0)  # the square's: a row's, then a column's
    valid = ~grown
    valid[:reach] = False
    valid[-reach:] = False
    valid[:, :reach] = False
    valid[:, -reach:] = False
    return valid


def dilate(mask: torch.Tensor, reach: int, dim: int) -> torch.Tensor:
    """(H, W) bool: True where ``mask`` is True within ``reach`` pixels along ``dim`` (0 rows, 1 columns).

    ORs of shifted copies over spans that double (1, 2, 4, ... up to 2 reach + 1): a handful of byte
    operations, exact, ~10x faster than a max-pool over floats of the same window.
    """
    length = mask.shape[dim]
    # Pad with reach False on both sides, grow a window of ``span`` cells forward, then read it centred.
    padded = F.pad(mask[None].to(torch.uint8), (reach, reach) if dim == 1 else (0, 0, reach, reach))[0]
    padded = padded.bool()
    span, side = 1, 2 * reach + 1
    while span < side:
        step = min(span, side - span)  # grow [i, i + span) to [i, i + span + step)
        size = padded.shape[dim] - step
        padded = padded.narrow(dim, 0, size) | padded.narrow(dim, step, size)
        span += step
    return padded.narrow(dim, 0, length).clone()


def patch_offsets(radius: int, step: int) -> list[tuple[int, int]]:
    """Sample positions of a descriptor: a (2r/step + 1)² grid of (dy, dx), step apart."""
    span = range(-radius, radius + 1, step)
    return [(dy, dx) for dy in span for dx in span]


def gather_descriptors(
    features_chw: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, offsets: list[tuple[int, int]]
) -> torch.Tensor:
    """Patch descriptors at pixels (ys, xs): (N, len(offsets) * C), edges replicated."""
    channels, height, width = features_chw.shape
    steps = torch.tensor(offsets)  # (P, 2)
    rows = (ys[None] + steps[:, :1]).clamp_(0, height - 1)  # (P, N)
    cols = (xs[None] + steps[:, 1:]).clamp_(0, width - 1)
    gathered = features_chw.reshape(channels, -1).index_select(1, (rows * width + cols).flatten())  # (C, P*N)
    return gathered.view(channels, len(offsets), -1).permute(2, 1, 0).reshape(len(ys), -1)


def pca_basis(samples: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and the top ``dims`` principal directions (D, dims) of samples (N, D)."""
    mean = samples.mean(0)
    centred = samples - mean
    covariance = centred.T @ centred / max(1, samples.shape[0] - 1)
    _, vectors = torch.linalg.eigh(covariance)  # float32: ~20x faster than float64 here, ample for a basis
    return mean, vectors[:, -dims:].flip(1).contiguous()


@dataclass
class SearchSpace:
    """What the patch search needs about one working-size image.

    valid: (H, W) bool source pixels; hole_yx: (N, 2) long hole pixels; hole_index: (H, W) long, the
    row of each hole pixel in hole_yx, -1 elsewhere; sources: (H*W, K) projected descriptors (rows of
    invalid pixels are never read).
    """

    valid: torch.Tensor
    hole_yx: torch.Tensor
    hole_index: torch.Tensor
    sources: torch.Tensor


def patch_match(
    space: SearchSpace,
    targets: torch.Tensor,
    nnf: torch.Tensor,
    iterations: int,
    generator: torch.Generator,
    jumps: tuple[int, ...] = (4, 2, 1),
    max_radius: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PatchMatch of every hole pixel at once. targets: (N, K); nnf: (N, 2) start. Returns (nnf, cost).

    Each iteration tries, for every pixel, its neighbours' sources shifted back (propagation, at
    jumps of 4, 2 and 1 pixels so good matches spread fast) and random sources around its own at
    halving radii (random search); a candidate replaces the current source when it is valid and
    its descriptor is closer. The passes run compiled (backend.search_kernels); the random offsets
    come from ``generator``, one torch.randint per pass, as they always did.
    """
    height, width = space.valid.shape
    # For each jump and direction: the hole pixels with a hole neighbour there, and that neighbour's row.
    pixels, neighbours, shifts = [], [], []
    for jump in jumps:
        for direction in torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]]) * jump:
            neighbour = space.hole_yx + direction
            neighbour[:, 0].clamp_(0, height - 1)
            neighbour[:, 1].clamp_(0, width - 1)
            row = space.hole_index.view(-1).index_select(0, neighbour[:, 0] * width + neighbour[:, 1])
            has = torch.nonzero(row >= 0).flatten()
            pixels.append(has)
            neighbours.append(row.index_select(0, has))
            shifts.append(direction)
    bounds = torch.tensor([0] + [len(p) for p in pixels]).cumsum(0)
    # Random offsets at halving radii, drawn in the order the passes use them (one draw per pass).
    radii = []
    radius = max(height, width) if max_radius is None else max_radius
    while radius >= 1:
        radii.append(radius)
        radius //= 2
    # int32: the same values (|offset| <= the image side), half the memory of the draws' int64
    jitters = torch.empty((iterations, len(radii), len(nnf), 2), dtype=torch.int32)
    for iteration in range(iterations):
        for r, radius in enumerate(radii):
            jitters[iteration, r] = torch.randint(-radius, radius + 1, nnf.shape, generator=generator)
    nnf = nnf.clone().contiguous()
    cost = search_passes(
        nnf.numpy(),
        space.sources.contiguous().numpy(),
        (~space.valid).flatten().numpy(),
        targets.contiguous().numpy(),
        torch.cat(pixels).numpy(),
        torch.cat(neighbours).numpy(),
        bounds.numpy(),
        torch.stack(shifts).numpy(),
        jitters.numpy(),
        height,
        width,
    )
    return nnf, torch.from_numpy(cost)


def project_patches(
    features_chw: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    radius: int,
    box: tuple[int, int, int, int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """PCA coordinates of every pixel's dense (2r+1)² patch descriptor: (H*W, K), edges replicated.

    Equal to (gather_descriptors(features, every pixel, patch_offsets(radius, 1)) - mean) @ basis,
    computed as one convolution with the basis as filters. box (top, bottom, left, right) and out
    (H*W, K) together: recompute only the box's pixels and write them into out, in place (the rest
    of out is kept; a box without out is ignored). The box's values equal a full projection's to
    float rounding (the convolution runs on a crop; the fills measured were bit-identical).
    """
    channels, height, width = features_chw.shape
    side = 2 * radius + 1
    # Descriptor layout is offset-major, channel-minor: index = offset * C + channel.
    # Channels-last throughout, so that the result comes out row-major, (H*W, K) with K contiguous: the
    # search gathers whole rows of it ~340 times per fill (and the convolution is ~2x faster so).
    filters = basis.T.reshape(-1, side, side, channels).permute(0, 3, 1, 2)  # (K, C, s, s), channels last
    padded = F.pad(features_chw[None], (radius,) * 4, mode="replicate")
    if box is not None and out is not None:
        top, bottom, left, right = box
        padded = padded[:, :, top : bottom + 2 * radius, left : right + 2 * radius]
    projected = F.conv2d(padded.contiguous(memory_format=torch.channels_last), filters)  # (1, K, h, w)
    rows = projected.permute(0, 2, 3, 1).sub_(mean @ basis)  # (1, h, w, K)
    if box is None or out is None:
        return rows.reshape(-1, filters.shape[0])
    out.view(height, width, -1)[top:bottom, left:right] = rows[0]
    return out


def changed_box(hole_yx: torch.Tensor, reach: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels whose (2 reach + 1)² patch touches a hole pixel."""
    low, high = hole_yx.min(0).values - reach, hole_yx.max(0).values + reach + 1
    return (max(0, int(low[0])), min(hw[0], int(high[0])), max(0, int(low[1])), min(hw[1], int(high[1])))


def match_level(
    image_chw: torch.Tensor,
    hole_hw: torch.Tensor,
    config: TextureConfig,
    generator: torch.Generator,
    start: torch.Tensor | None,
    rounds: int,
) -> torch.Tensor:
    """One pyramid level of match_context: (H, W, 2) sources, -1 outside the hole.

    start: (H, W, 2) matches to begin from (an upsampled coarser level; invalid entries are drawn
    again), or None for random ones; the first round of a level without a start matches the guide
    alone, every other round also the detail copied so far.
    """
    height, width = hole_hw.shape
    result = torch.full((height, width, 2), -1, dtype=torch.long)
    reach = config.patch_radius
    valid = valid_sources(hole_hw, reach)
    hole_yx = torch.nonzero(hole_hw)
    if len(hole_yx) == 0 or not bool(valid.any()):
        return result
    guide = gaussian_blur(image_chw, config.guide_sigma)
    detail = grey(image_chw) - grey(guide)  # (1, H, W); the hole's own detail is the generator's
    offsets = patch_offsets(reach, 1)
    hole_index = torch.full((height, width), -1, dtype=torch.long)
    hole_flat = hole_yx[:, 0] * width + hole_yx[:, 1]
    hole_index.view(-1).index_copy_(0, hole_flat, torch.arange(len(hole_yx)))
    valid_yx = torch.nonzero(valid)
    drawn = torch.randint(len(valid_yx), (len(hole_yx),), generator=generator)
    random_start = valid_yx.index_select(0, drawn)
    if start is None:
        nnf = random_start
    else:
        nnf = start.view(-1, 2).index_select(0, hole_flat)
        usable = (nnf[:, 0] >= 0) & (nnf[:, 0] < height) & (nnf[:, 1] >= 0) & (nnf[:, 1] < width)
        usable[usable.clone()] = valid[nnf[usable, 0], nnf[usable, 1]]
        nnf = torch.where(usable[:, None], nnf, random_start)
        copy_detail(detail, hole_flat, nnf)
    basis_weight, projected = None, None
    box = changed_box(hole_yx, reach, (height, width))  # rounds change the detail in the hole only
    for round_index in range(rounds):
        detail_weight = 0.0 if (round_index == 0 and start is None) else config.detail_weight
        features = torch.cat([guide, detail * detail_weight])  # (4, H, W)
        if detail_weight != basis_weight:  # the basis changes with the detail weight only
            drawn = torch.randint(len(valid_yx), (min(2048, len(valid_yx)),), generator=generator)
            picks = valid_yx.index_select(0, drawn)
            sample = gather_descriptors(features, picks[:, 0], picks[:, 1], offsets)
            mean, basis = pca_basis(sample, min(config.descriptor_dims, sample.shape[1]))
            basis_weight, projected = detail_weight, None
        # (H*W, K); with the same basis as the last round, only the patches that touch the hole changed
        projected = project_patches(features, mean, basis, reach, box, projected)
        space = SearchSpace(valid, hole_yx, hole_index, projected)
        refining = start is not None  # from a coarser level: local search only
        nnf, _ = patch_match(
            space,
            projected.index_select(0, hole_flat),
            nnf,
            config.search_iterations,
            generator,
            jumps=(1,) if refining else (4, 2, 1),
            max_radius=REFINE_RADIUS if refining else None,
        )
        if round_index + 1 < rounds:
            detail = copy_detail(detail.clone(), hole_flat, nnf)
    result.view(-1, 2).index_copy_(0, hole_flat, nnf)
    return result


def copy_detail(detail_1hw: torch.Tensor, hole_flat: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Write each hole pixel's source's detail over it, in place: detail (1, H, W); hole_flat (N,) flat
    indices; sources (N, 2) (y, x). Returns detail."""
    flat = detail_1hw.view(-1)
    width = detail_1hw.shape[-1]
    flat.index_copy_(0, hole_flat, flat.index_select(0, sources[:, 0] * width + sources[:, 1]))
    return detail_1hw


def upsample_matches(matches_hw2: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Matches of a level twice as coarse, carried to out_hw: each pixel takes its parent's source,
    doubled, plus its own position inside the parent. -1 where the parent had none."""
    ys = (torch.arange(out_hw[0]) // 2).clamp(max=matches_hw2.shape[0] - 1)
    xs = (torch.arange(out_hw[1]) // 2).clamp(max=matches_hw2.shape[1] - 1)
    parent = matches_hw2.index_select(0, ys).index_select(1, xs)  # (H, W, 2)
    inside = torch.stack(
        torch.meshgrid(torch.arange(out_hw[0]) % 2, torch.arange(out_hw[1]) % 2, indexing="ij"), -1
    )
    return torch.where(parent >= 0, parent * 2 + inside, parent)


def match_context(
    image_chw: torch.Tensor, hole_hw: torch.Tensor, config: TextureConfig = TextureConfig()
) -> torch.Tensor:
    """Source of every hole pixel: (H, W, 2) long absolute (y, x), -1 outside the hole.

    image_chw: (3, H, W) in [0, 1], the search-size image with the generator's fill in the hole;
    hole_hw: (H, W) bool. Coarse to fine over config.levels halvings (while both sides stay >= 32):
    the coarsest level matches in config.em_rounds rounds, finer ones start from its upsampled
    matches and refine them in one round. A hole without any valid source keeps -1 everywhere.
    """
    generator = torch.Generator().manual_seed(config.seed)
    pyramid = [(image_chw, hole_hw)]
    while (
        len(pyramid) < config.levels
        and min(pyramid[-1][1].shape) >= 64
        and all(side % 2 == 0 for side in pyramid[-1][1].shape)
    ):
        image, hole = pyramid[-1]
        pyramid.append((F.avg_pool2d(image[None], 2)[0], F.max_pool2d(hole.float()[None, None], 2)[0, 0] > 0))
    matches = None
    for level, (image, hole) in enumerate(reversed(pyramid)):
        start = None if matches is None else upsample_matches(matches, hole.shape)
        rounds = config.em_rounds if level == 0 else config.fine_rounds
        matches = match_level(image, hole, config, generator, start, rounds)
    return matches


def low_frequency_shift(
    base_chw: torch.Tensor, sources_hw2: torch.Tensor, source_low_chw: torch.Tensor | None = None
) -> torch.Tensor:
    """base(q) - source_low(source of q) at every matched search pixel q, 0 elsewhere: (C, h, w).

    base_chw: (C, h, w) the fill's low frequencies at the search size; source_low_chw: the image's
    low frequencies below the detail split (None: base_chw itself). Adding the shift to a copied
    context pixel turns the source's low frequencies into the target's: copy + shift = base + the
    source's detail.
    """
    source_low = base_chw if source_low_chw is None else source_low_chw
    matched = sources_hw2[..., 0] >= 0
    ys, xs = sources_hw2[..., 0].clamp_min(0), sources_hw2[..., 1].clamp_min(0)
    return (base_chw - source_low[:, ys, xs]) * matched


def isophote_share_map(hole_hw: np.ndarray, share: float, reach: float) -> np.ndarray:
    """Per-pixel share of the isophote continuation: share * exp(-distance / reach) in the hole, 0 out.

    hole_hw: (H, W) bool -> (H, W) float32 (NumPy and SciPy only); distance: Euclidean, in pixels, to
    the nearest known pixel (1 at the border). Navier-Stokes continues the border's lines well a few
    pixels in and paints wedges and star shapes deep inside a big hole, where the generator's fill is
    the better guess.
    """
    distance = ndimage.distance_transform_edt(hole_hw)
    weights = share * np.exp(-distance / reach) * hole_hw
    return weights.astype(np.float32)


def isophote_pixels(image_chw: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8, the input of inpaint_isophotes."""
    pixels = (image_chw.permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.numpy())


def inpaint_isophotes(pixels_hwc: np.ndarray, hole_hw: np.ndarray) -> np.ndarray:
    """OpenCV's Navier-Stokes inpainting (Bertalmio et al. 2001) of the hole: (H, W, 3) uint8 and
    (H, W) bool -> (H, W, 3) uint8 (OpenCV's serial inpainting only, no torch: safe to run beside the
    generator, isophotes_beside).

    It carries the lines and edges that meet the hole's border on into it, which the generator at this
    training budget does not: mixed into its fill near the border (isophote_share_map) under the fill's
    blur, the in-hole L1 at 512² drops from 20.25 to 19.87 (docs/evaluation.md, session 7).
    """
    import cv2

    return cv2.inpaint(pixels_hwc, hole_hw.astype(np.uint8) * 255, ISOPHOTE_RADIUS, cv2.INPAINT_NS)


def isophotes_chw(pixels_hwc: np.ndarray) -> torch.Tensor:
    """inpaint_isophotes' (H, W, 3) uint8 -> (3, H, W) float in [0, 1] (a torch op: on the fill's thread)."""
    return torch.from_numpy(pixels_hwc).permute(2, 0, 1).float() / 255.0


_BESIDE: ThreadPoolExecutor | None = None
_BESIDE_LOCK = threading.Lock()


def beside_thread() -> ThreadPoolExecutor:
    """The fill's second thread (one worker, started once): jobs on it use NumPy, SciPy and OpenCV only."""
    global _BESIDE
    with _BESIDE_LOCK:
        if _BESIDE is None:
            _BESIDE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hifill-beside")
    return _BESIDE


def isophotes_beside(
    image_chw: torch.Tensor, hole_hw: torch.Tensor, texture: TextureConfig
) -> Future[tuple[np.ndarray, np.ndarray]]:
    """Start the Navier-Stokes continuation of the hole's border (inpaint_isophotes) and
    its share map on a thread of their own, while this one runs the generator. Returns their future:
    (H, W, 3) uint8 continuation and (H, W) float32 share, the same values as computed in line.

    The generator's first step, the harmonic prefill's sparse factorisation, runs on one core; both jobs
    need only the window and its mask, so they fit beside it (a 512² fill: 0.025 s of its ~0.3 s, on
    AMD EPYC, 2 cores). The thread runs OpenCV's serial inpainting and SciPy only, never torch: a
    second thread's torch parallel region gives OpenMP more threads than cores, after which libgomp
    stops spinning and every small torch operation costs 2-3x as much (measured: 0.29 s fills became
    0.39 s when run off the thread whose OpenMP team already existed).
    """
    pixels = isophote_pixels(image_chw)  # torch's part, here
    hole = hole_hw.numpy().copy()
    share, reach = texture.isophote_share, texture.isophote_reach
    return beside_thread().submit(
        lambda: (inpaint_isophotes(pixels, hole), isophote_share_map(hole, share, reach))
    )


def seam_weights(hole_hw: np.ndarray, share: float, reach: float) -> np.ndarray:
    """(H, W) float32: share * exp(-distance / reach) in the hole, out to SEAM_REACHES reaches; 0 else.

    hole_hw: (H, W) bool at full resolution; distance: Euclidean, to the nearest known pixel (1 at
    the border). SciPy's transform, not OpenCV's: OpenCV's runs on its own thread pool, after which
    torch's parallel regions ran ~10x slower in the same process (a 512² fill 4.9 s, not 0.3 s).
    """
    distance = ndimage.distance_transform_edt(hole_hw)
    weights = share * np.exp(-distance / reach)
    weights[~hole_hw | (distance > SEAM_REACHES * reach)] = 0.0
    return weights.astype(np.float32)


def continue_into_band(pixels_hwc: np.ndarray, band_hw: np.ndarray) -> np.ndarray:
    """OpenCV's Navier-Stokes inpainting of the band's pixels from all the others: (H, W, 3) float32.

    pixels_hwc: (H, W, 3) uint8, uint16 or float (0-1); band_hw: (H, W) bool. Values come back on the
    pixels' own scale (0-255, 0-65535 or 0-1); 8-bit pixels run as one colour image, others channel
    by channel in float32 (OpenCV's inpainting takes those as one-channel images only).
    """
    import cv2

    band = band_hw.astype(np.uint8) * 255
    if pixels_hwc.dtype == np.uint8:
        filled = cv2.inpaint(np.ascontiguousarray(pixels_hwc), band, ISOPHOTE_RADIUS, cv2.INPAINT_NS)
        return filled.astype(np.float32)
    channels = [
        cv2.inpaint(np.ascontiguousarray(plane, np.float32), band, ISOPHOTE_RADIUS, cv2.INPAINT_NS)
        for plane in np.moveaxis(pixels_hwc[..., :3], -1, 0)
    ]
    return np.stack(channels, -1)


def mix_seam(
    composed_chw: torch.Tensor, seam_chw: torch.Tensor, share_hw: torch.Tensor, sigma: float
) -> torch.Tensor:
    """composed + share * (seam - composed); with sigma > 0 only their frequencies below a Gaussian
    blur of that sigma mix (the composed fill's copied detail stays). (C, H, W) in, (C, H, W) out."""
    if sigma > 0:
        seam_chw, composed_low = gaussian_blur(seam_chw, sigma), gaussian_blur(composed_chw, sigma)
        return composed_chw + (seam_chw - composed_low) * share_hw
    return composed_chw + (seam_chw - composed_chw) * share_hw


def upsample_box(image_chw: torch.Tensor, scale: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The (top, bottom, left, right) box of image_chw bilinearly upsampled by ``scale`` (pixel centres
    aligned, edges replicated), computed from the low-resolution pixels around the box only."""
    top, bottom, left, right = box
    channels, height, width = image_chw.shape
    ys = (torch.arange(top, bottom, dtype=torch.float32) + 0.5) / scale - 0.5
    xs = (torch.arange(left, right, dtype=torch.float32) + 0.5) / scale - 0.5
    y_lo = ys.floor().clamp(0, height - 1).long()
    x_lo = xs.floor().clamp(0, width - 1).long()
    y_hi, x_hi = (y_lo + 1).clamp(max=height - 1), (x_lo + 1).clamp(max=width - 1)
    wy = (ys - ys.floor()).clamp(0, 1)[:, None]
    wx = (xs - xs.floor()).clamp(0, 1)[None, :]
    wy = torch.where((ys < 0)[:, None], torch.zeros_like(wy), wy)
    wx = torch.where((xs < 0)[None, :], torch.zeros_like(wx), wx)
    rows_lo, rows_hi = image_chw.index_select(1, y_lo), image_chw.index_select(1, y_hi)
    top_row = rows_lo.index_select(2, x_lo) * (1 - wx) + rows_lo.index_select(2, x_hi) * wx
    bottom_row = rows_hi.index_select(2, x_lo) * (1 - wx) + rows_hi.index_select(2, x_hi) * wx
    return top_row * (1 - wy) + bottom_row * wy


def bilinear_axis(positions: np.ndarray, scale: float, size: int, stride: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps along one axis for full-resolution ``positions`` (N,) int64, on a grid of ``size``
    cells of ``scale`` pixels (centres aligned, edges clamped): (lower tap * stride, upper tap * stride,
    weight of the upper tap), each (N,); float32 arithmetic.

    Computed once per position in the range the positions span and gathered: the same values as
    computed per pixel, at a fraction of the cost (a band's million pixels share a few thousand rows
    and columns).
    """
    if positions.size == 0:
        return positions, positions, np.zeros(0, np.float32)
    first = int(positions.min())
    span = np.arange(first, int(positions.max()) + 1, dtype=np.float32)
    cell = np.clip((span + np.float32(0.5)) / np.float32(scale) - np.float32(0.5), 0, size - 1)
    lower = np.floor(cell).astype(np.int64)
    weight = cell - lower.astype(np.float32)
    upper = np.minimum(lower + 1, size - 1)
    at = positions - first
    return (lower * stride).take(at), (upper * stride).take(at), weight.take(at)


TRANSFER_SPLIT_PIXELS = 1 << 17  # transfer_pixels splits more pixels than this between two threads


@dataclass(frozen=True)
class MatchTables:
    """Per search pixel, flat (h * w,): matched (float32 0/1), the match's offset scaled to full
    resolution (int64, 0 where unmatched) and both packed into one key; shift (C, h * w) float32."""

    height: int
    width: int
    scale_yx: tuple[float, float]
    matched: np.ndarray
    offset_y: np.ndarray
    offset_x: np.ndarray
    key: np.ndarray
    shift: np.ndarray


def match_tables(
    sources_hw2: torch.Tensor, shift_chw: torch.Tensor, scale_yx: tuple[float, float]
) -> MatchTables:
    """MatchTables of the search-size matches (h, w, 2) (-1: none) and their shift (C, h, w)."""
    h, w = sources_hw2.shape[:2]
    sources = sources_hw2.numpy()
    matched = (sources[..., 0] >= 0).reshape(-1)
    rows, cols = np.arange(h).reshape(h, 1), np.arange(w).reshape(1, w)
    offsets = []
    for axis, (step, scale) in enumerate(((rows, scale_yx[0]), (cols, scale_yx[1]))):
        scaled = np.round((sources[..., axis] - step).astype(np.float32) * np.float32(scale))
        offsets.append(scaled.astype(np.int64).reshape(-1) * matched)  # |offsets| < 2^31
    key = offsets[0] * (1 << 32) + offsets[1]
    shift = shift_chw.reshape(shift_chw.shape[0], -1).float().numpy()
    return MatchTables(h, w, scale_yx, matched.astype(np.float32), *offsets, key, shift)


def transfer_pixels(
    colour_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    sources_hw2: torch.Tensor,
    shift_chw: torch.Tensor,
    scale_yx: tuple[float, float],
    ys: np.ndarray,
    xs: np.ndarray,
    fallback: np.ndarray,
) -> np.ndarray:
    """Full-resolution fill at pixels (ys, xs) (N,) int64, copied through the search-size matches.

    sources_hw2: (h, w, 2) long absolute search-size sources (-1: none); shift_chw: (C, h, w)
    low_frequency_shift of the matches; scale_yx: full-resolution pixels per search pixel. The offset
    of each of the four search pixels around the full-resolution pixel (bilinear taps) is scaled up
    and used to read ``colour_at(ys, xs) -> (M, C) float32``; each read plus its tap's shift (so the copy
    keeps the fill's low frequencies and brings the source's detail) is blended with bilinear
    weights, taps without a match skipped, taps with the same offset read once. Pixels without any
    matched tap get ``fallback`` (C, N) float32. Returns (C, N) float32.

    NumPy only, so that more than TRANSFER_SPLIT_PIXELS pixels are split between this thread and a
    second one (both cores; see isophotes_beside for why that thread never runs torch): an 8K fill's
    8.3 M hole pixels in 0.9 s instead of 1.9 s with torch's two intra-op threads (AMD EPYC, 2 cores).
    """
    tables = match_tables(sources_hw2, shift_chw, scale_yx)
    out = np.empty_like(fallback)
    count = len(ys)
    if count <= TRANSFER_SPLIT_PIXELS:
        _transfer_part(tables, colour_at, ys, xs, fallback, out)
        return out
    half = count // 2
    parts = (ys[half:], xs[half:], fallback[:, half:], out[:, half:])
    second = beside_thread().submit(_transfer_part, tables, colour_at, *parts)
    _transfer_part(tables, colour_at, ys[:half], xs[:half], fallback[:, :half], out[:, :half])
    second.result()
    return out


def _transfer_part(
    t: MatchTables,
    colour_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ys: np.ndarray,
    xs: np.ndarray,
    fallback: np.ndarray,
    out: np.ndarray,
) -> None:
    """transfer_pixels for some pixels, written into ``out`` (C, N)."""
    y0, y1, wy = bilinear_axis(ys, t.scale_yx[0], t.height, t.width)
    x0, x1, wx = bilinear_axis(xs, t.scale_yx[1], t.width, 1)
    # bilinear weights (0 where unmatched), the taps' blended shifts, taps that share an offset merged
    taps, weights, total = transfer_taps(y0, y1, wy, x0, x1, wx, t.matched, t.key, t.shift)
    for tap, weight in zip(taps, weights, strict=True):
        read_at = np.flatnonzero(weight > 0)
        chosen = tap.take(read_at)
        read = colour_at(
            ys.take(read_at) + t.offset_y.take(chosen), xs.take(read_at) + t.offset_x.take(chosen)
        )
        weight_read = weight.take(read_at)
        for channel in range(total.shape[0]):
            total[channel, read_at] += read[:, channel] * weight_read
    weight_sum = weights[0] + weights[1] + weights[2] + weights[3]
    total /= np.maximum(weight_sum, np.float32(1e-6))
    np.copyto(out, np.where(weight_sum > 0, total, fallback))

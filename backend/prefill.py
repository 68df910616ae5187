"""A classical first guess for the hole: a smooth (approximately harmonic) fill from its boundary.

Our own CPU-trained generators (ModelConfig.prefill == "harmonic") start from this guess instead of
a blank hole and learn a correction on top of it (backend.network.Generator). It is not part of the
paper: official weights run without it. The fill solves Laplace's equation inside the hole with the
known pixels as boundary values, approximately, by a coarse-to-fine pass: a mask-weighted image
pyramid ("pull"), then from the coarsest level up, each level is seeded with the up-sampled coarser
solution ("push") and relaxed with a few Jacobi sweeps. A fixed amount of work per pixel, no data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PREFILL_KINDS = ("none", "harmonic")
SWEEPS_PER_LEVEL = 8


def _neighbour_mean(colour: torch.Tensor) -> torch.Tensor:
    """Mean of the 4 neighbours of every pixel, edges replicated. colour: (B, C, H, W)."""
    padded = F.pad(colour, (1, 1, 1, 1), mode="replicate")
    return 0.25 * (
        padded[:, :, :-2, 1:-1] + padded[:, :, 2:, 1:-1] + padded[:, :, 1:-1, :-2] + padded[:, :, 1:-1, 2:]
    )


def harmonic_fill(image: torch.Tensor, known: torch.Tensor, sweeps: int = SWEEPS_PER_LEVEL) -> torch.Tensor:
    """Fill where ``known`` is 0 smoothly from where it is 1; known pixels are returned unchanged.

    image: (B, C, H, W) float (hole contents ignored); known: (B, 1, H, W) in {0, 1}.
    Returns (B, C, H, W). An image with no known pixel comes back as zeros.
    """
    with torch.no_grad(), torch.autocast(image.device.type, enabled=False):
        image, known = image.float(), known.float()
        # Pull: level l holds (sum of known colour, fraction known) averaged over 2^l x 2^l blocks.
        levels = [(image * known, known)]
        while min(levels[-1][1].shape[2:]) > 2:
            weighted, fraction = levels[-1]
            pooled = (F.avg_pool2d(t, 2, ceil_mode=True) for t in (weighted, fraction))
            levels.append(tuple(pooled))
        weighted, fraction = levels[-1]
        colour = weighted / fraction.clamp_min(1e-6)
        # Push: blend each level's known colour with the coarser solution, then relax
        # colour = fraction * known colour + (1 - fraction) * mean of neighbours (Jacobi on Laplace).
        for weighted, fraction in reversed(levels[:-1]):
            coarser = F.interpolate(colour, size=weighted.shape[2:], mode="bilinear", align_corners=False)
            colour = weighted + (1.0 - fraction) * coarser
            for _ in range(sweeps):
                colour = weighted + (1.0 - fraction) * _neighbour_mean(colour)
        return torch.where(known > 0.5, image, colour)

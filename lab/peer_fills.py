"""Third-party fills that the bench (lab/bench/peers.py) and the evaluation (lab/evaluation/methods.py)
both run, so that both call them the same way. Imported lazily: they are dev extras."""

from __future__ import annotations

import numpy as np

PATCHMATCH_SEED = 0


def patchmatch_fill(image: np.ndarray, mask: np.ndarray, seed: int = PATCHMATCH_SEED) -> np.ndarray:
    """patchmatch-cython's multi-scale PatchMatch (inpaint_pyramid with its defaults: 5x5 patches,
    seam blending) under a fixed seed. image (H, W, 3) uint8, mask (H, W) uint8 255 = hole ->
    (H, W, 3) uint8. Raises ImportError without patchmatch-cython."""
    from patchmatch_cython import inpaint_pyramid

    return inpaint_pyramid(image, mask, seed=seed)

"""The harmonic prefill (backend.prefill) solved on the training device: batched conjugate gradients.

backend.prefill.harmonic_fill solves each image's sparse system on the CPU, one image at a time
(SuperLU or multigrid-preconditioned CG, ~33 ms per 256² crop): fine for serving and CPU training,
but a batch of 32 would cost a GPU ~1 s per step. This solves the same system -- every hole pixel
equals the mean of its 4 neighbours (image edges replicated), known pixels fixed -- matrix-free with
conjugate gradients, for all images and channels of a batch at once, on whatever device the batch
is on. The operator is symmetric positive definite, so CG converges; it stops when every system's
residual is below ``tolerance`` (max-abs, in [-1, 1] colour units) and matches the CPU solve to
~1e-4 (tests/unit/test_datapack.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours of every pixel, image edges replicated. x: (B, C, H, W)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


@torch.no_grad()
def harmonic_fill_cg(
    image: torch.Tensor,
    known: torch.Tensor,
    tolerance: float = 1e-6,
    max_iterations: int = 5000,
    check_every: int = 25,
) -> torch.Tensor:
    """Drop-in for backend.prefill.harmonic_fill on any device (float32 throughout).

    image: (B, C, H, W) (hole contents ignored); known: (B, 1, H, W) in {0, 1}. Known pixels come back
    unchanged, an image with no known pixel as zeros.
    """
    image = image.detach().float()
    hole = (known.detach() < 0.5).float().expand_as(image).contiguous()
    boundary = image * (1 - hole)
    b = 0.25 * _neighbour_sum(boundary) * hole  # known neighbours move to the right-hand side

    def operator(x: torch.Tensor) -> torch.Tensor:  # (I - S/4) restricted to the hole; x is 0 outside
        return (x - 0.25 * _neighbour_sum(x)) * hole

    # Start from the mean of the known pixels: most of the solution for a small hole.
    count = (1 - hole).sum((2, 3), keepdim=True)
    x = (boundary.sum((2, 3), keepdim=True) / count.clamp_min(1)) * hole
    r = b - operator(x)
    p = r.clone()
    rr = (r * r).sum((2, 3), keepdim=True)
    for iteration in range(max_iterations):
        if iteration % check_every == 0 and r.abs().amax() < tolerance:
            break
        ap = operator(p)
        alpha = rr / (p * ap).sum((2, 3), keepdim=True).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum((2, 3), keepdim=True)
        p = r + (rr_new / rr.clamp_min(1e-30)) * p
        rr = rr_new
    filled = boundary + x * hole
    return torch.where(count > 0, filled, torch.zeros_like(filled))

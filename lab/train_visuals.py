"""What a training run draws for a person to look at: the fixed batch's fills and the loss curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def sample_sheet(path: Path, real, hole, coarse, refined) -> None:
    """Rows: masked input | coarse | refined | pasted result | ground truth."""
    rows = []
    for i in range(real.shape[0]):
        masked = real[i] * (1 - hole[i]) + hole[i]
        pasted = refined[i] * hole[i] + real[i] * (1 - hole[i])
        rows.append(
            np.concatenate([to_uint8(t) for t in (masked, coarse[i], refined[i], pasted, real[i])], 1)
        )
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def plot_losses(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        return
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("in_hole_l1_coarse", "in_hole_l1_refined"):
        axes[0].plot(steps, [float(r[key]) * 127.5 for r in rows], label=key)
    axes[0].set_ylabel("in-hole L1 (0-255 scale)")
    axes[1].plot(steps, [float(r["critic"]) for r in rows], label="critic loss")
    axes[1].plot(steps, [float(r["adversarial"]) for r in rows], label="generator adversarial")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)

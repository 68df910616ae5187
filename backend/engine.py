"""The inpainting engine the server and the CLI share: weights + device + CRA, one call per fill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ProgressCallback = Callable[[float, str], None]  # (fraction in [0, 1], short human message)
CancelCheck = Callable[[], bool]  # True once the request was cancelled


@dataclass(frozen=True)
class FillOptions:
    """Per-request options. context_px: margin of context around each hole in image pixels (None = auto)."""

    context_px: int | None = None


@dataclass(frozen=True)
class FillResult:
    """The changed region: pixels[y:y+h, x:x+w] of the image, same dtype and channels as the input.

    Pixels inside the region but outside the mask are bit-exact copies of the input. An empty mask
    gives a 0x0 region.
    """

    x: int
    y: int
    pixels: np.ndarray  # (h, w, C), dtype of the input image
    warnings: tuple[str, ...] = ()  # sentences for the user, e.g. an out-of-memory fallback that was taken

    def applied_to(self, image: np.ndarray) -> np.ndarray:
        """A copy of the whole (H, W, C) image with this region written into it."""
        out = image.copy()
        height, width = self.pixels.shape[:2]
        out[self.y : self.y + height, self.x : self.x + width] = self.pixels
        return out


class InpaintEngine:
    """Owns the generator on one device. fill() raises shared_protocol.HiFillError on bad input/cancel."""

    def describe(self) -> dict:
        """{'device': 'cpu'|'cuda:0', 'model': name, 'weights': path, 'precision': 'bf16'|'fp32'|...}."""
        raise NotImplementedError

    def fill(
        self,
        image: np.ndarray,  # (H, W, 3|4) uint8 | uint16 | float32, RGB or RGBA
        mask: np.ndarray,  # (H, W) uint8, 255 = fill, 0 = keep, in between = soft
        options: FillOptions = FillOptions(),
        progress: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
    ) -> FillResult:
        raise NotImplementedError

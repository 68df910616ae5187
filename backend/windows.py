"""Where the fill looks: the context windows of a mask (section 3.2's context, our window rule).

Each hole (or group of nearby holes) gets a window around it, clamped to the image, covered by an exact
grid of gh x gw attention cells of ch x cw full-resolution pixels (the grid keeps the window's aspect
ratio; the window may reach a few pixels past the image edge, which backend.cra reads mirrored). The
generator sees the window averaged down to (16 gh) x (16 gw), about its working size squared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# The context rule's constants live with the plug-ins' copy of it (shared_protocol.regions, stdlib only):
# AUTO_CONTEXT_FACTOR x the hole's longer side is the auto margin, auto context never looks at less than
# MIN_WINDOW_SIDE (clamped to the image), holes are found on BLOCK_PX blocks.
from shared_protocol.regions import AUTO_CONTEXT_FACTOR, BLOCK_PX, MIN_WINDOW_SIDE

CELL_DOWNSCALE = 16  # generator pixels per attention cell side (32 cells over 512 px)
DEFAULT_MODEL_SIDE = 512  # the generator's working size: about model_side^2 pixels


@dataclass(frozen=True)
class Window:
    """A context window on an exact cell grid. Rows top .. top + grid_h*cell_h (may pass the image edge)."""

    top: int
    left: int
    grid_h: int
    grid_w: int
    cell_h: int
    cell_w: int

    @property
    def height(self) -> int:
        return self.grid_h * self.cell_h

    @property
    def width(self) -> int:
        return self.grid_w * self.cell_w

    @property
    def low_res(self) -> tuple[int, int]:
        """Generator input size (height, width)."""
        return self.grid_h * CELL_DOWNSCALE, self.grid_w * CELL_DOWNSCALE


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def block_any(mask: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """(H, W) bool, H and W multiples of the block -> (H / block_h, W / block_w): any True per block.

    Rows first, then columns: 6-10x faster than any(axis=(1, 3)) of the 4-D view on 8K masks."""
    rows = mask.reshape(mask.shape[0] // block_h, block_h, -1).any(axis=1)
    return rows.reshape(rows.shape[0], -1, block_w).any(axis=2)


def hole_boxes(mask: np.ndarray, block: int = BLOCK_PX) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, bottom, right) of connected holes (mask > 0), found on a block grid."""
    h, w = mask.shape
    gh, gw = -(-h // block), -(-w // block)
    occupied = np.zeros((gh, gw), dtype=bool)
    for y in range(0, h, block * 64):  # bounded temporaries: 64 block rows at a time
        rows = mask[y : y + block * 64] > 0
        n = rows.shape[0]
        padded = np.zeros((-(-n // block) * block, gw * block), dtype=bool)
        padded[:n, :w] = rows
        first = y // block
        occupied[first : first + padded.shape[0] // block] = block_any(padded, block, block)
    labels, _ = ndimage.label(occupied, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        y0, y1 = sl[0].start * block, min(sl[0].stop * block, h)
        x0, x1 = sl[1].start * block, min(sl[1].stop * block, w)
        sub = mask[y0:y1, x0:x1] > 0  # tighten to the exact pixels
        ys, xs = np.any(sub, axis=1), np.any(sub, axis=0)
        boxes.append(
            (
                y0 + int(ys.argmax()),
                x0 + int(xs.argmax()),
                y1 - int(ys[::-1].argmax()),
                x1 - int(xs[::-1].argmax()),
            )
        )
    return boxes


def context_rect(
    box: tuple[int, int, int, int], image_hw: tuple[int, int], context_px: int | None
) -> tuple[int, int, int, int]:
    """The hole's box grown by its context margin, clamped to the image.

    Auto margin: 0.6 x the hole's longer side (the hole then covers roughly a quarter of the window,
    as in training), and at least MIN_WINDOW_SIDE across where the image allows.
    """
    top, left, bottom, right = box
    h, w = image_hw
    margin = (
        context_px if context_px is not None else round(AUTO_CONTEXT_FACTOR * max(bottom - top, right - left))
    )
    top, left, bottom, right = top - margin, left - margin, bottom + margin, right + margin
    if context_px is None:
        top, bottom = _at_least(top, bottom, MIN_WINDOW_SIDE)
        left, right = _at_least(left, right, MIN_WINDOW_SIDE)
    (top, bottom), (left, right) = _clamp_span(top, bottom, h), _clamp_span(left, right, w)
    return top, left, bottom, right


def _at_least(lo: int, hi: int, side: int) -> tuple[int, int]:
    grow = max(0, side - (hi - lo))
    return lo - grow // 2, hi + grow - grow // 2


def _clamp_span(lo: int, hi: int, limit: int) -> tuple[int, int]:
    """Shift a span into [0, limit) keeping its length where possible, then clip."""
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    return max(lo, 0), hi


def merge_rects(rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Union overlapping (top, left, bottom, right) rectangles until none overlap."""
    rects = list(rects)
    merged = True
    while merged:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    rects[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return rects


def grid_for(rect: tuple[int, int, int, int], image_hw: tuple[int, int], model_side: int) -> Window:
    """Cover a rectangle with an attention grid of ~ (model_side/16)^2 cells keeping its aspect ratio."""
    top, left, bottom, right = rect
    h, w = bottom - top, right - left
    cells = (model_side / CELL_DOWNSCALE) ** 2
    gh = max(2, min(round(math.sqrt(cells * h / w)), -(-h // CELL_DOWNSCALE)))
    gw = max(2, min(round(math.sqrt(cells * w / h)), -(-w // CELL_DOWNSCALE), 4 * round(math.sqrt(cells))))
    gh = max(2, min(gh, 4 * round(math.sqrt(cells))))
    ch, cw = -(-h // gh), -(-w // gw)
    # Centre the padded window on the rectangle, then keep it inside the image where it fits.
    win_top = _fit(top - (gh * ch - h) // 2, gh * ch, image_hw[0])
    win_left = _fit(left - (gw * cw - w) // 2, gw * cw, image_hw[1])
    return Window(win_top, win_left, gh, gw, ch, cw)


def _fit(start: int, length: int, limit: int) -> int:
    if length >= limit:
        return -((length - limit) // 2)
    return min(max(start, 0), limit - length)


def plan_windows(
    mask: np.ndarray, context_px: int | None = None, model_side: int = DEFAULT_MODEL_SIDE
) -> list[Window]:
    """One window per group of holes whose context rectangles overlap."""
    image_hw = mask.shape
    rects = [context_rect(box, image_hw, context_px) for box in hole_boxes(mask)]
    return [grid_for(rect, image_hw, model_side) for rect in merge_rects(rects)]

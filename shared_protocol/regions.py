"""Which layer pixels a plug-in sends for a selection, so that the backend fills exactly as it would
with the whole layer. Standard library only: imported inside GIMP and Krita, and by backend/cra.py,
which takes its context-window constants from here.

Coordinates are the layer's own pixel grid (origin top-left, x right, y down); the "request" is the
rectangle of layer pixels sent to the backend.

The backend's context rule (backend/cra.py): it finds holes on a BLOCK_PX grid, grows every hole's box
by a margin (the user's context_px, or on auto AUTO_CONTEXT_FACTOR x the box's longer side with a
window at least MIN_WINDOW_SIDE across), pads the window to whole attention cells (less than
GRID_PAD_PX more) and shifts it inward where it meets the image's edge. `request_rect` sends the
selection's box grown by twice (margin + padding) plus a block, with its origin on the layer's block
grid, clamped to the layer: every window the backend opens then lies inside what it receives, at the
same place as on the whole layer (tests/test_regions.py checks this against backend.windows.plan_windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUTO_CONTEXT_FACTOR = 0.6  # auto margin around a hole: this x the hole's longer side
MIN_WINDOW_SIDE = 384  # an auto context window is at least this many pixels across (image allowing)
BLOCK_PX = 8  # the backend finds holes on a grid of blocks this size
GRID_PAD_PX = 128  # the backend pads a window by less than this to whole attention cells
MAX_CONTEXT_PX = 8192  # the largest context_px a plug-in offers


class RegionTooLarge(ValueError):
    """The selection alone is larger than the backend accepts."""


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle; width or height 0 means empty."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"negative rectangle size {self.width}x{self.height}")

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    @property
    def area(self) -> int:
        return self.width * self.height

    def intersected(self, other: Rect) -> Rect:
        """The common part of both rectangles (empty, at this one's origin, when they do not overlap)."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(self.x, self.y, 0, 0)
        return Rect(left, top, right - left, bottom - top)

    def expanded(self, margin: int) -> Rect:
        """This rectangle grown by `margin` (>= 0) pixels on every side."""
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        return Rect(self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin)

    def translated(self, dx: int, dy: int) -> Rect:
        """This rectangle moved by (dx, dy)."""
        return Rect(self.x + dx, self.y + dy, self.width, self.height)

    def relative_to(self, origin: Rect) -> Rect:
        """This rectangle in the coordinates whose (0, 0) is `origin`'s top-left corner."""
        return self.translated(-origin.x, -origin.y)

    def contains(self, other: Rect) -> bool:
        """True when `other` lies entirely inside this rectangle."""
        inside_x = self.x <= other.x and other.right <= self.right
        return inside_x and self.y <= other.y and other.bottom <= self.bottom


def hole_margin_bound(selection: Rect, context_px: int | None) -> int:
    """The largest margin the backend puts around any hole inside `selection` (None = auto context)."""
    if context_px is not None:
        return context_px
    longer = max(selection.width, selection.height)
    return max(math.ceil(AUTO_CONTEXT_FACTOR * longer), MIN_WINDOW_SIDE // 2)


def request_margin(selection: Rect, context_px: int | None) -> int:
    """Pixels of surroundings sent on each side of the selection's box (before clamping to the layer)."""
    return 2 * (hole_margin_bound(selection, context_px) + GRID_PAD_PX) + BLOCK_PX


def request_rect(
    selection: Rect, layer_size: tuple[int, int], context_px: int | None, max_pixels: int | None = None
) -> Rect:
    """The layer pixels to send for a fill of `selection` (the selection's bounding box in layer
    coordinates, non-empty, inside the layer): the box plus request_margin on every side, its origin
    on the block grid, clamped to the layer of `layer_size` (width, height).

    context_px: the user's context margin, 0..MAX_CONTEXT_PX, or None for the backend's automatic rule.
    max_pixels: the backend's limit on width x height. A request above it shrinks to the largest
    margin that fits (the backend's windows may then differ from the whole layer's); RegionTooLarge
    when even the bare selection is larger. Other invalid arguments raise ValueError.
    """
    layer = Rect(0, 0, layer_size[0], layer_size[1])
    if selection.is_empty or not layer.contains(selection):
        raise ValueError(f"the selection {selection} must be non-empty and inside the layer {layer}")
    if context_px is not None and not 0 <= context_px <= MAX_CONTEXT_PX:
        raise ValueError(f"context must be between 0 and {MAX_CONTEXT_PX} pixels, got {context_px}")
    grown = selection.expanded(request_margin(selection, context_px))
    left = max(0, grown.x - grown.x % BLOCK_PX)
    top = max(0, grown.y - grown.y % BLOCK_PX)
    request = Rect(left, top, grown.right - left, grown.bottom - top).intersected(layer)
    if max_pixels is None or request.area <= max_pixels:
        return request
    if selection.area > max_pixels:
        raise RegionTooLarge(
            f"the selection ({selection.width}x{selection.height} px) is larger than the backend accepts"
            f" ({max_pixels:,} px); select a smaller area"
        )
    # The area grows monotonically with the margin: binary-search the largest margin that fits.
    low, high = 0, request_margin(selection, context_px)
    while low < high:
        middle = (low + high + 1) // 2
        if selection.expanded(middle).intersected(layer).area <= max_pixels:
            low = middle
        else:
            high = middle - 1
    return selection.expanded(low).intersected(layer)


def place_result(request: Rect, x: int, y: int, width: int, height: int) -> Rect:
    """The backend's region (x, y relative to the request) in layer coordinates; ValueError when it
    does not lie inside the request."""
    placed = Rect(request.x + x, request.y + y, width, height)
    if not placed.is_empty and not request.contains(placed):
        raise ValueError(f"the backend returned a region outside the request: {placed} not in {request}")
    return placed


def mask_is_empty(mask: bytes) -> bool:
    """True when no pixel of a one-byte-per-pixel selection mask is selected."""
    return not mask.strip(b"\x00")

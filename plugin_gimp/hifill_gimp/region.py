"""Which pixels the GIMP plug-in reads and where the backend's answer goes (pure integer maths).

Coordinates: "image" = GIMP canvas coordinates (the selection lives there); "layer" = the active
drawable's own pixel grid (image coordinates minus `drawable.get_offsets()`); "request" = the
rectangle of layer pixels sent to the backend (its (0, 0) is the request's top-left corner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Context: the backend (backend/cra.py) finds hole boxes on an 8-px block grid, grows every box by a
# margin (the user's context_px, or on auto 0.6 x the box's longer side with a window of at least
# 384 px), pads the window to whole attention cells (less than 128 px) and shifts it inward where it
# meets an image edge. The plug-in sends the selection's box grown by twice (margin + padding) plus a
# block, with its origin on the layer's 8-px grid, clamped to the layer: every window the backend opens
# then lies inside what it receives, exactly as if it had the whole layer (tests/test_plugin_gimp.py
# checks this against backend.cra.plan_windows).
BACKEND_AUTO_FACTOR = 0.6
BACKEND_MIN_WINDOW_SIDE = 384
BACKEND_GRID_PAD_PX = 128
BACKEND_BLOCK_PX = 8
MAX_CONTEXT_PX = 8192

# bytes.translate table: any selected amount (1..255) becomes 255 = "fill". GIMP applies the soft
# selection itself when the result is merged (merge_shadow), so the backend fills every pixel the
# selection touches and the feather is applied exactly once.
_HARDEN = bytes([0] + [255] * 255)


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle; width or height 0 means empty."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    @property
    def area(self) -> int:
        return 0 if self.is_empty else self.width * self.height

    def intersect(self, other: Rect) -> Rect:
        """The overlap of two rectangles (empty, at this rectangle's origin, if they do not overlap)."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(self.x, self.y, 0, 0)
        return Rect(left, top, right - left, bottom - top)

    def expand(self, margin: int) -> Rect:
        """This rectangle grown by `margin` pixels on every side."""
        return Rect(self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin)

    def translate(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)


def selection_in_layer(
    bounds: tuple[int, int, int, int], layer_offsets: tuple[int, int], layer_size: tuple[int, int]
) -> Rect:
    """The selection's bounding box (x1, y1, x2, y2 in image coordinates, as `Gimp.Selection.bounds`
    gives it) in layer coordinates, clipped to the layer; empty when they do not overlap."""
    x1, y1, x2, y2 = bounds
    offset_x, offset_y = layer_offsets
    box = Rect(x1 - offset_x, y1 - offset_y, x2 - x1, y2 - y1)
    return box.intersect(Rect(0, 0, layer_size[0], layer_size[1]))


def backend_margin(selection: Rect, context_px: int | None) -> int:
    """The largest margin the backend puts around any hole inside `selection`."""
    if context_px is not None:
        return context_px
    longer = max(selection.width, selection.height)
    return max(math.ceil(BACKEND_AUTO_FACTOR * longer), BACKEND_MIN_WINDOW_SIDE // 2)


def request_margin(selection: Rect, context_px: int | None) -> int:
    """Pixels of context the plug-in sends around the selection box (before clamping to the layer)."""
    return 2 * (backend_margin(selection, context_px) + BACKEND_GRID_PAD_PX) + BACKEND_BLOCK_PX


def request_rect(selection: Rect, layer_size: tuple[int, int], context_px: int | None) -> Rect:
    """The layer pixels to send: the selection box (layer coordinates) plus request_margin on each side,
    clamped to the layer. context_px: the user's context (None = auto)."""
    if selection.is_empty:
        raise ValueError("the selection box is empty")
    if context_px is not None and not 0 <= context_px <= MAX_CONTEXT_PX:
        raise ValueError(f"context must be between 0 and {MAX_CONTEXT_PX} pixels, got {context_px}")
    grown = selection.expand(request_margin(selection, context_px))
    left = max(0, grown.x - grown.x % BACKEND_BLOCK_PX)
    top = max(0, grown.y - grown.y % BACKEND_BLOCK_PX)
    aligned = Rect(left, top, grown.right - left, grown.bottom - top)
    return aligned.intersect(Rect(0, 0, layer_size[0], layer_size[1]))


def context_option(context_px: int) -> int | None:
    """The dialog's context value (0 = auto) as the protocol's context_px (None = auto)."""
    return None if context_px <= 0 else context_px


def harden_mask(mask: bytes) -> bytes:
    """Selection coverage (0..255 per pixel) as the mask sent to the backend: 255 wherever selected."""
    return mask.translate(_HARDEN)


def mask_is_empty(mask: bytes) -> bool:
    """True when no pixel is selected."""
    return not mask.strip(b"\x00")


def result_in_layer(result_x: int, result_y: int, width: int, height: int, request: Rect) -> Rect:
    """The backend's region (relative to the request) in layer coordinates; must lie inside the request."""
    placed = Rect(request.x + result_x, request.y + result_y, width, height)
    if placed.intersect(request) != placed and not placed.is_empty:
        raise ValueError(f"the backend returned a region outside the request: {placed} not in {request}")
    return placed


def layer_to_image(rect: Rect, layer_offsets: tuple[int, int]) -> Rect:
    """A layer-coordinate rectangle in image coordinates (for placing a new layer)."""
    return rect.translate(layer_offsets[0], layer_offsets[1])

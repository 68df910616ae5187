"""Rectangle maths for one fill: which part of the layer is sent to the backend.

Coordinates are Krita image coordinates (pixels, origin top-left, x right, y down). Everything here
is pure Python so it can be tested outside Krita.
"""

from __future__ import annotations

from dataclasses import dataclass

# Automatic context follows the backend's own rule (backend/cra.py, context_rect): a margin of 0.6 x
# the selection's longer side, and at least AUTO_MIN_WINDOW_SIDE across, shifted inward at the canvas
# edges. The plug-in sends that window plus WINDOW_SLACK_PX, because the backend measures holes on
# 8-pixel blocks; it then picks its window inside what it received.
AUTO_CONTEXT_FACTOR = 0.6
AUTO_MIN_WINDOW_SIDE = 384
WINDOW_SLACK_PX = 16


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
    def area(self) -> int:
        return self.width * self.height

    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    def intersected(self, other: Rect) -> Rect:
        """The common part of both rectangles (empty, at self's origin, when they do not overlap)."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= left or bottom <= top:
            return Rect(self.x, self.y, 0, 0)
        return Rect(left, top, right - left, bottom - top)

    def expanded(self, margin: int) -> Rect:
        """The rectangle grown by margin pixels on every side."""
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        return Rect(self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin)

    def contains(self, other: Rect) -> bool:
        inside_x = self.x <= other.x and other.right <= self.right
        return inside_x and self.y <= other.y and other.bottom <= self.bottom

    def relative_to(self, origin: Rect) -> Rect:
        """This rectangle in the coordinate system whose (0, 0) is origin's top-left corner."""
        return Rect(self.x - origin.x, self.y - origin.y, self.width, self.height)


def auto_context_margin(selection: Rect) -> int:
    """Context margin on each side when the user leaves the context size on automatic."""
    return round(AUTO_CONTEXT_FACTOR * max(selection.width, selection.height))


def _span_at_least(start: int, length: int, side: int) -> tuple[int, int]:
    grow = max(0, side - length)
    return start - grow // 2, length + grow


def _shift_inside(start: int, length: int, limit_start: int, limit_length: int) -> tuple[int, int]:
    """Move a span into [limit_start, limit_start + limit_length) keeping its length where possible."""
    start = min(start, limit_start + limit_length - length)
    start = max(start, limit_start)
    return start, min(length, limit_start + limit_length - start)


class RegionTooLarge(ValueError):
    """The selection alone is larger than the backend accepts."""


def fill_window(
    selection: Rect,
    canvas: Rect,
    context_px: int | None = None,
    max_pixels: int | None = None,
) -> Rect:
    """The rectangle of layer pixels to send: selection + context (+ slack), shifted into the canvas
    where it would stick out (keeping its size, as the backend does with its own window).

    selection: bounding box of the selected pixels, already clipped to the canvas and non-empty.
    context_px: margin of surroundings on each side; None = automatic (the backend's rule).
    max_pixels: the backend's limit on width*height; the margin shrinks until the window fits.
    Raises RegionTooLarge when even the bare selection exceeds max_pixels.
    """
    if selection.is_empty() or not canvas.contains(selection):
        raise ValueError(f"selection {selection} must be non-empty and inside the canvas {canvas}")
    if context_px is not None and context_px < 0:
        raise ValueError(f"context_px must be >= 0 or None, got {context_px}")
    margin = (auto_context_margin(selection) if context_px is None else context_px) + WINDOW_SLACK_PX
    grown = selection.expanded(margin)
    x, width, y, height = grown.x, grown.width, grown.y, grown.height
    if context_px is None:
        x, width = _span_at_least(x, width, AUTO_MIN_WINDOW_SIDE + 2 * WINDOW_SLACK_PX)
        y, height = _span_at_least(y, height, AUTO_MIN_WINDOW_SIDE + 2 * WINDOW_SLACK_PX)
    x, width = _shift_inside(x, width, canvas.x, canvas.width)
    y, height = _shift_inside(y, height, canvas.y, canvas.height)
    window = Rect(x, y, width, height)
    margin = max(
        selection.x - x, selection.y - y, window.right - selection.right, window.bottom - selection.bottom
    )
    if max_pixels is None or window.area <= max_pixels:
        return window
    if selection.area > max_pixels:
        raise RegionTooLarge(
            f"the selection ({selection.width}x{selection.height} px) is larger than the backend accepts"
            f" ({max_pixels:,} px); select a smaller area"
        )
    # The window's area grows monotonically with the margin: binary-search the largest that fits.
    low, high = 0, margin
    while low < high:
        middle = (low + high + 1) // 2
        if selection.expanded(middle).intersected(canvas).area <= max_pixels:
            low = middle
        else:
            high = middle - 1
    return selection.expanded(low).intersected(canvas)

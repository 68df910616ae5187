"""GIMP's side of the region maths: selection bounds, the mask sent and where a new layer goes.

Coordinates: "image" = GIMP canvas coordinates (the selection lives there); "layer" = the active
drawable's own pixel grid (image coordinates minus `drawable.get_offsets()`). Which layer pixels are
sent for a selection is decided by shared_protocol.regions, the same rule the Krita plug-in uses.
"""

from __future__ import annotations

from shared_protocol.regions import Rect

# bytes.translate table: any selected amount (1..255) becomes 255 = "fill". GIMP applies the soft
# selection itself when the result is merged (merge_shadow), so the backend fills every pixel the
# selection touches and the feather is applied exactly once.
_HARDEN = bytes([0] + [255] * 255)


def selection_in_layer(
    bounds: tuple[int, int, int, int], layer_offsets: tuple[int, int], layer_size: tuple[int, int]
) -> Rect:
    """The selection's bounding box (x1, y1, x2, y2 in image coordinates, as `Gimp.Selection.bounds`
    gives it) in layer coordinates, clipped to the layer; empty when they do not overlap."""
    x1, y1, x2, y2 = bounds
    offset_x, offset_y = layer_offsets
    box = Rect(x1 - offset_x, y1 - offset_y, x2 - x1, y2 - y1)
    return box.intersected(Rect(0, 0, layer_size[0], layer_size[1]))


def harden_mask(mask: bytes) -> bytes:
    """Selection coverage (0..255 per pixel) as the mask sent to the backend: 255 wherever selected."""
    return mask.translate(_HARDEN)


def layer_to_image(rect: Rect, layer_offsets: tuple[int, int]) -> Rect:
    """A layer-coordinate rectangle in image coordinates (for placing a new layer)."""
    return rect.translated(layer_offsets[0], layer_offsets[1])

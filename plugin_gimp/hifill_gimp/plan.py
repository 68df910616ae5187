"""Decide what one fill reads, sends and writes, from plain values the GIMP glue collects.

Everything here is independent of GIMP so it runs in unit tests; hifill.py only gathers the inputs
(selection bounds, layer offsets and size, precision, alpha) and performs the reads and writes.
Standard library and shared_protocol's standard-library modules only.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared_protocol.regions import Rect, place_result, request_rect
from shared_protocol.settings import FillSettings, OutputMode

from .formats import PixelFormat, UnsupportedPrecision, pixel_format_for
from .procedure import FillRefused
from .region import selection_in_layer


@dataclass(frozen=True)
class DrawableInfo:
    """What the glue reads from GIMP about the active drawable."""

    name: str
    is_layer: bool  # a real layer (not a channel or layer mask)
    is_group: bool
    is_rgb: bool
    has_alpha: bool
    precision_nick: str  # Gimp.Precision value nick, e.g. "u8-non-linear"
    offsets: tuple[int, int]
    size: tuple[int, int]
    content_locked: bool = False


@dataclass(frozen=True)
class FillPlan:
    """The request: `request` (layer coordinates) is read in `pixel_format`; the selection is read over
    the same pixels in image coordinates (`mask_rect`)."""

    request: Rect
    mask_rect: Rect
    selection: Rect
    pixel_format: PixelFormat


def check_drawables(drawables: list[DrawableInfo], output_mode: OutputMode) -> DrawableInfo:
    """The one drawable to fill, or FillRefused with the reason."""
    if len(drawables) != 1:
        raise FillRefused(
            "Select exactly one layer in the Layers dock; HiFill fills one layer at a time "
            f"({len(drawables)} selected)."
        )
    drawable = drawables[0]
    if drawable.is_group:
        raise FillRefused(f"'{drawable.name}' is a layer group; select a pixel layer inside it.")
    if not drawable.is_layer:
        raise FillRefused(f"'{drawable.name}' is a channel or layer mask; select a pixel layer.")
    if not drawable.is_rgb:
        raise FillRefused(
            f"'{drawable.name}' is not RGB. HiFill works on RGB and RGBA layers; convert the image with "
            "Image › Mode › RGB."
        )
    if output_mode is OutputMode.IN_PLACE and drawable.content_locked:
        raise FillRefused(
            f"The pixels of '{drawable.name}' are locked; unlock them or fill into a new layer."
        )
    return drawable


def plan_fill(
    drawable: DrawableInfo, selection_bounds: tuple[bool, int, int, int, int] | None, settings: FillSettings
) -> FillPlan:
    """What to read and send. selection_bounds: (non_empty, x1, y1, x2, y2) from Gimp.Selection.bounds
    (image coordinates), or None when the image has no selection."""
    if selection_bounds is None or not selection_bounds[0]:
        raise FillRefused("Nothing is selected. Select the area to fill first, then run HiFill again.")
    _, x1, y1, x2, y2 = selection_bounds
    selection = selection_in_layer((x1, y1, x2, y2), drawable.offsets, drawable.size)
    if selection.is_empty:
        raise FillRefused(f"The selection does not overlap the layer '{drawable.name}'.")
    try:
        pixel_format = pixel_format_for(drawable.precision_nick, drawable.has_alpha)
    except UnsupportedPrecision as error:
        raise FillRefused(f"HiFill does not support this image's precision ({error}).") from error
    try:
        request = request_rect(selection, drawable.size, settings.context_px)
    except ValueError as error:
        raise FillRefused(f"Invalid context size: {error}.") from error
    mask_rect = request.translated(drawable.offsets[0], drawable.offsets[1])
    return FillPlan(request=request, mask_rect=mask_rect, selection=selection, pixel_format=pixel_format)


def check_result(
    plan: FillPlan, x: int, y: int, width: int, height: int, channels: int, dtype: str, pixels_length: int
) -> Rect:
    """The result's rectangle in layer coordinates after checking it matches the request."""
    expected_format = plan.pixel_format
    if channels != expected_format.channels or dtype != expected_format.dtype:
        raise ValueError(
            f"the backend answered {channels} channels of {dtype}, expected "
            f"{expected_format.channels} of {expected_format.dtype}"
        )
    if pixels_length != expected_format.byte_count(width, height):
        raise ValueError(
            f"the backend's region holds {pixels_length} bytes, expected "
            f"{expected_format.byte_count(width, height)} for {width}x{height}"
        )
    return place_result(plan.request, x, y, width, height)

"""Krita document access for one fill: read the layer and selection, write the result back.

Runs on Krita's UI thread. The Krita API surface used is written out as Protocols below (the
".pyi" of this plug-in), so this module imports nothing from Krita and is tested with fakes that
store pixels the way Krita does (BGRA for integer depths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared_protocol import ErrorKind, HiFillError, InpaintResult
from shared_protocol.regions import Rect, RegionTooLarge, mask_is_empty, place_result, request_rect
from shared_protocol.settings import FillSettings, OutputMode

from .fill_job import FillRequest
from .pixels import PixelLayout, clear_outside_mask, krita_to_rgba, layout_for, rgba_to_krita

NEW_LAYER_SUFFIX = " (HiFill)"


class KritaSelection(Protocol):
    def x(self) -> int: ...
    def y(self) -> int: ...
    def width(self) -> int: ...
    def height(self) -> int: ...
    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes: ...  # 1 byte per pixel, 0..255


class KritaNode(Protocol):
    def type(self) -> str: ...
    def name(self) -> str: ...
    def uniqueId(self) -> object: ...
    def locked(self) -> bool: ...
    def colorModel(self) -> str: ...
    def colorDepth(self) -> str: ...
    def colorProfile(self) -> str: ...
    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes: ...
    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> bool: ...
    def parentNode(self) -> KritaNode | None: ...
    def addChildNode(self, child: KritaNode, above: KritaNode | None) -> bool: ...
    def duplicate(self) -> KritaNode: ...
    def remove(self) -> bool: ...
    def setName(self, name: str) -> None: ...


class KritaDocument(Protocol):
    def width(self) -> int: ...
    def height(self) -> int: ...
    def selection(self) -> KritaSelection | None: ...
    def activeNode(self) -> KritaNode | None: ...
    def nodeByUniqueID(self, uid: object) -> KritaNode | None: ...
    def createNode(self, name: str, node_type: str) -> KritaNode: ...
    def setActiveNode(self, node: KritaNode) -> None: ...
    def waitForDone(self) -> None: ...


@dataclass
class FillInput:
    """What the UI thread captured for one fill: where, in which layout, and the request to send."""

    document: KritaDocument
    source: KritaNode
    source_id: object
    selection: Rect  # bounding box of the selection, clipped to the canvas (image coordinates)
    window: Rect  # the pixels sent (image coordinates)
    layout: PixelLayout
    request: FillRequest
    output_mode: OutputMode  # chosen when the fill started (the option may change meanwhile)


def _user_error(message: str) -> HiFillError:
    return HiFillError(ErrorKind.BAD_REQUEST, message)


def read_fill_input(
    document: KritaDocument | None, settings: FillSettings, max_pixels: int | None
) -> FillInput:
    """Check the document and capture the bytes to send; raises HiFillError(BAD_REQUEST) with a
    sentence for the panel when there is nothing sensible to fill. Never changes the document."""
    if document is None:
        raise _user_error("Open an image first.")
    source = document.activeNode()
    if source is None or source.type() != "paintlayer":
        kind = "no layer" if source is None else f"a {source.type() or 'special'} layer"
        raise _user_error(f"Select a paint layer to fill (the active layer is {kind}).")
    if settings.output_mode is OutputMode.IN_PLACE and source.locked():
        raise _user_error(f"The layer “{source.name()}” is locked; unlock it or fill into a new layer.")
    layout = layout_for(source.colorModel(), source.colorDepth())
    selection_obj = document.selection()
    if selection_obj is None:
        raise _user_error("Select the area to fill first (for example with the rectangle selection tool).")
    canvas = Rect(0, 0, document.width(), document.height())
    selected = Rect(selection_obj.x(), selection_obj.y(), selection_obj.width(), selection_obj.height())
    selection = selected.intersected(canvas)
    if selection.is_empty:
        raise _user_error("The selection is empty or outside the canvas; select the area to fill.")
    try:
        window = request_rect(selection, (canvas.width, canvas.height), settings.context_px, max_pixels)
    except RegionTooLarge as error:
        raise HiFillError(ErrorKind.TOO_LARGE, str(error).capitalize() + ".") from None
    mask = bytes(selection_obj.pixelData(window.x, window.y, window.width, window.height))
    if len(mask) != window.area:
        raise HiFillError(ErrorKind.INTERNAL, "Krita returned selection data of an unexpected size.")
    if mask_is_empty(mask):
        raise _user_error("The selection is empty; select the area to fill.")
    raw = bytes(source.pixelData(window.x, window.y, window.width, window.height))
    if len(raw) != window.area * layout.krita_bytes_per_pixel:
        raise HiFillError(ErrorKind.INTERNAL, "Krita returned layer data of an unexpected size.")
    request = FillRequest(
        image=krita_to_rgba(raw, layout),  # the single Krita -> RGBA conversion on the way out
        mask=mask,
        width=window.width,
        height=window.height,
        dtype=layout.protocol_dtype,
        channels=layout.channels,
        context_px=settings.context_px,
    )
    return FillInput(
        document, source, source.uniqueId(), selection, window, layout, request, settings.output_mode
    )


def _crop_mask(mask: bytes, mask_width: int, rect: Rect) -> bytes:
    rows = [mask[(rect.y + row) * mask_width + rect.x :][: rect.width] for row in range(rect.height)]
    return b"".join(rows)


@dataclass(frozen=True)
class AppliedFill:
    """What apply_result did, for the panel's message and for tests."""

    region: Rect  # image coordinates of the written pixels (empty when nothing needed filling)
    layer: KritaNode | None  # the new layer, or the replacement of the source in IN_PLACE mode
    mode: OutputMode
    active: KritaNode | None = None  # the layer to make active: the one the next fill should read


def apply_result(fill: FillInput, result: InpaintResult, mode: OutputMode) -> AppliedFill:
    """Write the backend's region into the document as one undoable layer insertion.

    NEW_LAYER: a new paint layer above the source holds the filled pixels (pixels outside the
    selection are transparent); undo removes it in one step. IN_PLACE: a copy of the source with the
    region replaced goes above the source and the source is removed (Krita's scripting API has no
    undo grouping and pixel writes to a layer in the image bypass undo, so this takes two undo steps).
    Pixels are written only to layers that are not yet in the image.
    """
    document = fill.document
    source = document.nodeByUniqueID(fill.source_id)
    if source is None:
        raise HiFillError(
            ErrorKind.CANCELLED, "The layer was deleted while HiFill was working; nothing was changed."
        )
    if result.width == 0 or result.height == 0:
        return AppliedFill(Rect(fill.window.x, fill.window.y, 0, 0), None, mode)
    misfit = HiFillError(
        ErrorKind.INTERNAL,
        "The backend returned a result that does not fit the request; nothing was changed.",
    )
    try:
        region = place_result(fill.window, result.x, result.y, result.width, result.height)
    except ValueError:
        raise misfit from None
    if (
        result.dtype != fill.request.dtype
        or result.channels != fill.request.channels
        or len(result.pixels) != region.area * fill.layout.protocol_bytes_per_pixel
    ):
        raise misfit
    pixels = rgba_to_krita(result.pixels, fill.layout)  # the single RGBA -> BGRA conversion back
    parent = source.parentNode()
    if parent is None:
        raise HiFillError(ErrorKind.INTERNAL, "The layer has no parent in the layer stack.")
    if mode is OutputMode.NEW_LAYER:
        mask = _crop_mask(fill.request.mask, fill.window.width, region.relative_to(fill.window))
        pixels = clear_outside_mask(pixels, mask, fill.layout.krita_bytes_per_pixel)
        layer = document.createNode(source.name() + NEW_LAYER_SUFFIX, "paintlayer")
        same_space = (layer.colorModel(), layer.colorDepth(), layer.colorProfile()) == (
            source.colorModel(),
            source.colorDepth(),
            source.colorProfile(),
        )
        if not same_space:
            raise _user_error(
                "This layer's colour space differs from the image's, so a new layer cannot hold the"
                " fill exactly; choose “In place” or convert the layer to the image's colour space."
            )
    else:
        layer = source.duplicate()
        layer.setName(source.name())
    # Krita < 5.2 returns None here; only an explicit False means the write was refused.
    if layer.setPixelData(pixels, region.x, region.y, region.width, region.height) is False:
        raise HiFillError(ErrorKind.INTERNAL, "Krita refused the filled pixels; nothing was changed.")
    parent.addChildNode(layer, source)
    if mode is OutputMode.IN_PLACE:
        source.remove()
    document.waitForDone()
    # The caller activates `active` once Krita has registered the new layer (activating it right away
    # trips a Krita assertion, and Krita itself activates an added layer a moment later).
    active = layer if mode is OutputMode.IN_PLACE else source
    return AppliedFill(region, layer, mode, active)

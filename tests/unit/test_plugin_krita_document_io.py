"""Krita plug-in: reading the layer + selection and writing the result, against fakes of Krita's API
that store pixels as Krita does (BGRA for integer depths) and record undo steps as Krita 5.2 does."""

from __future__ import annotations

import struct

import pytest

import tests.editor_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)
from tests.editor_fakes import DOCUMENT_H as H
from tests.editor_fakes import DOCUMENT_W as W
from tests.editor_fakes import FakeDocument, FakeSelection, bgra_u8, make_document

# isort: split
from hifill_krita.document_io import NEW_LAYER_SUFFIX, apply_result, read_fill_input

from shared_protocol import DEFAULT_ENDPOINT, ErrorKind, HiFillError, InpaintResult
from shared_protocol.regions import Rect
from shared_protocol.settings import FillSettings, OutputMode

NEW = FillSettings(OutputMode.NEW_LAYER, context_px=None, endpoint=DEFAULT_ENDPOINT)
IN_PLACE = FillSettings(OutputMode.IN_PLACE, context_px=4, endpoint=DEFAULT_ENDPOINT)


def snapshot(document: FakeDocument) -> list[tuple[str, bytes]]:
    return [(layer.name(), bytes(layer.data)) for layer in document.layers()]


def fill_everything_selected(fill_input, value: bytes) -> InpaintResult:
    """What a backend returns: the selection's box, masked pixels = value, the rest copied exactly."""
    window, request = fill_input.window, fill_input.request
    box = fill_input.selection.relative_to(window)
    pixel_bytes = len(value)
    rows = []
    for y in range(box.y, box.bottom):
        row = bytearray()
        for x in range(box.x, box.right):
            index = y * window.width + x
            if request.mask[index]:
                row += value
            else:
                row += request.image[index * pixel_bytes : (index + 1) * pixel_bytes]
        rows.append(bytes(row))
    return InpaintResult(box.x, box.y, box.width, box.height, 4, request.dtype, b"".join(rows))


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        (lambda d: None, "Open an image"),
        (lambda d: d.setActiveNode(None), "Select a paint layer"),
        (lambda d: d.setActiveNode(d.add_layer("Group", node_type="grouplayer")), "grouplayer"),
        (lambda d: d.setActiveNode(d.add_layer("Grey", model="GRAYA")), "Grayscale/Alpha"),
        (lambda d: d.set_selection(None), "Select the area to fill"),
        (lambda d: d.set_selection(FakeSelection(W, H)), "empty"),
    ],
)
def test_unusable_input_gives_a_clear_message_and_changes_nothing(prepare, expected) -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(5, 5, 4, 4))
    prepare(document)
    before = snapshot(document)
    with pytest.raises(HiFillError) as caught:
        read_fill_input(None if expected == "Open an image" else document, NEW, None)
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert expected in caught.value.message
    assert snapshot(document) == before and document.undo_stack == []


def test_selection_outside_the_canvas_is_refused() -> None:
    class Outside(FakeSelection):
        def x(self) -> int:
            return W + 10

    document = make_document()
    document.set_selection(Outside(W, H).select_rect(1, 1, 2, 2))
    with pytest.raises(HiFillError, match="outside the canvas"):
        read_fill_input(document, NEW, None)


def test_locked_layer_is_refused_in_place_but_fine_for_a_new_layer() -> None:
    document = make_document()
    document.layers()[0]._locked = True
    document.set_selection(FakeSelection(W, H).select_rect(5, 5, 4, 4))
    with pytest.raises(HiFillError, match="locked"):
        read_fill_input(document, IN_PLACE, None)
    assert read_fill_input(document, NEW, None).window == Rect(0, 0, W, H)


def test_reads_rgba_window_and_soft_mask() -> None:
    document = make_document(width=640, height=40)
    selection = FakeSelection(640, 40).select_rect(400, 10, 6, 5).select_rect(402, 11, 2, 2, value=128)
    document.set_selection(selection)
    fill = read_fill_input(document, IN_PLACE, None)  # context 4 px
    assert fill.selection == Rect(400, 10, 6, 5)
    # shared_protocol.regions.request_rect: 2 x (4 + 128) + 8 = 272 px on each side, from x = 128 (on
    # the 8-px grid) to the canvas' right edge, and the canvas' full height.
    window = Rect(128, 0, 512, 40)
    assert fill.window == window
    request = fill.request
    assert (request.width, request.height, request.dtype, request.channels) == (512, 40, "u8", 4)
    for y in range(window.height):
        for x in range(window.width):
            blue, green, red, alpha = bgra_u8(window.x + x, window.y + y)
            offset = 4 * (y * window.width + x)
            assert request.image[offset : offset + 4] == bytes([red, green, blue, alpha])
            inside = 400 <= window.x + x < 406 and 10 <= window.y + y < 15
            soft = 402 <= window.x + x < 404 and 11 <= window.y + y < 13
            assert request.mask[y * window.width + x] == (128 if soft else 255 if inside else 0)
    assert request.context_px == 4


def test_max_pixels_limits_the_window() -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(10, 10, 10, 10))
    assert read_fill_input(document, NEW, max_pixels=144).window == Rect(9, 9, 12, 12)
    with pytest.raises(HiFillError) as caught:
        read_fill_input(document, NEW, max_pixels=99)
    assert caught.value.kind is ErrorKind.TOO_LARGE


def test_new_layer_holds_only_the_fill_and_one_undo_removes_it() -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(10, 8, 6, 5).select_rect(11, 9, 1, 1, value=0))
    source = document.layers()[0]
    original = bytes(source.data)
    fill = read_fill_input(document, NEW, None)
    applied = apply_result(fill, fill_everything_selected(fill, bytes([1, 2, 3, 4])), OutputMode.NEW_LAYER)

    assert [layer.name() for layer in document.layers()] == ["Photo", "Photo" + NEW_LAYER_SUFFIX]
    assert applied.region == Rect(10, 8, 6, 5) and applied.layer is document.layers()[1]
    assert bytes(source.data) == original and applied.active is source
    new = document.layers()[1]
    for y in range(H):
        for x in range(W):
            pixel = new.pixelData(x, y, 1, 1)
            selected = 10 <= x < 16 and 8 <= y < 13 and (x, y) != (11, 9)
            assert pixel == (bytes([3, 2, 1, 4]) if selected else bytes(4)), (x, y)  # RGBA 1,2,3,4 as BGRA
    assert document.unrecorded_writes == 0  # pixels were written before the layer entered the image
    assert len(document.undo_stack) == 1
    document.undo()
    assert document.layers() == [source] and bytes(source.data) == original


def test_in_place_replaces_exactly_the_region_of_a_16_bit_layer() -> None:
    document = make_document("U16")
    document.set_selection(FakeSelection(W, H).select_rect(3, 4, 5, 2))
    source = document.layers()[0]
    original = bytes(source.data)
    fill = read_fill_input(document, IN_PLACE, None)
    assert fill.request.dtype == "u16"
    value = struct.pack("<4H", 11, 22, 33, 44)  # R, G, B, A
    applied = apply_result(fill, fill_everything_selected(fill, value), OutputMode.IN_PLACE)

    (replacement,) = document.layers()
    assert replacement is not source and replacement.name() == "Photo"
    assert applied.layer is replacement and applied.active is replacement
    for y in range(H):
        for x in range(W):
            pixel = replacement.pixelData(x, y, 1, 1)
            if 3 <= x < 8 and 4 <= y < 6:
                assert struct.unpack("=4H", pixel) == (33, 22, 11, 44)  # stored B, G, R, A
            else:
                assert pixel == source.pixelData(x, y, 1, 1)
    assert document.unrecorded_writes == 0 and len(document.undo_stack) == 2
    document.undo()
    document.undo()
    assert document.layers() == [source] and bytes(source.data) == original


def test_float_layers_round_trip_without_swapping() -> None:
    document = make_document("F32")
    document.set_selection(FakeSelection(W, H).select_rect(0, 0, 2, 1))
    fill = read_fill_input(document, NEW, None)
    assert fill.request.dtype == "f32"
    assert struct.unpack("<4f", fill.request.image[:16]) == pytest.approx((0.0, 0.0, 0.5, 1.0))
    apply_result(
        fill, fill_everything_selected(fill, struct.pack("<4f", 0.25, 0.5, 0.75, 1.0)), OutputMode.NEW_LAYER
    )
    assert struct.unpack("=4f", document.layers()[1].pixelData(1, 0, 1, 1)) == (0.25, 0.5, 0.75, 1.0)


def test_results_that_do_not_fit_change_nothing() -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(10, 8, 6, 5))
    fill = read_fill_input(document, NEW, None)
    before = snapshot(document)
    good = fill_everything_selected(fill, bytes(4))
    bad_results = [
        InpaintResult(good.x, good.y, good.width, good.height, 4, good.dtype, good.pixels[:-4]),
        InpaintResult(fill.window.width - 2, good.y, good.width, good.height, 4, good.dtype, good.pixels),
        InpaintResult(good.x, good.y, good.width, good.height, 4, "u16", good.pixels * 2),
    ]
    for bad in bad_results:
        with pytest.raises(HiFillError) as caught:
            apply_result(fill, bad, OutputMode.NEW_LAYER)
        assert caught.value.kind is ErrorKind.INTERNAL
    assert snapshot(document) == before and document.undo_stack == []


def test_empty_result_and_deleted_source_change_nothing() -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(10, 8, 6, 5))
    fill = read_fill_input(document, NEW, None)
    empty = apply_result(fill, InpaintResult(0, 0, 0, 0, 4, "u8", b""), OutputMode.NEW_LAYER)
    assert empty.layer is None and len(document.layers()) == 1
    document.layers()[0].remove()
    with pytest.raises(HiFillError) as caught:
        apply_result(fill, fill_everything_selected(fill, bytes(4)), OutputMode.NEW_LAYER)
    assert caught.value.kind is ErrorKind.CANCELLED and "deleted" in caught.value.message
    assert document.layers() == []


def test_new_layer_refuses_a_layer_in_another_colour_space() -> None:
    document = make_document()
    document.set_selection(FakeSelection(W, H).select_rect(10, 8, 6, 5))
    document.layers()[0]._profile = "Rec2020-elle-V4-g10.icc"
    fill = read_fill_input(document, NEW, None)
    with pytest.raises(HiFillError, match="In place"):
        apply_result(fill, fill_everything_selected(fill, bytes(4)), OutputMode.NEW_LAYER)
    assert len(document.layers()) == 1 and document.undo_stack == []

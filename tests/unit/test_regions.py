"""shared_protocol.regions: the rectangle both plug-ins send for a selection, checked against the
backend's own window planning (backend.windows.plan_windows), plus the rectangle maths it rests on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_protocol import regions
from shared_protocol.regions import Rect, RegionTooLarge, place_result, request_margin, request_rect
from tests.editor_fakes import run_without_pyzmq_and_msgpack

REPO = Path(__file__).resolve().parents[2]


def test_rect_maths() -> None:
    assert Rect(10, 10, 20, 20).intersected(Rect(25, 0, 100, 15)) == Rect(25, 10, 5, 5)
    assert Rect(0, 0, 10, 10).intersected(Rect(10, 0, 5, 5)) == Rect(0, 0, 0, 0)
    assert Rect(0, 0, 10, 10).intersected(Rect(10, 0, 5, 5)).is_empty
    assert Rect(5, 6, 1, 2).expanded(3) == Rect(2, 3, 7, 8)
    assert Rect(5, 6, 1, 2).translated(-5, 4) == Rect(0, 10, 1, 2)
    assert Rect(50, 60, 10, 10).relative_to(Rect(40, 40, 100, 100)) == Rect(10, 20, 10, 10)
    assert Rect(0, 0, 10, 10).contains(Rect(2, 3, 8, 7)) and not Rect(0, 0, 10, 10).contains(Rect(2, 3, 9, 7))
    assert (Rect(1, 2, 3, 4).right, Rect(1, 2, 3, 4).bottom, Rect(1, 2, 3, 4).area) == (4, 6, 12)
    with pytest.raises(ValueError):
        Rect(0, 0, -1, 3)
    with pytest.raises(ValueError):
        Rect(0, 0, 1, 1).expanded(-1)


def test_request_grows_by_twice_the_backend_margin_on_the_block_grid_and_clamps() -> None:
    selection = Rect(1000, 900, 100, 50)
    auto = 2 * (192 + regions.GRID_PAD_PX) + regions.BLOCK_PX  # 0.6 x 100 < 384 / 2
    assert request_margin(selection, None) == auto
    assert request_margin(selection, 10) == 2 * (10 + 128) + 8
    assert request_margin(Rect(0, 0, 1000, 10), None) == 2 * (600 + 128) + 8
    request = request_rect(selection, (4000, 4000), None)
    assert request.x % 8 == 0 and request.y % 8 == 0, "origin on the backend's 8-px block grid"
    assert request.x <= 1000 - auto and request.right == 1100 + auto and request.bottom == 950 + auto
    assert request_rect(selection, (1150, 1000), 10) == Rect(712, 616, 1150 - 712, 1000 - 616)
    assert request_rect(Rect(5, 5, 10, 10), (50, 40), None) == Rect(0, 0, 50, 40)


@pytest.mark.parametrize(
    ("selection", "layer", "context"),
    [
        (Rect(0, 0, 0, 5), (10, 10), None),  # empty
        (Rect(5, 5, 10, 10), (10, 10), None),  # not inside the layer
        (Rect(0, 0, 5, 5), (10, 10), -1),
        (Rect(0, 0, 5, 5), (10, 10), regions.MAX_CONTEXT_PX + 1),
    ],
)
def test_invalid_requests_are_refused(selection: Rect, layer: tuple[int, int], context: int | None) -> None:
    with pytest.raises(ValueError):
        request_rect(selection, layer, context)


def test_max_pixels_shrinks_the_margin_to_the_largest_that_fits() -> None:
    selection = Rect(400, 300, 100, 100)
    request = request_rect(selection, (1000, 800), 200, max_pixels=40_000)
    assert request == selection.expanded(50), "200 x 200 = 40,000 exactly"
    assert request_rect(selection, (1000, 800), None, max_pixels=40_000) == request
    assert request_rect(Rect(10, 10, 10, 10), (40, 30), None, max_pixels=144) == Rect(9, 9, 12, 12)
    with pytest.raises(RegionTooLarge):
        request_rect(selection, (1000, 800), 10, max_pixels=9_999)
    whole = request_rect(selection, (1000, 800), 200)
    assert request_rect(selection, (1000, 800), 200, max_pixels=whole.area) == whole, "no shrinking needed"


@given(
    x=st.integers(0, 999),
    y=st.integers(0, 799),
    w=st.integers(1, 1000),
    h=st.integers(1, 800),
    context=st.one_of(st.none(), st.integers(0, 3000)),
    max_pixels=st.one_of(st.none(), st.integers(1, 1_000_000)),
)
def test_the_request_always_holds_the_selection_inside_the_layer(x, y, w, h, context, max_pixels) -> None:
    layer = Rect(0, 0, 1000, 800)
    selection = Rect(x, y, w, h).intersected(layer)
    try:
        request = request_rect(selection, (layer.width, layer.height), context, max_pixels)
    except RegionTooLarge:
        assert max_pixels is not None and selection.area > max_pixels
        return
    assert request.contains(selection) and layer.contains(request)
    if max_pixels is not None:
        assert request.area <= max_pixels


@settings(max_examples=120, deadline=None)  # the first example imports torch (backend.cra)
@given(
    layer_w=st.integers(1, 1400),
    layer_h=st.integers(1, 1400),
    data=st.data(),
    context=st.one_of(st.none(), st.integers(0, 300)),
)
def test_the_backend_opens_the_same_windows_as_on_the_whole_layer(layer_w, layer_h, data, context) -> None:
    """For holes anywhere inside the selection, the backend's windows on the request equal its windows
    on the whole layer (backend.windows.plan_windows), so sending the request instead of the layer changes
    nothing."""
    import torch

    torch.set_num_threads(1)
    from backend.cra import plan_windows

    x = data.draw(st.integers(0, layer_w - 1))
    y = data.draw(st.integers(0, layer_h - 1))
    selection = Rect(x, y, data.draw(st.integers(1, layer_w - x)), data.draw(st.integers(1, layer_h - y)))
    mask = np.zeros((layer_h, layer_w), np.uint8)
    for _ in range(data.draw(st.integers(1, 3))):
        hx = data.draw(st.integers(selection.x, selection.right - 1))
        hy = data.draw(st.integers(selection.y, selection.bottom - 1))
        mask[
            hy : data.draw(st.integers(hy + 1, selection.bottom)),
            hx : data.draw(st.integers(hx + 1, selection.right)),
        ] = 255
    request = request_rect(selection, (layer_w, layer_h), context)
    crop = mask[request.y : request.bottom, request.x : request.right]
    whole = plan_windows(mask, context)
    local = plan_windows(crop, context)
    shifted = [(w.top + request.y, w.left + request.x, w.grid_h, w.grid_w, w.cell_h, w.cell_w) for w in local]
    assert sorted(shifted) == sorted((w.top, w.left, w.grid_h, w.grid_w, w.cell_h, w.cell_w) for w in whole)


def test_the_backend_takes_its_context_constants_from_here() -> None:
    from backend import windows

    assert windows.MIN_WINDOW_SIDE is regions.MIN_WINDOW_SIDE
    assert windows.AUTO_CONTEXT_FACTOR is regions.AUTO_CONTEXT_FACTOR
    assert windows.hole_boxes.__defaults__ == (regions.BLOCK_PX,)


def test_result_placement_and_empty_masks() -> None:
    request = Rect(10, 20, 100, 50)
    assert place_result(request, 5, 6, 7, 8) == Rect(15, 26, 7, 8)
    assert place_result(request, 0, 0, 0, 0).is_empty
    for outside in ((95, 0, 10, 10), (-1, 0, 5, 5), (0, 45, 5, 6)):
        with pytest.raises(ValueError):
            place_result(request, *outside)
    assert regions.mask_is_empty(bytes(10))
    assert not regions.mask_is_empty(bytes(9) + b"\x01")


def test_the_module_needs_only_the_standard_library() -> None:
    """The editors import it; it must load with pyzmq and msgpack absent (and outside its package)."""
    code = "import regions\nprint(regions.request_rect(regions.Rect(5, 5, 10, 10), (50, 40), None))\n"
    printed = run_without_pyzmq_and_msgpack(REPO / "shared_protocol", code)
    assert printed == "Rect(x=0, y=0, width=50, height=40)"

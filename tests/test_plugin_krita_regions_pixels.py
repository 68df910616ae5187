"""Krita plug-in: region maths and the Krita <-> RGBA pixel conversion (pure Python, no Krita)."""

from __future__ import annotations

import struct

import pytest
import test_plugin_krita_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)
from hypothesis import given, settings
from hypothesis import strategies as st

# isort: split
from hifill.pixels import (
    clear_outside_mask,
    krita_to_rgba,
    layout_for,
    rgba_to_krita,
    swap_red_blue,
)
from hifill.regions import (
    AUTO_MIN_WINDOW_SIDE,
    WINDOW_SLACK_PX,
    Rect,
    RegionTooLarge,
    auto_context_margin,
    fill_window,
)

from shared_protocol import ErrorKind, HiFillError

CANVAS = Rect(0, 0, 1000, 800)


def test_rect_intersection_and_expansion() -> None:
    assert Rect(10, 10, 20, 20).intersected(Rect(25, 0, 100, 15)) == Rect(25, 10, 5, 5)
    assert Rect(0, 0, 10, 10).intersected(Rect(10, 0, 5, 5)).is_empty()
    assert Rect(5, 6, 1, 2).expanded(3) == Rect(2, 3, 7, 8)
    assert Rect(50, 60, 10, 10).relative_to(Rect(40, 40, 100, 100)) == Rect(10, 20, 10, 10)
    with pytest.raises(ValueError):
        Rect(0, 0, -1, 3)


def test_explicit_context_plus_slack_is_shifted_into_the_canvas() -> None:
    slack = WINDOW_SLACK_PX
    assert fill_window(Rect(100, 100, 50, 40), CANVAS, context_px=30) == Rect(100, 100, 50, 40).expanded(
        30 + slack
    )
    side = 10 + 2 * (30 + slack)
    assert fill_window(Rect(0, 790, 10, 10), CANVAS, context_px=30) == Rect(0, 800 - side, side, side)
    assert fill_window(Rect(100, 100, 50, 40), CANVAS, context_px=0) == Rect(100, 100, 50, 40).expanded(slack)
    assert fill_window(Rect(100, 100, 50, 40), CANVAS, context_px=5000) == CANVAS


def test_auto_context_follows_the_backend_rule() -> None:
    assert auto_context_margin(Rect(0, 0, 300, 200)) == 180
    side = AUTO_MIN_WINDOW_SIDE + 2 * WINDOW_SLACK_PX  # small holes: at least this across
    assert fill_window(Rect(500, 400, 10, 10), CANVAS) == Rect(505 - side // 2, 405 - side // 2, side, side)
    assert fill_window(Rect(0, 0, 10, 10), CANVAS) == Rect(0, 0, side, side)  # shifted inward, not cut
    big = Rect(400, 300, 300, 200)
    assert fill_window(big, CANVAS) == Rect(400 - 196, 300 - 196, 300 + 392, 200 + 392)


def test_max_pixels_shrinks_the_margin_to_the_largest_that_fits() -> None:
    selection = Rect(400, 300, 100, 100)
    window = fill_window(selection, CANVAS, context_px=200, max_pixels=40_000)
    assert window.contains(selection) and window.area <= 40_000
    margin = selection.x - window.x
    assert margin == 50  # 200 x 200 = 40,000 exactly
    assert selection.expanded(margin + 1).area > 40_000
    auto = fill_window(selection, CANVAS, max_pixels=40_000)
    assert auto == window
    with pytest.raises(RegionTooLarge):
        fill_window(selection, CANVAS, context_px=10, max_pixels=9_999)


@given(
    x=st.integers(0, 999),
    y=st.integers(0, 799),
    w=st.integers(1, 1000),
    h=st.integers(1, 800),
    context=st.one_of(st.none(), st.integers(0, 600)),
)
@settings(deadline=None)  # the first call imports torch (backend.cra)
def test_window_holds_the_context_the_backend_chooses(x, y, w, h, context) -> None:
    """backend/cra.context_rect (which the plug-in cannot import: no torch in Krita) on the whole canvas,
    for the selection rounded out to the backend's 8-pixel blocks, lies inside the window sent."""
    from backend import cra

    selection = Rect(x, y, w, h).intersected(CANVAS)
    window = fill_window(selection, CANVAS, context)
    left, top = selection.x // 8 * 8, selection.y // 8 * 8
    right = min(CANVAS.width, -(-selection.right // 8) * 8)
    bottom = min(CANVAS.height, -(-selection.bottom // 8) * 8)
    c_top, c_left, c_bottom, c_right = cra.context_rect(
        (top, left, bottom, right), (CANVAS.height, CANVAS.width), context
    )
    assert window.contains(Rect(c_left, c_top, c_right - c_left, c_bottom - c_top))


@given(
    x=st.integers(0, 999),
    y=st.integers(0, 799),
    w=st.integers(1, 1000),
    h=st.integers(1, 800),
    context=st.one_of(st.none(), st.integers(0, 3000)),
    max_pixels=st.one_of(st.none(), st.integers(1, 1_000_000)),
)
def test_window_always_holds_the_selection_inside_the_canvas(x, y, w, h, context, max_pixels) -> None:
    selection = Rect(x, y, w, h).intersected(CANVAS)
    try:
        window = fill_window(selection, CANVAS, context, max_pixels)
    except RegionTooLarge:
        assert max_pixels is not None and selection.area > max_pixels
        return
    assert window.contains(selection) and CANVAS.contains(window)
    if max_pixels is not None:
        assert window.area <= max_pixels


def test_unsupported_colour_models_and_depths_say_so() -> None:
    for model in ("GRAYA", "CMYKA", "LABA", "XYZA", "YCbCrA"):
        with pytest.raises(HiFillError) as caught:
            layout_for(model, "U8")
        assert caught.value.kind is ErrorKind.BAD_REQUEST
        assert "RGB" in caught.value.message and "Convert" in caught.value.message
    with pytest.raises(HiFillError, match="colour depth"):
        layout_for("RGBA", "U32")
    assert layout_for("RGBA", "U16").protocol_dtype == "u16"
    assert layout_for("RGBA", "F16").protocol_dtype == "f32"


def test_u8_bgra_becomes_rgba_and_back() -> None:
    krita = bytes([1, 2, 3, 4, 10, 20, 30, 40])  # two pixels B,G,R,A
    layout = layout_for("RGBA", "U8")
    rgba = krita_to_rgba(krita, layout)
    assert rgba == bytes([3, 2, 1, 4, 30, 20, 10, 40])
    assert rgba_to_krita(rgba, layout) == krita


def test_u16_swaps_whole_samples() -> None:
    blue, green, red, alpha = 0x0102, 0x0304, 0xA0B0, 0xFFFF
    krita = struct.pack("=4H", blue, green, red, alpha)
    layout = layout_for("RGBA", "U16")
    rgba = krita_to_rgba(krita, layout)
    assert struct.unpack("<4H", rgba) == (red, green, blue, alpha)
    assert rgba_to_krita(rgba, layout) == krita


def test_float_layers_keep_rgba_order_and_f16_travels_as_f32() -> None:
    f32 = struct.pack("=4f", 0.25, 0.5, 0.75, 1.0)
    assert krita_to_rgba(f32, layout_for("RGBA", "F32")) == struct.pack("<4f", 0.25, 0.5, 0.75, 1.0)
    f16 = struct.pack("=4e", 0.25, 0.5, 0.333251953125, 1.0)
    f16_layout = layout_for("RGBA", "F16")
    as_f32 = krita_to_rgba(f16, f16_layout)
    assert struct.unpack("<4f", as_f32) == (0.25, 0.5, 0.333251953125, 1.0)
    assert rgba_to_krita(as_f32, f16_layout) == f16  # exact round trip
    with pytest.raises(HiFillError):
        rgba_to_krita(struct.pack("<4f", 1e6, 0, 0, 1), f16_layout)


@given(st.binary(min_size=0, max_size=64).map(lambda b: b[: len(b) // 8 * 8]))
def test_swap_is_its_own_inverse(data: bytes) -> None:
    for bytes_per_channel in (1, 2):
        assert swap_red_blue(swap_red_blue(data, bytes_per_channel), bytes_per_channel) == data


def test_block_wise_conversions_match_whole_buffer_results(monkeypatch) -> None:
    import hifill.pixels as pixels

    halves = struct.pack("=12e", *[i / 8 for i in range(12)])
    mask = bytes([0, 9, 0])
    rgba = bytes(range(1, 25))
    whole = (krita_to_rgba(halves, layout_for("RGBA", "F16")), clear_outside_mask(rgba, mask, 8))
    monkeypatch.setattr(pixels, "BLOCK_VALUES", 5)  # blocks that split pixels and values unevenly
    assert krita_to_rgba(halves, layout_for("RGBA", "F16")) == whole[0]
    assert rgba_to_krita(whole[0], layout_for("RGBA", "F16")) == halves
    monkeypatch.setattr(pixels, "BLOCK_VALUES", 2)
    assert clear_outside_mask(rgba, mask, 8) == whole[1] == bytes(8) + rgba[8:16] + bytes(8)


def test_clear_outside_mask_zeroes_exactly_the_unselected_pixels() -> None:
    pixels = bytes(range(1, 25))  # 3 pixels of 8 bytes
    assert clear_outside_mask(pixels, bytes([0, 1, 255]), 8) == bytes(8) + pixels[8:]
    assert clear_outside_mask(pixels, bytes([255, 0, 0]), 8) == pixels[:8] + bytes(16)
    with pytest.raises(ValueError):
        clear_outside_mask(pixels, bytes(2), 8)

"""Krita plug-in: the Krita <-> RGBA pixel conversion (pure Python, no Krita). The rectangle it sends
is shared_protocol.regions (tests/test_regions.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.editor_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)

# isort: split
from hifill_krita.pixels import (
    clear_outside_mask,
    krita_to_rgba,
    layout_for,
    rgba_to_krita,
    swap_red_blue,
)

from shared_protocol import ErrorKind, HiFillError


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
    import hifill_krita.pixels as pixels

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

"""Krita pixel layouts and the single place where Krita's channel order becomes RGBA and back.

Krita stores integer RGBA layers (8- and 16-bit) as B, G, R, A in memory; floating-point RGBA
layers (16- and 32-bit) as R, G, B, A. The protocol always carries RGBA, so integer layers are
swapped here, exactly once on the way out (krita_to_rgba) and once on the way back (rgba_to_krita).
Half-float layers travel as 32-bit float (the protocol has no f16) and convert back exactly.

Supported: colour model RGBA at depths U8, U16, F16, F32. Unsupported (a clear error): every
other colour model (GRAYA, CMYKA, LABA, XYZA, YCbCrA). Pure Python, no numpy (Krita may lack it).
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

from shared_protocol import ErrorKind, HiFillError

COLOR_MODEL_NAMES = {
    "RGBA": "RGB/Alpha",
    "GRAYA": "Grayscale/Alpha",
    "CMYKA": "CMYK/Alpha",
    "LABA": "L*a*b*/Alpha",
    "XYZA": "XYZ/Alpha",
    "YCbCrA": "YCbCr/Alpha",
}


@dataclass(frozen=True)
class PixelLayout:
    """How one Krita layer stores a pixel and how it travels in the protocol."""

    color_depth: str  # Krita's depth id: "U8" | "U16" | "F16" | "F32"
    krita_bytes_per_channel: int  # 1, 2, 2, 4
    protocol_dtype: str  # "u8" | "u16" | "f32"
    krita_is_bgra: bool  # True for integer depths (Krita's KoBgr traits)

    channels: int = 4  # always RGBA: Krita paint layers always carry alpha

    @property
    def krita_bytes_per_pixel(self) -> int:
        return self.channels * self.krita_bytes_per_channel

    @property
    def protocol_bytes_per_pixel(self) -> int:
        return self.channels * {"u8": 1, "u16": 2, "f32": 4}[self.protocol_dtype]


_LAYOUTS = {
    "U8": PixelLayout("U8", 1, "u8", krita_is_bgra=True),
    "U16": PixelLayout("U16", 2, "u16", krita_is_bgra=True),
    "F16": PixelLayout("F16", 2, "f32", krita_is_bgra=False),
    "F32": PixelLayout("F32", 4, "f32", krita_is_bgra=False),
}


def layout_for(color_model: str, color_depth: str) -> PixelLayout:
    """The layout of a layer with Krita's colour model and depth ids, or HiFillError(BAD_REQUEST)."""
    if color_model != "RGBA":
        name = COLOR_MODEL_NAMES.get(color_model, color_model or "unknown")
        raise HiFillError(
            ErrorKind.BAD_REQUEST,
            f"HiFill works on RGB layers, but this layer is {name}. Convert it with"
            " Layer › Convert › Convert Layer Color Space… to RGB/Alpha and try again.",
        )
    layout = _LAYOUTS.get(color_depth)
    if layout is None:
        raise HiFillError(
            ErrorKind.BAD_REQUEST,
            f"HiFill does not support the colour depth {color_depth!r}; use 8- or 16-bit integer or"
            " 16- or 32-bit float.",
        )
    return layout


def swap_red_blue(data: bytes | bytearray | memoryview, bytes_per_channel: int) -> bytes:
    """Exchange channels 0 and 2 of every 4-channel pixel (BGRA <-> RGBA); its own inverse."""
    source = bytes(data)
    pixel = 4 * bytes_per_channel
    if len(source) % pixel:
        raise ValueError(f"{len(source)} bytes is not a whole number of {pixel}-byte pixels")
    out = bytearray(source)
    red, blue = 0, 2 * bytes_per_channel
    for byte in range(bytes_per_channel):
        out[red + byte :: pixel] = source[blue + byte :: pixel]
        out[blue + byte :: pixel] = source[red + byte :: pixel]
    return bytes(out)


def _to_little_endian(data: bytes, typecode: str) -> bytes:
    if sys.byteorder == "little":
        return data
    values = array(typecode, data)
    values.byteswap()
    return values.tobytes()


# Pure-Python conversions work on blocks so memory stays bounded on big regions.
BLOCK_VALUES = 1 << 18


def _convert_floats(
    data: bytes, source_order: str, source_code: str, target_order: str, target_code: str
) -> bytes:
    """Re-encode floats (e.g. half <-> single) block by block; values keep their order."""
    size = struct.calcsize(source_code)
    parts = []
    for start in range(0, len(data), BLOCK_VALUES * size):
        block = data[start : start + BLOCK_VALUES * size]
        count = len(block) // size
        parts.append(
            struct.pack(
                f"{target_order}{count}{target_code}",
                *struct.unpack(f"{source_order}{count}{source_code}", block),
            )
        )
    return b"".join(parts)


def krita_to_rgba(data: bytes | bytearray | memoryview, layout: PixelLayout) -> bytes:
    """Krita layer bytes -> protocol image bytes (RGBA, dtype layout.protocol_dtype, little-endian)."""
    rgba = swap_red_blue(data, layout.krita_bytes_per_channel) if layout.krita_is_bgra else bytes(data)
    if layout.color_depth == "U16":
        return _to_little_endian(rgba, "H")
    if layout.color_depth == "F16":
        return _convert_floats(rgba, "=", "e", "<", "f")
    if layout.color_depth == "F32":
        return _to_little_endian(rgba, "f")
    return rgba


def rgba_to_krita(data: bytes | bytearray | memoryview, layout: PixelLayout) -> bytes:
    """Protocol region bytes (RGBA, layout.protocol_dtype, little-endian) -> Krita layer bytes."""
    raw = bytes(data)
    if layout.color_depth == "U16":
        raw = _to_little_endian(raw, "H")  # a byte swap is its own inverse
    elif layout.color_depth == "F32":
        raw = _to_little_endian(raw, "f")
    elif layout.color_depth == "F16":
        try:
            raw = _convert_floats(raw, "<", "f", "=", "e")
        except OverflowError:
            raise HiFillError(
                ErrorKind.INTERNAL, "The backend returned values too large for a 16-bit float layer."
            ) from None
    if layout.krita_is_bgra:
        return swap_red_blue(raw, layout.krita_bytes_per_channel)
    return raw


_NONZERO_TO_FF = bytes([0] + [0xFF] * 255)


def clear_outside_mask(pixels: bytes | bytearray | memoryview, mask: bytes, bytes_per_pixel: int) -> bytes:
    """Zero every byte of each pixel whose mask value is 0 (fully transparent in any layout).

    pixels: width*height*bytes_per_pixel bytes; mask: width*height bytes (0 = keep the pixel clear).
    """
    source = bytes(pixels)
    if len(source) != len(mask) * bytes_per_pixel:
        raise ValueError(f"{len(source)} bytes are not {len(mask)} pixels of {bytes_per_pixel} bytes")
    if not source:
        return source
    keep = mask.translate(_NONZERO_TO_FF)
    parts = []
    for first in range(0, len(mask), BLOCK_VALUES):  # a bitwise AND of big integers, block by block
        block_keep = keep[first : first + BLOCK_VALUES]
        block = source[first * bytes_per_pixel : (first + len(block_keep)) * bytes_per_pixel]
        keep_bytes = bytearray(len(block))
        for byte in range(bytes_per_pixel):
            keep_bytes[byte::bytes_per_pixel] = block_keep
        kept = int.from_bytes(block, "little") & int.from_bytes(keep_bytes, "little")
        parts.append(kept.to_bytes(len(block), "little"))
    return b"".join(parts)

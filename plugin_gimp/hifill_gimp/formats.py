"""Which GEGL/babl pixel format the plug-in reads and writes, per GIMP image precision.

What is sent: always sRGB-encoded ("perceptual", the R'G'B' babl formats) RGB or RGBA, because the
model was trained on sRGB-encoded photos; babl converts linear or perceptual storage on the way out
and back. The sample type follows the precision so nothing is quantised below what the image holds:

    u8 (linear / non-linear / perceptual)      -> "R'G'B'[A] u8"     dtype u8
    u16                                          -> "R'G'B'[A] u16"    dtype u16
    u32, half, float, double                     -> "R'G'B'[A] float"  dtype f32 (little-endian)

Pixels outside the selection are never taken from the backend's answer: GIMP's merge of the shadow
buffer applies the selection, so they stay bit-exact at every precision.
"""

from __future__ import annotations

from dataclasses import dataclass

# The selection channel is linear coverage; "Y u8" gives 0 (not selected) .. 255 (fully selected).
SELECTION_FORMAT = "Y u8"

_COMPONENTS = {"u8": ("u8", "u8"), "u16": ("u16", "u16")}
_FLOAT = ("float", "f32")
_KNOWN_COMPONENTS = ("u8", "u16", "u32", "half", "float", "double")
_BYTES_PER_SAMPLE = {"u8": 1, "u16": 2, "f32": 4}


@dataclass(frozen=True)
class PixelFormat:
    """A babl format name and the protocol buffer description that matches it."""

    babl_name: str
    dtype: str  # "u8" | "u16" | "f32"
    channels: int  # 3 (RGB) or 4 (RGBA)

    @property
    def bytes_per_pixel(self) -> int:
        return _BYTES_PER_SAMPLE[self.dtype] * self.channels

    def byte_count(self, width: int, height: int) -> int:
        return width * height * self.bytes_per_pixel


class UnsupportedPrecision(ValueError):
    """The image's precision is not one the plug-in knows."""


def pixel_format_for(precision_nick: str, has_alpha: bool) -> PixelFormat:
    """The format for a drawable of precision `precision_nick` (Gimp.Precision value nick such as
    'u8-non-linear', 'u16-linear', 'half-perceptual', 'double-linear')."""
    component = precision_nick.split("-", 1)[0]
    if component not in _KNOWN_COMPONENTS:
        raise UnsupportedPrecision(f"unknown image precision '{precision_nick}'")
    babl_type, dtype = _COMPONENTS.get(component, _FLOAT)
    channels = 4 if has_alpha else 3
    model = "R'G'B'A" if has_alpha else "R'G'B'"
    return PixelFormat(f"{model} {babl_type}", dtype, channels)

"""Size limits every message is checked against before anything is allocated for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# 8K UHD, RGBA, 16 bit per channel: the largest frame a typical editor document produces (265 MB).
EIGHT_K_RGBA_U16_BYTES = 7680 * 4320 * 4 * 2


@dataclass(frozen=True)
class Limits:
    """Explicit bounds for one message. The defaults fit an 8K RGBA u16 (or f32) document.

    max_header_bytes: size of the msgpack header frame (64 KiB; headers carry no pixels).
    max_str_len / max_bin_len / max_array_len / max_map_len: msgpack unpack limits for the header
        (binary data never travels in the header, so bin is forbidden).
    max_depth: nesting of maps/arrays in the header (checked by a scan before unpacking).
    max_frames: frames per message, header included.
    max_id_len: length of a request id.
    max_side: width or height of one buffer.
    max_pixels: width * height of one buffer (100 MP, e.g. 12000 x 8333).
    max_frame_bytes: bytes of one raw frame (1 GiB: 8K RGBA f32 is 531 MB, 100 MP RGBA u16 is 800 MB).
    max_shm_bytes: bytes of a shared-memory segment a same-host request may declare (3 GiB: an image
        and its result area of up to max_frame_bytes each, plus the mask); see shared_protocol.shm.
    """

    max_header_bytes: int = 64 * 1024
    max_str_len: int = 4096
    max_bin_len: int = 0
    max_array_len: int = 64
    max_map_len: int = 64
    max_depth: int = 8
    max_frames: int = 8
    max_id_len: int = 128
    max_side: int = 65536
    max_pixels: int = 100_000_000
    max_frame_bytes: int = 1 << 30
    max_shm_bytes: int = 3 << 30

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Limits.{field.name} must be a non-negative int, got {value!r}")
        if self.max_frames < 1 or self.max_depth < 1:
            raise ValueError("Limits.max_frames and Limits.max_depth must be at least 1")

    def to_dict(self) -> dict[str, int]:
        """The limits as a plain map (sent in the hello reply)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Limits:
        """Limits from a map such as a hello reply's "limits"; unknown keys are ignored."""
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

"""Wire format: a msgpack header frame, then one raw frame per buffer; encode, decode and validation.

Frame 0 is a msgpack map {"v": 1, "id": str, "op": str, "options": map, "buffers": [spec, ...]}.
Each spec {"name", "width", "height", "channels", "dtype", "order"} describes one raw frame that
follows in the same order: row-major, interleaved channels, little-endian for u16/f32.

Same-host messages may instead carry their buffers in a shared-memory segment (shared_protocol.shm):
the header then has a sixth field "shm" (a SharedMemoryRef: token, size, one offset per buffer and,
in requests, the client's pid and descriptor of the segment and the reply area) and no data frames.

decode() checks every size against a Limits object before it unpacks or touches anything large,
and turns each problem into a ProtocolError (a HiFillError) with a sentence a user can read.
"""

from __future__ import annotations

import math
import mmap
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack

from .endpoints import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT  # re-exported (the one definition: endpoints)
from .errors import ErrorKind, ProtocolError
from .limits import Limits

PROTOCOL_VERSION = 1
DEFAULT_LIMITS = Limits()

# Shared-memory segment layout (see shared_protocol.shm): the first SHM_HEADER_BYTES hold the magic and
# the token; buffers start at multiples of SHM_ALIGN; the reply area starts at a multiple of
# SHM_REPLY_ALIGN (the backend maps it on its own, writable).
SHM_HEADER_BYTES = 4096
SHM_ALIGN = 64
SHM_REPLY_ALIGN = max(mmap.ALLOCATIONGRANULARITY, SHM_HEADER_BYTES)
_SHM_TOKEN = re.compile(r"[0-9a-f]{32}")
_SHM_REQUEST_KEYS = frozenset({"token", "size", "offsets", "pid", "fd", "reply"})
_SHM_REPLY_KEYS = frozenset({"token", "size", "offsets"})
_MAX_PID_OR_FD = (1 << 31) - 1

# Anything a frame can be: bytes, bytearray, memoryview, a zmq.Frame (its .buffer is used), any
# C-contiguous object with the buffer protocol (typing.Buffer needs Python 3.12).
FrameLike = Any


class Op(str, Enum):
    """Message operations. Requests: hello, status, inpaint, cancel. Replies: the rest (and hello/status)."""

    HELLO = "hello"
    STATUS = "status"
    INPAINT = "inpaint"
    PROGRESS = "progress"
    CANCEL = "cancel"
    RESULT = "result"
    ERROR = "error"


class DType(str, Enum):
    """Sample type of a buffer. u16 and f32 are little-endian."""

    U8 = "u8"
    U16 = "u16"
    F32 = "f32"

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def numpy_dtype(self) -> str:
        """The numpy dtype string with explicit byte order (for np.frombuffer)."""
        return _NUMPY_DTYPE[self]


_ITEMSIZE = {DType.U8: 1, DType.U16: 2, DType.F32: 4}
_NUMPY_DTYPE = {DType.U8: "|u1", DType.U16: "<u2", DType.F32: "<f4"}


class ChannelOrder(str, Enum):
    """Channel layout of a buffer, stated once here: colour is always RGB(A), never BGR."""

    RGB = "RGB"
    RGBA = "RGBA"
    L = "L"

    @property
    def channels(self) -> int:
        return _CHANNELS[self]

    @classmethod
    def for_colour_channels(cls, channels: int) -> ChannelOrder:
        """RGB for 3 channels, RGBA for 4; anything else is a BAD_REQUEST."""
        if channels == 3:
            return cls.RGB
        if channels == 4:
            return cls.RGBA
        raise ProtocolError(
            ErrorKind.BAD_REQUEST, f"An image must have 3 (RGB) or 4 (RGBA) channels, not {channels}."
        )


_CHANNELS = {ChannelOrder.RGB: 3, ChannelOrder.RGBA: 4, ChannelOrder.L: 1}


@dataclass(frozen=True)
class BufferSpec:
    """Shape and sample type of one raw frame."""

    name: str
    width: int
    height: int
    dtype: DType
    order: ChannelOrder

    @property
    def channels(self) -> int:
        return self.order.channels

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.dtype.itemsize

    def describe(self) -> str:
        """E.g. "640x480 RGBA u16"."""
        return f"{self.width}x{self.height} {self.order.value} {self.dtype.value}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype.value,
            "order": self.order.value,
        }


@dataclass(frozen=True)
class SharedMemoryRef:
    """Where a message's buffers lie in a same-host shared-memory segment (instead of data frames).

    token: 32 hex digits, also written in the segment's first bytes (the backend compares them).
    size: bytes of the segment the message uses (the segment may be larger, never smaller).
    offsets: one per buffer of the header, in the same order.
    pid, fd: requests only: the client's process id and its descriptor of the segment.
    reply: requests only: (offset, length) of the area the backend writes the result region into.
    """

    token: str
    size: int
    offsets: tuple[int, ...]
    pid: int | None = None
    fd: int | None = None
    reply: tuple[int, int] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"token": self.token, "size": self.size, "offsets": list(self.offsets)}
        if self.pid is not None:
            wire["pid"] = self.pid
        if self.fd is not None:
            wire["fd"] = self.fd
        if self.reply is not None:
            wire["reply"] = list(self.reply)
        return wire


@dataclass(frozen=True)
class Header:
    """Frame 0 of every message. options holds the op's parameters (see the contract in DESIGN).

    shm: None when the buffers travel as data frames; else where they lie in shared memory.
    """

    op: Op
    id: str
    options: dict[str, Any] = field(default_factory=dict)
    buffers: tuple[BufferSpec, ...] = ()
    version: int = PROTOCOL_VERSION
    shm: SharedMemoryRef | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "v": self.version,
            "id": self.id,
            "op": self.op.value,
            "options": self.options,
            "buffers": [spec.to_wire() for spec in self.buffers],
        }
        if self.shm is not None:
            wire["shm"] = self.shm.to_wire()
        return wire


def new_request_id() -> str:
    """A fresh, unique request id."""
    return uuid.uuid4().hex


# Error-reply option: the request's shared memory could not be used; the same request sent with data
# frames may succeed (the Client then resends it once as frames and stops using shared memory).
SHARED_MEMORY_REFUSED = "shared_memory_refused"


class SharedMemoryError(ProtocolError):
    """A request's shared memory cannot be used (its "shm" field or its segment); the same request sent
    as frames may work. The backend's error reply for it carries SHARED_MEMORY_REFUSED."""

    def __init__(
        self, message: str, request_id: str | None = None, kind: ErrorKind = ErrorKind.BAD_REQUEST
    ) -> None:
        super().__init__(kind, f"Shared memory: {message}", request_id)


def error_header(
    request_id: str, kind: ErrorKind, message: str, *, shared_memory_refused: bool = False
) -> Header:
    """The header of an "error" reply (shared_memory_refused: see SHARED_MEMORY_REFUSED)."""
    options: dict[str, Any] = {"kind": ErrorKind(kind).value, "message": message}
    if shared_memory_refused:
        options[SHARED_MEMORY_REFUSED] = True
    return Header(Op.ERROR, request_id, options)


def progress_header(request_id: str, fraction: float, message: str) -> Header:
    """The header of a "progress" reply; fraction is clamped to [0, 1]."""
    fraction = float(fraction)
    fraction = min(1.0, max(0.0, fraction)) if math.isfinite(fraction) else 0.0
    return Header(Op.PROGRESS, request_id, {"fraction": fraction, "message": str(message)})


def as_byte_view(frame: FrameLike) -> memoryview:
    """A flat unsigned-byte memoryview of a frame, without copying (zmq.Frame -> its .buffer)."""
    buffer = getattr(frame, "buffer", frame)
    view = memoryview(buffer)
    if view.ndim != 1 or view.format != "B":
        if not view.c_contiguous:
            raise ProtocolError(ErrorKind.BAD_REQUEST, "A pixel buffer must be contiguous in memory.")
        view = view.cast("B")
    return view


# ---------------------------------------------------------------------------------------------- encode


def encode(header: Header, buffers: Sequence[FrameLike] = ()) -> list[bytes | memoryview]:
    """Frames for one message: the packed header, then the buffers as memoryviews (not copied).

    Send the result with socket.send_multipart(frames, copy=False) to keep large frames zero-copy.
    With header.shm the buffers are in shared memory: pass none (the layout is checked instead).
    Raises ProtocolError(BAD_REQUEST) if a buffer does not match its spec or an option is not encodable.
    """
    if header.shm is not None:
        if buffers:
            raise SharedMemoryError("a message whose buffers are in shared memory carries no data frames.")
        _check_shm_layout(header.shm, header.buffers, header.id)
    elif len(buffers) != len(header.buffers):
        raise ProtocolError(
            ErrorKind.BAD_REQUEST,
            f"The message declares {len(header.buffers)} buffers but {len(buffers)} were given.",
            header.id,
        )
    _check_value(header.options, "options", header.id)
    views = [as_byte_view(buffer) for buffer in buffers]
    for spec, view in zip(header.buffers if header.shm is None else (), views, strict=True):
        if view.nbytes != spec.nbytes:
            raise ProtocolError(
                ErrorKind.BAD_REQUEST,
                f"Buffer '{spec.name}' has {view.nbytes} bytes but {spec.describe()} needs {spec.nbytes}.",
                header.id,
            )
    try:
        packed = msgpack.packb(header.to_wire(), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise ProtocolError(
            ErrorKind.BAD_REQUEST, f"The message header cannot be encoded ({error}).", header.id
        ) from None
    return [packed, *views]


# ---------------------------------------------------------------------------------------------- decode


def decode(frames: Sequence[FrameLike], limits: Limits = DEFAULT_LIMITS) -> tuple[Header, list[memoryview]]:
    """Header and buffer views (no copies) of one message, or ProtocolError with a kind and a sentence.

    Checked in this order, each before anything is unpacked or allocated for the next step: header
    frame size, header nesting depth, msgpack limits, protocol version, fields, frame count, each
    buffer's dimensions against the limits, then each frame's byte length against its spec.

    With a "shm" field there are no data frames and no views: its layout (offsets, sizes, alignment,
    overlaps) is checked against the specs and max_shm_bytes instead; the segment itself is opened
    and checked by whoever reads it (shared_protocol.shm.attach on the backend).
    """
    if len(frames) == 0:
        raise ProtocolError(ErrorKind.BAD_REQUEST, "The message is empty.")
    raw_header = as_byte_view(frames[0])
    if raw_header.nbytes > limits.max_header_bytes:
        raise ProtocolError(
            ErrorKind.TOO_LARGE,
            f"The message header has {raw_header.nbytes} bytes; "
            f"at most {limits.max_header_bytes} are allowed.",
        )
    wire = _unpack_header(raw_header, limits)
    request_id = _read_request_id(wire, limits)

    def fail(kind: ErrorKind, message: str) -> ProtocolError:
        return ProtocolError(kind, message, request_id)

    version = wire.get("v")
    if type(version) is not int:
        raise fail(ErrorKind.BAD_REQUEST, "The message header has no protocol version ('v').")
    if version != PROTOCOL_VERSION:
        raise fail(
            ErrorKind.UNSUPPORTED_VERSION,
            f"The other side speaks protocol version {version}, this side speaks version {PROTOCOL_VERSION}; "
            "install matching versions of the plug-in and the backend.",
        )
    unknown_keys = sorted(set(wire) - {"v", "id", "op", "options", "buffers", "shm"})
    if unknown_keys:
        raise fail(
            ErrorKind.BAD_REQUEST, f"The message header has unknown fields: {', '.join(unknown_keys)}."
        )
    if request_id is None:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"The message needs an 'id': a string of 1 to {limits.max_id_len} characters.",
        )
    op_value = wire.get("op")
    try:
        op = Op(op_value)
    except ValueError:
        raise fail(ErrorKind.BAD_REQUEST, f"Unknown operation {op_value!r}.") from None
    options = wire.get("options", {})
    if not isinstance(options, dict):
        raise fail(ErrorKind.BAD_REQUEST, "The message 'options' must be a map.")
    _check_value(options, "options", request_id)
    wire_buffers = wire.get("buffers", [])
    if not isinstance(wire_buffers, list):
        raise fail(ErrorKind.BAD_REQUEST, "The message 'buffers' must be a list.")

    if len(frames) > limits.max_frames:
        raise fail(
            ErrorKind.TOO_LARGE,
            f"The message has {len(frames)} frames; at most {limits.max_frames} are allowed.",
        )
    shm_wire = wire.get("shm")
    if "shm" in wire and len(frames) != 1:
        raise SharedMemoryError(
            "a message whose buffers are in shared memory carries no data frames "
            f"({len(frames) - 1} arrived).",
            request_id,
        )
    if "shm" not in wire and len(wire_buffers) != len(frames) - 1:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"The header describes {len(wire_buffers)} buffers but {len(frames) - 1} data frames arrived.",
        )
    specs = tuple(
        _buffer_spec_from_wire(index, value, limits, request_id) for index, value in enumerate(wire_buffers)
    )
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise fail(ErrorKind.BAD_REQUEST, "Two buffers in the message have the same name.")
    if "shm" in wire:
        shm = _shm_from_wire(shm_wire, specs, limits, request_id)
        return Header(op, request_id, options, specs, version, shm), []

    views: list[memoryview] = []
    for spec, frame in zip(specs, frames[1:], strict=True):
        view = as_byte_view(frame)
        if view.nbytes > limits.max_frame_bytes:
            raise fail(
                ErrorKind.TOO_LARGE,
                f"Buffer '{spec.name}' has {view.nbytes} bytes; "
                f"at most {limits.max_frame_bytes} are allowed.",
            )
        if view.nbytes != spec.nbytes:
            raise fail(
                ErrorKind.BAD_REQUEST,
                f"Buffer '{spec.name}' has {view.nbytes} bytes but {spec.describe()} needs {spec.nbytes}.",
            )
        views.append(view)
    return Header(op, request_id, options, specs, version), views


def _unpack_header(raw: memoryview, limits: Limits) -> dict[str, Any]:
    _check_msgpack_nesting(raw, limits.max_depth)
    try:
        wire = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as error:
        detail = str(error) or type(error).__name__
        if "exceeds max_ext_len" in detail or ("exceeds max_bin_len" in detail and limits.max_bin_len == 0):
            raise ProtocolError(
                ErrorKind.BAD_REQUEST,
                "The message header must not contain binary or extension data (pixels travel in frames).",
            ) from None
        if "exceeds max_" in detail:
            raise ProtocolError(
                ErrorKind.TOO_LARGE,
                f"A field of the message header is larger than the protocol allows ({detail}).",
            ) from None
        raise ProtocolError(
            ErrorKind.BAD_REQUEST, f"The message header is not valid msgpack ({detail})."
        ) from None
    if not isinstance(wire, dict):
        raise ProtocolError(ErrorKind.BAD_REQUEST, "The message header must be a msgpack map.")
    return wire


def _read_request_id(wire: dict[str, Any], limits: Limits) -> str | None:
    request_id = wire.get("id")
    if isinstance(request_id, str) and 0 < len(request_id) <= limits.max_id_len:
        return request_id
    return None


def _buffer_spec_from_wire(index: int, value: Any, limits: Limits, request_id: str | None) -> BufferSpec:
    def fail(kind: ErrorKind, message: str) -> ProtocolError:
        return ProtocolError(kind, message, request_id)

    expected_keys = {"name", "width", "height", "channels", "dtype", "order"}
    if not isinstance(value, dict) or set(value) != expected_keys:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"Buffer {index} must be a map with exactly: {', '.join(sorted(expected_keys))}.",
        )
    name = value["name"]
    if not isinstance(name, str) or not name:
        raise fail(ErrorKind.BAD_REQUEST, f"Buffer {index} needs a non-empty name.")
    for key in ("width", "height", "channels"):
        if type(value[key]) is not int:
            raise fail(
                ErrorKind.BAD_REQUEST, f"Buffer '{name}': {key} must be a whole number, not {value[key]!r}."
            )
    width, height = value["width"], value["height"]
    if width <= 0 or height <= 0:
        raise fail(
            ErrorKind.BAD_REQUEST, f"Buffer '{name}' is {width}x{height}; width and height must be positive."
        )
    if width > limits.max_side or height > limits.max_side:
        raise fail(
            ErrorKind.TOO_LARGE,
            f"Buffer '{name}' is {width}x{height}; each side may be at most {limits.max_side} pixels.",
        )
    if width * height > limits.max_pixels:
        raise fail(
            ErrorKind.TOO_LARGE,
            f"Buffer '{name}' has {width * height / 1e6:.1f} megapixels; "
            f"at most {limits.max_pixels / 1e6:.1f} megapixels are allowed.",
        )
    try:
        dtype = DType(value["dtype"])
    except ValueError:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"Buffer '{name}' has sample type {value['dtype']!r}; expected one of u8, u16, f32.",
        ) from None
    try:
        order = ChannelOrder(value["order"])
    except ValueError:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"Buffer '{name}' has channel order {value['order']!r}; expected RGB, RGBA or L.",
        ) from None
    if value["channels"] != order.channels:
        raise fail(
            ErrorKind.BAD_REQUEST,
            f"Buffer '{name}' says {value['channels']} channels "
            f"but order {order.value} has {order.channels}.",
        )
    spec = BufferSpec(name, width, height, dtype, order)
    if spec.nbytes > limits.max_frame_bytes:
        raise fail(
            ErrorKind.TOO_LARGE,
            f"Buffer '{name}' ({spec.describe()}) needs {spec.nbytes} bytes; "
            f"at most {limits.max_frame_bytes} are allowed per buffer.",
        )
    return spec


def _shm_from_wire(
    value: Any, specs: Sequence[BufferSpec], limits: Limits, request_id: str | None
) -> SharedMemoryRef:
    """A SharedMemoryRef from the header's "shm" map: types, then sizes against limits, then layout."""

    def fail(message: str, kind: ErrorKind = ErrorKind.BAD_REQUEST) -> ProtocolError:
        return SharedMemoryError(message, request_id, kind)

    if not isinstance(value, dict) or not {"token", "size", "offsets"} <= set(value) <= _SHM_REQUEST_KEYS:
        raise fail("'shm' must be a map with token, size and offsets (and in a request pid, fd and reply).")
    if set(value) != _SHM_REPLY_KEYS and set(value) != _SHM_REQUEST_KEYS:
        raise fail("a request's 'shm' needs all of pid, fd and reply; a reply's none of them.")
    token = value["token"]
    if not isinstance(token, str) or not _SHM_TOKEN.fullmatch(token):
        raise fail("the token must be 32 lowercase hex digits.")
    size, offsets = value["size"], value["offsets"]
    if type(size) is not int or size < SHM_HEADER_BYTES:
        raise fail(f"the segment size must be a whole number of at least {SHM_HEADER_BYTES} bytes.")
    if size > limits.max_shm_bytes:
        raise fail(
            f"the segment has {size} bytes; at most {limits.max_shm_bytes} are allowed.", ErrorKind.TOO_LARGE
        )
    if not isinstance(offsets, list) or not all(type(offset) is int for offset in offsets):
        raise fail("'offsets' must be a list of whole numbers.")
    pid = fd = reply = None
    if "pid" in value:
        pid, fd, reply_wire = value["pid"], value["fd"], value["reply"]
        if type(pid) is not int or not 0 < pid <= _MAX_PID_OR_FD:
            raise fail(f"pid must be a positive whole number, not {pid!r}.")
        if type(fd) is not int or not 0 <= fd <= _MAX_PID_OR_FD:
            raise fail(f"fd must be a descriptor number, not {fd!r}.")
        if (
            not isinstance(reply_wire, list)
            or len(reply_wire) != 2
            or not all(type(item) is int for item in reply_wire)
        ):
            raise fail("'reply' must be [offset, length], two whole numbers.")
        reply = (reply_wire[0], reply_wire[1])
    ref = SharedMemoryRef(token, size, tuple(offsets), pid, fd, reply)
    _check_shm_layout(ref, specs, request_id)
    return ref


def _check_shm_layout(ref: SharedMemoryRef, specs: Sequence[BufferSpec], request_id: str | None) -> None:
    """Every buffer (and the reply area) inside [SHM_HEADER_BYTES, size), aligned, none overlapping;
    the reply area after all buffers. Pure arithmetic on the declared numbers."""

    def fail(message: str) -> ProtocolError:
        return SharedMemoryError(message, request_id)

    if len(ref.offsets) != len(specs):
        raise fail(f"{len(ref.offsets)} offsets for {len(specs)} buffers.")
    areas = []
    for spec, offset in zip(specs, ref.offsets, strict=True):
        if offset < SHM_HEADER_BYTES or offset % SHM_ALIGN:
            raise fail(
                f"buffer '{spec.name}' starts at {offset}; buffers start at a multiple of {SHM_ALIGN} "
                f"from {SHM_HEADER_BYTES} on."
            )
        if offset + spec.nbytes > ref.size:
            raise fail(
                f"buffer '{spec.name}' ({spec.describe()}, {spec.nbytes} bytes at {offset}) ends beyond "
                f"the segment's {ref.size} bytes."
            )
        areas.append((offset, offset + spec.nbytes, f"buffer '{spec.name}'"))
    if ref.reply is not None:
        offset, length = ref.reply
        if offset % SHM_REPLY_ALIGN or length < 0 or offset + length > ref.size:
            raise fail(
                f"the reply area ({length} bytes at {offset}) must start at a multiple of "
                f"{SHM_REPLY_ALIGN} and end within the segment's {ref.size} bytes."
            )
        if any(end > offset for _start, end, _name in areas):
            raise fail("the reply area must come after every buffer.")
    areas.sort()
    for (_start, end, name), (start, _end, other) in zip(areas, areas[1:], strict=False):
        if start < end:
            raise fail(f"{name} and {other} overlap.")


def check_buffer_spec(spec: BufferSpec, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ProtocolError if a spec breaks a rule decode() enforces (dimensions, limits)."""
    _buffer_spec_from_wire(0, spec.to_wire(), limits, None)


def _check_value(value: Any, path: str, request_id: str | None) -> None:
    """Options may hold None, bool, int, finite float, str, lists and string-keyed maps."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(
                ErrorKind.BAD_REQUEST, f"'{path}' must be a finite number, not {value}.", request_id
            )
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", request_id)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProtocolError(
                    ErrorKind.BAD_REQUEST, f"'{path}' has a key that is not a string.", request_id
                )
            _check_value(item, f"{path}.{key}", request_id)
        return
    raise ProtocolError(
        ErrorKind.BAD_REQUEST,
        f"'{path}' has a value of type {type(value).__name__} that cannot be sent.",
        request_id,
    )


# msgpack type bytes -> payload size for fixed-size scalars (nil/bool/fixint have none).
_FIXED_PAYLOAD = {
    0xCA: 4, 0xCB: 8,  # float32, float64
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # uint
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext: type byte + data
}  # fmt: skip
# type byte -> (length-field bytes, extra bytes after the length) for str/bin/ext.
_SIZED_PAYLOAD = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext (type byte)
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip
# type byte -> (length-field bytes, items per entry) for arrays and maps.
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _check_msgpack_nesting(data: memoryview, max_depth: int) -> None:
    """Walk the msgpack bytes without building objects; reject nesting deeper than max_depth.

    msgpack has no nesting limit of its own; this scan runs before unpacking so a hostile header
    cannot drive the unpacker into deep recursion.
    """
    size = data.nbytes
    position = 0
    remaining = [1]  # items still expected at each open level; the bottom is the single top-level object
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        if position >= size:
            raise ProtocolError(ErrorKind.BAD_REQUEST, "The message header is truncated.")
        remaining[-1] -= 1
        type_byte = data[position]
        position += 1
        items = -1
        if type_byte <= 0x7F or type_byte >= 0xE0 or type_byte in (0xC0, 0xC2, 0xC3):
            pass
        elif type_byte <= 0x8F:
            items = 2 * (type_byte & 0x0F)
        elif type_byte <= 0x9F:
            items = type_byte & 0x0F
        elif type_byte <= 0xBF:
            position += type_byte & 0x1F
        elif type_byte in _FIXED_PAYLOAD:
            position += _FIXED_PAYLOAD[type_byte]
        elif type_byte in _SIZED_PAYLOAD:
            length_bytes, extra = _SIZED_PAYLOAD[type_byte]
            length = int.from_bytes(data[position : position + length_bytes], "big")
            position += length_bytes + extra + length
        elif type_byte in _CONTAINERS:
            length_bytes, per_entry = _CONTAINERS[type_byte]
            items = per_entry * int.from_bytes(data[position : position + length_bytes], "big")
            position += length_bytes
        else:
            raise ProtocolError(ErrorKind.BAD_REQUEST, "The message header is not valid msgpack.")
        if items >= 0:
            if len(remaining) > max_depth:
                raise ProtocolError(
                    ErrorKind.BAD_REQUEST, f"The message header is nested deeper than {max_depth} levels."
                )
            remaining.append(items)
    if position != size:
        raise ProtocolError(ErrorKind.BAD_REQUEST, "The message header has trailing or truncated data.")


# ---------------------------------------------------------------------------------------------- inpaint


INPAINT_OPTIONS = frozenset({"context_px"})


@dataclass(frozen=True)
class InpaintRequest:
    """A validated inpaint request: the image and mask frames (views, not copies) and the options.

    shm: where the buffers came from when they were in shared memory (the result goes to its reply area).
    """

    request_id: str
    image: BufferSpec
    mask: BufferSpec
    image_data: memoryview
    mask_data: memoryview
    context_px: int | None
    shm: SharedMemoryRef | None = None


def inpaint_header(request_id: str, image: BufferSpec, mask: BufferSpec, options: dict[str, Any]) -> Header:
    """The header of an inpaint request (validate it with parse_inpaint_request)."""
    return Header(Op.INPAINT, request_id, dict(options), (image, mask))


def parse_inpaint_request(
    header: Header, buffers: Sequence[memoryview], limits: Limits = DEFAULT_LIMITS
) -> InpaintRequest:
    """Check an inpaint request beyond the generic rules: an RGB/RGBA image, an L u8 mask of the same
    size, known options and, with shared memory, a reply area that holds the image's bytes (the
    largest possible result). buffers: the frames, or the views of the attached segment.
    Raises ProtocolError(BAD_REQUEST) with the reason."""

    def fail(message: str) -> ProtocolError:
        return ProtocolError(ErrorKind.BAD_REQUEST, message, header.id)

    names = sorted(spec.name for spec in header.buffers)
    if names != ["image", "mask"] or len(buffers) != 2:
        raise fail("An inpaint request needs exactly two buffers, 'image' and 'mask'.")
    by_name = {spec.name: (spec, data) for spec, data in zip(header.buffers, buffers, strict=True)}
    image, image_data = by_name["image"]
    mask, mask_data = by_name["mask"]
    if image.order not in (ChannelOrder.RGB, ChannelOrder.RGBA):
        raise fail(f"The image must be RGB or RGBA, not {image.order.value}.")
    if mask.order != ChannelOrder.L or mask.dtype != DType.U8:
        raise fail(f"The mask must be one channel (L) of u8, not {mask.order.value} {mask.dtype.value}.")
    if (mask.width, mask.height) != (image.width, image.height):
        raise fail(
            f"The mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
            "they must match."
        )
    unknown = sorted(set(header.options) - INPAINT_OPTIONS)
    if unknown:
        raise fail(
            f"Unknown inpaint options: {', '.join(unknown)} (known: {', '.join(sorted(INPAINT_OPTIONS))})."
        )
    context_px = header.options.get("context_px")
    if context_px is not None:
        if type(context_px) is not int:
            raise fail(f"context_px must be a whole number of pixels or absent, not {context_px!r}.")
        if not 0 <= context_px <= limits.max_side:
            raise fail(f"context_px must be between 0 and {limits.max_side} pixels, not {context_px}.")
    for spec, data in ((image, image_data), (mask, mask_data)):
        if data.nbytes != spec.nbytes:
            raise fail(
                f"Buffer '{spec.name}' has {data.nbytes} bytes but {spec.describe()} needs {spec.nbytes}."
            )
    if header.shm is not None and (header.shm.reply is None or header.shm.reply[1] < image.nbytes):
        raise SharedMemoryError(
            f"the reply area must hold the image's {image.nbytes} bytes (the largest result).", header.id
        )
    return InpaintRequest(header.id, image, mask, image_data, mask_data, context_px, header.shm)

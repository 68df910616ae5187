"""HiFill wire protocol and client, shared by the backend and the editor plug-ins.

Depends on the standard library, msgpack and pyzmq only (it runs inside GIMP's and Krita's Python).
"""

from .client import Client, InpaintResult, ProgressCallback
from .curve import CurveKeys
from .errors import ErrorKind, HiFillError, ProtocolError
from .limits import EIGHT_K_RGBA_U16_BYTES, Limits
from .messages import (
    DEFAULT_ENDPOINT,
    DEFAULT_LIMITS,
    INPAINT_OPTIONS,
    PROTOCOL_VERSION,
    BufferSpec,
    ChannelOrder,
    DType,
    Header,
    InpaintRequest,
    Op,
    as_byte_view,
    check_buffer_spec,
    decode,
    encode,
    error_header,
    inpaint_header,
    new_request_id,
    parse_inpaint_request,
    progress_header,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_LIMITS",
    "EIGHT_K_RGBA_U16_BYTES",
    "INPAINT_OPTIONS",
    "PROTOCOL_VERSION",
    "BufferSpec",
    "ChannelOrder",
    "Client",
    "CurveKeys",
    "DType",
    "ErrorKind",
    "Header",
    "HiFillError",
    "InpaintRequest",
    "InpaintResult",
    "Limits",
    "Op",
    "ProgressCallback",
    "ProtocolError",
    "as_byte_view",
    "check_buffer_spec",
    "decode",
    "encode",
    "error_header",
    "inpaint_header",
    "new_request_id",
    "parse_inpaint_request",
    "progress_header",
]

"""HiFill wire protocol and client, shared by the backend and the editor plug-ins.

Depends on the standard library, msgpack and pyzmq only (it runs inside GIMP's and Krita's Python).
Importing the package, and its modules errors, limits, endpoints, regions, settings and launcher,
needs the standard library alone: the names below that need msgpack or pyzmq (the client, the
messages, CURVE keys) are imported on first use (PEP 562), so an editor whose Python lacks those
packages can still load the plug-in and say what is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from .endpoints import DEFAULT_ENDPOINT
from .errors import ErrorKind, HiFillError, ProtocolError
from .limits import EIGHT_K_RGBA_U16_BYTES, Limits

# The names of __all__ after the first six are imported on first use (they need msgpack or pyzmq):
# from the submodule named here, else from messages.
_LAZY_FROM = {
    "Client": "client",
    "InpaintResult": "client",
    "ProgressCallback": "client",
    "CurveKeys": "curve",
}

__all__ = [
    "DEFAULT_ENDPOINT",
    "EIGHT_K_RGBA_U16_BYTES",
    "ErrorKind",
    "HiFillError",
    "Limits",
    "ProtocolError",
    "Client",
    "InpaintResult",
    "ProgressCallback",
    "CurveKeys",
    "DEFAULT_LIMITS",
    "INPAINT_OPTIONS",
    "PROTOCOL_VERSION",
    "BufferSpec",
    "ChannelOrder",
    "DType",
    "Header",
    "InpaintRequest",
    "Op",
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


def __getattr__(name: str) -> Any:
    """The lazy names: import their submodule (ImportError names a missing pyzmq or msgpack)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _LAZY_FROM.get(name, "messages")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

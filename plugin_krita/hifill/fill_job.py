"""One fill as the worker thread runs it: make sure a backend answers, send, relay progress, return.

No Qt and no Krita objects: the worker receives plain bytes (FillRequest) and returns the backend's
InpaintResult; the UI thread reads and writes the document (see document_io).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared_protocol import Client, CurveKeys, ErrorKind, HiFillError, InpaintResult

from .backend_life import BackendLauncher, BackendStatus

# Timeouts of the editor's client: a fill may run for minutes on CPU at 8K; connecting must be quick.
FILL_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 3.0
PROBE_CONNECT_TIMEOUT_S = 1.5


class OutputMode(str, enum.Enum):
    NEW_LAYER = "new_layer"  # a new paint layer above the source (one undo removes it)
    IN_PLACE = "in_place"  # the source layer's pixels are replaced


@dataclass(frozen=True)
class FillSettings:
    """The panel's options. context_px None means automatic; keys_folder "" means no keys (a backend
    on this computer), else a client keys folder for a backend on another machine (CurveKeys)."""

    output_mode: OutputMode
    context_px: int | None
    endpoint: str
    keys_folder: str = ""


@dataclass(frozen=True)
class FillRequest:
    """The bytes of one fill, in protocol form (RGBA, little-endian) — no editor objects."""

    image: bytes
    mask: bytes
    width: int
    height: int
    dtype: str
    channels: int = 4
    context_px: int | None = None

    def __post_init__(self) -> None:
        bytes_per_channel = {"u8": 1, "u16": 2, "f32": 4}[self.dtype]
        expected = self.width * self.height * self.channels * bytes_per_channel
        if len(self.image) != expected:
            raise ValueError(f"image has {len(self.image)} bytes, expected {expected}")
        if len(self.mask) != self.width * self.height:
            raise ValueError(f"mask has {len(self.mask)} bytes, expected {self.width * self.height}")


# (endpoint, timeout_s, connect_timeout_s, keys_folder) -> Client; raises HiFillError for unusable keys.
ClientFactory = Callable[[str, float, float, str], Client]


def default_client_factory(
    endpoint: str, timeout_s: float, connect_timeout_s: float, keys_folder: str = ""
) -> Client:
    curve = CurveKeys.from_folder(keys_folder) if keys_folder else None
    return Client(endpoint=endpoint, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, curve=curve)


def run_fill(
    request: FillRequest,
    endpoint: str,
    launcher: BackendLauncher,
    cancel_event: threading.Event,
    on_status: Callable[[BackendStatus], None],
    on_progress: Callable[[float, str], None],
    client_factory: ClientFactory = default_client_factory,
    keys_folder: str = "",
) -> InpaintResult:
    """Run one fill to completion; raises HiFillError (CANCELLED when cancel_event is set)."""
    probe_client = client_factory(endpoint, 10.0, PROBE_CONNECT_TIMEOUT_S, keys_folder)
    try:
        launcher.ensure_running(
            endpoint, probe_client.hello, on_status=on_status, is_cancelled=cancel_event.is_set
        )
    finally:
        probe_client.close()
    if cancel_event.is_set():
        raise HiFillError(ErrorKind.CANCELLED, "Fill cancelled.")
    options = {} if request.context_px is None else {"context_px": request.context_px}
    client = client_factory(endpoint, FILL_TIMEOUT_S, CONNECT_TIMEOUT_S, keys_folder)
    try:
        on_progress(0.0, "sending")
        return client.inpaint(
            request.image,
            request.width,
            request.height,
            request.channels,
            request.dtype,
            request.mask,
            options=options,
            on_progress=on_progress,
            cancel_event=cancel_event,
        )
    finally:
        client.close()

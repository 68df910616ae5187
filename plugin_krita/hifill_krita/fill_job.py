"""One fill as the worker thread runs it: make sure a backend answers, send, relay progress, return;
and the session's one Client that every fill and status probe uses.

No Qt and no Krita objects: the worker receives plain bytes (FillRequest) and returns the backend's
InpaintResult; the UI thread reads and writes the document (see document_io).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared_protocol import Client, CurveKeys, ErrorKind, HiFillError, InpaintResult
from shared_protocol.launcher import BackendLauncher
from shared_protocol.settings import inpaint_options

from .backend_life import BackendStatus, ensure_backend

# Timeouts of the session's client: a fill may run for minutes on CPU at 8K; connecting must be quick
# (a status probe of a backend that is not there costs CONNECT_TIMEOUT_S).
FILL_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 1.5


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


ClientFactory = Callable[[str, str], Client]  # (endpoint, keys_folder) -> Client; HiFillError: bad keys


def make_client(endpoint: str, keys_folder: str = "") -> Client:
    """A Client for the session: the keys of `keys_folder` ("" = none, a backend on this computer)."""
    curve = CurveKeys.from_folder(keys_folder) if keys_folder else None
    return Client(
        endpoint=endpoint, timeout_s=FILL_TIMEOUT_S, connect_timeout_s=CONNECT_TIMEOUT_S, curve=curve
    )


class SessionClient:
    """The one Client of a Krita session, for fills and status probes alike, so its connection and its
    shared-memory segment are reused from fill to fill. Replaced when the endpoint or the keys folder
    changes; closed when Krita quits. Safe to use from several threads (the Client serialises calls).
    """

    def __init__(self, factory: ClientFactory = make_client) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._for: tuple[str, str] | None = None  # (endpoint, keys_folder) of _client

    def get(self, endpoint: str, keys_folder: str = "") -> Client:
        """The Client for `endpoint` and `keys_folder`; HiFillError(ACCESS_DENIED) for unusable keys."""
        with self._lock:
            if self._client is not None and self._for == (endpoint, keys_folder):
                return self._client
            client = self._factory(endpoint, keys_folder)
            replaced, self._client, self._for = self._client, client, (endpoint, keys_folder)
        if replaced is not None:
            replaced.close()  # outside the lock: it may wait for a call still running on it
        return client

    def close(self) -> None:
        """Close the current Client (Krita is closing); a later get() makes a new one."""
        with self._lock:
            client, self._client, self._for = self._client, None, None
        if client is not None:
            client.close()


def run_fill(
    request: FillRequest,
    client: Client,
    launcher: BackendLauncher,
    cancel_event: threading.Event,
    on_status: Callable[[BackendStatus], None],
    on_progress: Callable[[float, str], None],
) -> InpaintResult:
    """Run one fill through the session's `client` to completion, starting the installed backend when
    none answers; raises HiFillError (CANCELLED when cancel_event is set)."""
    ensure_backend(launcher, client, on_status, cancel_event.is_set)
    if cancel_event.is_set():
        raise HiFillError(ErrorKind.CANCELLED, "Fill cancelled.")
    on_progress(0.0, "sending")
    return client.inpaint(
        request.image,
        request.width,
        request.height,
        request.channels,
        request.dtype,
        request.mask,
        options=inpaint_options(request.context_px),
        on_progress=on_progress,
        cancel_event=cancel_event,
    )

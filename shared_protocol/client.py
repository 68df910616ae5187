"""The client the plug-ins use: one DEALER socket, timeouts on every wait, progress, cancel, reconnect.

Pixels go to a backend on the same machine through shared memory (shared_protocol.shm) when both
sides can, else as ZeroMQ frames; the result is the same bit for bit either way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import shm
from .curve import CurveKeys, require_curve
from .endpoints import DEFAULT_ENDPOINT, EndpointError, is_local_endpoint, parse_endpoint
from .errors import ErrorKind, HiFillError, ProtocolError
from .limits import Limits
from .messages import (
    DEFAULT_LIMITS,
    SHARED_MEMORY_REFUSED,
    BufferSpec,
    ChannelOrder,
    DType,
    FrameLike,
    Header,
    Op,
    as_byte_view,
    check_buffer_spec,
    decode,
    encode,
    error_header,
    inpaint_header,
    new_request_id,
    parse_inpaint_request,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

_POLL_SLICE_S = 0.05  # how often a wait looks at the cancel event
_CANCEL_SEND_LINGER_MS = 200  # time a closing socket gets to deliver a last "cancel"
# Connection events the client watches: a lost backend, and a failed (CURVE) handshake.
_HANDSHAKE_NO_DETAIL = getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0)
_HANDSHAKE_PROTOCOL = getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0)
_HANDSHAKE_AUTH = getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", 0)
_CONNECTION_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
_MONITORED_EVENTS = _CONNECTION_EVENTS | _HANDSHAKE_NO_DETAIL | _HANDSHAKE_PROTOCOL | _HANDSHAKE_AUTH
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", -1)
_LAST_WORD_WAIT_MS = 200  # after a disconnect: how long a message already sent may take to arrive
SHARED_MEMORY = "shared_memory"  # Client.last_transport values
FRAMES = "frames"


@dataclass(frozen=True)
class InpaintResult:
    """The filled region: pixels of the image's rectangle (x, y, width, height), same channels and dtype.

    Pixels inside the rectangle but outside the mask are bit-exact copies of the input. An empty mask
    gives width == height == 0 and no pixels.
    """

    x: int
    y: int
    width: int
    height: int
    channels: int
    dtype: DType
    pixels: bytes
    warnings: tuple[str, ...] = ()  # sentences to show the user (e.g. an out-of-memory fallback taken)


class Client:
    """Talks to one backend. Every wait is bounded; a dead backend gives BACKEND_UNAVAILABLE, never a hang.

    timeout_s: total time an inpaint may take (queue wait included); on expiry the request is
        cancelled on the backend and HiFillError(TIMEOUT) is raised.
    connect_timeout_s: time to wait for a connection to the backend before BACKEND_UNAVAILABLE.
    inactivity_timeout_s: time without any message from the backend after which it counts as dead
        (the backend sends progress at least every ~2 s while it works on or queues a request).
    cancel_grace_s: after a cancel, time to wait for the backend's confirmation.

    curve: keys for a backend that requires CURVE (one on another machine, started with
        --curve-keys); None for a local backend. CurveKeys.from_folder loads a client keys folder.
        A backend that refuses the keys gives HiFillError(ACCESS_DENIED) with what to do.
    shared_memory: send an inpaint's pixels through shared memory when the backend is on this machine
        (ipc://, inproc:// or loopback tcp://, no curve) and the system supports it
        (shared_protocol.shm); the result comes back the same way. The Client keeps its segment for
        the next requests (its pages stay allocated) until close(). When it is not possible the
        request goes as frames (the reason is logged at DEBUG). When the backend rejects the shared
        memory (an error reply flagged "shared_memory_refused": it cannot open the segment, or it
        serves other machines; or bad_request before accepting the request, from a backend that
        predates shared memory) the same request goes again as frames at once, and this Client sends
        frames from then on. last_transport says which one the last inpaint used ("shared_memory" or
        "frames").

    Calls are serialised (one request at a time per Client); use a second Client for concurrent calls.
    After any failure of the connection the socket is replaced by a fresh one on the next call.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 3.0,
        *,
        inactivity_timeout_s: float = 15.0,
        cancel_grace_s: float = 3.0,
        limits: Limits = DEFAULT_LIMITS,
        context: zmq.Context | None = None,
        curve: CurveKeys | None = None,
        shared_memory: bool = True,
    ) -> None:
        for name, value in (
            ("timeout_s", timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("inactivity_timeout_s", inactivity_timeout_s),
            ("cancel_grace_s", cancel_grace_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.inactivity_timeout_s = float(inactivity_timeout_s)
        self.cancel_grace_s = float(cancel_grace_s)
        self.limits = limits
        self.curve = curve
        self._context = context if context is not None else zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._lock = threading.Lock()
        self._close_linger_ms = 0  # raised briefly so a last "cancel" can leave before the socket closes
        self._handshake_failure: tuple[int, int] | None = None  # (event, value) seen while connecting
        self._connected_in_attempt = False  # a TCP connection was made since this attempt began
        self._closed_handshakes = 0  # connections of this attempt closed in their handshake, no reason given
        self.shared_memory = shared_memory
        self.last_transport: str | None = None
        self._shm_lock = threading.Lock()  # held over a whole shared-memory inpaint (taken before _lock)
        self._segment: shm.Segment | None = None
        self._shm_refused: str | None = None  # why the backend rejected this Client's shared memory
        self._progress_seen = False  # the request _await_final waits for got a progress message

    # ------------------------------------------------------------------------------------- public API

    def hello(self) -> dict[str, Any]:
        """The backend's description: version, device, model, weights, precision, limits, queue."""
        header, _ = self._exchange(Header(Op.HELLO, new_request_id()), (), Op.HELLO, self._quick_timeout_s())
        return dict(header.options)

    def status(self) -> dict[str, Any]:
        """The backend's state now: busy, queue_length, max_queue, ..."""
        header, _ = self._exchange(
            Header(Op.STATUS, new_request_id()), (), Op.STATUS, self._quick_timeout_s()
        )
        return dict(header.options)

    def inpaint(
        self,
        image: FrameLike,
        width: int,
        height: int,
        channels: int,
        dtype: DType | str,
        mask: FrameLike,
        options: dict[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None,
    ) -> InpaintResult:
        """Fill the masked part of an image. image: width*height*channels samples of dtype, row-major,
        RGB or RGBA, little-endian; mask: width*height bytes, 255 = fill, 0 = keep.

        on_progress(fraction, message) is called in this thread. Setting cancel_event cancels the fill
        (HiFillError(CANCELLED)). Raises HiFillError for every failure, checked locally first.
        """
        try:
            image_dtype = DType(dtype)
        except ValueError:
            raise HiFillError(
                ErrorKind.BAD_REQUEST, f"Unknown sample type {dtype!r}; use u8, u16 or f32."
            ) from None
        if type(width) is not int or type(height) is not int:
            raise HiFillError(ErrorKind.BAD_REQUEST, "Width and height must be whole numbers.")
        image_spec = BufferSpec(
            "image", width, height, image_dtype, ChannelOrder.for_colour_channels(channels)
        )
        mask_spec = BufferSpec("mask", width, height, DType.U8, ChannelOrder.L)
        for spec in (image_spec, mask_spec):
            check_buffer_spec(spec, self.limits)
        options = options or {}
        header = inpaint_header(new_request_id(), image_spec, mask_spec, options)
        buffers = [as_byte_view(image), as_byte_view(mask)]
        # The same checks the backend makes, on views of the caller's buffers (nothing is copied).
        checked_header, checked_buffers = decode(encode(header, buffers), self.limits)
        parse_inpaint_request(checked_header, checked_buffers, self.limits)

        if self._shared_memory_unusable() is None:
            with self._shm_lock:
                prepared = self._prepare_shared_memory(header, buffers)
                if prepared is not None:
                    shm_header, segment, layout = prepared
                    try:
                        reply, _ = self._exchange(
                            shm_header,
                            (),
                            Op.RESULT,
                            self.timeout_s,
                            on_progress=on_progress,
                            cancel_event=cancel_event,
                        )
                    except _SharedMemoryRejected as refusal:
                        self._shm_refused = refusal.message
                        log.debug("the backend rejected shared memory (%s); sending frames", refusal.message)
                        header = inpaint_header(new_request_id(), image_spec, mask_spec, options)
                    else:
                        self.last_transport = SHARED_MEMORY
                        return _inpaint_result(reply, [], image_spec, segment, layout)
        reply, reply_buffers = self._exchange(
            header, buffers, Op.RESULT, self.timeout_s, on_progress=on_progress, cancel_event=cancel_event
        )
        self.last_transport = FRAMES
        return _inpaint_result(reply, reply_buffers, image_spec)

    def close(self) -> None:
        """Close the socket (pending messages are dropped) and free the shared-memory segment.
        The Client can still be used afterwards."""
        with self._shm_lock, self._lock:
            self._reset()
            if self._segment is not None:
                self._segment.close()
                self._segment = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- internals

    def _quick_timeout_s(self) -> float:
        return min(self.timeout_s, self.inactivity_timeout_s)

    def _shared_memory_unusable(self) -> str | None:
        """Why an inpaint cannot use shared memory (known without asking the backend), or None."""
        reason = None
        if not self.shared_memory:
            reason = "it is turned off for this client"
        elif self.curve is not None:
            reason = "the backend is reached with keys (CURVE)"
        elif not is_local_endpoint(self.endpoint):
            reason = f"{self.endpoint} is not an address on this machine"
        elif self._shm_refused is not None:
            reason = f"the backend refused it earlier: {self._shm_refused}"
        else:
            reason = shm.unavailable_reason()
        if reason is not None:
            log.debug("shared memory not used (%s); sending frames", reason)
        return reason

    def _prepare_shared_memory(
        self, header: Header, buffers: Sequence[memoryview]
    ) -> tuple[Header, shm.Segment, shm.Layout] | None:
        """The request's pixels copied into this Client's segment and the header that points to them,
        or None (logged) when the segment cannot be made or filled here."""
        image = header.buffers[0]
        layout = shm.plan_layout([spec.nbytes for spec in header.buffers], image.nbytes)
        try:
            if self._segment is None or self._segment.closed or self._segment.size < layout.size:
                if self._segment is not None:
                    self._segment.close()
                    self._segment = None
                self._segment = shm.Segment(layout.size)
            segment = self._segment
            shm_header = replace(header, shm=segment.ref(layout))
            decode(encode(shm_header), self.limits)  # the layout against this side's limits
            for offset, buffer in zip(layout.offsets, buffers, strict=True):
                segment.write(offset, buffer)
        except (OSError, ValueError, ProtocolError) as error:
            log.debug("shared memory not used (%s); sending frames", error)
            return None
        return shm_header, segment, layout

    def _exchange(
        self,
        header: Header,
        buffers: Sequence[FrameLike],
        final_op: Op,
        total_timeout_s: float,
        on_progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None,
    ) -> tuple[Header, list[memoryview]]:
        frames = encode(header, buffers)
        with self._lock:
            sent = healthy = False
            try:
                socket = self._connected_socket()
                socket.send_multipart(frames, copy=False)
                sent = True
                reply, reply_buffers = self._await_final(
                    header.id, final_op, total_timeout_s, on_progress, cancel_event
                )
                accepted = self._progress_seen
                healthy = True  # a complete exchange: the socket stays usable even for an error reply
            finally:
                if not healthy:
                    # Abandoned (timeout, cancel, an exception in a callback): stop the backend's work.
                    if sent and header.op == Op.INPAINT:
                        self._send_cancel(header.id)
                    self._reset()
        if reply.op == Op.ERROR:
            error = _error_from_reply(reply)
            # A rejected shared-memory request: flagged by the backend, or (a backend that predates
            # shared memory) refused before it was accepted, i.e. before any progress.
            if header.shm is not None and (
                reply.options.get(SHARED_MEMORY_REFUSED) is True
                or (error.kind == ErrorKind.BAD_REQUEST and not accepted)
            ):
                raise _SharedMemoryRejected(error.kind, error.message)
            raise error
        return reply, reply_buffers

    def _connected_socket(self) -> zmq.Socket:
        if self._socket is None:
            try:
                parse_endpoint(self.endpoint)
            except EndpointError as error:
                raise HiFillError(ErrorKind.BAD_REQUEST, str(error)) from None
            if self.curve is not None:
                require_curve()
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            if "://[" in self.endpoint:  # a bracketed IPv6 address such as tcp://[::1]:47631
                socket.setsockopt(zmq.IPV6, 1)
            # Queue messages only on completed connections (for CURVE: after the backend accepted the
            # keys): "writable" then means "a backend is there and serves us".
            socket.setsockopt(zmq.IMMEDIATE, 1)
            if self.curve is not None:
                self.curve.apply(socket)  # on every fresh socket, i.e. on every reconnect
            self._monitor = socket.get_monitor_socket(_MONITORED_EVENTS)
            socket.connect(self.endpoint)
            self._socket = socket
        # Events since the last look count (a refusal may already be in: loopback handshakes take
        # microseconds, and libzmq does not retry after one); older ones were judged then.
        self._handshake_failure = None
        self._connected_in_attempt = False
        self._closed_handshakes = 0
        self._drain_monitor()
        refusal = self._refusal()
        if refusal is not None:
            raise refusal
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLOUT)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            ready = dict(poller.poll(max(0.0, deadline - time.monotonic()) * 1000))
            if self._socket in ready:
                return self._socket
            if self._monitor in ready:
                self._drain_monitor()
                refusal = self._refusal()
                if refusal is not None:
                    raise refusal
            if time.monotonic() >= deadline:
                raise self._unavailable()

    def _drain_monitor(self) -> bool:
        """Read pending connection events; True if the backend disconnected since the last drain.
        A failed handshake is kept in _handshake_failure (for the error message); one with a reason
        (refused key, mechanism mismatch) is never replaced by one without: a refusing backend closes
        the connection, so libzmq often reports a retry's broken pipe without the reason. A failure
        without a reason counts only from the second connection of this attempt closed that way: a
        backend killed under the client can accept one last connection and drop it while it dies,
        which says nothing about keys."""
        disconnected = False
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind = event["event"]
            if kind == zmq.EVENT_CONNECTED:
                self._connected_in_attempt = True
            elif kind == zmq.EVENT_DISCONNECTED:
                disconnected = True
            elif kind == _HANDSHAKE_NO_DETAIL and self._connected_in_attempt:
                self._connected_in_attempt = False
                self._closed_handshakes += 1
                if self._closed_handshakes >= 2 and self._handshake_failure is None:
                    self._handshake_failure = (int(kind), int(event["value"]))
            elif kind in (_HANDSHAKE_PROTOCOL, _HANDSHAKE_AUTH):
                self._handshake_failure = (int(kind), int(event["value"]))
        return disconnected

    def _refusal(self) -> HiFillError | None:
        """ACCESS_DENIED when the backend answered but will not serve this client (keys); else None."""
        if self._handshake_failure is None:
            return None
        event, value = self._handshake_failure
        where = f"The HiFill backend at {self.endpoint}"
        if event == _HANDSHAKE_AUTH:
            return HiFillError(
                ErrorKind.ACCESS_DENIED,
                f"{where} refused this client's key. On the backend's machine, allow it with "
                "'python -m backend keys allow client.key' (the client.key of this keys folder), or make "
                "a keys folder for this client there with 'python -m backend keys client NAME'.",
            )
        if event == _HANDSHAKE_PROTOCOL and value == _MECHANISM_MISMATCH:
            if self.curve is None:
                return HiFillError(
                    ErrorKind.ACCESS_DENIED,
                    f"{where} only serves clients with keys, and none are set here. Make a keys folder on "
                    "the backend's machine with 'python -m backend keys client NAME', copy it to this "
                    "computer and choose it as the keys folder.",
                )
            return HiFillError(
                ErrorKind.ACCESS_DENIED,
                f"{where} does not use keys (it was started without --curve-keys), but this client has "
                "a keys folder set: clear it, or restart the backend with --curve-keys.",
            )
        return None  # e.g. a wrong server key: libzmq retries; reported by _unavailable at the deadline

    def _unavailable(self) -> HiFillError:
        """The error for a connection that did not complete within connect_timeout_s."""
        waited = f"waited {self.connect_timeout_s:g} s"
        if self.curve is not None and self._handshake_failure is not None:
            return HiFillError(
                ErrorKind.ACCESS_DENIED,
                f"The HiFill backend at {self.endpoint} did not accept the encrypted connection ({waited}): "
                "the server key this client uses (server.key in its keys folder) is probably not that "
                "backend's. Copy the keys folder made on the backend's machine again.",
            )
        if self.curve is None and self._handshake_failure is not None:
            # Something accepted every connection and closed it during the handshake without saying why:
            # a backend that requires keys (its mechanism-mismatch report can be lost to a broken pipe).
            return HiFillError(
                ErrorKind.ACCESS_DENIED,
                f"The HiFill backend at {self.endpoint} closed every connection during the handshake "
                f"({waited}): it probably only serves clients with keys, and none are set here. Make a "
                "keys folder on the backend's machine with 'python -m backend keys client NAME', copy it "
                "to this computer and choose it as the keys folder.",
            )
        if self.curve is None and is_local_endpoint(self.endpoint):
            return HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"No HiFill backend answers at {self.endpoint} ({waited}). "
                "Start it with 'python -m backend serve'.",
            )
        return HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"No HiFill backend answers at {self.endpoint} ({waited}). If it runs on another machine, "
            "check that it is started there with --curve-keys (see 'python -m backend keys --help'), that "
            "the port is open, and that this client's keys folder was made for that backend.",
        )

    def _await_final(
        self,
        request_id: str,
        final_op: Op,
        total_timeout_s: float,
        on_progress: ProgressCallback | None,
        cancel_event: threading.Event | None,
    ) -> tuple[Header, list[memoryview]]:
        """Wait for the final reply (result or error) to request_id, relaying progress."""
        assert self._socket is not None and self._monitor is not None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        self._progress_seen = False
        start = time.monotonic()
        total_deadline = start + total_timeout_s
        last_message = start
        cancel_sent_at: float | None = None
        disconnected = False

        while True:
            now = time.monotonic()
            if cancel_event is not None and cancel_event.is_set() and cancel_sent_at is None:
                self._send_cancel(request_id)
                cancel_sent_at = now
            if cancel_sent_at is not None and now - cancel_sent_at >= self.cancel_grace_s:
                raise HiFillError(ErrorKind.CANCELLED, "The fill was cancelled.")
            if now >= total_deadline:
                raise HiFillError(
                    ErrorKind.TIMEOUT,
                    f"The backend did not finish within {total_timeout_s:g} s, so the request was cancelled.",
                )
            if now - last_message >= self.inactivity_timeout_s:
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend at {self.endpoint} stopped responding "
                    f"(nothing heard for {self.inactivity_timeout_s:g} s).",
                )
            wait_s = min(total_deadline, last_message + self.inactivity_timeout_s) - now
            if cancel_sent_at is not None:
                wait_s = min(wait_s, cancel_sent_at + self.cancel_grace_s - now)
            if cancel_event is not None:
                wait_s = min(wait_s, _POLL_SLICE_S)
            if disconnected and not self._socket.poll(_LAST_WORD_WAIT_MS):
                # A backend that stops sends its last word ("shutting down") just before it closes the
                # connection, and libzmq may report the close first: what was on its way is read first.
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend at {self.endpoint} closed the connection (it stopped or crashed).",
                )
            ready = dict(poller.poll(max(0.0, wait_s) * 1000))

            if self._socket in ready:
                frames = self._socket.recv_multipart(copy=True)
                last_message = time.monotonic()
                try:
                    header, buffers = decode(frames, self.limits)
                except ProtocolError as error:
                    if error.kind == ErrorKind.UNSUPPORTED_VERSION:
                        raise HiFillError(error.kind, error.message) from None
                    if error.request_id not in (None, request_id):
                        continue  # a broken reply to an earlier, abandoned request
                    raise HiFillError(
                        ErrorKind.INTERNAL,
                        f"The backend sent a message this plug-in cannot read: {error.message}",
                    ) from None
                if header.id != request_id:
                    log.debug("ignoring a stale %s message for request %s", header.op.value, header.id)
                    continue
                if header.op == Op.PROGRESS:
                    self._progress_seen = True
                    if on_progress is not None and cancel_sent_at is None:
                        fraction, message = _progress_fields(header)
                        on_progress(fraction, message)
                    continue
                if cancel_sent_at is not None and header.op in (Op.ERROR, final_op):
                    return error_header(request_id, ErrorKind.CANCELLED, "The fill was cancelled."), []
                if header.op in (Op.ERROR, final_op):
                    return header, buffers
                raise HiFillError(
                    ErrorKind.INTERNAL,
                    f"The backend answered a '{final_op.value}' request with '{header.op.value}'.",
                )
            if self._monitor in ready and self._drain_monitor():
                disconnected = True

    def _send_cancel(self, request_id: str) -> None:
        """Best effort: ask the backend to drop request_id (queued) or stop it (running)."""
        assert self._socket is not None
        try:
            self._socket.send_multipart(encode(Header(Op.CANCEL, request_id)), flags=zmq.NOBLOCK)
            self._close_linger_ms = _CANCEL_SEND_LINGER_MS
        except zmq.ZMQError as error:
            log.debug("could not send cancel for %s: %s", request_id, error)

    def _reset(self) -> None:
        """Drop the socket; the next call connects a fresh one."""
        linger_ms, self._close_linger_ms = self._close_linger_ms, 0
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            self._socket.close(linger=linger_ms)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None


class _SharedMemoryRejected(HiFillError):
    """The backend rejected a request's shared memory; the same request as frames may work."""


def _error_from_reply(header: Header) -> HiFillError:
    kind = ErrorKind.from_wire(header.options.get("kind"))
    message = header.options.get("message")
    if not isinstance(message, str) or not message:
        message = f"The backend reported an error ({kind.value}) without a description."
    return HiFillError(kind, message)


def _progress_fields(header: Header) -> tuple[float, str]:
    fraction = header.options.get("fraction", 0.0)
    message = header.options.get("message", "")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        fraction = 0.0
    return min(1.0, max(0.0, float(fraction))), message if isinstance(message, str) else ""


def _inpaint_result(
    header: Header,
    buffers: list[memoryview],
    image: BufferSpec,
    segment: shm.Segment | None = None,
    layout: shm.Layout | None = None,
) -> InpaintResult:
    """The result of an inpaint reply; its region is in a frame or, for a shared-memory request,
    possibly in the segment's reply area (segment and layout: the request's)."""

    def bad(message: str) -> HiFillError:
        return HiFillError(ErrorKind.INTERNAL, f"The backend sent an invalid result: {message}.")

    x, y = header.options.get("x"), header.options.get("y")
    if type(x) is not int or type(y) is not int:
        raise bad("x and y must be whole numbers")
    warnings = header.options.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise bad("warnings must be a list of sentences")
    if not header.buffers:
        return InpaintResult(x, y, 0, 0, image.channels, image.dtype, b"", tuple(warnings))
    if len(header.buffers) != 1 or header.buffers[0].name != "region":
        raise bad("expected one buffer named 'region'")
    region = header.buffers[0]
    if (region.dtype, region.order) != (image.dtype, image.order):
        raise bad(f"the region is {region.describe()}, the image {image.describe()}")
    if x < 0 or y < 0 or x + region.width > image.width or y + region.height > image.height:
        raise bad(f"the region {region.width}x{region.height} at ({x}, {y}) lies outside the image")
    if header.shm is not None:
        if segment is None or layout is None or segment.closed:
            raise bad("it points into shared memory, which this request did not use")
        if header.shm.token != segment.token or header.shm.offsets != (layout.reply_offset,):
            raise bad("its shared-memory reference is not this request's reply area")
        if region.nbytes > layout.reply_length:
            raise bad("the region is larger than the reply area")
        pixels = segment.read(layout.reply_offset, region.nbytes)
    else:
        view = buffers[0]
        pixels = view.obj if isinstance(view.obj, bytes) and len(view.obj) == view.nbytes else view.tobytes()
    return InpaintResult(
        x, y, region.width, region.height, image.channels, image.dtype, pixels, tuple(warnings)
    )

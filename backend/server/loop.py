"""The backend server: a ROUTER socket, a bounded queue and one worker thread that owns the engine.

Threads and sockets:
- the socket thread (started by run_server) owns the ROUTER socket: it answers hello/status at
  once, validates and queues inpaint requests, handles cancels and sends heartbeats;
- the worker thread (the caller of run_server, which loaded the engine) takes one job at a time and
  sends its progress, result or error to the socket thread over an inproc PAIR socket (only the
  socket thread touches the ROUTER). Fills run in the thread that loaded the engine because torch's
  OpenMP (libgomp) slows every parallel region down once a second thread has run one: on 2 cores
  the patch search of a 512² fill took 0.36 s in a fresh thread against 0.18 s in the loading one.

Every accepted inpaint request hears from the server at least every `heartbeat_s` seconds (progress
messages, repeated while the engine is silent or the request waits in the queue), so a client can
tell a slow backend from a dead one.

Shared memory (shared_protocol.shm): on a loopback or ipc endpoint without CURVE, an inpaint may
name the client's sealed memfd instead of sending frames. The socket thread checks and maps it when
the request arrives (a segment it cannot use is a BAD_REQUEST reply flagged "shared_memory_refused";
the client then resends the request as frames), the worker writes the result region into its reply
area, and the mapping is released when the job ends however it ends (done, failed, cancelled,
dropped from the queue, or its client vanished).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from backend.allocator import HeapTrimmer
from backend.engine import FillOptions, FillResult, InpaintEngine
from backend.keys import CurveConfig
from backend.server.jobs import DEFAULT_MAX_QUEUE, Job, JobQueue
from backend.server.policy import ServerConfigError, apply_security, check_endpoint, shared_memory_refusal
from shared_protocol import (
    DEFAULT_ENDPOINT,
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    BufferSpec,
    ErrorKind,
    Header,
    HiFillError,
    InpaintRequest,
    Limits,
    Op,
    ProtocolError,
    decode,
    encode,
    error_header,
    parse_inpaint_request,
    progress_header,
)
from shared_protocol.messages import SharedMemoryError, SharedMemoryRef
from shared_protocol.shm import Attachment, attach

log = logging.getLogger("hifill.server")

HEARTBEAT_S = 1.0  # longest silence towards a client with an accepted request
SHUTDOWN_GRACE_S = 3.0  # time the running fill gets to stop after a shutdown cancelled it
_WORKER_SEND_TIMEOUT_MS = 2000  # the worker's messages wait at most this long for the socket thread
_POLL_MS = 100  # socket-thread tick: stop_event and heartbeats are checked at least this often
_PROGRESS_MIN_INTERVAL_S = 0.1  # engine progress is forwarded at most this often (except 100 %)
_UNKNOWN_ID = "?"  # reply id when the request's own id could not be read
# MAXMSGSIZE: frames somewhat over the limit still get a polite TOO_LARGE reply; far larger
# frames make ZeroMQ drop the connection before it buffers them.
_MAXMSGSIZE_SLACK = 1 << 20


@dataclass
class _Live:
    """What the socket thread last told the client of an accepted request (for heartbeats)."""

    identity: bytes
    request_id: str
    fraction: float
    message: str
    last_sent: float


# ---------------------------------------------------------------------------------------------- server


def run_server(
    engine: InpaintEngine,
    endpoint: str = DEFAULT_ENDPOINT,
    limits: Limits = DEFAULT_LIMITS,
    stop_event: threading.Event | None = None,
    ready: threading.Event | None = None,
    *,
    max_queue: int = DEFAULT_MAX_QUEUE,
    heartbeat_s: float = HEARTBEAT_S,
    curve: CurveConfig | None = None,
) -> None:
    """Serve requests on endpoint until stop_event is set (blocks; call it from the thread that loaded
    the engine: fills run in it, the socket in a thread of its own). ready is set once the socket
    is bound.

    Raises ServerConfigError for a refused endpoint and zmq.ZMQError if the address cannot be bound.
    """
    check_endpoint(endpoint, curve)
    if max_queue < 0:
        raise ServerConfigError(f"max_queue must be 0 or more, not {max_queue}.")
    if not heartbeat_s > 0:
        raise ServerConfigError(f"heartbeat_s must be positive, not {heartbeat_s}.")
    server = _Server(engine, limits, max_queue, heartbeat_s, stop_event or threading.Event())
    server.serve(endpoint, curve, ready)


class _Server:
    def __init__(
        self,
        engine: InpaintEngine,
        limits: Limits,
        max_queue: int,
        heartbeat_s: float,
        stop_event: threading.Event,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.heartbeat_s = heartbeat_s
        self.stop_event = stop_event
        self.queue = JobQueue(max_queue)
        self.trimmer = HeapTrimmer()
        self.live: dict[tuple[bytes, str], _Live] = {}
        self.started = time.monotonic()
        self.description = _plain_values(engine.describe())
        self.context = zmq.Context()
        self.worker_endpoint = f"inproc://hifill-worker-{id(self):x}"
        self.router: zmq.Socket | None = None
        self.authenticator: ThreadAuthenticator | None = None
        self.shared_memory_refusal: str | None = "the server has not started"

    # ----------------------------------------------------------------------------------- socket thread

    def serve(self, endpoint: str, curve: CurveConfig | None, ready: threading.Event | None) -> None:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished client raises EHOSTUNREACH
        router.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame_bytes + _MAXMSGSIZE_SLACK)
        if "://[" in endpoint:  # a bracketed IPv6 address such as tcp://[::1]:47631
            router.setsockopt(zmq.IPV6, 1)
        self.authenticator = apply_security(self.context, router, curve)
        self.shared_memory_refusal = shared_memory_refusal(endpoint, curve)
        inbox = self.context.socket(zmq.PAIR)
        inbox.setsockopt(zmq.LINGER, 0)
        try:
            router.bind(endpoint)
        except zmq.ZMQError:
            router.close()
            inbox.close()
            self._stop_authenticator()
            self.context.term()
            raise
        inbox.bind(self.worker_endpoint)
        self.router = router
        outbox = self.context.socket(zmq.PAIR)  # the worker's end, connected before the loop starts
        outbox.setsockopt(zmq.LINGER, 0)
        outbox.setsockopt(zmq.SNDTIMEO, _WORKER_SEND_TIMEOUT_MS)  # a PAIR with no peer blocks a send
        outbox.connect(self.worker_endpoint)
        bound = router.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info(
            "listening on %s (engine: %s; queue: %d; protocol %d)",
            bound,
            ", ".join(f"{key}={value}" for key, value in self.description.items()),
            self.queue.capacity,
            PROTOCOL_VERSION,
        )
        if curve is not None:
            log.info("CURVE on: encrypted, serving the client keys in %s", curve.allowed_dir)
        if self.shared_memory_refusal is None:
            log.info("shared memory: accepted from clients on this machine")
        else:
            log.info("shared memory: not accepted (%s)", self.shared_memory_refusal)
        failure: list[BaseException] = []
        sockets = threading.Thread(
            target=self._serve_sockets, args=(router, inbox, failure), name="hifill-sockets", daemon=True
        )
        sockets.start()
        if ready is not None:
            ready.set()
        try:
            self._work(outbox)
        finally:
            outbox.close(linger=0)
            self.stop_event.set()  # (already set unless the worker itself failed)
            sockets.join()
            self.context.term()
            log.info("stopped")
        if failure:
            raise failure[0]

    def _serve_sockets(self, router: zmq.Socket, inbox: zmq.Socket, failure: list[BaseException]) -> None:
        """The socket thread: poll, answer, relay and beat until stopped; then shut the sockets down
        (which closes the queue, so the worker returns). An exception is kept for run_server's caller."""
        try:
            self._poll(router, inbox)
        except BaseException as error:  # noqa: BLE001 - handed to the caller of run_server
            failure.append(error)
        finally:
            self.stop_event.set()  # from here on nothing relays the worker's messages
            self._shut_down(router, inbox)

    def _poll(self, router: zmq.Socket, inbox: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(inbox, zmq.POLLIN)
        while not self.stop_event.is_set():
            events = dict(poller.poll(_POLL_MS))
            if inbox in events:
                self._relay_worker_messages(inbox)
            if router in events:
                self._handle_requests(router)
            self._send_heartbeats()
            if self.authenticator is not None and not self.authenticator.is_alive():
                # Without its ZAP handler libzmq would let any CURVE client in: stop instead.
                log.error("the key checker (ZAP authenticator) stopped; stopping the backend")
                return

    def _shut_down(self, router: zmq.Socket, inbox: zmq.Socket) -> None:
        log.info("stopping")
        for job in self.queue.close():  # cancels the running fill; queued ones are answered below
            job.release()
        for live in list(self.live.values()):
            self._send(live.identity, encode(error_header(
                live.request_id, ErrorKind.BACKEND_UNAVAILABLE, "The backend is shutting down."
            )))  # fmt: skip
        self.live.clear()
        # Let the cancelled fill end before the sockets close, as the old worker join did: without
        # this wait the SIGTERM test lost the "shutting down" reply above 1 time in 8.
        if not self.queue.wait_until_idle(SHUTDOWN_GRACE_S):
            log.warning("the engine did not stop within %.0f s of the cancel", SHUTDOWN_GRACE_S)
        router.close(linger=1000)  # let the last error replies leave
        inbox.close(linger=0)
        self._stop_authenticator()

    def _stop_authenticator(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None

    def _handle_requests(self, router: zmq.Socket) -> None:
        for _ in range(100):  # bounded so worker messages and heartbeats are not starved
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            identity, frames = self._receive(router)
            self._handle(identity, frames)

    def _receive(self, router: zmq.Socket) -> tuple[bytes, list[zmq.Frame]]:
        """One message; frames beyond max_frames + 1 are read and dropped (decode reports the excess)."""
        identity = router.recv(copy=True)
        frames: list[zmq.Frame] = []
        while router.getsockopt(zmq.RCVMORE):
            frame = router.recv(copy=False)
            if len(frames) <= self.limits.max_frames:
                frames.append(frame)
        return identity, frames

    def _handle(self, identity: bytes, frames: list[zmq.Frame]) -> None:
        try:
            header, buffers = decode(frames, self.limits)
            if header.op != Op.INPAINT and (header.buffers or header.shm is not None):
                raise ProtocolError(
                    ErrorKind.BAD_REQUEST, f"A '{header.op.value}' request has no buffers.", header.id
                )
            if header.op == Op.HELLO:
                self._reply(identity, Header(Op.HELLO, header.id, self._hello()))
            elif header.op == Op.STATUS:
                self._reply(identity, Header(Op.STATUS, header.id, self._status()))
            elif header.op == Op.CANCEL:
                self._cancel(identity, header.id)
            elif header.op == Op.INPAINT and header.shm is not None:
                attachment = self._attach(header)
                try:
                    request = parse_inpaint_request(header, attachment.views, self.limits)
                except Exception:
                    attachment.close()
                    raise
                self._accept(identity, request, attachment)
            elif header.op == Op.INPAINT:
                self._accept(identity, parse_inpaint_request(header, buffers, self.limits))
            else:
                raise ProtocolError(
                    ErrorKind.BAD_REQUEST, f"'{header.op.value}' is a reply, not a request.", header.id
                )
        except ProtocolError as error:
            log.info("rejected a request: %s (%s)", error.message, error.kind.value)
            request_id = error.request_id or _UNKNOWN_ID
            refused = isinstance(error, SharedMemoryError)
            self._reply(
                identity,
                error_header(request_id, error.kind, error.message, shared_memory_refused=refused),
            )
        except Exception as error:  # a bug here must not stop the server for everyone
            log.exception("failed to handle a request")
            request_id = getattr(error, "request_id", None) or _UNKNOWN_ID
            message = (
                f"The backend failed to handle the request ({type(error).__name__}); its log has the details."
            )
            self._reply(identity, error_header(request_id, ErrorKind.INTERNAL, message))

    def _hello(self) -> dict[str, Any]:
        running, pending = self.queue.snapshot()
        return {
            "version": PROTOCOL_VERSION,
            "server": "hifill-backend",
            **self.description,
            "limits": self.limits.to_dict(),
            "queue": {"max": self.queue.capacity, "length": len(pending)},
            "heartbeat_s": self.heartbeat_s,
            "shared_memory": self.shared_memory_refusal is None,
        }

    def _status(self) -> dict[str, Any]:
        running, pending = self.queue.snapshot()
        return {
            "busy": running is not None,
            "queue_length": len(pending),
            "max_queue": self.queue.capacity,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def _attach(self, header: Header) -> Attachment:
        """Map the client's segment of a shared-memory inpaint (SharedMemoryError if it cannot be)."""
        assert header.shm is not None
        if self.shared_memory_refusal is not None:
            raise SharedMemoryError(
                f"this backend does not read shared memory ({self.shared_memory_refusal}); "
                "send the pixels as frames.",
                header.id,
            )
        return attach(header.shm, header.buffers, header.id)

    def _accept(self, identity: bytes, request: InpaintRequest, attachment: Attachment | None = None) -> None:
        job = Job(identity, request, attachment=attachment)
        if job.key in self.live:
            job.release()
            raise ProtocolError(
                ErrorKind.BAD_REQUEST, "A request with this id is already running.", request.request_id
            )
        if not self.queue.put(job):
            job.release()
            running, pending = self.queue.snapshot()
            raise ProtocolError(
                ErrorKind.BUSY,
                f"The backend is busy ({len(pending)} fills are waiting); try again when one has finished.",
                request.request_id,
            )
        log.info(
            "accepted %s: %s, context %s",
            request.request_id,
            request.image.describe(),
            "auto" if request.context_px is None else f"{request.context_px} px",
        )
        live = _Live(identity, request.request_id, 0.0, "Waiting in the queue", 0.0)
        self.live[job.key] = live
        self._send_progress(live)

    def _cancel(self, identity: bytes, request_id: str) -> None:
        state, job = self.queue.cancel((identity, request_id))
        log.info("cancel %s: %s", request_id, state)
        if state == "queued":
            assert job is not None
            job.release()
            self.live.pop((identity, request_id), None)
            self._reply(identity, error_header(request_id, ErrorKind.CANCELLED, "The fill was cancelled."))
        # "running": the worker replies CANCELLED when the engine stops; "unknown": already answered.

    def _relay_worker_messages(self, inbox: zmq.Socket) -> None:
        while inbox.poll(0):
            meta_frame, identity, *frames = inbox.recv_multipart(copy=False)
            meta = msgpack.unpackb(meta_frame.bytes)
            key = (identity.bytes, meta["id"])
            if meta["final"]:
                self.live.pop(key, None)
            elif key in self.live:
                live = self.live[key]
                live.fraction, live.message, live.last_sent = (
                    meta["fraction"],
                    meta["message"],
                    time.monotonic(),
                )
            self._send(identity.bytes, frames)

    def _send_heartbeats(self) -> None:
        now = time.monotonic()
        stale = [live for live in self.live.values() if now - live.last_sent >= self.heartbeat_s]
        if not stale:
            return
        running, pending = self.queue.snapshot()
        position = {job.key: index for index, job in enumerate(pending, start=1)}
        for live in stale:
            key = (live.identity, live.request_id)
            if key in position:
                ahead = position[key] - 1 + (running is not None)
                live.message = f"Waiting in the queue ({ahead} ahead)"
            self._send_progress(live)

    def _send_progress(self, live: _Live) -> None:
        live.last_sent = time.monotonic()
        self._send(live.identity, encode(progress_header(live.request_id, live.fraction, live.message)))

    def _reply(self, identity: bytes, header: Header) -> None:
        self._send(identity, encode(header))

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        """Send to one client without blocking; a vanished client's requests are cancelled."""
        assert self.router is not None
        try:
            self.router.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("a client is not reading its messages; dropped one")
        except zmq.ZMQError as error:
            if error.errno != zmq.EHOSTUNREACH:
                raise
            self._forget_peer(identity)

    def _forget_peer(self, identity: bytes) -> None:
        dropped = self.queue.cancel_peer(identity)
        for job in dropped:
            job.release()
        gone = [key for key in self.live if key[0] == identity]
        for key in gone:
            del self.live[key]
        if gone:
            log.info("a client went away; cancelled %d request(s) (%d queued)", len(gone), len(dropped))

    # ----------------------------------------------------------------------------------- worker thread

    def _work(self, outbox: zmq.Socket) -> None:
        """The worker: run queued jobs one at a time until the socket thread closes the queue."""
        while True:
            job = self.queue.take(timeout_s=0.25)
            if job is None:
                if self.queue.closed:
                    return
                continue
            try:
                self._run(job, outbox)
            finally:
                job.release()
                self.queue.finish(job)

    def _run(self, job: Job, outbox: zmq.Socket) -> None:
        request = job.request
        request_id = request.request_id
        lock = threading.Lock()  # the engine might report progress from a thread of its own
        last_progress = 0.0

        def send(frames: list[Any], final: bool, fraction: float = 0.0, message: str = "") -> None:
            meta = msgpack.packb({"id": request_id, "final": final, "fraction": fraction, "message": message})
            if final:  # idle before the client hears it: its next request must not find the job running
                self.queue.finish(job)
            if self.stop_event.is_set():  # the socket thread relays nothing more (it answers clients)
                return
            with lock:
                try:
                    outbox.send_multipart([meta, job.identity, *frames], copy=False)
                except zmq.Again:
                    if not self.stop_event.is_set():
                        raise
                    # the socket thread stopped while this waited: nobody is left to send it to

        def progress(fraction: float, message: str) -> None:
            nonlocal last_progress
            now = time.monotonic()
            if now - last_progress < _PROGRESS_MIN_INTERVAL_S and fraction < 1.0:
                return
            last_progress = now
            header = progress_header(request_id, fraction, str(message)[:200])
            options = header.options
            send(encode(header), False, options["fraction"], options["message"])

        def fail(kind: ErrorKind, message: str) -> None:
            send(encode(error_header(request_id, kind, message)), True)

        if job.cancelled.is_set():
            fail(ErrorKind.CANCELLED, "The fill was cancelled.")
            return
        started = time.monotonic()
        progress(0.0, "Starting")
        spec = request.image
        image = np.frombuffer(request.image_data, dtype=spec.dtype.numpy_dtype).reshape(
            spec.height, spec.width, spec.channels
        )
        mask = np.frombuffer(request.mask_data, dtype=np.uint8).reshape(spec.height, spec.width)
        try:
            result = self.engine.fill(
                image,
                mask,
                FillOptions(context_px=request.context_px),
                progress=progress,
                is_cancelled=job.cancelled.is_set,
            )
            if job.cancelled.is_set():
                raise HiFillError(ErrorKind.CANCELLED, "The fill was cancelled.")
            frames = _result_frames(request_id, spec, result, job.attachment)
        except HiFillError as error:
            log.info("request %s ended: %s (%s)", request_id, error.message, error.kind.value)
            fail(error.kind, error.message)
            return
        except MemoryError:
            log.exception("request %s ran out of memory", request_id)
            fail(ErrorKind.OUT_OF_MEMORY, _OUT_OF_MEMORY_MESSAGE)
            return
        except Exception as error:  # the engine's own bug: logged in full, reported as one sentence
            if "OutOfMemory" in type(error).__name__:  # torch.cuda.OutOfMemoryError and friends
                log.exception("request %s ran out of memory", request_id)
                fail(ErrorKind.OUT_OF_MEMORY, _OUT_OF_MEMORY_MESSAGE)
                return
            log.exception("request %s failed", request_id)
            fail(
                ErrorKind.INTERNAL,
                f"The backend failed while filling ({type(error).__name__}); its log has the details.",
            )
            return
        self.trimmer.after_fill()  # before the reply: a big fill's free pages go back (backend.allocator)
        log.info("request %s done in %.2f s", request_id, time.monotonic() - started)
        send(frames, True)


_OUT_OF_MEMORY_MESSAGE = (
    "The backend ran out of memory for this fill; try a smaller selection or less context."
)


def _result_frames(
    request_id: str, image: BufferSpec, result: FillResult, attachment: Attachment | None = None
) -> list[Any]:
    """Encode the engine's result (checked: inside the image, same dtype and channels); zero-copy.
    For a shared-memory request the region is copied into its reply area and the header points there."""
    pixels = result.pixels
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != image.channels:
        raise TypeError(
            f"engine result has shape {getattr(pixels, 'shape', None)}, expected (h, w, {image.channels})"
        )
    if pixels.dtype != np.dtype(image.dtype.numpy_dtype):
        raise TypeError(f"engine result has dtype {pixels.dtype}, expected {image.dtype.numpy_dtype}")
    x, y = int(result.x), int(result.y)
    height, width = pixels.shape[:2]
    body: dict[str, Any] = {"x": x, "y": y}
    if result.warnings:
        body["warnings"] = [str(w) for w in result.warnings]
    if height == 0 or width == 0:
        return encode(Header(Op.RESULT, request_id, {**body, "x": 0, "y": 0}))
    if x < 0 or y < 0 or x + width > image.width or y + height > image.height:
        raise ValueError(f"engine result {width}x{height} at ({x}, {y}) lies outside the image")
    region = BufferSpec("region", width, height, image.dtype, image.order)
    if attachment is not None and attachment.reply is not None:
        offset = attachment.write_reply(np.ascontiguousarray(pixels))
        where = SharedMemoryRef(attachment.ref.token, attachment.ref.size, (offset,))
        return encode(Header(Op.RESULT, request_id, body, (region,), shm=where))
    return encode(Header(Op.RESULT, request_id, body, (region,)), [np.ascontiguousarray(pixels)])


def _plain_values(description: dict) -> dict[str, Any]:
    """engine.describe() with values msgpack can carry (paths and others become strings)."""
    plain: dict[str, Any] = {}
    for key, value in description.items():
        is_plain = value is None or isinstance(value, (bool, int, float, str))
        plain[str(key)] = value if is_plain else str(value)
    return plain

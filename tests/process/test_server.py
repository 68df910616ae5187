"""The backend server as a real process (with fake engines) talking to the real Client.

Each backend is `python -m tests.fake_engines ...`: backend.server.run_server around a scriptable
engine from tests/fake_engines.py. Timings are generous because the machine is shared.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from fake_engines import FILL_VALUE, FailingEngine, SlowEngine, mask_bounding_box

from backend.server import ServerConfigError, check_endpoint, run_server
from shared_protocol import (
    PROTOCOL_VERSION,
    Client,
    DType,
    ErrorKind,
    Header,
    HiFillError,
    InpaintResult,
    Limits,
    Op,
    decode,
)
from shared_protocol.endpoints import free_loopback_endpoint
from shared_protocol.launcher import BackendProcess
from tests.backend_process import start_fake_backend

REPO = Path(__file__).resolve().parents[2]
NUMPY_DTYPE = {DType.U8: np.uint8, DType.U16: np.uint16, DType.F32: np.float32}


# ---------------------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """A fake-engine backend process (tests.backend_process.start_fake_backend: the shared launcher)."""

    process: BackendProcess

    @property
    def endpoint(self) -> str:
        return self.process.endpoint

    def log(self) -> str:
        return self.process.output()

    def stop(self) -> int | None:
        return self.process.stop(10.0)


def start_backend(log_dir: Path, engine: str, *arguments: str, endpoint: str | None = None) -> Backend:
    """A fake-engine backend process that answers hello."""
    log_path = log_dir / f"{engine}-{time.monotonic_ns()}.log"
    return Backend(start_fake_backend(engine, log_path, *arguments, endpoint=endpoint))


@pytest.fixture(scope="module")
def colour_backend(tmp_path_factory) -> Iterator[Backend]:
    backend = start_backend(tmp_path_factory.mktemp("colour"), "colour", "--max-queue", "2")
    yield backend
    assert backend.stop() == 0, backend.log()


@pytest.fixture(scope="module")
def failing_backend(tmp_path_factory) -> Iterator[Backend]:
    limits = ("--max-pixels", "10000", "--max-frame-bytes", "100000")
    backend = start_backend(tmp_path_factory.mktemp("failing"), "failing", *limits)
    yield backend
    assert backend.stop() == 0, backend.log()


@pytest.fixture(scope="module")
def slow_backend(tmp_path_factory) -> Iterator[Backend]:
    """Fills take 20 x 0.05 s = 1 s; one may wait behind the running one; heartbeats every 0.3 s."""
    arguments = ("--steps", "20", "--step-s", "0.05", "--max-queue", "1", "--heartbeat", "0.3")
    backend = start_backend(tmp_path_factory.mktemp("slow"), "slow", *arguments)
    yield backend
    assert backend.stop() == 0, backend.log()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


# ---------------------------------------------------------------------------------------- images


def make_image(width: int, height: int, channels: int, dtype: DType, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels)
    if dtype == DType.F32:
        image = rng.standard_normal(shape).astype(np.float32)
        image.flat[:4] = [np.nan, -0.0, np.inf, 1e-42]  # special values must come back bit-exact too
        return image
    return rng.integers(
        0, np.iinfo(NUMPY_DTYPE[dtype]).max, size=shape, endpoint=True, dtype=NUMPY_DTYPE[dtype]
    )


def make_mask(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A soft, ragged hole: values 0..255 inside a box, with holes of 0 left inside the box."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    box = mask[height // 4 : height * 3 // 4, width // 5 : width * 4 // 5]
    box[...] = rng.integers(0, 255, size=box.shape, endpoint=True)
    box[rng.random(box.shape) < 0.3] = 0
    return mask


def fill(client: Client, image: np.ndarray, mask: np.ndarray, **kwargs) -> InpaintResult:
    height, width, channels = image.shape
    dtype = {np.dtype(v): k for k, v in NUMPY_DTYPE.items()}[image.dtype]
    return client.inpaint(image.tobytes(), width, height, channels, dtype, mask.tobytes(), **kwargs)


def check_colour_fill(image: np.ndarray, mask: np.ndarray, result: InpaintResult) -> None:
    """The region is the mask's box; unmasked pixels are bit-exact copies; masked ones the fill value."""
    x, y, width, height = mask_bounding_box(mask)
    assert (result.x, result.y, result.width, result.height) == (x, y, width, height)
    assert result.channels == image.shape[2]
    region = np.frombuffer(result.pixels, image.dtype).reshape(height, width, image.shape[2])
    source = image[y : y + height, x : x + width]
    hole = mask[y : y + height, x : x + width] > 0
    assert region[~hole].tobytes() == source[~hole].tobytes()
    assert np.all(region[hole] == FILL_VALUE[image.dtype])


def expect_kind(kind: ErrorKind, call: Callable[[], object]) -> HiFillError:
    with pytest.raises(HiFillError) as caught:
        call()
    assert caught.value.kind == kind, caught.value.message
    assert "Traceback" not in caught.value.message
    return caught.value


def raw_request(endpoint: str, frames: list, timeout_s: float = 5.0) -> Header:
    """Send hand-made frames from a bare DEALER socket and decode the one reply."""
    context = zmq.Context.instance()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        dealer.send_multipart(frames)
        assert dealer.poll(timeout_s * 1000), "no reply"
        header, _ = decode(dealer.recv_multipart())
        return header
    finally:
        dealer.close()


def wire(**changes) -> dict:
    header = {
        "v": PROTOCOL_VERSION,
        "id": "raw-1",
        "op": "inpaint",
        "options": {},
        "buffers": [
            {"name": "image", "width": 4, "height": 3, "channels": 3, "dtype": "u8", "order": "RGB"},
            {"name": "mask", "width": 4, "height": 3, "channels": 1, "dtype": "u8", "order": "L"},
        ],
    }
    header.update(changes)
    return header


def buffer(name: str, width: int, height: int, order: str = "RGB", dtype: str = "u8") -> dict:
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "BGR": 3}[order]
    return {
        "name": name,
        "width": width,
        "height": height,
        "channels": channels,
        "dtype": dtype,
        "order": order,
    }


# ---------------------------------------------------------------------------------------- colour backend


def test_hello_and_status(colour_backend: Backend) -> None:
    client = Client(colour_backend.endpoint)
    info = client.hello()
    assert info["version"] == PROTOCOL_VERSION
    assert (info["model"], info["device"], info["precision"]) == ("fake-colour", "cpu", "fp32")
    assert Limits.from_dict(info["limits"]) == Limits()
    assert info["queue"] == {"max": 2, "length": 0}
    status = client.status()
    assert (status["busy"], status["queue_length"], status["max_queue"]) == (False, 0, 2)
    client.close()


@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("channels", [3, 4])
def test_round_trip_is_bit_exact_outside_the_mask(
    colour_backend: Backend, dtype: DType, channels: int
) -> None:
    image = make_image(61, 37, channels, dtype, seed=channels)
    mask = make_mask(61, 37, seed=channels)
    with Client(colour_backend.endpoint, timeout_s=20) as client:
        result = fill(client, image, mask)
    assert result.dtype == dtype
    check_colour_fill(image, mask, result)


def test_large_u16_rgba_round_trip(colour_backend: Backend) -> None:
    image = make_image(1920, 1080, 4, DType.U16, seed=9)  # 16.6 MB each way
    mask = np.zeros((1080, 1920), np.uint8)
    mask[100:900, 300:1500] = 255
    mask[400:500, 700:800] = 0
    with Client(colour_backend.endpoint, timeout_s=30) as client:
        check_colour_fill(image, mask, fill(client, image, mask))


def test_empty_mask_gives_an_empty_region(colour_backend: Backend) -> None:
    image = make_image(8, 8, 3, DType.U8)
    with Client(colour_backend.endpoint) as client:
        result = fill(client, image, np.zeros((8, 8), np.uint8))
    assert (result.width, result.height, result.pixels, result.channels) == (0, 0, b"", 3)


def test_progress_arrives_and_options_reach_the_engine(colour_backend: Backend) -> None:
    image, mask = make_image(16, 16, 3, DType.U8), make_mask(16, 16)
    for options, expected in ((None, "context_px=None"), ({"context_px": 48}, "context_px=48")):
        events: list[tuple[float, str]] = []
        with Client(colour_backend.endpoint) as client:
            fill(
                client, image, mask, options=options, on_progress=lambda f, m, log=events: log.append((f, m))
            )
        fractions = [fraction for fraction, _ in events]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert events[-1][1] == f"Done ({expected})"


BAD_REQUESTS = [
    pytest.param(
        [msgpack.packb(wire(v=2)), bytes(36), bytes(12)], ErrorKind.UNSUPPORTED_VERSION, "raw-1", id="v2"
    ),
    pytest.param(
        [msgpack.packb(wire(op="paint")), bytes(36), bytes(12)], ErrorKind.BAD_REQUEST, "raw-1", id="op"
    ),
    pytest.param(
        [
            msgpack.packb(wire(buffers=[buffer("image", 4, 3, dtype="u32"), buffer("mask", 4, 3, "L")])),
            b"",
            b"",
        ],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="dtype",
    ),
    pytest.param(
        [msgpack.packb(wire(buffers=[buffer("image", 4, 3, "BGR"), buffer("mask", 4, 3, "L")])), b"", b""],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="order",
    ),
    pytest.param(
        [msgpack.packb(wire()), bytes(35), bytes(12)], ErrorKind.BAD_REQUEST, "raw-1", id="frame-size"
    ),
    pytest.param(
        [
            msgpack.packb(wire(buffers=[buffer("image", 4, 3), buffer("mask", 3, 4, "L")])),
            bytes(36),
            bytes(12),
        ],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="mask-size",
    ),
    pytest.param(
        [msgpack.packb(wire(buffers=[buffer("image", 0, 3), buffer("mask", 0, 3, "L")])), b"", b""],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="zero-size",
    ),
    pytest.param(
        [msgpack.packb(wire(options={"context_px": math.nan})), bytes(36), bytes(12)],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="nan",
    ),
    pytest.param(
        [
            msgpack.packb(wire(buffers=[buffer("image", 20000, 20000), buffer("mask", 20000, 20000, "L")])),
            b"",
            b"",
        ],
        ErrorKind.TOO_LARGE,
        "raw-1",
        id="pixels",
    ),
    pytest.param([msgpack.packb(wire(buffers=[])), *[b""] * 9], ErrorKind.TOO_LARGE, "raw-1", id="frames"),
    pytest.param([b"\xc1\x00"], ErrorKind.BAD_REQUEST, "?", id="garbage"),
    pytest.param(
        [msgpack.packb(wire(op="result", buffers=[]))], ErrorKind.BAD_REQUEST, "raw-1", id="reply-op"
    ),
    pytest.param(
        [msgpack.packb(wire(op="hello", buffers=[buffer("image", 1, 1)])), bytes(3)],
        ErrorKind.BAD_REQUEST,
        "raw-1",
        id="hello-with-buffer",
    ),
]


@pytest.mark.parametrize(("frames", "kind", "reply_id"), BAD_REQUESTS)
def test_bad_input_gets_an_error_reply_and_the_server_keeps_serving(
    colour_backend: Backend, frames: list, kind: ErrorKind, reply_id: str
) -> None:
    reply = raw_request(colour_backend.endpoint, frames)
    assert reply.op == Op.ERROR and reply.id == reply_id
    assert reply.options["kind"] == kind.value
    assert reply.options["message"].endswith(".")
    with Client(colour_backend.endpoint, connect_timeout_s=2) as client:
        assert client.hello()["version"] == PROTOCOL_VERSION


# ---------------------------------------------------------------------------------------- failing engine


@pytest.mark.parametrize(
    ("width", "kind", "words"),
    [
        (1, ErrorKind.INTERNAL, "RuntimeError"),
        (2, ErrorKind.OUT_OF_MEMORY, "ran out of memory"),
        (3, ErrorKind.OUT_OF_MEMORY, "The GPU ran out of memory."),
        (4, ErrorKind.INTERNAL, "TypeError"),
        (5, ErrorKind.INTERNAL, "ValueError"),
        (6, ErrorKind.NO_WEIGHTS, "No weights were found."),
    ],
)
def test_engine_failures_become_error_kinds(
    failing_backend: Backend, width: int, kind: ErrorKind, words: str
) -> None:
    assert width in FailingEngine.FAILURES
    image, mask = make_image(width, 3, 3, DType.U8), np.full((3, width), 255, np.uint8)
    with Client(failing_backend.endpoint) as client:
        error = expect_kind(kind, lambda: fill(client, image, mask))
        assert words in error.message
        assert FailingEngine.PRIVATE_DETAIL not in error.message
        assert client.hello()["model"] == "fake-failing"
        image, mask = make_image(9, 3, 3, DType.U8), make_mask(9, 3)
        check_colour_fill(image, mask, fill(client, image, mask))  # other widths still work
    if width == 1:  # the full story is in the server log only
        log = failing_backend.log()
        assert "Traceback" in log and FailingEngine.PRIVATE_DETAIL in log


def test_server_limits_are_enforced_and_reported(failing_backend: Backend) -> None:
    """The backend allows 10000 pixels and 100000 bytes per frame; the client's own limits are larger.

    Frames are used here (shared_memory=False): the last case is about ZeroMQ's message size cap.
    """
    with Client(failing_backend.endpoint, shared_memory=False) as client:
        too_many_pixels = make_image(200, 100, 3, DType.U8), np.zeros((100, 200), np.uint8)
        error = expect_kind(ErrorKind.TOO_LARGE, lambda: fill(client, *too_many_pixels))
        assert "megapixels" in error.message
        too_many_bytes = make_image(100, 100, 4, DType.F32), np.zeros((100, 100), np.uint8)  # 160 kB
        error = expect_kind(ErrorKind.TOO_LARGE, lambda: fill(client, *too_many_bytes))
        assert "bytes" in error.message
        # Far beyond MAXMSGSIZE, ZeroMQ drops the connection before buffering: the client notices at once.
        huge = make_image(1000, 1000, 3, DType.U8), np.zeros((1000, 1000), np.uint8)  # 3 MB frame
        started = time.monotonic()
        expect_kind(ErrorKind.BACKEND_UNAVAILABLE, lambda: fill(client, *huge))
        assert time.monotonic() - started < 5
        assert client.hello()["version"] == PROTOCOL_VERSION  # same Client, fresh connection
    with Client(failing_backend.endpoint) as client:  # shared memory: no frame cap, a polite TOO_LARGE
        expect_kind(ErrorKind.TOO_LARGE, lambda: fill(client, *huge))


# ---------------------------------------------------------------------------------------- slow engine


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def wait_until_idle(endpoint: str) -> None:
    with Client(endpoint) as client:
        wait_for(lambda: not client.status()["busy"] and client.status()["queue_length"] == 0)


def test_progress_heartbeats_and_hello_while_a_fill_runs(
    slow_backend: Backend, pool: ThreadPoolExecutor
) -> None:
    events: list[tuple[float, float, str]] = []
    image, mask = make_image(32, 24, 3, DType.U8), make_mask(32, 24)
    with (
        Client(slow_backend.endpoint, inactivity_timeout_s=2) as worker,
        Client(slow_backend.endpoint) as other,
    ):
        running = pool.submit(
            fill, worker, image, mask, on_progress=lambda f, m: events.append((time.monotonic(), f, m))
        )
        wait_for(lambda: any(f > 0 for _, f, _ in events))
        started = time.monotonic()
        assert other.status()["busy"] is True
        assert other.hello()["model"] == "fake-slow"
        assert time.monotonic() - started < 1.0  # answered while the engine is busy
        check_colour_fill(image, mask, running.result(timeout=10))
    steps = [(f, m) for _, f, m in events if m.startswith("Step")]
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1] == (1.0, "Step 20 of 20")
    gaps = np.diff([t for t, _, _ in events])
    assert gaps.max() < 1.0  # never silent for long


def test_cancel_a_running_fill(slow_backend: Backend) -> None:
    cancel = threading.Event()
    image, mask = make_image(32, 24, 3, DType.U8), make_mask(32, 24)

    def on_progress(fraction: float, _message: str) -> None:
        if fraction >= 0.1:
            cancel.set()

    def cancelled_fill() -> InpaintResult:
        return fill(client, image, mask, on_progress=on_progress, cancel_event=cancel)

    with Client(slow_backend.endpoint) as client:
        started = time.monotonic()
        error = expect_kind(ErrorKind.CANCELLED, cancelled_fill)
        assert time.monotonic() - started < 0.9  # well before the 1 s fill would have finished
        assert error.message == "The fill was cancelled."
        wait_until_idle(slow_backend.endpoint)
        check_colour_fill(image, mask, fill(client, image, mask))  # the same Client carries on
    assert "cancel" in slow_backend.log() and "running" in slow_backend.log()


def test_queue_full_is_busy_and_a_queued_fill_can_be_cancelled(
    slow_backend: Backend, pool: ThreadPoolExecutor
) -> None:
    image, mask = make_image(32, 24, 3, DType.U8), make_mask(32, 24)
    first_events: list[str] = []
    queued_events: list[str] = []
    cancel_queued = threading.Event()
    with Client(slow_backend.endpoint) as first, Client(slow_backend.endpoint) as queued:
        running = pool.submit(fill, first, image, mask, on_progress=lambda f, m: first_events.append(m))
        wait_for(lambda: "Starting" in first_events)
        waiting = pool.submit(
            fill,
            queued,
            image,
            mask,
            on_progress=lambda f, m: queued_events.append(m),
            cancel_event=cancel_queued,
        )
        wait_for(lambda: len(queued_events) > 0)
        assert queued_events[0].startswith("Waiting in the queue")
        with Client(slow_backend.endpoint) as third:
            error = expect_kind(ErrorKind.BUSY, lambda: fill(third, image, mask))
            assert "busy" in error.message
            assert third.status()["queue_length"] == 1
        started = time.monotonic()
        cancel_queued.set()
        expect_kind(ErrorKind.CANCELLED, lambda: waiting.result(timeout=10))
        assert time.monotonic() - started < 0.5  # removed from the queue, not waiting for its turn
        assert not running.done()
        check_colour_fill(image, mask, running.result(timeout=10))
        assert "Starting" not in queued_events  # the queued fill never ran


def test_two_clients_are_served_in_order(slow_backend: Backend, pool: ThreadPoolExecutor) -> None:
    image, mask = make_image(20, 20, 4, DType.F32), make_mask(20, 20)
    finished: dict[str, float] = {}
    events: dict[str, list[str]] = {"a": [], "b": []}

    def run(name: str, client: Client) -> InpaintResult:
        result = fill(
            client, image, mask, on_progress=lambda _fraction, message: events[name].append(message)
        )
        finished[name] = time.monotonic()
        return result

    with Client(slow_backend.endpoint) as a, Client(slow_backend.endpoint) as b:
        started = time.monotonic()
        first: Future = pool.submit(run, "a", a)
        wait_for(lambda: "Starting" in events["a"])
        second: Future = pool.submit(run, "b", b)
        check_colour_fill(image, mask, first.result(timeout=10))
        check_colour_fill(image, mask, second.result(timeout=10))
    assert finished["a"] < finished["b"]
    assert finished["b"] - started >= 1.8  # two 1 s fills, one after the other
    assert "Waiting in the queue (1 ahead)" in events["b"]
    assert events["b"].index("Starting") > events["b"].index("Waiting in the queue (1 ahead)")


def test_a_client_that_gives_up_frees_the_backend(slow_backend: Backend) -> None:
    image, mask = make_image(32, 24, 3, DType.U8), make_mask(32, 24)
    with Client(slow_backend.endpoint, timeout_s=0.3) as impatient:
        error = expect_kind(ErrorKind.TIMEOUT, lambda: fill(impatient, image, mask))
        assert "0.3 s" in error.message
    started = time.monotonic()
    wait_until_idle(slow_backend.endpoint)
    assert time.monotonic() - started < 0.8  # cancelled, not run to the end of its 1 s


def test_a_vanished_client_is_noticed_and_its_fill_cancelled(slow_backend: Backend) -> None:
    """A client that disappears without a cancel (editor closed): the next heartbeat finds it gone."""
    header = wire(
        id="vanishing", buffers=[buffer("image", 4, 3), buffer("mask", 4, 3, "L")], options={"context_px": 8}
    )
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(slow_backend.endpoint)
    dealer.send_multipart([msgpack.packb(header), bytes(36), bytes([255] * 12)])
    assert dealer.poll(5000)  # accepted: the first progress arrived
    with Client(slow_backend.endpoint) as observer:
        wait_for(lambda: observer.status()["busy"])
        dealer.close(linger=0)
        started = time.monotonic()
        wait_for(lambda: not observer.status()["busy"])
        assert time.monotonic() - started < 0.8  # heartbeat 0.3 s, not the 1 s fill
    assert "a client went away; cancelled 1 request(s)" in slow_backend.log()


# ---------------------------------------------------------------------------------------- liveness


def test_heartbeats_keep_a_silent_engine_alive_and_a_frozen_backend_is_detected(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """The engine is silent for 1.5 s; the server's 0.3 s heartbeats keep a client with a 0.8 s
    inactivity timeout waiting. A stopped (SIGSTOP) backend sends nothing and is declared dead."""
    backend = start_backend(tmp_path, "silent", "--silent-s", "1.5", "--heartbeat", "0.3")
    try:
        image, mask = make_image(16, 16, 3, DType.U8), make_mask(16, 16)
        with Client(backend.endpoint, inactivity_timeout_s=0.8) as client:
            check_colour_fill(image, mask, fill(client, image, mask))
            running = pool.submit(fill, client, image, mask)
            time.sleep(0.3)
            os.kill(backend.process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                error = expect_kind(ErrorKind.BACKEND_UNAVAILABLE, lambda: running.result(timeout=10))
                assert time.monotonic() - stopped < 2.0
                assert "stopped responding" in error.message
            finally:
                os.kill(backend.process.pid, signal.SIGCONT)
            assert client.hello()["model"] == "fake-silent"
    finally:
        assert backend.stop() == 0, backend.log()


def test_killed_backend_is_unavailable_at_once_and_the_client_recovers(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    backend = start_backend(tmp_path, "slow", "--steps", "100", "--step-s", "0.05")  # 5 s fills
    endpoint = backend.endpoint
    image, mask = make_image(24, 24, 4, DType.U16), make_mask(24, 24)
    events: list[float] = []
    client = Client(endpoint, timeout_s=60, connect_timeout_s=1.0)
    try:
        running = pool.submit(fill, client, image, mask, on_progress=lambda f, m: events.append(f))
        wait_for(lambda: any(f > 0 for f in events))
        backend.process.kill()
        killed = time.monotonic()
        error = expect_kind(ErrorKind.BACKEND_UNAVAILABLE, lambda: running.result(timeout=20))
        assert time.monotonic() - killed < 3.0  # the closed connection is noticed, not waited out
        assert endpoint in error.message
        expect_kind(ErrorKind.BACKEND_UNAVAILABLE, client.hello)  # still down: fails fast, no hang

        backend = start_backend(tmp_path, "slow", "--steps", "2", "--step-s", "0.01", endpoint=endpoint)
        assert client.hello()["model"] == "fake-slow"  # the same Client object, reconnected
        check_colour_fill(image, mask, fill(client, image, mask))
    finally:
        client.close()
        backend.stop()


def test_sigterm_stops_cleanly_and_tells_waiting_clients(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    backend = start_backend(tmp_path, "slow", "--steps", "100", "--step-s", "0.05")
    image, mask = make_image(24, 24, 3, DType.U8), make_mask(24, 24)
    events: list[float] = []
    with Client(backend.endpoint) as client:
        running = pool.submit(fill, client, image, mask, on_progress=lambda f, m: events.append(f))
        wait_for(lambda: any(f > 0 for f in events))
        started = time.monotonic()
        assert backend.stop() == 0
        assert time.monotonic() - started < 5
        error = expect_kind(ErrorKind.BACKEND_UNAVAILABLE, lambda: running.result(timeout=10))
        assert "shutting down" in error.message
    log = backend.log()
    assert "received SIGTERM" in log and "stopped" in log
    assert all(line[:4].isdigit() for line in log.splitlines() if line)  # every line has a timestamp


# ---------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:47631",
        "tcp://localhost:5000",
        "tcp://[::1]:5000",
        "tcp://127.0.0.2:1",
        "ipc:///tmp/x",
    ],
)
def test_loopback_endpoints_are_allowed(endpoint: str) -> None:
    check_endpoint(endpoint)


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("tcp://0.0.0.0:47631", "Refusing to listen on '0.0.0.0:47631'"),
        ("tcp://*:47631", "Refusing"),
        ("tcp://192.168.1.5:47631", "Refusing"),
        ("tcp://eth0:47631", "Refusing"),
        ("tcp://example.org:47631", "Refusing"),
        ("udp://127.0.0.1:1", "not supported"),
        ("127.0.0.1:47631", "not a ZeroMQ endpoint"),
        ("tcp://127.0.0.1", "needs a host and a port"),
    ],
)
def test_other_endpoints_are_refused(endpoint: str, words: str) -> None:
    with pytest.raises(ServerConfigError, match=words.replace("*", r"\*")):
        check_endpoint(endpoint)


def test_serve_refuses_a_public_address_before_loading_anything() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from backend.server import main; "
            "sys.exit(main(['serve', '--endpoint', 'tcp://0.0.0.0:47631']))",
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    assert "Refusing to listen on '0.0.0.0:47631'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_run_server_in_a_thread_with_ready_and_stop_events(pool: ThreadPoolExecutor) -> None:
    """In-process use; max_queue=0 accepts a fill while idle and answers BUSY while one runs."""
    endpoint, stop, ready = free_loopback_endpoint(), threading.Event(), threading.Event()
    engine = SlowEngine(steps=10, step_s=0.05)
    thread = threading.Thread(
        target=run_server, args=(engine, endpoint, Limits(), stop, ready), kwargs={"max_queue": 0}
    )
    thread.start()
    try:
        assert ready.wait(10)
        image, mask = make_image(8, 8, 3, DType.U8), make_mask(8, 8)
        events: list[str] = []
        with Client(endpoint) as client, Client(endpoint) as other:
            assert client.hello()["queue"] == {"max": 0, "length": 0}
            running = pool.submit(fill, client, image, mask, on_progress=lambda f, m: events.append(m))
            wait_for(lambda: "Starting" in events)
            expect_kind(ErrorKind.BUSY, lambda: fill(other, image, mask))
            check_colour_fill(image, mask, running.result(timeout=10))
            check_colour_fill(image, mask, fill(other, image, mask))
        with pytest.raises(zmq.ZMQError):  # the address is taken: a clear error, not a hang
            run_server(SlowEngine(), endpoint, Limits(), threading.Event())
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()

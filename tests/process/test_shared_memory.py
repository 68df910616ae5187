"""Shared memory for same-host fills (issue 6, transport) against a real `python -m backend serve`.

- fills through shared memory equal fills through frames bit for bit (u8 RGB, u16 RGBA, f32 RGBA,
  soft masks, a growing and shrinking segment, a whole-image result, an empty mask);
- hostile "shm" headers (dead processes, closed or foreign descriptors, unsealed or too small
  segments, wrong tokens, offsets and sizes out of range) get a clear error and the backend serves on;
- nothing is left behind: no file in /dev/shm, no segment mapped or open in the backend or the client,
  after fills, errors, a cancelled or timed-out fill, and clients killed while queued and while running;
- a backend rejecting the segment, or a system without memfd, gives frames with the same result;
- a CURVE backend (even on loopback) does not read shared memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from backend.server import shared_memory_refusal
from shared_protocol import (
    BufferSpec,
    ChannelOrder,
    Client,
    CurveKeys,
    DType,
    ErrorKind,
    Header,
    HiFillError,
    InpaintResult,
    Op,
    decode,
    inpaint_header,
    shm,
)
from shared_protocol.messages import SHARED_MEMORY_REFUSED, SHM_HEADER_BYTES
from tests import backend_process
from tests.backend_process import REPO, free_endpoint, raw_dealer, stop_backend
from tests.conftest import RunningBackend

pytestmark = pytest.mark.skipif(shm.unavailable_reason() is not None, reason=str(shm.unavailable_reason()))

SEGMENT = "memfd:" + shm.MEMFD_NAME  # how a segment shows in /proc/<pid>/maps and /proc/<pid>/fd
NUMPY = {"u8": np.uint8, "u16": np.uint16, "f32": np.float32}


# ---------------------------------------------------------------------------------------------- helpers


def mapped_segments(pid: int) -> int:
    """Mappings of HiFill segments in a process (the reply area is a mapping of its own)."""
    return Path(f"/proc/{pid}/maps").read_text().count(SEGMENT)


def open_segments(pid: int) -> int:
    """Descriptors of HiFill segments a process holds."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += SEGMENT in os.readlink(entry)
    return count


def segment_inodes(pid: int) -> set[int]:
    """Inodes of the HiFill segments a process holds open (a segment's identity across processes)."""
    inodes = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if SEGMENT in os.readlink(entry):
                inodes.add(entry.stat().st_ino)
    return inodes


def mapped_inodes(pid: int) -> list[int]:
    """The inode of each HiFill segment mapping in a process (one entry per mapping)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return [int(line.split()[4]) for line in lines if SEGMENT in line]


def dev_shm() -> set[str]:
    """Names in /dev/shm (a torch DataLoader elsewhere on the machine may add torch_* files)."""
    folder = Path("/dev/shm")
    return {p.name for p in folder.iterdir() if not p.name.startswith("torch_")} if folder.is_dir() else set()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout_s:g} s: {what}"
        time.sleep(0.05)


def make_image(width: int, height: int, channels: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "f32":
        return rng.random((height, width, channels), dtype=np.float32)
    top = 255 if dtype == "u8" else 65535
    return rng.integers(0, top + 1, (height, width, channels)).astype(NUMPY[dtype])


def make_mask(width: int, height: int, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """255 inside box (x, y, w, h) with a soft (128) one-pixel rim; None: an empty mask."""
    mask = np.zeros((height, width), np.uint8)
    if box is not None:
        x, y, w, h = box
        mask[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = 128
        mask[y : y + h, x : x + w] = 255
    return mask


def fill(client: Client, image: np.ndarray, mask: np.ndarray, **kwargs) -> InpaintResult:
    height, width, channels = image.shape
    dtype = {np.uint8: "u8", np.uint16: "u16", np.float32: "f32"}[image.dtype.type]
    return client.inpaint(image, width, height, channels, dtype, mask, **kwargs)


def raw_exchange(
    endpoint: str, frames: list, curve: CurveKeys | None = None, timeout_s: float = 30
) -> Header:
    """Send frames on a plain DEALER socket; the first reply that is not progress."""
    with raw_dealer(endpoint, curve) as socket:
        socket.send_multipart(frames)
        deadline = time.monotonic() + timeout_s
        while True:
            assert socket.poll(max(0.0, deadline - time.monotonic()) * 1000), "no reply from the backend"
            header, _ = decode(socket.recv_multipart())
            if header.op != Op.PROGRESS:
                return header


def start_backend(
    weights: Path, log: Path, *options: str, curve: CurveKeys | None = None
) -> tuple[backend_process.BackendProcess, str]:
    """The shared test backend with `--working-size 128 OPTIONS` (the smallest working size: these
    tests are about transport, not fills), one OpenMP thread."""
    return backend_process.start_backend(weights, log, "--working-size", "128", *options, curve=curve)


def backend_is_clean(pid: int) -> bool:
    return mapped_segments(pid) == 0 and open_segments(pid) == 0


# ------------------------------------------------------------------------------------------- bit-exact


@pytest.mark.parametrize(("dtype", "channels"), [("u8", 3), ("u16", 4), ("f32", 4)])
def test_fills_through_shared_memory_equal_fills_through_frames(
    backend: RunningBackend, dtype: str, channels: int
) -> None:
    pid, endpoint = backend.pid, backend.endpoint
    with Client(endpoint) as client:
        assert client.hello()["shared_memory"] is True
    cases = [  # (width, height, hole): the segment grows, is reused smaller, then holds a whole-image result
        (160, 120, (40, 30, 50, 40)),
        (320, 200, (100, 60, 90, 70)),
        (96, 64, (10, 8, 30, 20)),
        (64, 48, (0, 0, 64, 48)),
        (80, 60, None),
    ]
    with (
        Client(endpoint, timeout_s=120) as via_shm,
        Client(endpoint, timeout_s=120, shared_memory=False) as frames,
    ):
        for seed, (width, height, box) in enumerate(cases):
            image = make_image(width, height, channels, dtype, seed)
            mask = make_mask(width, height, box)
            shared = fill(via_shm, image, mask)
            assert via_shm.last_transport == "shared_memory"
            framed = fill(frames, image, mask)
            assert frames.last_transport == "frames"
            assert shared == framed  # position, size, dtype, warnings and every byte of the pixels
            if box is None:
                assert (shared.width, shared.height, shared.pixels) == (0, 0, b"")
                continue
            x, y, w, h = box
            assert (shared.x, shared.y) == (max(0, x - 1), max(0, y - 1))  # the soft rim is filled too
            region = np.frombuffer(shared.pixels, NUMPY[dtype]).reshape(shared.height, shared.width, channels)
            source = image[shared.y : shared.y + shared.height, shared.x : shared.x + shared.width]
            keep = mask[shared.y : shared.y + shared.height, shared.x : shared.x + shared.width] == 0
            assert np.array_equal(region[keep], source[keep])  # outside the mask: the input, bit-exact
            assert not np.array_equal(region[~keep], source[~keep])  # inside: really filled
            assert mapped_segments(os.getpid()) <= 1  # one segment per Client (the old one freed on growth)
        wait_for(lambda: backend_is_clean(pid), 10, "the backend released every segment after the fills")
    assert mapped_segments(os.getpid()) == open_segments(os.getpid()) == 0  # close() freed the segment


def test_the_same_numpy_views_and_bytes_work_as_input(backend: RunningBackend) -> None:
    endpoint = backend.endpoint
    image = make_image(120, 90, 3, "u8", 7)
    mask = make_mask(120, 90, (30, 20, 40, 30))
    with Client(endpoint, timeout_s=120) as client:
        from_bytes = client.inpaint(image.tobytes(), 120, 90, 3, "u8", bytearray(mask.tobytes()))
        from_views = client.inpaint(memoryview(image), 120, 90, 3, "u8", memoryview(mask))
        assert client.last_transport == "shared_memory" and from_bytes == from_views


# -------------------------------------------------------------------------------------------- hostile

WIDTH, HEIGHT = 64, 48
IMAGE = BufferSpec("image", WIDTH, HEIGHT, DType.U8, ChannelOrder.RGB)
MASK = BufferSpec("mask", WIDTH, HEIGHT, DType.U8, ChannelOrder.L)
LAYOUT = shm.plan_layout([IMAGE.nbytes, MASK.nbytes], IMAGE.nbytes)
DELETE = object()


def honest_segment() -> shm.Segment:
    segment = shm.Segment(LAYOUT.size)
    segment.write(LAYOUT.offsets[0], make_image(WIDTH, HEIGHT, 3, "u8"))
    segment.write(LAYOUT.offsets[1], make_mask(WIDTH, HEIGHT, (10, 10, 20, 20)))
    return segment


def shm_request(request_id: str, segment: shm.Segment, op: str = "inpaint", **changes: object) -> list:
    """An inpaint (or op) whose buffers are in segment, with fields of its "shm" map changed."""
    wire = inpaint_header(request_id, IMAGE, MASK, {}).to_wire()
    wire["op"] = op
    ref = segment.ref(LAYOUT).to_wire()
    for key, value in changes.items():
        if value is DELETE:
            del ref[key]
        else:
            ref[key] = value
    wire["shm"] = ref
    return [msgpack.packb(wire)]


def ended_process() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def plain_memfd(size: int, sealed: bool, token: str) -> int:
    """A memfd with the magic and token, sealed against shrinking or not."""
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealed else 0)
    fd = os.memfd_create(shm.MEMFD_NAME, flags)
    os.ftruncate(fd, size)
    os.pwrite(fd, shm.MAGIC + bytes.fromhex(token), 0)
    return fd


def test_hostile_shared_memory_headers_get_errors_and_the_backend_keeps_serving(
    backend: RunningBackend, tmp_path: Path
) -> None:
    pid, endpoint = backend.pid, backend.endpoint
    segment = honest_segment()
    small = shm.Segment(SHM_HEADER_BYTES)  # sealed, genuine, but smaller than the request says
    unsealed = plain_memfd(LAYOUT.size, sealed=False, token=segment.token)
    regular = tmp_path / "not-shared-memory"
    regular.write_bytes(shm.MAGIC + bytes.fromhex(segment.token) + bytes(LAYOUT.size))
    regular_fd = os.open(regular, os.O_RDWR)
    pipe_read, pipe_write = os.pipe()
    closed_fd = 999_999  # above any descriptor this process opens
    dead_pid = ended_process()
    size = segment.ref(LAYOUT).size
    reply_at, reply_length = LAYOUT.reply_offset, LAYOUT.reply_length
    image_at, mask_at = LAYOUT.offsets
    cases: list[tuple[str, dict, ErrorKind, str]] = [
        ("dead process", {"pid": dead_pid}, ErrorKind.BAD_REQUEST, "does not exist"),
        ("closed descriptor", {"fd": closed_fd}, ErrorKind.BAD_REQUEST, "does not exist"),
        ("a pipe", {"fd": pipe_read}, ErrorKind.BAD_REQUEST, "is not a shared-memory segment"),
        ("a regular file", {"fd": regular_fd}, ErrorKind.BAD_REQUEST, "not a memfd sealed against shrinking"),
        (
            "an unsealed memfd",
            {"fd": unsealed},
            ErrorKind.BAD_REQUEST,
            "not a memfd sealed against shrinking",
        ),
        ("another token", {"token": "0" * 32}, ErrorKind.BAD_REQUEST, "token mismatch"),
        ("a too small segment", {"fd": small.fd}, ErrorKind.BAD_REQUEST, f"the request declares {size}"),
        ("size beyond the limits", {"size": 4 << 30}, ErrorKind.TOO_LARGE, "at most"),
        ("size below the header", {"size": 100}, ErrorKind.BAD_REQUEST, "at least 4096"),
        ("an image past the end", {"offsets": [size - 64, mask_at]}, ErrorKind.BAD_REQUEST, "ends beyond"),
        ("an image in the header", {"offsets": [0, mask_at]}, ErrorKind.BAD_REQUEST, "starts at 0"),
        ("an unaligned image", {"offsets": [image_at + 1, mask_at]}, ErrorKind.BAD_REQUEST, "multiple of 64"),
        ("negative offsets", {"offsets": [-4096, mask_at]}, ErrorKind.BAD_REQUEST, "starts at -4096"),
        ("overlapping buffers", {"offsets": [image_at, image_at + 64]}, ErrorKind.BAD_REQUEST, "overlap"),
        ("one offset", {"offsets": [image_at]}, ErrorKind.BAD_REQUEST, "1 offsets for 2 buffers"),
        ("a small reply area", {"reply": [reply_at, 10]}, ErrorKind.BAD_REQUEST, "reply area must hold"),
        (
            "a reply area first",
            {"reply": [SHM_HEADER_BYTES, reply_length]},
            ErrorKind.BAD_REQUEST,
            "after every",
        ),
        ("a reply area past the end", {"reply": [reply_at, size]}, ErrorKind.BAD_REQUEST, "end within"),
        (
            "an unaligned reply area",
            {"reply": [reply_at + 64, 8]},
            ErrorKind.BAD_REQUEST,
            "start at a multiple",
        ),
        ("no reply area", {"reply": DELETE}, ErrorKind.BAD_REQUEST, "needs all of pid, fd and reply"),
        ("a pid that is a string", {"pid": str(os.getpid())}, ErrorKind.BAD_REQUEST, "pid must be"),
        ("a negative fd", {"fd": -1}, ErrorKind.BAD_REQUEST, "fd must be"),
        ("a token that is not hex", {"token": "zz" * 16}, ErrorKind.BAD_REQUEST, "32 lowercase hex"),
        ("unknown keys", {"path": "/etc/passwd"}, ErrorKind.BAD_REQUEST, "must be a map with"),
    ]
    try:
        base = raw_exchange(endpoint, shm_request("honest", segment))
        assert base.op == Op.RESULT and base.shm is not None and base.shm.token == segment.token
        for number, (name, changes, kind, words) in enumerate(cases):
            request_id = f"hostile-{number}"
            reply = raw_exchange(endpoint, shm_request(request_id, segment, **changes))
            assert reply.op == Op.ERROR and reply.id == request_id, name
            assert reply.options["kind"] == kind.value, (name, reply.options)
            assert words in reply.options["message"], (name, reply.options["message"])
            assert reply.options["message"].startswith("Shared memory: "), name
            assert reply.options.get(SHARED_MEMORY_REFUSED) is True, name  # a Client resends as frames
        with_frames = raw_exchange(endpoint, [*shm_request("frames-too", segment), bytes(IMAGE.nbytes)])
        assert "carries no data frames" in with_frames.options["message"]
        on_hello = raw_exchange(endpoint, shm_request("hello-shm", segment, op="hello"))
        assert on_hello.options["kind"] == "bad_request" and "has no buffers" in on_hello.options["message"]
        assert SHARED_MEMORY_REFUSED not in on_hello.options
        wait_for(lambda: backend_is_clean(pid), 10, "no segment stays mapped or open after the rejections")
        with Client(endpoint, timeout_s=120) as client:  # still serving, through shared memory
            assert client.hello()["shared_memory"] is True
            result = fill(client, make_image(50, 40, 3, "u8"), make_mask(50, 40, (5, 5, 10, 10)))
            assert client.last_transport == "shared_memory" and (result.width, result.height) == (12, 12)
    finally:
        segment.close()
        small.close()
        for fd in (unsealed, regular_fd, pipe_read, pipe_write):
            os.close(fd)


# ----------------------------------------------------------------------------------------- fallbacks


def test_a_rejected_segment_is_resent_as_frames_with_the_same_result(
    backend: RunningBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = backend.endpoint
    image, mask = make_image(100, 80, 4, "u16", 3), make_mask(100, 80, (20, 20, 30, 30))
    with Client(endpoint, timeout_s=120, shared_memory=False) as frames:
        expected = fill(frames, image, mask)
    original_ref = shm.Segment.ref
    gone = ended_process()

    def foreign_ref(self: shm.Segment, layout: shm.Layout, pid: int | None = None):  # noqa: ANN202
        return original_ref(self, layout, pid=gone)  # the backend cannot reach the segment

    monkeypatch.setattr(shm.Segment, "ref", foreign_ref)
    caplog.set_level(logging.DEBUG, logger="shared_protocol.client")
    with Client(endpoint, timeout_s=120) as client:
        assert fill(client, image, mask) == expected
        assert client.last_transport == "frames"
        assert "the backend rejected shared memory (Shared memory: descriptor" in caplog.text
        caplog.clear()
        assert fill(client, image, mask) == expected  # frames from now on, without asking again
        assert client.last_transport == "frames" and "refused it earlier" in caplog.text


def test_without_memfd_the_client_sends_frames_and_says_so(
    backend: RunningBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = backend.endpoint
    image, mask = make_image(90, 70, 4, "f32", 4), make_mask(90, 70, (10, 10, 20, 20))

    def no_memfd(*args: object) -> int:
        raise OSError(38, "Function not implemented")

    with Client(endpoint, timeout_s=120) as client:
        expected = fill(client, image, mask)
        assert client.last_transport == "shared_memory"
    caplog.set_level(logging.DEBUG, logger="shared_protocol.client")
    monkeypatch.setattr(os, "memfd_create", no_memfd)
    with Client(endpoint, timeout_s=120) as client:
        assert fill(client, image, mask) == expected
        assert client.last_transport == "frames"
    assert "shared memory not used ([Errno 38] Function not implemented); sending frames" in caplog.text


class ScriptedBackend:
    """A ROUTER that answers every inpaint with script(wire header) -> list of reply headers."""

    def __init__(self, script: Callable[[dict], list[dict]]) -> None:
        self.endpoint = free_endpoint()
        self.received: list[dict] = []
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(self.endpoint)
        self._script = script
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(50):
                continue
            identity, raw, *_frames = self._socket.recv_multipart()
            wire = msgpack.unpackb(raw)
            self.received.append(wire)
            if wire["op"] == "inpaint":
                for reply in self._script(wire):
                    self._socket.send_multipart(
                        [identity, msgpack.packb({"v": 1, "id": wire["id"], **reply})]
                    )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()


def empty_result() -> dict:
    return {"op": "result", "options": {"x": 0, "y": 0}, "buffers": []}


def test_a_backend_that_predates_shared_memory_gets_frames() -> None:
    def old_backend(wire: dict) -> list[dict]:  # what the previous backend's decode answered
        if "shm" in wire:
            message = "The message header has unknown fields: shm."
            return [{"op": "error", "options": {"kind": "bad_request", "message": message}, "buffers": []}]
        return [empty_result()]

    peer = ScriptedBackend(old_backend)
    try:
        with Client(peer.endpoint, timeout_s=10) as client:
            result = fill(client, make_image(40, 30, 3, "u8"), make_mask(40, 30, None))
            assert (result.width, result.height) == (0, 0) and client.last_transport == "frames"
            fill(client, make_image(40, 30, 3, "u8"), make_mask(40, 30, None))
        assert ["shm" in wire for wire in peer.received] == [True, False, False]  # asked once only
        assert peer.received[0]["id"] != peer.received[1]["id"]  # the resent request has its own id
    finally:
        peer.close()


def test_an_error_after_the_request_was_accepted_is_not_resent() -> None:
    def accepted_then_failed(wire: dict) -> list[dict]:
        progress = {"op": "progress", "options": {"fraction": 0.0, "message": "Starting"}, "buffers": []}
        failed = {"kind": "bad_request", "message": "The image must be RGB or RGBA."}
        return [progress, {"op": "error", "options": failed, "buffers": []}]

    peer = ScriptedBackend(accepted_then_failed)
    try:
        with Client(peer.endpoint, timeout_s=10) as client, pytest.raises(HiFillError) as caught:
            fill(client, make_image(40, 30, 3, "u8"), make_mask(40, 30, (1, 1, 5, 5)))
        assert caught.value.kind is ErrorKind.BAD_REQUEST and "RGB or RGBA" in caught.value.message
        assert len(peer.received) == 1 and "shm" in peer.received[0]
    finally:
        peer.close()


# ------------------------------------------------------------------------------------------ leftovers


def test_nothing_is_left_after_fills_cancels_and_timeouts(backend: RunningBackend) -> None:
    pid, endpoint = backend.pid, backend.endpoint
    before = dev_shm()
    big_image, big_mask = make_image(3840, 2160, 3, "u8"), make_mask(3840, 2160, (200, 200, 3400, 1760))
    with Client(endpoint, timeout_s=120) as client:
        fill(client, make_image(200, 100, 3, "u8"), make_mask(200, 100, (20, 20, 40, 40)))
        cancel = threading.Event()
        with pytest.raises(HiFillError) as cancelled:
            fill(client, big_image, big_mask, cancel_event=cancel, on_progress=lambda f, m: cancel.set())
        assert cancelled.value.kind is ErrorKind.CANCELLED and client.last_transport == "shared_memory"
        wait_for(lambda: backend_is_clean(pid), 60, "the backend released the cancelled fill's segment")
        assert mapped_segments(os.getpid()) == 1  # the client keeps its segment for the next request
    with Client(endpoint, timeout_s=0.5) as impatient, pytest.raises(HiFillError) as timed_out:
        fill(impatient, big_image, big_mask)
    assert timed_out.value.kind is ErrorKind.TIMEOUT
    wait_for(lambda: backend_is_clean(pid), 60, "the backend released the timed-out fill's segment")
    assert mapped_segments(os.getpid()) == open_segments(os.getpid()) == 0
    assert dev_shm() == before


KILLABLE_CLIENT = """
import sys
import numpy as np
from shared_protocol import Client

endpoint, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
image = np.zeros((height, width, 3), np.uint8)
mask = np.zeros((height, width), np.uint8)
mask[height // 10 : height * 9 // 10, width // 10 : width * 9 // 10] = 255

def progress(fraction, message):
    print("progress", message, flush=True)

with Client(endpoint, timeout_s=300) as client:
    client.inpaint(image, width, height, 3, "u8", mask, on_progress=progress)
print("done", client.last_transport, flush=True)
"""


def start_client(endpoint: str, width: int, height: int) -> subprocess.Popen:
    """A client process that fills (through shared memory) and prints each progress message."""
    command = [sys.executable, "-c", KILLABLE_CLIENT, endpoint, str(width), str(height)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)


def wait_for_progress(process: subprocess.Popen) -> str:
    line = process.stdout.readline()
    assert line.startswith("progress"), f"the client printed {line!r} (exit code {process.poll()})"
    return line


def test_killed_clients_leave_nothing_behind(backend: RunningBackend) -> None:
    """Who frees what: the client's segment has no name, so the kernel frees it once the client is gone
    and the backend has unmapped it; the backend unmaps when the request ends, and a vanished
    client's requests end: a queued one is dropped at the next heartbeat, a running one is cancelled.
    Segments are told apart by inode, so the checks hold whatever the big fill does meanwhile."""
    pid, endpoint = backend.pid, backend.endpoint
    before = dev_shm()
    running = start_client(endpoint, 7680, 4320)  # 8K: still running while the other is handled
    queued = None
    try:
        wait_for_progress(running)
        queued = start_client(endpoint, 640, 480)
        assert "Waiting in the queue" in wait_for_progress(queued)
        (running_segment,) = segment_inodes(running.pid)
        (queued_segment,) = segment_inodes(queued.pid)
        # Each accepted request maps the request part and the reply area of its client's segment.
        assert sorted(mapped_inodes(pid)) == sorted([running_segment] * 2 + [queued_segment] * 2)
        queued.kill()
        queued.wait(10)
        wait_for(
            lambda: queued_segment not in mapped_inodes(pid),
            60,
            "the killed queued client's segment was unmapped",
        )
        assert running.poll() is None, "the big fill ended too early for this test"
        assert mapped_inodes(pid) == [running_segment] * 2, "the running fill's segment stays mapped"
        running.kill()
        running.wait(10)
        wait_for(lambda: backend_is_clean(pid), 60, "the killed running client's segment was unmapped")
    finally:
        for process in (running, queued):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    assert dev_shm() == before
    with Client(endpoint, timeout_s=120) as client:  # the backend serves on
        result = fill(client, make_image(64, 64, 3, "u8"), make_mask(64, 64, (8, 8, 16, 16)))
        assert client.last_transport == "shared_memory" and result.width == 18


def test_a_client_that_exits_normally_frees_its_segment(backend: RunningBackend) -> None:
    pid, endpoint = backend.pid, backend.endpoint
    before = dev_shm()
    client = start_client(endpoint, 320, 240)
    output, _ = client.communicate(timeout=120)
    assert client.returncode == 0 and output.splitlines()[-1] == "done shared_memory", output
    wait_for(lambda: backend_is_clean(pid), 10, "the backend released the segment")
    assert dev_shm() == before


# ----------------------------------------------------------------------------------------- who may


@pytest.mark.parametrize(
    ("endpoint", "curve", "reason"),
    [
        ("tcp://127.0.0.1:47631", False, None),
        ("tcp://[::1]:47631", False, None),
        ("tcp://localhost:47631", False, None),
        ("ipc:///tmp/hifill.sock", False, None),
        ("tcp://127.0.0.1:47631", True, "CURVE"),
        ("tcp://0.0.0.0:47631", True, "CURVE"),
        ("tcp://0.0.0.0:47631", False, "other machines can reach"),
        ("tcp://192.168.1.5:47631", False, "other machines can reach"),
    ],
)
def test_only_local_backends_without_curve_read_shared_memory(endpoint: str, curve: bool, reason: str | None):
    refusal = shared_memory_refusal(endpoint, object() if curve else None)  # type: ignore[arg-type]
    assert refusal is None if reason is None else reason in refusal


def run_keys(*args: str, folder: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend", "keys", *args, "--dir", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE")
def test_a_curve_backend_refuses_shared_memory_even_on_loopback(
    untrained_weights: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "keys"
    run_keys("server", folder=folder)
    run_keys("client", "editor", folder=folder)
    keys = CurveKeys.from_folder(folder / "clients" / "editor")
    log = tmp_path / "backend.log"
    process, endpoint = start_backend(untrained_weights, log, "--curve-keys", str(folder), curve=keys)
    segment = honest_segment()
    try:
        with Client(endpoint, timeout_s=120, connect_timeout_s=1, curve=keys) as client:
            assert client.hello()["shared_memory"] is False
            result = fill(client, make_image(64, 48, 3, "u8"), make_mask(64, 48, (10, 10, 8, 8)))
            assert client.last_transport == "frames" and result.width == 10  # keys: never shared memory
        # A client with allowed keys that names a genuine segment anyway is refused, with a sentence.
        reply = raw_exchange(endpoint, shm_request("curve-shm", segment), curve=keys)
        assert reply.op == Op.ERROR and reply.options["kind"] == "bad_request"
        message = reply.options["message"]
        assert "does not read shared memory" in message and "CURVE" in message and "as frames" in message
        assert reply.options.get(SHARED_MEMORY_REFUSED) is True
        assert mapped_segments(process.pid) == 0
    finally:
        segment.close()
        stop_backend(process)

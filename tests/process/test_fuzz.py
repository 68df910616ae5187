"""Hostile input against a real backend process (`python -m backend serve`, untrained weights).

Over 10,000 malformed messages (hypothesis) go to the backend from a raw DEALER socket, which does not
validate anything: garbage and truncated headers, declared sizes far beyond the data, wrong types,
deep nesting, huge maps and arrays, bad versions, unknown ops, mismatched buffer counts and sizes,
NaN/inf options, negative/zero dimensions, random bytes. Messages are pipelined (a window of
outstanding requests, replies drained as they come), not sent one reply at a time.

Every reply is checked against an oracle: the same validation the server runs (shared_protocol.decode,
parse_inpaint_request), done here on the bytes that were sent. A rejected message must get exactly one
error reply, in order, with the kind and the request id ("?" when unreadable) the oracle predicts; a
valid fill must end with one result inside its image or BUSY; a cancel gets no reply; nothing else may
arrive (Fuzzer explains how replies are matched when request ids repeat). Afterwards the backend must
still answer hello and a real fill through shared_protocol.Client, and its resident memory must not have
grown by more than RSS_BOUND_MB since warm-up. HIFILL_FUZZ_MESSAGES (default 10,000) and
HIFILL_FUZZ_SEED (default 1) change the run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from shared_protocol import Client, ErrorKind, ProtocolError
from shared_protocol.messages import (
    DEFAULT_LIMITS,
    BufferSpec,
    Header,
    Op,
    decode,
    encode,
    error_header,
    parse_inpaint_request,
)
from tests.backend_process import rss_mb

FUZZ_MESSAGES = int(os.environ.get("HIFILL_FUZZ_MESSAGES", "10000"))
FUZZ_SEED = int(os.environ.get("HIFILL_FUZZ_SEED", "1"))  # warm-up: seed 2n - 1, fuzz: seed 2n
WARMUP_MESSAGES = 500
RSS_BOUND_MB = 64.0
WINDOW = 200  # replies the sender may be ahead of
ID_SLOT = "\x00id-slot"  # replaced by a fresh request id when a message is sent
LIMITS = DEFAULT_LIMITS  # the backend serves with Limits() (no CLI flag changes them)
UNKNOWN_ID = "?"  # the server's reply id when a request's own id cannot be read


# ---------------------------------------------------------------------------------------- backend


def real_fill(endpoint: str, size: int = 64) -> None:
    """A real fill through the Client; the region must be the mask's bounding box."""
    image = np.full((size, size, 3), 120, np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : size // 2, size // 4 : size // 2] = 255
    with Client(endpoint, timeout_s=120) as client:
        info = client.hello()
        assert info["version"] == 1 and info["limits"] == LIMITS.to_dict()
        result = client.inpaint(image.tobytes(), size, size, 3, "u8", mask.tobytes())
    side = size // 4
    assert (result.x, result.y, result.width, result.height) == (side, side, side, side)
    assert len(result.pixels) == side * side * 3


# ---------------------------------------------------------------------------------------- messages


@dataclass
class Message:
    """A message before its request id is assigned: a header value (packed at send time) or raw
    header bytes, the data frames, and an optional byte-level mutation of the packed header."""

    header: Any = None
    raw_header: bytes | None = None
    frames: list[bytes] = field(default_factory=list)
    mutate: Callable[[bytes], bytes] | None = None
    family: str = ""

    def build(self, request_id: str) -> list[bytes]:
        if self.raw_header is not None:
            packed = self.raw_header.replace(msgpack.packb(ID_SLOT), msgpack.packb(request_id))
        else:
            header = self.header
            if isinstance(header, dict) and header.get("id") == ID_SLOT:
                header = {**header, "id": request_id}
            packed = msgpack.packb(header, use_bin_type=True)
        if self.mutate is not None:
            packed = self.mutate(packed)
        return [packed, *self.frames]


INTS = st.one_of(
    st.integers(-3, 70000),
    st.sampled_from([-(2**63), -(2**31), 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64 - 1, 65536, 65537]),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    FLOATS,
    st.text(max_size=12),
    st.binary(max_size=12),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
)
JUNK = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-5, 5)), children, max_size=6),
    ),
    max_leaves=24,
)
DTYPES = ("u8", "u16", "f32")
ITEMSIZE = {"u8": 1, "u16": 2, "f32": 4}
ORDERS = {"RGB": 3, "RGBA": 4, "L": 1}


def spec(name: str, width: int, height: int, dtype: str, order: str) -> dict[str, Any]:
    return {"name": name, "width": width, "height": height, "channels": ORDERS[order], "dtype": dtype,
            "order": order}  # fmt: skip


def nbytes(buffer_spec: dict[str, Any]) -> int:
    return (
        buffer_spec["width"]
        * buffer_spec["height"]
        * ORDERS[buffer_spec["order"]]
        * ITEMSIZE[buffer_spec["dtype"]]
    )


@st.composite
def valid_messages(draw) -> Message:
    """A well-formed request (the starting point of the corruptions); inpaints are at most 12x12."""
    op = draw(st.sampled_from(["hello", "status", "cancel", "inpaint", "inpaint", "inpaint"]))
    header = {"v": 1, "id": ID_SLOT, "op": op, "options": {}, "buffers": []}
    frames: list[bytes] = []
    if op == "inpaint":
        width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        image = spec(
            "image", width, height, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(["RGB", "RGBA"]))
        )
        mask = spec("mask", width, height, "u8", "L")
        header["buffers"] = [image, mask]
        frames = [bytes(nbytes(image)), b"\xff" * nbytes(mask)]
        if draw(st.booleans()):
            header["options"] = {"context_px": draw(st.integers(0, 64))}
    return Message(header=header, frames=frames)


# Each corruption changes one thing of a valid message in place.


def corrupt_top_field(draw, message: Message) -> str:
    key = draw(st.sampled_from(["v", "id", "op", "options", "buffers"]))
    action = draw(st.sampled_from(["junk", "delete", "special"]))
    if action == "delete":
        message.header.pop(key, None)
    elif action == "junk":
        message.header[key] = draw(JUNK)
    elif key == "v":
        message.header["v"] = draw(st.sampled_from([0, 2, -1, 255, 2**64 - 1, 1.0, "1", True, float("nan")]))
    elif key == "id":
        # invalid ids, and valid ones that many messages share (also "?", the unreadable-id reply's id)
        message.header["id"] = draw(
            st.sampled_from(["", "x" * 129, "x" * 4096, "\u00e9" * 200, "shared-id", UNKNOWN_ID])
        )
    elif key == "op":
        message.header["op"] = draw(
            st.one_of(
                st.sampled_from(["progress", "result", "error", "HELLO", "", "inpaint\0"]),
                st.text(max_size=10),
            )
        )
    elif key == "options":
        message.header["options"] = draw(st.sampled_from([[], "x", 0, None]))
    else:
        message.header["buffers"] = draw(st.sampled_from([{}, "image", 2, None]))
    return f"top:{key}:{action}"


def corrupt_options(draw, message: Message) -> str:
    options = message.header["options"]
    choice = draw(st.sampled_from(["context", "unknown", "huge_map", "nonfinite", "nested"]))
    if choice == "context":
        options["context_px"] = draw(
            st.one_of(FLOATS, st.sampled_from([-1, -(2**63), 65537, 2**64 - 1, True, "32", [32], {"px": 32}]))
        )
    elif choice == "unknown":
        options[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
    elif choice == "huge_map":
        size = draw(st.integers(60, 5000))
        options.update({f"k{i}": i for i in range(size)})
    elif choice == "nonfinite":
        options[draw(st.sampled_from(["context_px", "fraction", "x"]))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")])
        )
    else:
        depth, shape = draw(st.integers(6, 400)), random.Random(draw(st.integers(0, 2**32)))
        value: Any = 0
        for _ in range(depth):  # one draw for the shape, not one per level (hypothesis draws are slow)
            value = [value] if shape.random() < 0.5 else {"n": value}
        options["deep"] = value
    return f"options:{choice}"


def corrupt_buffer_spec(draw, message: Message) -> str:
    buffers = message.header["buffers"]
    if not buffers:
        buffers.append(spec("image", 4, 4, "u8", "RGB"))
    index = draw(st.integers(0, len(buffers) - 1))
    if not isinstance(buffers[index], dict):
        buffers[index] = spec("image", 4, 4, "u8", "RGB")
    target = buffers[index]
    key = draw(
        st.sampled_from(["name", "width", "height", "channels", "dtype", "order", "extra", "missing", "type"])
    )
    if key in ("width", "height"):
        target[key] = draw(st.one_of(INTS, FLOATS, st.sampled_from(["4", None, [4]])))
    elif key == "channels":
        target[key] = draw(st.one_of(st.integers(-2, 8), st.sampled_from([3.0, "3", None])))
    elif key in ("dtype", "order"):
        target[key] = draw(
            st.one_of(st.sampled_from(["U8", "u32", "f16", "RGB", "BGR", "LA", "u8 ", ""]), JUNK)
        )
    elif key == "name":
        target[key] = draw(st.one_of(st.sampled_from(["", "mask", "image", "region"]), JUNK))
    elif key == "extra":
        target[draw(st.text(min_size=1, max_size=6))] = draw(JUNK)
    elif key == "missing":
        if target:  # a junk spec may be an empty map already
            target.pop(draw(st.sampled_from(sorted(target, key=repr))), None)  # keys may mix types
    else:
        buffers[index] = draw(JUNK)
    return f"spec:{key}"


def corrupt_frames(draw, message: Message) -> str:
    frames = message.frames
    choice = draw(
        st.sampled_from(["drop", "extra", "resize", "many", "oversize", "huge_declared", "huge_spec_list"])
    )
    if choice == "drop" and frames:
        frames.pop(draw(st.integers(0, len(frames) - 1)))
    elif choice == "extra":
        frames.append(bytes(draw(st.integers(0, 64))))
    elif choice == "resize" and frames:
        index = draw(st.integers(0, len(frames) - 1))
        delta = draw(st.sampled_from([-1, 1, -3, 7, 4096]))
        frames[index] = bytes(max(0, len(frames[index]) + delta))
    elif choice == "many":
        frames.extend(bytes(3) for _ in range(draw(st.integers(8, 40))))
    elif choice == "oversize":
        frames.append(bytes(draw(st.integers(1, 4)) << 20))  # megabytes beyond any spec
    elif choice == "huge_declared":
        # dimensions far beyond the data (and beyond the pixel/byte limits): must fail before allocation
        width, height = draw(st.sampled_from([(65536, 65536), (20000, 20000), (65535, 1525), (16384, 16384)]))
        dtype = draw(st.sampled_from(DTYPES))
        message.header["buffers"] = [
            spec("image", width, height, dtype, "RGBA"),
            spec("mask", width, height, "u8", "L"),
        ]
        message.header["op"] = "inpaint"
        message.frames = [bytes(16), bytes(4)]
    else:
        count = draw(st.integers(65, 300))
        message.header["buffers"] = [spec(f"b{i}", 1, 1, "u8", "L") for i in range(count)]
        message.frames = [b"\0"] * count
    return f"frames:{choice}"


CORRUPTIONS = (corrupt_top_field, corrupt_options, corrupt_buffer_spec, corrupt_frames)


@st.composite
def corrupted_messages(draw) -> Message:
    """A valid message with one to three structural corruptions."""
    message = draw(valid_messages())
    message.header = {**message.header, "options": dict(message.header["options"]),
                      "buffers": [dict(b) for b in message.header["buffers"]]}  # fmt: skip
    names = []
    for _ in range(draw(st.integers(1, 3))):
        corruption = draw(st.sampled_from(CORRUPTIONS))
        if not isinstance(message.header.get("options"), dict) and corruption is corrupt_options:
            continue
        if not isinstance(message.header.get("buffers"), list) and corruption in (
            corrupt_buffer_spec,
            corrupt_frames,
        ):
            continue
        names.append(corruption(draw, message))
    message.family = "corrupt:" + ",".join(names)
    return message


@st.composite
def byte_mutated_messages(draw) -> Message:
    """A valid message whose packed header is truncated, bit-flipped, spliced or given a huge length."""
    message = draw(valid_messages())
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "declared_length", "trailing"]))
    where = draw(st.floats(0, 1, exclude_max=True))
    if kind == "truncate":
        message.mutate = lambda raw: raw[: int(where * len(raw))]
    elif kind == "flip":
        bit = 1 << draw(st.integers(0, 7))
        count = draw(st.integers(1, 4))

        def flip(raw: bytes) -> bytes:
            data = bytearray(raw)
            for step in range(count):
                position = (int(where * len(data)) + step * 7) % len(data)
                data[position] ^= bit
            return bytes(data)

        message.mutate = flip
    elif kind == "insert":
        junk = draw(st.binary(min_size=1, max_size=16))
        message.mutate = lambda raw: raw[: int(where * len(raw))] + junk + raw[int(where * len(raw)) :]
    elif kind == "declared_length":
        # a str/bin/ext/array/map marker that declares up to 4 GiB (or 4 G items) with little behind it
        marker = draw(
            st.sampled_from([b"\xdb", b"\xc6", b"\xc9", b"\xdd", b"\xdf", b"\xda", b"\xdc", b"\xde"])
        )
        width = 2 if marker in (b"\xda", b"\xdc", b"\xde") else 4
        length = draw(
            st.sampled_from([2 ** (8 * width) - 1, 2 ** (8 * width - 1), 4096, 70000 % 2 ** (8 * width)])
        )
        tail = draw(st.binary(max_size=32))
        message.mutate = lambda raw: (
            raw[: int(where * len(raw))] + marker + length.to_bytes(width, "big") + tail
        )
    else:
        tail = draw(st.binary(min_size=1, max_size=8))
        message.mutate = lambda raw: raw + tail
    message.family = f"bytes:{kind}"
    return message


@st.composite
def raw_messages(draw) -> Message:
    """Frames that were never a header: random bytes, deep nesting, oversize headers, bare msgpack values."""
    kind = draw(st.sampled_from(["random", "deep", "oversize", "junk_value", "nested_in_header", "empty"]))
    frames = draw(st.lists(st.binary(max_size=48), max_size=3))
    if kind == "random":
        raw = draw(st.binary(max_size=96))
    elif kind == "deep":
        depth = draw(st.integers(9, 40000))
        unit = draw(st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xdf\x00\x00\x00\x01\xa1k"]))
        raw = unit * depth + b"\xc0"
    elif kind == "oversize":
        size = draw(st.integers(LIMITS.max_header_bytes - 16, LIMITS.max_header_bytes + 4096))
        raw = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
        if draw(st.booleans()):  # a well-formed msgpack str that is simply too long
            raw = msgpack.packb({"v": 1, "id": ID_SLOT, "op": "hello", "pad": "x" * size})
    elif kind == "junk_value":
        raw = msgpack.packb(draw(JUNK), use_bin_type=True)
    elif kind == "nested_in_header":
        depth = draw(st.integers(1, 3000))
        nested = b"\x91" * depth + b"\x00"
        raw = (
            b"\x85"
            + b"".join(
                msgpack.packb(item)
                for item in ("v", 1, "id", ID_SLOT, "op", "hello", "buffers", [], "options")
            )
            + b"\x81\xa1x"
            + nested
        )
    else:
        raw = b""
    return Message(raw_header=raw, frames=frames, family=f"raw:{kind}")


MESSAGES = st.one_of(corrupted_messages(), corrupted_messages(), byte_mutated_messages(), raw_messages())


# ---------------------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class Expected:
    """What the server must answer: one reply (op and, for errors, kind) for request_id, or a fill
    that ends with a result or an error (accepted), or nothing (a cancel of an unknown request)."""

    request_id: str
    reply: str  # an Op value for hello/status, an ErrorKind value for errors, "fill" or "none"
    image: BufferSpec | None = None  # a fill's image (its result must lie inside it)


def expected_reply(frames: list[bytes]) -> Expected:
    """The server's validation (backend.server.loop._Server._handle), replayed on the bytes that were sent."""
    try:
        header, buffers = decode(frames, LIMITS)
        if header.op is not Op.INPAINT and header.buffers:
            return Expected(header.id, ErrorKind.BAD_REQUEST.value)
        if header.op in (Op.HELLO, Op.STATUS):
            return Expected(header.id, header.op.value)
        if header.op is Op.CANCEL:
            return Expected(header.id, "none")
        if header.op is Op.INPAINT:
            request = parse_inpaint_request(header, buffers, LIMITS)
            return Expected(header.id, "fill", request.image)
        return Expected(header.id, ErrorKind.BAD_REQUEST.value)
    except ProtocolError as error:
        return Expected(error.request_id or UNKNOWN_ID, error.kind.value)


@dataclass
class Fill:
    """An accepted-or-BUSY inpaint whose final reply (result or error) is still due."""

    expected: Expected
    cancel_sent: bool = False  # a cancel with its id went out while it was outstanding
    progress: int = 0


class Fuzzer:
    """Sends messages over one DEALER without waiting for each reply; checks every reply.

    The server answers hello, status and every rejected message synchronously, in the order the
    messages arrive (one socket thread; ZeroMQ keeps one connection's order); a valid inpaint gets
    a BUSY error at once or, once accepted, progress and one final result or error later, from the
    worker, interleaved with the rest; a cancel gets no reply of its own. So:

    - `sync` holds the synchronous replies due, in send order; `fills` the outstanding fills by id.
    - Invariant: while a fill with id X is outstanding, no other message whose reply would carry X
      is outstanding (before sending such a message, replies are drained until X is clear). A reply
      with id X is therefore the fill's if X is in `fills`, and otherwise the head of `sync`.
    - Fresh request ids are unique, but many sent ids are not: corruptions write fixed ids, bit
      flips and byte inserts turn a fresh id into another message's id, and every message whose id
      cannot be read is answered with id "?". The invariant covers all of them: the id it uses is
      the one the oracle reads from the bytes actually sent, exactly as the server reads it.
    """

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)  # our side never makes the server drop a reply
        self.socket.connect(endpoint)
        self.sync: deque[Expected] = deque()  # synchronous replies due, in send order
        self.sync_ids: Counter[str] = Counter()  # the ids in self.sync
        self.fills: dict[str, Fill] = {}
        self.sent = 0
        self.replies = 0
        self.waits = 0  # sends that first drained replies because their id was outstanding
        self.families: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.fill_endings: Counter[str] = Counter()
        self.mismatches: list[str] = []
        self.counter = 0

    @property
    def outstanding(self) -> int:
        return len(self.sync) + len(self.fills)

    def send(self, message: Message) -> None:
        self.counter += 1
        frames = message.build(f"fuzz-{self.counter:06d}")
        expected = expected_reply(frames)
        request_id = expected.request_id
        family = message.family.split(":")[0] + ":" + message.family.split(":")[1].split(",")[0]
        self.families[family] += 1
        self.outcomes[expected.reply] += 1
        if expected.reply == "none":  # a cancel: no reply; it may end an outstanding fill of its id
            if request_id in self.fills:
                self.fills[request_id].cancel_sent = True
        else:
            if request_id in self.fills or (expected.reply == "fill" and self.sync_ids[request_id]):
                self.waits += 1
                while request_id in self.fills or (expected.reply == "fill" and self.sync_ids[request_id]):
                    self.wait_for_replies()
            if expected.reply == "fill":
                self.fills[request_id] = Fill(expected)
            else:
                self.sync.append(expected)
                self.sync_ids[request_id] += 1
        self.socket.send_multipart(frames, copy=len(frames) > 1 and max(map(len, frames)) < 65536)
        self.sent += 1
        self.drain(0)
        while self.outstanding > WINDOW:
            self.wait_for_replies()

    def wait_for_replies(self) -> None:
        if not self.drain(30_000):
            self.mismatches.append(f"no reply within 30 s with {self.outstanding} outstanding")
            raise AssertionError(self.mismatches[-1])

    def drain(self, timeout_ms: int) -> bool:
        """Read every reply available (waiting up to timeout_ms for the first); False if none came."""
        got = False
        while self.socket.poll(timeout_ms if not got else 0):
            got = True
            self.check(self.socket.recv_multipart())
        return got

    def check(self, frames: list[bytes]) -> None:
        self.replies += 1
        try:
            header, _ = decode(frames, LIMITS)
        except ProtocolError as error:
            self.mismatches.append(f"undecodable reply: {error.message}")
            return
        if header.op is Op.ERROR and not (
            isinstance(header.options.get("message"), str) and header.options["message"].endswith((".", ")"))
        ):
            self.mismatches.append(f"error reply without a sentence: {header.id} {header.options}")
        if header.id in self.fills:
            self.check_fill_reply(self.fills[header.id], header)
            return
        reply = header.options.get("kind") if header.op is Op.ERROR else header.op.value
        if not self.sync:
            self.mismatches.append(f"unexpected reply {header.id} {reply} {header.options}")
            return
        expected = self.sync.popleft()
        self.sync_ids[expected.request_id] -= 1
        if not self.sync_ids[expected.request_id]:
            del self.sync_ids[expected.request_id]
        if (header.id, reply) != (expected.request_id, expected.reply):
            self.mismatches.append(
                f"expected {expected}, got {header.id} {reply} {header.options.get('message', '')}"
            )

    def check_fill_reply(self, fill: Fill, header: Header) -> None:
        """Progress, then one final reply: a result inside the image, BUSY, or CANCELLED after a cancel."""
        request_id = fill.expected.request_id
        if header.op is Op.PROGRESS:
            fill.progress += 1
            fraction = header.options.get("fraction")
            if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
                self.mismatches.append(f"fill {request_id}: progress {header.options}")
            return
        del self.fills[request_id]
        ending = header.options.get("kind") if header.op is Op.ERROR else header.op.value
        self.fill_endings[ending] += 1
        allowed = {Op.RESULT.value, ErrorKind.BUSY.value} | (
            {ErrorKind.CANCELLED.value} if fill.cancel_sent else set()
        )
        if ending not in allowed:
            self.mismatches.append(f"fill {request_id} ended with {header.op.value} {header.options}")
        elif header.op is Op.RESULT:
            image = fill.expected.image
            assert image is not None
            x, y = header.options.get("x"), header.options.get("y")
            regions = header.buffers
            if not regions:
                inside = (x, y) == (0, 0)  # nothing to fill: an empty result
            else:
                region = regions[0]
                inside = (
                    len(regions) == 1
                    and isinstance(x, int)
                    and isinstance(y, int)
                    and 0 <= x <= x + region.width <= image.width
                    and 0 <= y <= y + region.height <= image.height
                    and (region.dtype, region.order) == (image.dtype, image.order)
                )
            if not inside:
                self.mismatches.append(f"fill {request_id}: result {header.options} {regions} for {image}")

    def finish(self, timeout_s: float = 120, quiet_s: float = 1.5) -> None:
        """Wait for every outstanding reply, then quiet_s more (longer than the server's heartbeat):
        any reply in that time answers nothing that was sent."""
        deadline = time.monotonic() + timeout_s
        while self.outstanding and time.monotonic() < deadline:
            self.drain(500)
        if self.outstanding:
            self.mismatches.append(f"{len(self.sync)} replies and {len(self.fills)} fills never came")
            return
        deadline = time.monotonic() + quiet_s
        while (left := deadline - time.monotonic()) > 0:
            self.drain(int(left * 1000) + 1)

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


def fuzz(fuzzer: Fuzzer, count: int, run_seed: int) -> None:
    """Send `count` hypothesis-generated messages (generation only; nothing to shrink on the server)."""

    @seed(run_seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(message=MESSAGES)
    def send(message: Message) -> None:
        fuzzer.send(message)

    send()


# ---------------------------------------------------------------------------------------- test


def test_malformed_messages_get_errors_and_leave_the_backend_serving(backend) -> None:
    process, endpoint, log_path = backend.process, backend.endpoint, backend.log_path
    fuzzer = Fuzzer(endpoint)
    started = time.monotonic()
    try:
        real_fill(endpoint)  # warm-up: torch, the engine, the sockets
        fuzz(fuzzer, WARMUP_MESSAGES, run_seed=2 * FUZZ_SEED - 1)
        fuzzer.finish()
        warm_sent = fuzzer.sent
        rss_before = rss_mb(process.pid)
        fuzz(fuzzer, FUZZ_MESSAGES, run_seed=2 * FUZZ_SEED)
        fuzzer.finish()
        fuzz_sent = fuzzer.sent - warm_sent
        elapsed = time.monotonic() - started
        assert process.poll() is None, f"backend died: {log_path.read_text()[-3000:]}"
        real_fill(endpoint)
        real_fill(endpoint, size=96)
        rss_after = rss_mb(process.pid)
    finally:
        fuzzer.close()
    print(
        f"\nfuzz: {fuzz_sent} malformed messages after {warm_sent} warm-up ({fuzzer.replies} replies) in "
        f"{elapsed:.1f} s; backend VmRSS {rss_before:.1f} MB after warm-up -> {rss_after:.1f} MB after "
        f"(+{rss_after - rss_before:.1f} MB)\nfamilies: {dict(sorted(fuzzer.families.items()))}"
        f"\npredicted replies: {dict(sorted(fuzzer.outcomes.items()))}; fills ended: "
        f"{dict(fuzzer.fill_endings)}; {fuzzer.waits} sends waited for an outstanding id (seed {FUZZ_SEED})"
    )
    assert fuzz_sent >= FUZZ_MESSAGES
    assert not fuzzer.mismatches, f"{len(fuzzer.mismatches)} wrong replies, e.g. {fuzzer.mismatches[:5]}"
    assert rss_after - rss_before < RSS_BOUND_MB
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text[log_text.index("Traceback") - 500 :][:3000]


def inpaint_message(request_id: str, side: int = 4) -> Message:
    """A valid inpaint of a side x side RGB u8 image, fully masked, with a fixed request id."""
    image, mask = spec("image", side, side, "u8", "RGB"), spec("mask", side, side, "u8", "L")
    header = {"v": 1, "id": request_id, "op": "inpaint", "options": {}, "buffers": [image, mask]}
    return Message(header=header, frames=[bytes(nbytes(image)), b"\xff" * nbytes(mask)], family="test:fill")


def plain_message(request_id: str, op: str) -> Message:
    header = {"v": 1, "id": request_id, "op": op, "options": {}, "buffers": []}
    return Message(header=header, family=f"test:{op}")


def test_replies_are_matched_to_their_messages_when_request_ids_repeat(backend) -> None:
    """Ids the sender cannot keep unique (fixed in the header, or unreadable: answered as "?") are
    reused while a fill with that id is still running; every reply still goes to its own message."""
    endpoint = backend.endpoint
    fuzzer = Fuzzer(endpoint)
    unreadable = Message(raw_header=b"", family="test:raw")
    try:
        for message in (
            inpaint_message("dup", side=256),  # long enough to be running while the next ones are sent
            plain_message("dup", "status"),  # the server answers at once; the fill's result comes later
            plain_message("dup", "result"),  # bad_request with the same id
            plain_message("dup", "cancel"),  # no reply of its own
            inpaint_message("dup"),
            plain_message("dup", "hello"),
            unreadable,
            inpaint_message(UNKNOWN_ID, side=64),  # a readable id that equals the unreadable-id reply
            unreadable,
            plain_message(UNKNOWN_ID, "status"),
        ):
            fuzzer.send(message)
        fuzzer.finish(timeout_s=120)
    finally:
        fuzzer.close()
    assert not fuzzer.mismatches, fuzzer.mismatches
    assert fuzzer.waits >= 2
    assert fuzzer.fill_endings.total() == 3 and fuzzer.outcomes["fill"] == 3


def test_the_oracle_flags_wrong_missing_and_extra_replies() -> None:
    """Against a fake server that answers wrongly: each kind of wrong reply is reported."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    fuzzer = Fuzzer(f"tcp://127.0.0.1:{port}")
    try:
        fuzzer.send(plain_message(ID_SLOT, "hello"))  # fuzz-000001
        fuzzer.send(plain_message(ID_SLOT, "status"))  # fuzz-000002
        fuzzer.send(Message(raw_header=b"\xc1", family="test:raw"))  # "?", bad_request
        fuzzer.send(inpaint_message(ID_SLOT))  # fuzz-000004
        fuzzer.send(inpaint_message(ID_SLOT))  # fuzz-000005, never answered
        identity = b""
        for _ in range(5):
            assert router.poll(10_000)
            identity = router.recv_multipart()[0]

        def reply(header: Header) -> None:
            router.send_multipart([identity, *encode(header)])

        reply(Header(Op.STATUS, "fuzz-000001", {}))  # wrong op
        reply(Header(Op.STATUS, "fuzz-000003", {}))  # wrong id
        reply(error_header(UNKNOWN_ID, ErrorKind.BAD_REQUEST, "no sentence"))
        reply(error_header("fuzz-000004", ErrorKind.INTERNAL, "The backend failed."))  # a fill must not fail
        reply(Header(Op.HELLO, "nobody", {}))  # answers nothing that was sent
        fuzzer.finish(timeout_s=2, quiet_s=0.2)
    finally:
        fuzzer.close()
        router.close(0)
        context.term()
    assert len(fuzzer.mismatches) == 6, fuzzer.mismatches
    for mismatch, words in zip(
        fuzzer.mismatches,
        (
            ("fuzz-000001", "status"),
            ("fuzz-000003",),
            ("without a sentence",),
            ("fill fuzz-000004 ended with error",),
            ("unexpected reply nobody",),
            ("1 fills never came",),
        ),
        strict=True,
    ):
        assert all(word in mismatch for word in words), (mismatch, words)

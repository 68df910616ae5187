"""shared_protocol: encode/decode round trips, every validation rule, limits, local client checks.

The whole module runs a second time in a subprocess with MSGPACK_PUREPYTHON=1 (the pure-Python
msgpack that editors without the C extension use): see test_module_passes_with_pure_python_msgpack.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_protocol import (
    DEFAULT_LIMITS,
    EIGHT_K_RGBA_U16_BYTES,
    PROTOCOL_VERSION,
    BufferSpec,
    ChannelOrder,
    Client,
    DType,
    ErrorKind,
    Header,
    HiFillError,
    Limits,
    Op,
    ProtocolError,
    check_buffer_spec,
    decode,
    encode,
    error_header,
    inpaint_header,
    parse_inpaint_request,
    progress_header,
)
from shared_protocol.endpoints import free_loopback_endpoint
from shared_protocol.messages import _check_msgpack_nesting

REPO = Path(__file__).resolve().parents[2]
PURE_PYTHON = bool(os.environ.get("MSGPACK_PUREPYTHON"))
NUMPY_DTYPE = {DType.U8: np.uint8, DType.U16: np.uint16, DType.F32: np.float32}


def random_pixels(spec: BufferSpec, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (spec.height, spec.width, spec.channels)
    if spec.dtype == DType.F32:
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(NUMPY_DTYPE[spec.dtype])
    return rng.integers(0, info.max, size=shape, endpoint=True, dtype=NUMPY_DTYPE[spec.dtype])


def valid_wire(width: int = 4, height: int = 3) -> dict:
    """A valid inpaint header as a plain map, for tests that break one field at a time."""
    return {
        "v": PROTOCOL_VERSION,
        "id": "req-1",
        "op": "inpaint",
        "options": {"context_px": 16},
        "buffers": [
            {"name": "image", "width": width, "height": height, "channels": 3, "dtype": "u8", "order": "RGB"},
            {"name": "mask", "width": width, "height": height, "channels": 1, "dtype": "u8", "order": "L"},
        ],
    }


def frames_for(wire: dict, data_frames: list[bytes] | None = None) -> list[bytes]:
    if data_frames is None:
        data_frames = [bytes(b["width"] * b["height"] * b["channels"]) for b in wire["buffers"]]
    return [msgpack.packb(wire), *data_frames]


def expect_error(frames, kind: ErrorKind, words: str, limits: Limits = DEFAULT_LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode(frames, limits)
    error = caught.value
    assert error.kind == kind, error.message
    assert words.lower() in error.message.lower(), error.message
    assert error.message.endswith(".") and "Traceback" not in error.message
    return error


# ---------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", list(DType))
@pytest.mark.parametrize("order", list(ChannelOrder))
def test_round_trip_is_exact_and_zero_copy(dtype: DType, order: ChannelOrder) -> None:
    spec = BufferSpec("pixels", 7, 5, dtype, order)
    pixels = random_pixels(spec)
    backing = bytearray(pixels.tobytes())
    header = Header(
        Op.RESULT, "abc", {"x": 3, "y": -0.0, "nested": {"list": [1, "two", None, True]}}, (spec,)
    )

    frames = encode(header, [backing])
    assert frames[1].obj is backing  # encode passes the caller's memory on, not a copy
    decoded_header, views = decode(frames)

    assert decoded_header == header
    got = np.frombuffer(views[0], NUMPY_DTYPE[dtype]).reshape(pixels.shape)
    assert got.tobytes() == pixels.tobytes()  # bit-exact, NaN payloads and -0.0 included
    backing[0] ^= 0xFF  # the decoded view still looks at the same memory
    assert views[0][0] == backing[0]


def test_decode_of_zmq_frames_does_not_copy() -> None:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    sender.bind("inproc://zero-copy")
    receiver.connect("inproc://zero-copy")
    spec = BufferSpec("image", 640, 480, DType.U16, ChannelOrder.RGBA)
    pixels = random_pixels(spec, seed=3)
    sender.send_multipart(encode(Header(Op.RESULT, "z", {}, (spec,)), [pixels]), copy=False)
    frames = receiver.recv_multipart(copy=False)
    header, views = decode(frames)
    address = np.frombuffer(views[0], np.uint8).__array_interface__["data"][0]
    assert address == np.frombuffer(frames[1].buffer, np.uint8).__array_interface__["data"][0]
    assert np.array_equal(np.frombuffer(views[0], np.uint16).reshape(pixels.shape), pixels)
    sender.close()
    receiver.close()
    context.term()


def test_message_helpers() -> None:
    header, _ = decode(encode(error_header("e", ErrorKind.BUSY, "Busy.")))
    assert header.op == Op.ERROR and header.options == {"kind": "busy", "message": "Busy."}
    for raw, expected in ((0.25, 0.25), (7.0, 1.0), (-1.0, 0.0), (math.nan, 0.0), (math.inf, 0.0)):
        assert progress_header("p", raw, "m").options["fraction"] == expected
    assert ErrorKind.from_wire("no_such_kind") == ErrorKind.INTERNAL
    assert ErrorKind.from_wire("busy") == ErrorKind.BUSY
    error = HiFillError(ErrorKind.TIMEOUT, "Too slow.")
    assert (error.kind, error.message, str(error)) == (ErrorKind.TIMEOUT, "Too slow.", "Too slow.")


def test_encode_refuses_buffers_that_do_not_match() -> None:
    spec = BufferSpec("image", 2, 2, DType.U8, ChannelOrder.RGB)
    with pytest.raises(ProtocolError, match="12"):
        encode(Header(Op.RESULT, "a", {}, (spec,)), [bytes(11)])
    with pytest.raises(ProtocolError, match="declares 1 buffers"):
        encode(Header(Op.RESULT, "a", {}, (spec,)), [])
    with pytest.raises(ProtocolError, match="finite"):
        encode(Header(Op.HELLO, "a", {"x": [1.0, math.nan]}))
    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode(Header(Op.HELLO, "a", {"x": object()}))


# ---------------------------------------------------------------------------------------- validation


def mutate(change) -> list[bytes]:
    """Frames of the valid message with one change to its header (the data frames stay valid)."""
    wire = valid_wire()
    data_frames = frames_for(wire)[1:]
    change(wire)
    return frames_for(wire, data_frames)


def bad_buffer(case_id: str, words: str, **change: object):
    """A validation case: the image's buffer spec with `change`, refused with a sentence naming `words`."""
    return pytest.param(
        mutate(lambda w: w["buffers"][0].update(change)), ErrorKind.BAD_REQUEST, words, id=case_id
    )


def bad_option(case_id: str, words: str, **change: object):
    """A validation case: the options with `change`, refused with a sentence naming `words`."""
    return pytest.param(
        mutate(lambda w: w["options"].update(change)), ErrorKind.BAD_REQUEST, words, id=case_id
    )


def test_valid_wire_decodes() -> None:
    header, views = decode(frames_for(valid_wire()))
    request = parse_inpaint_request(header, views)
    assert (request.image.width, request.image.height, request.context_px) == (4, 3, 16)


@pytest.mark.parametrize(
    ("frames", "kind", "words"),
    [
        pytest.param(
            mutate(lambda w: w.update(v=2)), ErrorKind.UNSUPPORTED_VERSION, "version 2", id="version"
        ),
        pytest.param(
            mutate(lambda w: w.pop("v")), ErrorKind.BAD_REQUEST, "protocol version", id="no-version"
        ),
        pytest.param(
            mutate(lambda w: w.update(v="1")), ErrorKind.BAD_REQUEST, "protocol version", id="str-version"
        ),
        pytest.param(
            mutate(lambda w: w.update(op="paint")), ErrorKind.BAD_REQUEST, "unknown operation", id="op"
        ),
        pytest.param(mutate(lambda w: w.pop("id")), ErrorKind.BAD_REQUEST, "'id'", id="no-id"),
        pytest.param(mutate(lambda w: w.update(id="")), ErrorKind.BAD_REQUEST, "'id'", id="empty-id"),
        pytest.param(mutate(lambda w: w.update(id="x" * 129)), ErrorKind.BAD_REQUEST, "'id'", id="long-id"),
        pytest.param(
            mutate(lambda w: w.update(extra=1)), ErrorKind.BAD_REQUEST, "unknown fields", id="field"
        ),
        pytest.param(mutate(lambda w: w.update(options=[1])), ErrorKind.BAD_REQUEST, "map", id="options"),
        pytest.param(mutate(lambda w: w.update(buffers={})), ErrorKind.BAD_REQUEST, "list", id="buffers"),
        pytest.param(
            mutate(lambda w: w["buffers"][0].update(dtype="u32")), ErrorKind.BAD_REQUEST, "'u32'", id="dtype"
        ),
        pytest.param(
            mutate(lambda w: w["buffers"][0].update(order="BGR")), ErrorKind.BAD_REQUEST, "'BGR'", id="order"
        ),
        bad_buffer("channels", channels=4, words="says 4 channels"),
        pytest.param(
            mutate(lambda w: w["buffers"][0].pop("order")), ErrorKind.BAD_REQUEST, "exactly", id="spec-keys"
        ),
        pytest.param(
            mutate(lambda w: w["buffers"][0].update(name="")), ErrorKind.BAD_REQUEST, "name", id="spec-name"
        ),
        pytest.param(
            mutate(lambda w: w["buffers"][1].update(name="image")),
            ErrorKind.BAD_REQUEST,
            "same name",
            id="dupe",
        ),
        bad_buffer("zero-width", width=0, words="positive"),
        bad_buffer("neg-height", height=-3, words="positive"),
        bad_buffer("float-width", width=4.0, words="whole"),
        bad_buffer("bool-width", width=True, words="whole"),
        bad_option("nan", context_px=math.nan, words="finite"),
        bad_option("inf", a={"b": [-math.inf]}, words="a.b[0]"),
        pytest.param(
            frames_for(valid_wire())[:2],
            ErrorKind.BAD_REQUEST,
            "2 buffers but 1 data frames",
            id="missing-frame",
        ),
        pytest.param(
            [*frames_for(valid_wire()), b"x"], ErrorKind.BAD_REQUEST, "2 buffers but 3", id="extra-frame"
        ),
        pytest.param(
            frames_for(valid_wire(), [bytes(36), bytes(11)]),
            ErrorKind.BAD_REQUEST,
            "needs 12",
            id="frame-size",
        ),
        pytest.param([], ErrorKind.BAD_REQUEST, "empty", id="no-frames"),
        pytest.param([b"\xc1"], ErrorKind.BAD_REQUEST, "not valid msgpack", id="garbage"),
        pytest.param([msgpack.packb(valid_wire())[:-3]], ErrorKind.BAD_REQUEST, "truncated", id="truncated"),
        pytest.param(
            [msgpack.packb(valid_wire()) + b"\x00"], ErrorKind.BAD_REQUEST, "trailing", id="trailing"
        ),
        pytest.param([msgpack.packb([1, 2])], ErrorKind.BAD_REQUEST, "must be a msgpack map", id="not-a-map"),
        pytest.param([msgpack.packb({1: 2})], ErrorKind.BAD_REQUEST, "not valid msgpack", id="int-key"),
        bad_option("bin-in-header", raw=b"\x00", words="binary"),
        bad_option("ext-in-header", ext=msgpack.ExtType(5, b"ab"), words="extension"),
        bad_option("nesting", deep=[[[[[[[[1]]]]]]]], words="nested deeper than 8"),
        pytest.param([b"\x91" * 50_000 + b"\x00"], ErrorKind.BAD_REQUEST, "nested", id="nesting-bomb"),
        pytest.param(
            mutate(lambda w: w["options"].update(s="x" * 4097)),
            ErrorKind.TOO_LARGE,
            "max_str_len",
            id="long-str",
        ),
        pytest.param(
            mutate(lambda w: w["options"].update(a=list(range(65)))),
            ErrorKind.TOO_LARGE,
            "max_array_len",
            id="long-array",
        ),
        pytest.param(
            mutate(lambda w: w["options"].update(m={str(i): i for i in range(65)})),
            ErrorKind.TOO_LARGE,
            "max_map_len",
            id="big-map",
        ),
        pytest.param(
            [msgpack.packb({"v": 1, "pad": "x" * 70_000})], ErrorKind.TOO_LARGE, "header has", id="big-header"
        ),
        pytest.param(
            [msgpack.packb({**valid_wire(), "buffers": []}), *[b""] * 8],
            ErrorKind.TOO_LARGE,
            "9 frames",
            id="too-many-frames",
        ),
    ],
)
def test_every_validation_rule_has_its_kind_and_sentence(frames, kind: ErrorKind, words: str) -> None:
    expect_error(frames, kind, words)


def test_size_limits_are_checked_before_the_frames() -> None:
    # The header alone decides: a 20000 x 20000 image is refused although only 1-byte frames arrived.
    wire = valid_wire(20_000, 20_000)
    error = expect_error(frames_for(wire, [b"x", b"x"]), ErrorKind.TOO_LARGE, "400.0 megapixels")
    assert error.request_id == "req-1"
    expect_error(frames_for(valid_wire(70_000, 1), [b"x", b"x"]), ErrorKind.TOO_LARGE, "at most 65536")
    small = Limits(max_frame_bytes=30)
    expect_error(frames_for(valid_wire()), ErrorKind.TOO_LARGE, "at most 30 are allowed", small)
    # A frame that is larger than the limit is refused as too large, not as a size mismatch.
    wire = valid_wire(2, 2)
    expect_error(
        frames_for(wire, [bytes(40), bytes(4)]), ErrorKind.TOO_LARGE, "40 bytes", Limits(max_frame_bytes=30)
    )


def test_errors_carry_the_request_id_when_it_can_be_read() -> None:
    assert (
        expect_error(mutate(lambda w: w.update(v=9)), ErrorKind.UNSUPPORTED_VERSION, "9").request_id
        == "req-1"
    )
    assert expect_error([b"\xc1"], ErrorKind.BAD_REQUEST, "msgpack").request_id is None


# ---------------------------------------------------------------------------------------- inpaint rules


def inpaint_frames(image: BufferSpec, mask: BufferSpec, options: dict | None = None) -> tuple:
    header = inpaint_header("r", image, mask, options or {})
    return decode(encode(header, [bytes(image.nbytes), bytes(mask.nbytes)]))


IMAGE = BufferSpec("image", 6, 4, DType.U16, ChannelOrder.RGBA)
MASK = BufferSpec("mask", 6, 4, DType.U8, ChannelOrder.L)


@pytest.mark.parametrize(
    ("image", "mask", "options", "words"),
    [
        (IMAGE, BufferSpec("mask", 4, 6, DType.U8, ChannelOrder.L), {}, "mask is 4x6 but the image is 6x4"),
        (IMAGE, BufferSpec("mask", 6, 4, DType.U16, ChannelOrder.L), {}, "L) of u8"),
        (IMAGE, BufferSpec("mask", 6, 4, DType.U8, ChannelOrder.RGB), {}, "L) of u8"),
        (BufferSpec("image", 6, 4, DType.U8, ChannelOrder.L), MASK, {}, "RGB or RGBA"),
        (IMAGE, BufferSpec("alpha", 6, 4, DType.U8, ChannelOrder.L), {}, "'image' and 'mask'"),
        (IMAGE, MASK, {"strength": 1}, "Unknown inpaint options: strength"),
        (IMAGE, MASK, {"context_px": 1.5}, "whole number"),
        (IMAGE, MASK, {"context_px": True}, "whole number"),
        (IMAGE, MASK, {"context_px": -1}, "between 0 and"),
    ],
)
def test_inpaint_request_rules(image: BufferSpec, mask: BufferSpec, options: dict, words: str) -> None:
    header, views = inpaint_frames(image, mask, options)
    with pytest.raises(ProtocolError) as caught:
        parse_inpaint_request(header, views)
    assert caught.value.kind == ErrorKind.BAD_REQUEST
    assert words in caught.value.message


def test_inpaint_request_accepts_auto_and_explicit_context() -> None:
    for options, expected in (({}, None), ({"context_px": None}, None), ({"context_px": 128}, 128)):
        header, views = inpaint_frames(IMAGE, MASK, options)
        request = parse_inpaint_request(header, views)
        assert request.context_px == expected
        assert (request.image, request.mask) == (IMAGE, MASK)


def test_inpaint_request_needs_exactly_two_buffers() -> None:
    header = Header(Op.INPAINT, "r", {}, (IMAGE,))
    _, views = decode(encode(header, [bytes(IMAGE.nbytes)]))
    with pytest.raises(ProtocolError, match="exactly two buffers"):
        parse_inpaint_request(header, views)


# ---------------------------------------------------------------------------------------- limits


def test_default_limits_fit_8k_rgba_u16_and_f32() -> None:
    for dtype in (DType.U16, DType.F32):
        spec = BufferSpec("image", 7680, 4320, dtype, ChannelOrder.RGBA)
        check_buffer_spec(spec)
    assert BufferSpec("image", 7680, 4320, DType.U16, ChannelOrder.RGBA).nbytes == EIGHT_K_RGBA_U16_BYTES
    check_buffer_spec(BufferSpec("image", 12_000, 8_333, DType.U16, ChannelOrder.RGBA))  # 100 MP
    with pytest.raises(ProtocolError) as caught:
        check_buffer_spec(BufferSpec("image", 12_000, 8_334, DType.U8, ChannelOrder.RGB))
    assert caught.value.kind == ErrorKind.TOO_LARGE


def test_limits_validate_and_round_trip() -> None:
    limits = Limits(max_pixels=1234)
    assert Limits.from_dict({**limits.to_dict(), "from_the_future": 1}) == limits
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=-1)
    with pytest.raises(ValueError, match="max_pixels"):
        Limits(max_pixels=1.5)


# ---------------------------------------------------------------------------------------- nesting scan


def depth(value) -> int:
    if isinstance(value, (list, dict)):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(child) for child in children), default=0)
    return 0


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=300)
    | st.binary(max_size=300)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20))
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(document=documents, max_depth=st.integers(1, 6))
def test_nesting_scan_agrees_with_msgpack(document, max_depth: int) -> None:
    packed = memoryview(msgpack.packb(document, use_bin_type=True))
    if depth(document) > max_depth:
        with pytest.raises(ProtocolError, match="nested deeper"):
            _check_msgpack_nesting(packed, max_depth)
    else:
        _check_msgpack_nesting(packed, max_depth)  # walks every byte of valid msgpack without complaint


def test_nesting_scan_handles_large_strings_and_containers() -> None:
    document = {
        "s": "x" * 70_000,
        "b": b"y" * 300,
        "a": list(range(70_000)),
        "m": {str(i): i for i in range(17)},
    }
    _check_msgpack_nesting(memoryview(msgpack.packb(document, use_bin_type=True)), 2)


# ---------------------------------------------------------------------------------------- client, locally


@pytest.mark.parametrize(
    ("call", "kind", "words"),
    [
        (dict(mask=bytes(11)), ErrorKind.BAD_REQUEST, "'mask' has 11 bytes"),
        (dict(image=bytes(10)), ErrorKind.BAD_REQUEST, "'image' has 10 bytes"),
        (dict(channels=2), ErrorKind.BAD_REQUEST, "3 (RGB) or 4 (RGBA)"),
        (dict(dtype="u32"), ErrorKind.BAD_REQUEST, "u8, u16 or f32"),
        (dict(width=0, image=b"", mask=b""), ErrorKind.BAD_REQUEST, "positive"),
        (dict(width=4.0), ErrorKind.BAD_REQUEST, "whole numbers"),
        (dict(options={"context_px": math.inf}), ErrorKind.BAD_REQUEST, "finite"),
        (dict(options={"size": 3}), ErrorKind.BAD_REQUEST, "Unknown inpaint options"),
        (dict(width=20_000, height=20_000), ErrorKind.TOO_LARGE, "megapixels"),
    ],
)
def test_client_checks_requests_before_sending(call: dict, kind: ErrorKind, words: str) -> None:
    arguments = dict(image=bytes(4 * 3 * 3), width=4, height=3, channels=3, dtype="u8", mask=bytes(12))
    arguments.update(call)
    client = Client(free_loopback_endpoint())
    with pytest.raises(HiFillError) as caught:
        client.inpaint(**arguments)
    assert caught.value.kind == kind
    assert words in caught.value.message
    assert client._socket is None  # refused locally: nothing was connected or sent


def test_client_without_backend_reports_unavailable_quickly() -> None:
    client = Client(free_loopback_endpoint(), timeout_s=30, connect_timeout_s=0.5)
    for call in (client.hello, client.status):
        started = time.monotonic()
        with pytest.raises(HiFillError) as caught:
            call()
        assert caught.value.kind == ErrorKind.BACKEND_UNAVAILABLE
        assert "python -m backend serve" in caught.value.message
        assert time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(HiFillError) as caught:
        client.inpaint(bytes(12), 2, 2, 3, DType.U8, bytes(4))
    assert caught.value.kind == ErrorKind.BACKEND_UNAVAILABLE
    assert time.monotonic() - started < 2.0
    client.close()


def test_client_accepts_any_contiguous_buffer() -> None:
    pixels = np.zeros((3, 4, 4), np.float32)
    client = Client(free_loopback_endpoint(), connect_timeout_s=0.2)
    with pytest.raises(HiFillError) as caught:  # passes every local check, then finds no backend
        client.inpaint(pixels, 4, 3, 4, "f32", np.zeros((3, 4), np.uint8))
    assert caught.value.kind == ErrorKind.BACKEND_UNAVAILABLE
    with pytest.raises(HiFillError, match="contiguous"):
        client.inpaint(pixels[:, ::2], 2, 3, 4, "f32", np.zeros((3, 2), np.uint8))


class ScriptedPeer:
    """A bare ROUTER in a thread standing in for a backend: script(header) -> list of replies (frames)."""

    def __init__(self, script) -> None:
        self.endpoint = free_loopback_endpoint()
        self.script = script
        self.received: list[Header] = []
        self._stop = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def _serve(self) -> None:
        router = zmq.Context.instance().socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.endpoint)
        self._ready.set()
        while not self._stop:
            if not router.poll(50):
                continue
            identity, *frames = router.recv_multipart()
            header, _ = decode(frames)
            self.received.append(header)
            for reply in self.script(header):
                router.send_multipart([identity, *reply])
        router.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)


def reply(header: Header, op: str = "hello", version: int = PROTOCOL_VERSION, **options) -> list[bytes]:
    return [msgpack.packb({"v": version, "id": header.id, "op": op, "options": options, "buffers": []})]


def test_client_reports_a_backend_of_another_protocol_version() -> None:
    peer = ScriptedPeer(lambda header: [reply(header, version=2)])
    try:
        with Client(peer.endpoint) as client:
            error = expect_client_error(ErrorKind.UNSUPPORTED_VERSION, client.hello)
            assert "version 2" in error.message
    finally:
        peer.close()


def test_client_ignores_stale_replies_and_rejects_unreadable_ones() -> None:
    def script(header: Header) -> list[list[bytes]]:
        stale = [
            msgpack.packb({"v": 1, "id": "old", "op": "hello", "options": {"stale": True}, "buffers": []})
        ]
        if header.op == Op.HELLO:
            return [stale, reply(header, "progress", fraction=0.5, message="x"), reply(header, answer=42)]
        return [[msgpack.packb({"v": 1, "id": header.id, "op": "status", "options": {}, "buffers": [1]})]]

    peer = ScriptedPeer(script)
    try:
        with Client(peer.endpoint) as client:
            assert client.hello() == {"answer": 42}
            error = expect_client_error(ErrorKind.INTERNAL, client.status)
            assert "cannot read" in error.message
            assert client.hello() == {"answer": 42}  # a fresh socket after the failure
    finally:
        peer.close()


def test_client_gives_up_on_a_silent_backend_after_the_inactivity_timeout() -> None:
    peer = ScriptedPeer(lambda header: [])
    try:
        with Client(peer.endpoint, inactivity_timeout_s=0.4, timeout_s=30) as client:
            started = time.monotonic()
            error = expect_client_error(
                ErrorKind.BACKEND_UNAVAILABLE, lambda: client.inpaint(bytes(12), 2, 2, 3, "u8", bytes(4))
            )
            assert 0.35 < time.monotonic() - started < 2.0
            assert "stopped responding" in error.message
        wait_until(lambda: len(peer.received) == 2)  # abandoning the request sent a cancel for it
        assert [(h.op, h.id) for h in peer.received][1:] == [(Op.CANCEL, peer.received[0].id)]
    finally:
        peer.close()


def test_a_failing_progress_callback_cancels_the_request() -> None:
    peer = ScriptedPeer(
        lambda header: (
            [reply(header, "progress", fraction=0.1, message="x")] if header.op == Op.INPAINT else []
        )
    )

    def explode(fraction: float, message: str) -> None:
        raise RuntimeError("callback bug")

    try:
        with Client(peer.endpoint) as client, pytest.raises(RuntimeError, match="callback bug"):
            client.inpaint(bytes(12), 2, 2, 3, "u8", bytes(4), on_progress=explode)
        wait_until(lambda: len(peer.received) == 2)
        assert peer.received[1].op == Op.CANCEL and peer.received[1].id == peer.received[0].id
    finally:
        peer.close()


def expect_client_error(kind: ErrorKind, call) -> HiFillError:
    with pytest.raises(HiFillError) as caught:
        call()
    assert caught.value.kind == kind, caught.value.message
    return caught.value


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------- pure-Python msgpack


def test_msgpack_implementation_matches_the_environment() -> None:
    expected = "msgpack.fallback" if PURE_PYTHON else "msgpack._cmsgpack"
    if not PURE_PYTHON and msgpack.Unpacker.__module__ == "msgpack.fallback":
        pytest.skip("this msgpack has no C extension")
    assert msgpack.Unpacker.__module__ == expected


@pytest.mark.skipif(PURE_PYTHON, reason="this is the pure-Python run itself")
def test_module_passes_with_pure_python_msgpack() -> None:
    environment = {**os.environ, "MSGPACK_PUREPYTHON": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and "failed" not in completed.stdout

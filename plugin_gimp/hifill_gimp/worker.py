"""Run one fill in a child process so that GIMP's Cancel also cancels the fill on the backend.

GIMP answers the progress bar's Cancel button by killing the plug-in process (GP_QUIT, 10 ms, then
SIGKILL / TerminateProcess), so a plug-in cannot send `cancel` itself. The plug-in therefore hands
the request to a child Python (`python -m hifill_gimp.worker`) through a pipe and keeps the pipe open
while it waits: when the plug-in dies the child reads end-of-file, sets the Client's cancel event, and
the Client tells the backend to stop. The child talks to the backend with one shared_protocol.Client
for the whole run: it asks for hello, starts the installed backend when none answers
(shared_protocol.launcher, with the config in FillJob.config_dir) and fills through the same Client.

Pipe framing (both directions): records of 1 type byte + 8-byte little-endian length + payload.
  plug-in -> child: b"J" JSON job, b"I" image bytes, b"M" mask bytes (then the pipe stays open).
  child -> plug-in: b"P" JSON {"fraction", "message"} (any number; while a started backend loads:
                    fraction 0 and what is waited for), then either b"R" JSON
                    {"x", "y", "width", "height", "channels", "dtype", "warnings"} followed by b"D"
                    pixels, or b"E" JSON {"kind", "message"}. "warnings" is the backend's list of
                    sentences for the user (e.g. an out-of-memory fallback it took), often empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from shared_protocol import ErrorKind, HiFillError

_RECORD_HEADER = struct.Struct("<cQ")
MAX_JSON_RECORD = 1 << 20


@dataclass(frozen=True)
class FillJob:
    """Everything the child needs besides the pixels."""

    endpoint: str
    width: int
    height: int
    channels: int
    dtype: str
    options: dict
    timeout_s: float = 600.0  # of the fill itself
    connect_timeout_s: float = 3.0
    keys_folder: str = ""  # a client keys folder for a remote backend (shared_protocol.CurveKeys)
    config_dir: str = ""  # holds hifill-backend.json (the installed backend's start command); "": none
    start_timeout_s: float = 120.0  # how long a backend started for this fill may take to answer


@dataclass(frozen=True)
class FillOutcome:
    """The backend's region relative to the sent image, with its raw pixels and the backend's
    warnings (sentences for the user; the pixels are valid whether or not there are any)."""

    x: int
    y: int
    width: int
    height: int
    channels: int
    dtype: str
    pixels: bytes
    warnings: tuple[str, ...] = ()


def write_record(stream: BinaryIO, kind: bytes, payload: bytes | memoryview) -> None:
    stream.write(_RECORD_HEADER.pack(kind, len(payload)))
    stream.write(payload)


def read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """`size` bytes, or None at end-of-file before that."""
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(min(remaining, 1 << 24))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_record(stream: BinaryIO, max_size: int) -> tuple[bytes, bytes] | None:
    """(type, payload), or None at a clean or truncated end of the stream."""
    head = read_exact(stream, _RECORD_HEADER.size)
    if head is None:
        return None
    kind, size = _RECORD_HEADER.unpack(head)
    if size > max_size:
        raise ValueError(f"record {kind!r} of {size} bytes exceeds {max_size}")
    payload = read_exact(stream, size)
    return None if payload is None else (kind, payload)


# --- plug-in side ------------------------------------------------------------------------------------


def child_environment(paths: Sequence[str]) -> dict[str, str]:
    """The child's environment: the plug-in's folders (shared_protocol, vendored wheels) first."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([*paths, environment.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return environment


def run_fill(
    job: FillJob,
    image: bytes,
    mask: bytes,
    paths: Sequence[str],
    on_progress: Callable[[float, str], None] | None = None,
    python: str | None = None,
    grace_s: float = 30.0,
) -> FillOutcome:
    """Fill through a child process. Raises HiFillError with the backend's kind and message, or
    INTERNAL when the child fails, or TIMEOUT when it exceeds job.timeout_s + grace_s."""
    command = [python or sys.executable, "-m", "hifill_gimp.worker"]
    options: dict = {"creationflags": subprocess.CREATE_NO_WINDOW} if os.name == "nt" else {}
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_environment(paths),
            **options,
        )
    except OSError as error:
        raise HiFillError(
            ErrorKind.INTERNAL, f"Could not start the plug-in's helper process: {error}."
        ) from error
    records: queue.Queue = queue.Queue()
    stderr_chunks: list[bytes] = []
    limit = max(job.width * job.height * job.channels * 4, 0) + MAX_JSON_RECORD

    def pump_stdout() -> None:
        try:
            while True:
                record = read_record(child.stdout, limit)
                records.put(record)
                if record is None or record[0] in (b"D", b"E"):
                    return
        except (OSError, ValueError) as error:
            records.put(
                (b"E", json.dumps({"kind": ErrorKind.INTERNAL.value, "message": str(error)}).encode())
            )

    readers = [
        threading.Thread(target=pump_stdout, daemon=True),
        threading.Thread(target=lambda: stderr_chunks.append(child.stderr.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        try:
            write_record(child.stdin, b"J", json.dumps(asdict(job)).encode("utf-8"))
            write_record(child.stdin, b"I", image)
            write_record(child.stdin, b"M", mask)
            child.stdin.flush()
        except OSError:
            pass  # the child died early; its stderr explains why (below)
        deadline = time.monotonic() + job.start_timeout_s + job.timeout_s + grace_s
        header = None
        while True:
            try:
                record = records.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise HiFillError(ErrorKind.TIMEOUT, "The fill took too long and was stopped.") from None
                continue
            if record is None:
                child.wait(timeout=5)
                readers[1].join(timeout=5)
                detail = b"".join(stderr_chunks).decode("utf-8", "replace").strip().splitlines()
                raise HiFillError(
                    ErrorKind.INTERNAL,
                    "The plug-in's helper process stopped unexpectedly"
                    + (f": {detail[-1]}" if detail else "."),
                )
            kind, payload = record
            if kind == b"P" and on_progress is not None:
                progress = json.loads(payload)
                on_progress(float(progress["fraction"]), str(progress["message"]))
            elif kind == b"E":
                error = json.loads(payload)
                raise HiFillError(ErrorKind.from_wire(error["kind"]), str(error["message"]))
            elif kind == b"R":
                header = json.loads(payload)
            elif kind == b"D":
                if header is None:
                    raise HiFillError(ErrorKind.INTERNAL, "The helper process sent pixels without a header.")
                return _outcome(header, payload)
    finally:
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _outcome(header: dict, pixels: bytes) -> FillOutcome:
    """The R record's header and the D record's pixels as a FillOutcome."""
    warnings = header.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise HiFillError(ErrorKind.INTERNAL, "The helper process sent malformed warnings.")
    fields = {name: header[name] for name in ("x", "y", "width", "height", "channels", "dtype")}
    return FillOutcome(pixels=pixels, warnings=tuple(warnings), **fields)


# --- child side ----------------------------------------------------------------------------------------


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    def send(kind: bytes, payload: bytes | memoryview) -> None:
        write_record(stdout, kind, payload)
        stdout.flush()

    def send_error(kind: ErrorKind, message: str) -> None:
        send(b"E", json.dumps({"kind": kind.value, "message": message}).encode("utf-8"))

    try:  # pyzmq and msgpack: GIMP's own or vendored by install.py
        from shared_protocol import Client, CurveKeys
        from shared_protocol.launcher import BackendLauncher
    except ImportError as error:
        send_error(ErrorKind.INTERNAL, f"HiFill cannot load its modules ({error}); run install.py again.")
        return 1

    first = read_record(stdin, MAX_JSON_RECORD)
    if first is None or first[0] != b"J":
        return 2
    job = FillJob(**json.loads(first[1]))
    image = read_record(stdin, (1 << 32))
    mask = read_record(stdin, (1 << 31))
    if image is None or mask is None:
        return 2  # the plug-in went away before the request was complete
    cancel = threading.Event()

    def watch_parent() -> None:
        stdin.read(1)  # returns b"" when the plug-in closes the pipe or dies
        cancel.set()

    threading.Thread(target=watch_parent, daemon=True).start()

    def progress(fraction: float, message: str) -> None:
        send(b"P", json.dumps({"fraction": fraction, "message": message}).encode("utf-8"))

    try:
        curve = CurveKeys.from_folder(job.keys_folder) if job.keys_folder else None
    except HiFillError as error:
        send_error(error.kind, error.message)
        return 0
    launcher = BackendLauncher.from_folder(Path(job.config_dir)) if job.config_dir else BackendLauncher(None)
    # One Client for the run: the hello that finds (or waits for) the backend, then the fill.
    client = Client(
        job.endpoint, timeout_s=job.timeout_s, connect_timeout_s=job.connect_timeout_s, curve=curve
    )
    try:
        launcher.ensure_running(
            job.endpoint,
            client.hello,
            timeout_s=job.start_timeout_s,
            on_status=lambda message: progress(0.0, message),
            is_cancelled=cancel.is_set,
        )
        result = client.inpaint(
            image[1],
            job.width,
            job.height,
            job.channels,
            job.dtype,
            mask[1],
            options=job.options,
            on_progress=progress,
            cancel_event=cancel,
        )
    except HiFillError as error:
        if not cancel.is_set():
            send_error(error.kind, error.message)
        return 0
    except Exception as error:  # a bug must still reach the user as a sentence, not a hang
        send_error(ErrorKind.INTERNAL, f"Unexpected error in the plug-in's helper: {error!r}")
        return 1
    finally:
        client.close()
    header = {
        "x": result.x,
        "y": result.y,
        "width": result.width,
        "height": result.height,
        "channels": result.channels,
        "dtype": str(getattr(result.dtype, "value", result.dtype)),
        "warnings": list(result.warnings),
    }
    send(b"R", json.dumps(header).encode("utf-8"))
    send(b"D", result.pixels)
    return 0


def main() -> int:
    """Entry point of the child process (python -m hifill_gimp.worker)."""
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the record stream
    return _serve(sys.stdin.buffer, stdout)


if __name__ == "__main__":
    sys.exit(main())

"""The real backend (`python -m backend serve`) as a child process, for the process-level tests
(test_backend_process, test_fuzz, test_soak, test_shared_memory, test_editor_session): start it on a
free loopback port with shared_protocol.launcher.BackendProcess, read its memory, stop it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import zmq

from shared_protocol import HiFillError
from shared_protocol.curve import CurveKeys
from shared_protocol.endpoints import free_loopback_endpoint as free_endpoint
from shared_protocol.launcher import BackendProcess

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
# The real server with a test engine of tests/fake_engines.py; `--engine NAME --endpoint E` follow.
FAKE_SERVER = (sys.executable, "-m", "tests.fake_engines")


@contextlib.contextmanager
def raw_dealer(endpoint: str, curve: CurveKeys | None = None) -> Iterator[zmq.Socket]:
    """A plain DEALER socket connected to the endpoint, without the Client's logic (what is sent is
    queued before any handshake); closed without lingering on exit."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        if curve is not None:
            curve.apply(socket)
        socket.connect(endpoint)
        yield socket
    finally:
        socket.close()


def _proc_status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a process in MB."""
    return _proc_status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process in MB."""
    return _proc_status_mb(pid, "VmHWM")


def start_backend(
    weights: Path,
    log_path: Path,
    *options: str,
    threads: int = 1,
    curve: CurveKeys | None = None,
    endpoint: str | None = None,
) -> tuple[BackendProcess, str]:
    """`python -m backend serve --allow-untrained OPTIONS` on `endpoint` (default: a free loopback port)
    with `threads` OpenMP threads, its output in log_path (shared_protocol.launcher.BackendProcess);
    returns (process, endpoint) once it answers hello (through ``curve`` keys when given)."""
    endpoint = endpoint or free_endpoint()
    command = [sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--weights", str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = BackendProcess([*command, "--allow-untrained", *options], endpoint, log_path, cwd=REPO, env=env)
    process.start()
    try:
        process.wait_for_hello(START_TIMEOUT_S, curve=curve)
    except HiFillError as error:
        process.stop()
        raise AssertionError(f"backend did not start: {error}\n{process.output()[-2000:]}") from None
    return process, endpoint


def start_fake_backend(
    engine: str, log_path: Path, *arguments: str, endpoint: str | None = None, command: Sequence[str] = ()
) -> BackendProcess:
    """The real server with the tests.fake_engines engine `engine` (or `command` + [endpoint], e.g. a
    script that serves its own engine) on `endpoint` (default: a free loopback port), answering hello."""
    endpoint = endpoint or free_endpoint()
    argv = [*command, endpoint] if command else [*FAKE_SERVER, "--engine", engine, "--endpoint", endpoint]
    process = BackendProcess([*argv, *arguments], endpoint, log_path, cwd=REPO).start()
    try:
        process.wait_for_hello(60.0)
    except HiFillError as error:
        process.stop()
        raise AssertionError(f"fake backend did not start: {error}") from None
    return process


def stop_backend(process: BackendProcess) -> None:
    """SIGTERM (the backend's clean stop), then SIGKILL if it has not exited within 20 s."""
    process.stop(20.0)

"""The real backend (`python -m backend serve`) as a child process, for the process-level tests
(test_backend_process, test_fuzz, test_soak): start it on a free loopback port, read its memory, stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import zmq

from shared_protocol import Client, HiFillError
from shared_protocol.curve import CurveKeys

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


def free_endpoint() -> str:
    """A loopback TCP endpoint on a port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


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
    weights: Path, log_path: Path, *options: str, threads: int = 1, curve: CurveKeys | None = None
) -> tuple[subprocess.Popen, str]:
    """`python -m backend serve --allow-untrained OPTIONS` on a free loopback port with `threads` OpenMP
    threads, stdout and stderr to log_path; returns (process, endpoint) once it answers hello (through
    ``curve`` keys when given)."""
    endpoint = free_endpoint()
    log = open(log_path, "w")  # noqa: SIM115 -- lives as long as the process
    cmd = [sys.executable, "-m", "backend", "serve", "--endpoint", endpoint, "--weights", str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(
        [*cmd, "--allow-untrained", *options], cwd=REPO, stdout=log, stderr=log, env=env
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    with Client(endpoint, timeout_s=5, connect_timeout_s=2, curve=curve) as client:
        while True:
            try:
                client.hello()
                return process, endpoint
            except HiFillError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    process.wait()
                    raise AssertionError(f"backend did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)


def stop_backend(process: subprocess.Popen) -> None:
    """SIGTERM (the backend's clean stop), then SIGKILL if it has not exited within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

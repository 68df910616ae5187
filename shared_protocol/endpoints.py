"""ZeroMQ endpoints: the default address and the one rule for "is this endpoint on this machine?".

Standard library only. Used by the client (shared memory, starting a backend), the launcher and the
server (which endpoints it may listen on without CURVE keys), so all of them agree.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

DEFAULT_PORT = 47631
DEFAULT_ENDPOINT = f"tcp://127.0.0.1:{DEFAULT_PORT}"
LOCAL_TRANSPORTS = ("ipc", "inproc")  # never leave the machine
SUPPORTED_TRANSPORTS = ("tcp", *LOCAL_TRANSPORTS)


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: transport ('tcp', 'ipc', 'inproc'), host (no brackets) and port (tcp only)."""

    transport: str
    host: str = ""
    port: int | None = None

    @property
    def is_local(self) -> bool:
        """True for ipc://, inproc:// and tcp:// to a loopback host (127.0.0.0/8, ::1, localhost)."""
        return self.transport in LOCAL_TRANSPORTS or (self.transport == "tcp" and is_loopback_host(self.host))


class EndpointError(ValueError):
    """An endpoint that is not of the form tcp://HOST:PORT, ipc://PATH or inproc://NAME."""


def parse_endpoint(endpoint: str) -> Endpoint:
    """Split `endpoint`; raises EndpointError with a sentence naming the expected form."""
    transport, separator, address = endpoint.partition("://")
    if not separator or not address:
        raise EndpointError(f"'{endpoint}' is not a ZeroMQ endpoint such as {DEFAULT_ENDPOINT}.")
    if transport in LOCAL_TRANSPORTS:
        return Endpoint(transport)
    if transport != "tcp":
        raise EndpointError(f"Transport '{transport}' is not supported; use e.g. {DEFAULT_ENDPOINT}.")
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise EndpointError(f"'{endpoint}' needs a host and a port, e.g. {DEFAULT_ENDPOINT}.")
    try:
        number = int(port) if port != "*" else None
    except ValueError:
        raise EndpointError(f"'{endpoint}' has no port number, e.g. {DEFAULT_ENDPOINT}.") from None
    return Endpoint("tcp", host.strip("[]"), number)


def is_local_endpoint(endpoint: str) -> bool:
    """True when `endpoint` provably stays on this machine; False for other hosts and malformed text."""
    try:
        return parse_endpoint(endpoint).is_local
    except EndpointError:
        return False


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback addresses; names and interfaces ('*', 'eth0') are not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (for tests, the bench and other local backends)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def free_loopback_endpoint() -> str:
    """tcp://127.0.0.1:PORT on a port that was free a moment ago."""
    return f"tcp://127.0.0.1:{free_tcp_port()}"

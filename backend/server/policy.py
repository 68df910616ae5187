"""Who may reach the server: endpoint policy, CURVE keys and the shared-memory rule.

Which endpoints are on this machine is decided by the one rule in shared_protocol.endpoints (the
client and the launcher use it too); this module turns it into the server's refusals.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from backend.keys import AllowedKeys, CurveConfig, KeysError, load_curve_config
from shared_protocol.endpoints import EndpointError, is_local_endpoint, parse_endpoint
from shared_protocol.shm import unavailable_reason

log = logging.getLogger("hifill.server")


class ServerConfigError(ValueError):
    """The server cannot start with this configuration (a sentence for the person starting it)."""


def load_curve(folder: Path) -> CurveConfig:
    """The keys of `serve --curve-keys FOLDER` (backend.keys), or ServerConfigError saying what is wrong."""
    try:
        return load_curve_config(folder)
    except KeysError as error:
        raise ServerConfigError(str(error)) from None


def check_endpoint(endpoint: str, curve: CurveConfig | None = None) -> None:
    """Refuse endpoints other machines could reach unless CURVE protects them.

    Allowed without CURVE: tcp:// on 127.0.0.0/8, ::1 or localhost; ipc://; inproc://. With CURVE
    (encryption, and only the allowed client keys are served) any address.
    """
    try:
        local = parse_endpoint(endpoint).is_local
    except EndpointError as error:
        raise ServerConfigError(str(error)) from None
    if not local and curve is None:
        address = endpoint.partition("://")[2]
        raise ServerConfigError(
            f"Refusing to listen on '{address}' without keys: other machines could use the backend. "
            "Without --curve-keys it only listens on this machine (127.0.0.1, ::1 or localhost). To serve "
            "other machines, create keys with 'python -m backend keys server' and "
            "'python -m backend keys client NAME', then add --curve-keys (or use an SSH tunnel)."
        )


def shared_memory_refusal(endpoint: str, curve: CurveConfig | None) -> str | None:
    """Why a server on endpoint does not read clients' shared memory, or None when it does.

    Only servers that nobody on another machine can reach accept it: loopback tcp://, ipc://,
    inproc://, and never with CURVE (whose clients may be remote: a remote client must not make the
    backend read this machine's memory).
    """
    if curve is not None:
        return "it uses CURVE keys, so its clients may be on other machines"
    if not is_local_endpoint(endpoint):
        return "it listens on an address other machines can reach"
    return unavailable_reason()


def apply_security(
    context: zmq.Context, socket: zmq.Socket, curve: CurveConfig | None
) -> ThreadAuthenticator | None:
    """With CURVE: start pyzmq's ZAP authenticator (allowing the keys in curve.allowed_dir) and make
    the ROUTER a CURVE server; must run before bind. Returns the authenticator to stop at shutdown."""
    if curve is None:
        return None
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("hifill.server.auth"))
    authenticator.start()
    authenticator.configure_curve_callback("*", AllowedKeys(curve.allowed_dir, log))
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_SECRETKEY, curve.server_secret_key)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, curve.server_public_key)
    return authenticator

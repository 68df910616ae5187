"""CURVE keys for a backend on another machine: pyzmq certificate files, loaded and checked.

A client's keys folder holds `server.key` (the backend's public key) and `client.key_secret` (this
client's key pair); `python -m backend keys client NAME` makes one on the backend's machine. The
files are ZeroMQ certificates as pyzmq writes and reads them (zmq.auth.create_certificates /
zmq.auth.load_certificate). A secret key file must not be readable by other users.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.auth import load_certificate
from zmq.utils import z85

from .errors import ErrorKind, HiFillError

SERVER_PUBLIC_FILE = "server.key"
SERVER_SECRET_FILE = "server.key_secret"
CLIENT_PUBLIC_FILE = "client.key"
CLIENT_SECRET_FILE = "client.key_secret"
Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85 text


def curve_available() -> bool:
    """True if this pyzmq/libzmq can encrypt with CURVE."""
    return bool(zmq.has("curve"))


def require_curve() -> None:
    """Raise HiFillError(ACCESS_DENIED) when ZeroMQ here was built without CURVE."""
    if not curve_available():
        raise HiFillError(
            ErrorKind.ACCESS_DENIED,
            f"This ZeroMQ (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}) was built without CURVE "
            "encryption, so it cannot use keys for a remote backend; install pyzmq from PyPI "
            "(python install.py vendors a wheel that has it).",
        )


def is_z85_key(text: str | bytes) -> bool:
    """True for a 40-character Z85 CURVE key."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) != Z85_KEY_LENGTH:
        return False
    try:
        return len(z85.decode(raw)) == 32
    except (ValueError, KeyError, TypeError):
        return False


def private_file_problem(path: Path) -> str | None:
    """Why `path` is not private enough for a secret key (None if it is, or on Windows)."""
    if os.name == "nt":  # Windows keeps per-user files private through ACLs, not mode bits
        return None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        return (
            f"{path} can be read or changed by other users (mode {mode:04o}); a secret key must be "
            f"private: run chmod 600 '{path}'."
        )
    return None


def read_public_key(path: str | os.PathLike) -> bytes:
    """The Z85 public key of a certificate file (.key or .key_secret); HiFillError(ACCESS_DENIED)."""
    public, _secret = _read_certificate(Path(path))
    return public


def read_key_pair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a secret certificate file, which must be private (mode 0600)."""
    path = Path(path)
    try:
        problem = private_file_problem(path)
    except OSError as error:
        raise _unusable(path, error) from None
    if problem:
        raise HiFillError(ErrorKind.ACCESS_DENIED, problem)
    public, secret = _read_certificate(path)
    if secret is None:
        raise HiFillError(
            ErrorKind.ACCESS_DENIED,
            f"{path} holds only a public key; a secret key file (*.key_secret) is needed here.",
        )
    return public, secret


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as error:
        raise _unusable(path, error) from None
    for key in (public, secret):
        if key is not None and not is_z85_key(key):
            raise HiFillError(ErrorKind.ACCESS_DENIED, f"{path} does not hold a valid CURVE key.")
    return public, secret


def _unusable(path: Path, error: Exception) -> HiFillError:
    if not path.exists():
        return HiFillError(ErrorKind.ACCESS_DENIED, f"The key file {path} does not exist.")
    return HiFillError(ErrorKind.ACCESS_DENIED, f"The key file {path} cannot be read ({error}).")


@dataclass(frozen=True)
class CurveKeys:
    """What a client needs to talk to a backend that requires CURVE: the backend's public key and
    this client's key pair (Z85 text, 40 characters each)."""

    server_public_key: bytes
    client_public_key: bytes
    client_secret_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("server_public_key", "client_public_key", "client_secret_key"):
            if not is_z85_key(getattr(self, name)):
                raise ValueError(f"{name} must be a 40-character Z85 CURVE key")

    @classmethod
    def from_files(
        cls, server_public_file: str | os.PathLike, client_secret_file: str | os.PathLike
    ) -> CurveKeys:
        """Keys from the backend's public certificate and this client's secret certificate."""
        require_curve()
        server_public = read_public_key(server_public_file)
        client_public, client_secret = read_key_pair(client_secret_file)
        return cls(server_public, client_public, client_secret)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> CurveKeys:
        """Keys from a client keys folder (server.key + client.key_secret)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise HiFillError(
                ErrorKind.ACCESS_DENIED,
                f"The keys folder {folder} does not exist; make one on the backend's machine with "
                "'python -m backend keys client NAME' and copy it here.",
            )
        return cls.from_files(folder / SERVER_PUBLIC_FILE, folder / CLIENT_SECRET_FILE)

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` (before connect) a CURVE client of the backend."""
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public_key)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.client_public_key)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.client_secret_key)

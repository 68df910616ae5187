"""`python -m backend keys`: CURVE keys, so that the backend may serve other machines.

A keys folder (default ~/.config/hifill/keys, %APPDATA%\\hifill\\keys on Windows; mode 0700, every
file 0600) holds:

    server.key, server.key_secret   the backend's key pair                       (keys server)
    allowed/NAME.key                public keys of the clients it serves         (keys allow / client)
    clients/NAME/                   a keys folder to copy to an editor's machine (keys client NAME):
                                    client.key, client.key_secret, server.key

`python -m backend serve --endpoint tcp://0.0.0.0:47631 --curve-keys` then encrypts every connection
and serves only the allowed keys. The files are pyzmq certificates (zmq.auth.create_certificates,
zmq.auth.load_certificate); the keys are checked by pyzmq's ZAP authenticator
(zmq.auth.thread.ThreadAuthenticator) through AllowedKeys, which rereads allowed/ when it changes,
so allowing or revoking a client needs no restart.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

from shared_protocol import HiFillError
from shared_protocol.curve import (
    CLIENT_PUBLIC_FILE,
    CLIENT_SECRET_FILE,
    SERVER_PUBLIC_FILE,
    SERVER_SECRET_FILE,
    curve_available,
    is_z85_key,
    read_key_pair,
    read_public_key,
    require_curve,
)

ALLOWED_DIR = "allowed"
CLIENTS_DIR = "clients"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PUBLIC_CERTIFICATE = (
    "#   HiFill: public CURVE key of an allowed client ({name}); made by `python -m backend keys`\n"
    "metadata\n"
    "curve\n"
    '    public-key = "{key}"\n'
)

log = logging.getLogger("hifill.keys")


class KeysError(ValueError):
    """The keys cannot be made or used; the message says why and what to do."""


def default_keys_dir() -> Path:
    """The per-user keys folder: %APPDATA%\\hifill\\keys on Windows, else $XDG_CONFIG_HOME/hifill/keys."""
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "hifill" / "keys"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "hifill" / "keys"


# ---------------------------------------------------------------------------------------------- making


def make_server_keys(folder: Path, force: bool = False) -> Path:
    """Create the backend's key pair in folder; returns server.key (the public file to hand out)."""
    folder = _private_dir(folder)
    _write_certificates(folder, "server", force)
    return folder / SERVER_PUBLIC_FILE


def make_client_keys(folder: Path, name: str, force: bool = False) -> tuple[Path, bool]:
    """Create the keys folder clients/NAME/ for one client (client.key, client.key_secret and, when
    this folder has the server's keys, a copy of server.key); with the server's keys here the client
    is also allowed. Returns (the client's folder, allowed)."""
    _check_name(name)
    folder = _private_dir(folder)
    server_public = folder / SERVER_PUBLIC_FILE
    allowed = server_public.is_file()
    allowed_file = folder / ALLOWED_DIR / f"{name}.key"
    if allowed and allowed_file.exists() and not force:
        raise KeysError(
            f"A client called '{name}' is already allowed ({allowed_file}); use --force to replace it."
        )
    client_dir = _private_dir(_private_dir(folder / CLIENTS_DIR) / name)
    _write_certificates(client_dir, "client", force)
    if allowed:
        _write_private(client_dir / SERVER_PUBLIC_FILE, server_public.read_bytes(), force=True)
        allow_client(folder, str(client_dir / CLIENT_PUBLIC_FILE), name, force=True)
    return client_dir, allowed


def allow_client(folder: Path, key: str, name: str | None = None, force: bool = False) -> Path:
    """Allow a client: key is a certificate file (only its public key is kept) or a Z85 public key."""
    if is_z85_key(key.strip()):
        public = key.strip().encode("ascii")
        name = name or f"client-{public[:8].decode('ascii')}"
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise KeysError(f"'{key}' is neither a key file nor a 40-character public key.")
        public = _hifill(read_public_key, path)
        name = name or path.name.split(".", 1)[0]
    _check_name(name)
    allowed_dir = _private_dir(_private_dir(folder) / ALLOWED_DIR)
    target = allowed_dir / f"{name}.key"
    text = _PUBLIC_CERTIFICATE.format(name=name, key=public.decode("ascii"))
    _write_private(target, text.encode("ascii"), force)
    return target


def revoke_client(folder: Path, name: str) -> Path:
    """Remove a client's public key from allowed/; the backend stops serving it at its next connection."""
    _check_name(name)
    target = folder / ALLOWED_DIR / f"{name}.key"
    if not target.is_file():
        raise KeysError(f"No allowed client is called '{name}' in {folder / ALLOWED_DIR}.")
    target.unlink()
    return target


def _check_name(name: str) -> None:
    if name in ("client", "server"):
        raise KeysError(f"Give the client a name of its own, e.g. its computer's (--name), not '{name}'.")
    if not _NAME.match(name):
        raise KeysError(
            f"'{name}' cannot name a client: use 1 to 64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit."
        )


def _private_dir(path: Path) -> Path:
    path = Path(path).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "nt":
        os.chmod(path, 0o700)
    return path


def _write_certificates(folder: Path, name: str, force: bool) -> None:
    """pyzmq's create_certificates in a private temporary folder, then moved into place with 0600."""
    targets = [folder / f"{name}.key", folder / f"{name}.key_secret"]
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise KeysError(
            f"{existing[0]} already exists; keep it, or replace it with --force (clients using the old "
            "key then need the new one)."
        )
    staging = Path(tempfile.mkdtemp(prefix=".new-", dir=folder))  # mode 0700 from the start
    try:
        made = zmq.auth.create_certificates(staging, name)
        for source, target in zip(made, targets, strict=True):
            os.chmod(source, 0o600)
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_private(target: Path, data: bytes, force: bool) -> None:
    """Write data to target with mode 0600 (never readable by others, not even briefly)."""
    if target.exists() and not force:
        raise KeysError(f"{target} already exists; replace it with --force.")
    handle, staging = tempfile.mkstemp(prefix=".new-", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise


def _hifill(load, path: Path):
    try:
        return load(path)
    except HiFillError as error:
        raise KeysError(error.message) from None


# ---------------------------------------------------------------------------------------------- using


@dataclass(frozen=True)
class CurveConfig:
    """What `serve --curve-keys` uses: the server's key pair and the folder of allowed client keys."""

    folder: Path
    server_public_key: bytes
    server_secret_key: bytes = field(repr=False)

    @property
    def allowed_dir(self) -> Path:
        return self.folder / ALLOWED_DIR


def load_curve_config(folder: Path) -> CurveConfig:
    """Check and load a keys folder for the server; KeysError says what is missing or unsafe."""
    if not curve_available():
        try:
            require_curve()
        except HiFillError as error:
            raise KeysError(error.message) from None
    folder = Path(folder).expanduser()
    secret_file = folder / SERVER_SECRET_FILE
    if not secret_file.is_file():
        raise KeysError(
            f"There is no server key pair in {folder}; create one with 'python -m backend keys server"
            + ("'." if folder == default_keys_dir() else f" --dir {folder}'.")
        )
    public, secret = _hifill(read_key_pair, secret_file)
    for path in (folder, folder / ALLOWED_DIR):
        _check_not_writable_by_others(path)
    allowed = read_allowed_keys(folder / ALLOWED_DIR)
    if not allowed:
        raise KeysError(
            f"No client is allowed in {folder / ALLOWED_DIR}, so nobody could use the backend; make a keys "
            "folder for a client with 'python -m backend keys client NAME' (or allow one with "
            "'python -m backend keys allow KEY')."
        )
    return CurveConfig(folder, public, secret)


def read_allowed_keys(allowed_dir: Path) -> dict[bytes, str]:
    """{Z85 public key: client name} of the *.key files in allowed_dir (empty if it does not exist)."""
    if not allowed_dir.is_dir():
        return {}
    keys: dict[bytes, str] = {}
    for path in sorted(allowed_dir.glob("*.key")):
        _check_not_writable_by_others(path)
        keys[_hifill(read_public_key, path)] = path.stem
    return keys


def _check_not_writable_by_others(path: Path) -> None:
    if os.name == "nt" or not path.exists():
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise KeysError(
            f"{path} can be changed by other users (mode {mode:04o}), who could then allow their own keys; "
            f"run chmod go-w '{path}'."
        )


class AllowedKeys:
    """The credentials provider of pyzmq's ZAP authenticator (configure_curve_callback): a client may
    connect if its public key is in allowed/. The folder is reread when its files change. Never
    raises: any failure denies (an exception would stop the authenticator thread)."""

    def __init__(self, allowed_dir: Path, logger: logging.Logger | None = None) -> None:
        self.allowed_dir = Path(allowed_dir)
        self.log = logger or log
        self._signature: tuple | None = None
        self._keys: dict[bytes, str] = {}
        self._reported: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            self._refresh()
            name = self._keys.get(key)
            if name is not None:
                self.log.debug("client '%s' connected", name)
                return True
            if key not in self._reported and len(self._reported) < 1000:
                self._reported.add(key)
                self.log.warning(
                    "refused a client whose key %s is not allowed (python -m backend keys allow KEY)",
                    key.decode("ascii", "replace"),
                )
            return False
        except Exception:  # pragma: no cover - defensive: deny rather than stop the authenticator
            self.log.exception("could not check a client's key; refused it")
            return False

    def _refresh(self) -> None:
        signature = self._folder_signature()
        if signature == self._signature:
            return
        try:
            keys = read_allowed_keys(self.allowed_dir)
        except KeysError as error:
            self.log.error("%s Until this is fixed no client is served.", error)
            keys = {}
        self._signature, self._keys = signature, keys
        self.log.info("%d client key(s) allowed (%s)", len(keys), ", ".join(sorted(keys.values())) or "none")

    def _folder_signature(self) -> tuple:
        try:
            entries = sorted(
                (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size, entry.stat().st_mode)
                for entry in os.scandir(self.allowed_dir)
            )
            return (self.allowed_dir.stat().st_mtime_ns, tuple(entries))
        except OSError:
            return ()


# ---------------------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None, help=f"keys folder (default {default_keys_dir()})")
    parser = argparse.ArgumentParser(
        prog="python -m backend keys",
        description=(
            "CURVE keys so the backend can serve other machines. On the backend's machine: `keys server`, "
            "then `keys client NAME` per editor machine; copy the folder it prints to that machine and "
            "choose it as the plug-in's keys folder; start `serve --endpoint tcp://0.0.0.0:47631 "
            "--curve-keys`."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    server = actions.add_parser(
        "server", parents=[common], help="create the backend's key pair (server.key, server.key_secret)"
    )
    server.add_argument("--force", action="store_true", help="replace an existing key pair")
    client = actions.add_parser(
        "client", parents=[common], help="create a client's keys folder (clients/NAME) and allow it"
    )
    client.add_argument("name", help="a name for the client, e.g. laptop")
    client.add_argument("--force", action="store_true", help="replace this client's existing keys")
    allow = actions.add_parser("allow", parents=[common], help="allow a client's public key")
    allow.add_argument("key", help="a client's key file (client.key) or its 40-character public key")
    allow.add_argument("--name", default=None, help="the client's name (default: from the file name)")
    allow.add_argument("--force", action="store_true", help="replace an allowed key of the same name")
    revoke = actions.add_parser("revoke", parents=[common], help="stop serving an allowed client")
    revoke.add_argument("name")
    actions.add_parser("list", parents=[common], help="show the server key, allowed clients, client folders")
    return parser


def keys_last(argv: list[str]) -> list[str]:
    """Move Z85 public keys that begin with '-' (about 1 key in 85) behind a '--', where argparse reads
    them as the positional key instead of an unknown option."""
    dashed = [arg for arg in argv if arg.startswith("-") and is_z85_key(arg)]
    if not dashed or "--" in argv:
        return argv
    return [arg for arg in argv if arg not in dashed] + ["--", *dashed]


def main(argv: list[str] | None = None) -> int:
    """`python -m backend keys ACTION`; 0 on success, 2 when the keys cannot be made or are unsafe."""
    args = build_parser().parse_args(keys_last(list(sys.argv[1:] if argv is None else argv)))
    folder = (args.dir or default_keys_dir()).expanduser()
    try:
        if args.action == "server":
            public_file = make_server_keys(folder, args.force)
            print(f"server key pair written to {folder} (server.key_secret stays on this machine)")
            print(f"server public key: {read_public_key(public_file).decode()}")
            print("next: 'python -m backend keys client NAME' for each editor machine")
        elif args.action == "client":
            client_dir, allowed = make_client_keys(folder, args.name, args.force)
            public = read_public_key(client_dir / CLIENT_PUBLIC_FILE).decode()
            print(f"client '{args.name}': keys folder {client_dir}")
            print(f"client public key: {public}")
            if allowed:
                print(
                    f"allowed on this backend. Copy {client_dir} to the editor's machine (privately, e.g. "
                    "with scp) and choose it as the plug-in's keys folder."
                )
            else:
                print(
                    f"no server key pair in {folder}: allow this client on the backend's machine with "
                    f"'python -m backend keys allow {public} --name {args.name}' and put that backend's "
                    f"server.key into {client_dir}."
                )
        elif args.action == "allow":
            target = allow_client(folder, args.key, args.name, args.force)
            print(f"allowed: {target} ({read_public_key(target).decode()})")
        elif args.action == "revoke":
            print(f"revoked: removed {revoke_client(folder, args.name)}")
        else:
            _print_list(folder)
    except KeysError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HiFillError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write the keys in {folder}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


def _print_list(folder: Path) -> None:
    print(f"keys folder: {folder}")
    public_file = folder / SERVER_PUBLIC_FILE
    if public_file.is_file():
        print(f"server public key: {read_public_key(public_file).decode()}")
    else:
        print("server key pair: none ('python -m backend keys server' creates it)")
    allowed = read_allowed_keys(folder / ALLOWED_DIR)
    print(f"allowed clients: {len(allowed)}")
    for key, name in sorted(allowed.items(), key=lambda item: item[1]):
        print(f"  {name:<20} {key.decode()}")
    clients = folder / CLIENTS_DIR
    folders = sorted(p for p in clients.glob("*") if (p / CLIENT_SECRET_FILE).is_file())
    if folders:
        print("client keys folders (copy one to its editor's machine):")
        for path in folders:
            print(f"  {path}")

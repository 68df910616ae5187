"""Start the installed backend from inside an editor when nothing answers, and wait for it.

install.py ships this file next to every plug-in as `hifill_backend_launch.py`, together with
`hifill-backend.json` (written by installer.common.backend_config):

    {"format": 1, "command": [".../.venv/bin/python", "-m", "backend", "serve"], "cwd": "<repo>",
     "endpoint": "tcp://127.0.0.1:47631"}

Depends on the standard library and shared_protocol's error types only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared_protocol import ErrorKind, HiFillError

CONFIG_FILENAME = "hifill-backend.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class BackendConfig:
    """How to start the backend: `command` + ["--endpoint", E], run in `cwd`."""

    command: tuple[str, ...]
    cwd: str
    endpoint: str


def load_config(plugin_dir: Path) -> BackendConfig | None:
    """The config install.py wrote into `plugin_dir`, or None when there is none."""
    path = Path(plugin_dir) / CONFIG_FILENAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        command = tuple(str(part) for part in data["command"])
        if not command:
            raise ValueError("empty command")
        return BackendConfig(command=command, cwd=str(data["cwd"]), endpoint=str(data["endpoint"]))
    except (ValueError, KeyError, TypeError) as error:
        raise HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"The backend settings in {path} are damaged ({error}); run install.py again.",
        ) from error


def is_local_endpoint(endpoint: str) -> bool:
    """True for tcp:// endpoints on this machine (the only ones a plug-in may start a backend for)."""
    if endpoint.startswith("ipc://"):
        return True
    parts = urlsplit(endpoint)
    return parts.scheme == "tcp" and (parts.hostname or "") in {h.strip("[]") for h in LOCAL_HOSTS}


def launch_command(config: BackendConfig, endpoint: str) -> list[str]:
    """The argv that starts the backend serving `endpoint`."""
    return [*config.command, "--endpoint", endpoint]


def default_log_path() -> Path:
    """Where a started backend writes its output (for the user and for error messages)."""
    return Path(tempfile.gettempdir()) / "hifill-backend.log"


def start_backend(config: BackendConfig, endpoint: str, log_path: Path | None = None) -> subprocess.Popen:
    """Start the backend detached from the editor (it outlives the plug-in process) with its output in
    `log_path`. Raises HiFillError(BACKEND_UNAVAILABLE) when the command cannot be started."""
    if not is_local_endpoint(endpoint):
        raise HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"No backend answers at {endpoint}, and a backend can only be started here for an "
            f"endpoint on this computer. Start it on that machine with: python -m backend serve "
            f"--endpoint tcp://0.0.0.0:PORT --curve-keys, and set the plug-in's keys folder to the "
            f"one made there (python -m backend keys client NAME).",
        )
    argv = launch_command(config, endpoint)
    log_path = Path(log_path) if log_path else default_log_path()
    environment = dict(os.environ)
    # The editor's Python settings must not leak into the backend's venv Python.
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        environment.pop(name, None)
    options: dict = {}
    if os.name == "nt":
        options["creationflags"] = (
            subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS | subprocess.CREATE_NO_WINDOW
        )
    else:
        options["start_new_session"] = True
    try:
        with open(log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(
                argv,
                cwd=config.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                close_fds=True,
                **options,
            )
    except OSError as error:
        raise HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"Could not start the backend ({argv[0]}): {error.strerror or error}. "
            f"Run install.py again or start it yourself: python -m backend serve",
        ) from error


def _log_tail(log_path: Path, lines: int = 4) -> str:
    """The last lines the most recent start wrote to the log (after its "--- … starting" line)."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    latest = text.rsplit("\n--- ", 1)[-1].splitlines()[1:]
    return " | ".join([line.strip() for line in latest if line.strip()][-lines:])


def ensure_backend(
    hello: Callable[[], dict],
    config: BackendConfig | None,
    endpoint: str,
    timeout_s: float = 90.0,
    poll_interval_s: float = 0.5,
    is_cancelled: Callable[[], bool] = lambda: False,
    on_status: Callable[[str], None] = lambda message: None,
    log_path: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    start: Callable[[BackendConfig, str, Path], subprocess.Popen] | None = None,
) -> dict:
    """Return the backend's hello reply, starting the installed backend first when nothing answers.

    `hello` is a bound `Client.hello` (it raises HiFillError(BACKEND_UNAVAILABLE) within its connect
    timeout when nothing answers). Waits at most `timeout_s` for a started backend; raises
    HiFillError: BACKEND_UNAVAILABLE (no config, start failed, the process exited, or timeout, with the
    end of the backend's log), CANCELLED when `is_cancelled()` turns true while waiting.
    """
    try:
        return hello()
    except HiFillError as error:
        if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
            raise
    if config is None:
        raise HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"No backend answers at {endpoint} and none is installed for this plug-in. "
            f"Start one with: python -m backend serve (or run install.py).",
        )
    log_path = Path(log_path) if log_path else default_log_path()
    on_status(f"Starting the HiFill backend at {endpoint}…")
    process = (start or start_backend)(config, endpoint, log_path)
    deadline = clock() + timeout_s
    while True:
        if is_cancelled():
            raise HiFillError(ErrorKind.CANCELLED, "Cancelled while waiting for the backend to start.")
        exit_code = process.poll()
        if exit_code is not None:
            raise HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"The backend stopped while starting (exit code {exit_code}): "
                f"{_log_tail(log_path) or 'no output'}. Full log: {log_path}",
            )
        try:
            return hello()
        except HiFillError as error:
            if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
                raise
        if clock() >= deadline:
            raise HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"The backend did not answer within {timeout_s:.0f} s after starting; it keeps "
                f"starting in the background (log: {log_path}). Try again in a moment.",
            )
        time.sleep(poll_interval_s)


if __name__ == "__main__":  # pragma: no cover - manual check: print the command a plug-in would run
    found = load_config(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
    print(launch_command(found, found.endpoint) if found else "no config")

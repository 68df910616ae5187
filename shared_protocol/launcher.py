"""Start a HiFill backend process and wait until it answers: the one launcher of both plug-ins, the
bench and the tests.

- BackendProcess: any backend command line (`python -m backend serve --endpoint E ...`) as a child
  process with its output appended to a log file: start(), wait_for_hello(), pid, alive, stop().
- BackendLauncher / ensure_backend: what a plug-in does when nothing answers: read the start command
  install.py recorded next to the plug-in (hifill-backend.json, load_config), start it detached from
  the editor for an endpoint on this computer, and wait for its hello; one process per endpoint.

install.py ships this module inside shared_protocol; the config it writes (installer.common):

    {"format": 1, "command": [".../.venv/bin/python", "-m", "backend", "serve"], "cwd": "<repo>",
     "endpoint": "tcp://127.0.0.1:47631"}

Standard library only at import time: pyzmq is needed only when wait_for_hello makes its own Client.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .endpoints import is_local_endpoint
from .errors import ErrorKind, HiFillError

if TYPE_CHECKING:
    from .curve import CurveKeys

CONFIG_FILENAME = "hifill-backend.json"
DEFAULT_START_TIMEOUT_S = 90.0  # a freshly started backend loads its model before it answers
POLL_INTERVAL_S = 0.5
_TAIL_BYTES = 4096  # of the log read for an error message
# The editor's Python settings must not leak into the backend's (venv) Python.
EDITOR_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE")

Probe = Callable[[], dict]  # a bound Client.hello: the hello reply, or HiFillError


@dataclass(frozen=True)
class BackendConfig:
    """How to start the installed backend: `command` + ["--endpoint", E], run in `cwd`."""

    command: tuple[str, ...]
    cwd: str
    endpoint: str


def load_config(folder: Path) -> BackendConfig | None:
    """The config install.py wrote into `folder`, or None when there is none; HiFillError
    (BACKEND_UNAVAILABLE) when it is damaged."""
    path = Path(folder) / CONFIG_FILENAME
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


def launch_command(config: BackendConfig, endpoint: str) -> list[str]:
    """The argv that starts the installed backend serving `endpoint`."""
    return [*config.command, "--endpoint", endpoint]


def default_log_path() -> Path:
    """Where a backend started by a plug-in writes its output (named in error messages)."""
    return Path(tempfile.gettempdir()) / "hifill-backend.log"


def clean_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without the Python variables an editor sets."""
    environment = dict(os.environ if base is None else base)
    for name in EDITOR_PYTHON_VARIABLES:
        environment.pop(name, None)
    return environment


class BackendProcess:
    """One backend process: `command` (which names `endpoint`) run in `cwd` with `env` (None: this
    process's environment), stdout and stderr appended to `log_path` after a "--- … starting" line.

    detached: in a session of its own (on Windows: a detached process group without a window), so it
    outlives the editor that started it and ignores the editor's Ctrl+C.
    """

    def __init__(
        self,
        command: Sequence[str],
        endpoint: str,
        log_path: Path,
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        detached: bool = False,
    ) -> None:
        self.command = [str(part) for part in command]
        self.endpoint = endpoint
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.detached = detached
        self.process: subprocess.Popen | None = None
        self.spawned_at = 0.0  # time.perf_counter() when the process was spawned
        self._log_start = 0  # where this start's lines begin in the (possibly shared) log

    def start(self) -> BackendProcess:
        """Spawn the process (once); HiFillError(BACKEND_UNAVAILABLE) when it cannot be started."""
        if self.process is not None:
            raise RuntimeError("this BackendProcess was started already")
        options: dict[str, Any] = {}
        if self.detached and os.name == "nt":
            flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
            options["creationflags"] = flags | subprocess.CREATE_NO_WINDOW
        elif self.detached:
            options["start_new_session"] = True
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self._log_start = log.tell()
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                command = shlex.join(self.command).replace("\n", "\\n")  # one line, as a shell reads it
                log.write(f"--- {stamp} starting: {command}\n".encode())
                log.flush()
                self.spawned_at = time.perf_counter()
                self.process = subprocess.Popen(
                    self.command,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    **options,
                )
        except OSError as error:
            raise HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"Could not start the HiFill backend ({self.command[0]}): {error.strerror or error}. "
                "Run install.py again, or start it yourself: python -m backend serve",
            ) from error
        return self

    # --- state ---------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the backend process was not started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self.process is not None and self.process.poll() is None

    def poll(self) -> int | None:
        """The exit code, or None while it runs (or before it was started)."""
        return None if self.process is None else self.process.poll()

    def output(self, max_bytes: int | None = None) -> str:
        """What the process wrote to its log since this start (at most the last `max_bytes`)."""
        try:
            with open(self.log_path, "rb") as log:
                end = log.seek(0, os.SEEK_END)
                begin = self._log_start if max_bytes is None else max(self._log_start, end - max_bytes)
                log.seek(begin)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        if begin > self._log_start:
            text = text.split("\n", 1)[-1]  # drop the partial first line
        return "\n".join(line for line in text.splitlines() if not line.startswith("--- "))

    def log_tail(self, lines: int = 6) -> str:
        """The last non-empty lines of output(), joined by " | " (for a sentence)."""
        kept = [line.strip() for line in self.output(_TAIL_BYTES).splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    # --- waiting and stopping --------------------------------------------------------------------------
    def wait_for_hello(
        self,
        timeout_s: float,
        *,
        probe: Probe | None = None,
        curve: CurveKeys | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        on_wait: Callable[[float], None] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict:
        """The hello reply, asked every `poll_interval_s` until it comes.

        probe: the caller's Client.hello; None = a Client made for this wait (with `curve` keys) and
        closed after it. on_wait(seconds waited) is called before each pause. Raises HiFillError:
        BACKEND_UNAVAILABLE when the process exits first (with the end of its output) or stays silent
        for `timeout_s`; CANCELLED when is_cancelled() turns true; any other kind the probe raises.
        """
        if self.process is None:
            raise RuntimeError("start() the backend process before waiting for it")
        if probe is None:
            from .client import Client  # pyzmq: only here

            with Client(self.endpoint, timeout_s=10.0, connect_timeout_s=1.0, curve=curve) as client:
                return self.wait_for_hello(
                    timeout_s,
                    probe=client.hello,
                    is_cancelled=is_cancelled,
                    on_wait=on_wait,
                    poll_interval_s=poll_interval_s,
                    clock=clock,
                    sleep=sleep,
                )
        started = clock()
        while True:
            if is_cancelled is not None and is_cancelled():
                raise HiFillError(ErrorKind.CANCELLED, "Cancelled while the backend was starting.")
            exit_code = self.poll()
            if exit_code is not None:
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend stopped while starting (exit code {exit_code}): "
                    f"{self.log_tail() or 'no output'}. Full log: {self.log_path}",
                )
            try:
                return probe()
            except HiFillError as error:
                if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
                    raise
            waited = clock() - started
            if waited >= timeout_s:
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend was started but did not answer at {self.endpoint} within "
                    f"{timeout_s:.0f} s; it may still be loading (log: {self.log_path}). "
                    "Try again in a moment.",
                )
            if on_wait is not None:
                on_wait(waited)
            sleep(poll_interval_s)

    def kill(self) -> None:
        """SIGKILL at once (a crash, for tests); wait for the exit."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM (the backend's clean stop), SIGKILL after `grace_s`; the exit code (None: never
        started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- what a plug-in does when no backend answers ---------------------------------------------------


def start_backend(config: BackendConfig, endpoint: str, log_path: Path) -> BackendProcess:
    """The installed backend serving `endpoint`, started detached from the editor with a clean
    environment; HiFillError(BACKEND_UNAVAILABLE) for an endpoint on another machine or a failed start."""
    _require_local(endpoint)
    command = launch_command(config, endpoint)
    environment = clean_environment()
    return BackendProcess(command, endpoint, log_path, cwd=config.cwd, env=environment, detached=True).start()


def _require_local(endpoint: str) -> None:
    """HiFillError(BACKEND_UNAVAILABLE) saying what to do when `endpoint` is not on this computer."""
    if not is_local_endpoint(endpoint):
        raise HiFillError(
            ErrorKind.BACKEND_UNAVAILABLE,
            f"No HiFill backend answers at {endpoint}, and a backend can only be started here for an "
            "endpoint on this computer. Start it on that machine (python -m backend serve --endpoint "
            "tcp://0.0.0.0:PORT --curve-keys) and set the keys folder made there (python -m backend keys "
            "client NAME), or set the endpoint to the local backend.",
        )


StartBackend = Callable[[BackendConfig, str, Path], BackendProcess]


class BackendLauncher:
    """Starts the installed backend for an editor when nothing answers, and waits for it.

    One process per endpoint: a second fill while the backend is still loading waits for that process
    instead of starting another. A one-shot plug-in run (GIMP) leaves what it started running; a
    long editor session (Krita) stops it with stop_started() when the editor closes.

    config: what install.py recorded (None: nothing usable; config_problem says why). start: the
    function that starts it (start_backend; tests wrap it to observe the calls).
    """

    def __init__(
        self,
        config: BackendConfig | None,
        log_path: Path | None = None,
        config_problem: str = "",
        start: StartBackend = start_backend,
    ) -> None:
        self.config = config
        self.config_problem = config_problem
        self.log_path = Path(log_path) if log_path is not None else default_log_path()
        self._start = start
        self._started: dict[str, BackendProcess] = {}

    @classmethod
    def from_folder(cls, folder: Path, log_path: Path | None = None, start: StartBackend = start_backend):
        """A launcher for the config install.py wrote into `folder`; a missing or damaged config is
        reported when a backend has to be started, not before."""
        try:
            config, problem = load_config(folder), ""
        except HiFillError as error:
            config, problem = None, error.message
        return cls(config, log_path, problem, start)

    def process_for(self, endpoint: str) -> BackendProcess | None:
        """The process this launcher started for `endpoint` (running or not), if any."""
        return self._started.get(endpoint)

    def ensure_running(
        self,
        endpoint: str,
        probe: Probe,
        *,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
        on_status: Callable[[str], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> dict:
        """The hello reply of the backend at `endpoint`, starting the installed one when none answers.

        probe: the plug-in's Client.hello for that endpoint. on_status(sentence) tells what is being
        waited for. Raises HiFillError: BACKEND_UNAVAILABLE with why and what to do (nothing
        installed, an endpoint on another machine, the start failed, it exited, it stayed silent for
        `timeout_s`); CANCELLED; any other kind as the probe raised it (ACCESS_DENIED: keys refused,
        nothing is started).
        """
        try:
            return probe()
        except HiFillError as error:
            if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
                raise

        def notify(text: str) -> None:
            if on_status is not None:
                on_status(text)

        process = self._started.get(endpoint)
        if process is None or not process.alive:
            _require_local(endpoint)
            if self.config is None:
                problem = self.config_problem or "none is installed for this plug-in (run install.py)"
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"No HiFill backend answers at {endpoint}, and {problem}. "
                    "You can also start one yourself: python -m backend serve",
                )
            notify(f"Starting the HiFill backend at {endpoint}…")
            process = self._start(self.config, endpoint, self.log_path)
            self._started[endpoint] = process
        try:
            return process.wait_for_hello(
                timeout_s,
                probe=probe,
                is_cancelled=is_cancelled,
                on_wait=lambda waited: notify(f"Waiting for the HiFill backend to load ({waited:.0f} s)…"),
            )
        finally:
            if not process.alive:
                self._started.pop(endpoint, None)

    def stop_started(self, grace_s: float = 5.0) -> None:
        """Stop every backend this launcher started that still runs (the editor is closing)."""
        started, self._started = self._started, {}
        for process in started.values():
            process.stop(grace_s)


def ensure_backend(
    probe: Probe,
    config: BackendConfig | None,
    endpoint: str,
    *,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    on_status: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    log_path: Path | None = None,
) -> dict:
    """One-shot BackendLauncher(config, log_path).ensure_running(...): the hello of the backend at
    `endpoint`, starting the installed one when none answers; what it started keeps running."""
    launcher = BackendLauncher(config, log_path)
    return launcher.ensure_running(
        endpoint, probe, timeout_s=timeout_s, on_status=on_status, is_cancelled=is_cancelled
    )

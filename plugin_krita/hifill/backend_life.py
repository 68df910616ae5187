"""Backend life seen from a Krita session: is it answering, start the installed one if not, wait.

The primitives (reading hifill-backend.json, the start command, starting detached with a clean
environment) are the shared launcher's, shipped by install.py as `hifill_backend_launch`
(installer/backend_launch.py in the repository). This module adds what a long-lived editor session
needs: the state the panel shows, one started process per session (a second Fill while the backend
is still loading waits for it instead of starting another), and stopping it when Krita closes.
No Qt and no Krita here; the probe (a `hello` call) is injected.
"""

from __future__ import annotations

import enum
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hifill_backend_launch as launch

from shared_protocol import ErrorKind, HiFillError

# How long a freshly started backend may take to load its model and answer hello.
DEFAULT_START_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.5
LOG_TAIL_CHARS = 600


class BackendState(str, enum.Enum):
    """What the panel shows about the backend."""

    CONNECTED = "connected"
    STARTING = "starting"
    NOT_RUNNING = "not running"
    REFUSED = "refused"  # a backend answered but does not accept this client's keys (ACCESS_DENIED)


@dataclass(frozen=True)
class BackendStatus:
    state: BackendState
    detail: str = ""  # device and model when connected; the reason otherwise
    info: dict = field(default_factory=dict)  # the hello reply when connected

    def describe(self) -> str:
        """One line, e.g. "connected — cpu, hifill-places"."""
        return f"{self.state.value} — {self.detail}" if self.detail else self.state.value


def describe_hello(info: dict) -> str:
    """Device and model of a hello reply, as the panel shows them."""
    device = str(info.get("device") or "unknown device")
    model = str(info.get("model") or "unknown model")
    return f"{device}, {model}"


Probe = Callable[[], dict]  # returns the hello reply or raises HiFillError


def probe_status(probe: Probe) -> BackendStatus:
    """Ask once; never raises."""
    try:
        info = probe()
    except HiFillError as error:
        return status_of_error(error)
    return BackendStatus(BackendState.CONNECTED, describe_hello(info), info)


def status_of_error(error: HiFillError) -> BackendStatus:
    """The panel's state after a failed call: refused (keys) or not running."""
    state = BackendState.REFUSED if error.kind is ErrorKind.ACCESS_DENIED else BackendState.NOT_RUNNING
    return BackendStatus(state, error.message)


def load_launch_config(plugin_support_dir: Path) -> tuple[launch.BackendConfig | None, str]:
    """The recorded start command and, when there is none or it is damaged, why (for the panel)."""
    try:
        config = launch.load_config(plugin_support_dir)
    except HiFillError as error:
        return None, error.message
    if config is None:
        return None, "no backend is installed for this plug-in (run `python install.py krita`)"
    return config, ""


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, start: int) -> str:
    """The last whole lines (at most LOG_TAIL_CHARS) written to path after byte offset start."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            begin = max(start, handle.tell() - LOG_TAIL_CHARS)
            handle.seek(begin)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if begin > start and "\n" in text:
        text = text.split("\n", 1)[1]  # drop the partial first line
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("---"))


class BackendLauncher:
    """Starts the installed backend at most once at a time per editor session and waits for it.

    config: what install.py recorded (None when nothing is installed; config_problem says why).
    start: launch.start_backend in the editor; tests may wrap it to observe the calls.
    """

    def __init__(
        self,
        config: launch.BackendConfig | None,
        log_path: Path,
        config_problem: str = "",
        start: Callable[[launch.BackendConfig, str, Path], subprocess.Popen] = launch.start_backend,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.config_problem = config_problem
        self.log_path = Path(log_path)
        self._start = start
        self._clock = clock
        self._sleep = sleep
        self.process: subprocess.Popen | None = None
        self._log_start = 0  # where the started backend's output begins in the (shared) log

    def ensure_running(
        self,
        endpoint: str,
        probe: Probe,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
        on_status: Callable[[BackendStatus], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> dict:
        """The hello reply of a backend at endpoint, starting the installed one if none answers.

        Raises HiFillError(BACKEND_UNAVAILABLE) with a sentence saying why and what to do, or
        HiFillError(CANCELLED) when is_cancelled turns true while waiting. A backend that refuses the
        keys (ACCESS_DENIED) is reported as it is: nothing is started. Nothing is started for an
        endpoint on another machine either.
        """
        notify = on_status or (lambda status: None)
        try:
            info = probe()
        except HiFillError as error:
            if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
                raise
        else:
            notify(BackendStatus(BackendState.CONNECTED, describe_hello(info), info))
            return info

        if not launch.is_local_endpoint(endpoint):
            raise HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"No HiFill backend answers at {endpoint}. Start it on that machine"
                " (python -m backend serve --endpoint tcp://0.0.0.0:PORT --curve-keys) and set the keys"
                " folder made there, or set the endpoint to the local backend.",
            )
        if self.config is None:
            raise HiFillError(
                ErrorKind.BACKEND_UNAVAILABLE,
                f"No HiFill backend answers at {endpoint}, and {self.config_problem or 'none is installed'}."
                " You can also start one yourself: python -m backend serve",
            )
        if self.process is None or self.process.poll() is not None:
            notify(BackendStatus(BackendState.STARTING, "starting the installed backend"))
            self._log_start = _log_size(self.log_path)
            self.process = self._start(self.config, endpoint, self.log_path)
        return self._wait_for_hello(endpoint, probe, timeout_s, notify, is_cancelled)

    def _wait_for_hello(
        self,
        endpoint: str,
        probe: Probe,
        timeout_s: float,
        notify: Callable[[BackendStatus], None],
        is_cancelled: Callable[[], bool] | None,
    ) -> dict:
        assert self.process is not None
        started = self._clock()
        while True:
            if is_cancelled is not None and is_cancelled():
                raise HiFillError(ErrorKind.CANCELLED, "Cancelled while the backend was starting.")
            exit_code = self.process.poll()
            if exit_code is not None:
                self.process = None
                tail = _tail(self.log_path, self._log_start)
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend stopped while starting (exit code {exit_code}; log:"
                    f" {self.log_path})." + (f" Last output: {tail}" if tail else ""),
                )
            try:
                info = probe()
            except HiFillError as error:
                if error.kind is not ErrorKind.BACKEND_UNAVAILABLE:
                    raise
            else:
                notify(BackendStatus(BackendState.CONNECTED, describe_hello(info), info))
                return info
            waited = self._clock() - started
            if waited >= timeout_s:
                raise HiFillError(
                    ErrorKind.BACKEND_UNAVAILABLE,
                    f"The HiFill backend was started but did not answer at {endpoint} within"
                    f" {timeout_s:.0f} s; it keeps starting in the background (log: {self.log_path}).",
                )
            notify(BackendStatus(BackendState.STARTING, f"waiting for the backend to load ({waited:.0f} s)"))
            self._sleep(POLL_INTERVAL_S)

    def stop_started_process(self, grace_s: float = 5.0) -> None:
        """Terminate the backend this launcher started, if it still runs (Krita is closing)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)

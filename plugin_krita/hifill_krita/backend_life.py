"""Backend life seen from a Krita session: the state the panel shows, and a fill's "is a backend
answering? start the installed one if not, and wait" in those states.

Starting and waiting are shared_protocol.launcher's (BackendLauncher: one started process per
endpoint, so a second Fill while the backend is still loading waits for it instead of starting
another; stop_started() when Krita closes). No Qt and no Krita here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from shared_protocol import Client, ErrorKind, HiFillError
from shared_protocol.launcher import DEFAULT_START_TIMEOUT_S, BackendLauncher


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


def connected(info: dict) -> BackendStatus:
    """The panel's state for a backend that answered hello with `info`."""
    return BackendStatus(BackendState.CONNECTED, describe_hello(info), info)


def probe_status(probe: Callable[[], dict]) -> BackendStatus:
    """Ask once (probe: a Client's hello); never raises."""
    try:
        return connected(probe())
    except HiFillError as error:
        return status_of_error(error)


def status_of_error(error: HiFillError) -> BackendStatus:
    """The panel's state after a failed call: refused (keys) or not running."""
    state = BackendState.REFUSED if error.kind is ErrorKind.ACCESS_DENIED else BackendState.NOT_RUNNING
    return BackendStatus(state, error.message)


def ensure_backend(
    launcher: BackendLauncher,
    client: Client,
    on_status: Callable[[BackendStatus], None],
    is_cancelled: Callable[[], bool],
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> dict:
    """The hello of the backend `client` talks to, starting the installed one when none answers
    (launcher.ensure_running, which raises HiFillError saying why and what to do); on_status gets
    STARTING while it loads and CONNECTED once it answers."""
    info = launcher.ensure_running(
        client.endpoint,
        client.hello,
        timeout_s=timeout_s,
        on_status=lambda text: on_status(BackendStatus(BackendState.STARTING, text)),
        is_cancelled=is_cancelled,
    )
    on_status(connected(info))
    return info

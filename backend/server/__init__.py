"""The backend server (`python -m backend serve`): the names other code and the tests use.

policy: which endpoints and keys the server accepts; jobs: the bounded job queue; loop: the ROUTER
socket, its worker thread and run_server; cli: the command line (main).
"""

from backend.server.cli import build_parser, configure_logging, install_signal_handlers, main
from backend.server.jobs import DEFAULT_MAX_QUEUE
from backend.server.loop import HEARTBEAT_S, run_server
from backend.server.policy import ServerConfigError, check_endpoint, load_curve, shared_memory_refusal

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "HEARTBEAT_S",
    "ServerConfigError",
    "build_parser",
    "check_endpoint",
    "configure_logging",
    "install_signal_handlers",
    "load_curve",
    "main",
    "run_server",
    "shared_memory_refusal",
]

"""`python -m backend serve`: its options, logging and signals, then the engine and the server loop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

import zmq

from backend.keys import default_keys_dir
from backend.options import add_engine_options, engine_from_options
from backend.server.jobs import DEFAULT_MAX_QUEUE
from backend.server.loop import run_server
from backend.server.policy import ServerConfigError, check_endpoint, load_curve
from shared_protocol import DEFAULT_ENDPOINT, HiFillError, Limits

log = logging.getLogger("hifill.server")


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with timestamps."""
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def install_signal_handlers(stop_event: threading.Event) -> None:
    """SIGTERM and SIGINT set stop_event (a second signal falls back to the default: exit at once)."""

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_event.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m backend serve`."""
    parser = argparse.ArgumentParser(
        prog="python -m backend serve",
        description=(
            "Run the HiFill backend for the GIMP and Krita plug-ins. It listens on this machine only, "
            "unless --curve-keys encrypts the connections and admits only allowed client keys."
        ),
    )
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"where to listen (default {DEFAULT_ENDPOINT}; another machine's address needs --curve-keys)",
    )
    parser.add_argument(
        "--curve-keys",
        type=Path,
        nargs="?",
        const=default_keys_dir(),
        default=None,
        metavar="DIR",
        help=(
            "encrypt with CURVE and serve only the client keys allowed in DIR (default "
            f"{default_keys_dir()}); make them with 'python -m backend keys'"
        ),
    )
    add_engine_options(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the generator (mostly useful on CUDA; falls back to eager with a warning)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"fills that may wait behind the running one before BUSY (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m backend serve [--endpoint E] [--curve-keys [DIR]] [--weights W] [--device D] ...`.

    argv may start with "serve". Returns the exit code: 0 after a clean stop (SIGTERM/SIGINT),
    1 if the engine or the socket cannot start, 2 for a refused configuration.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        curve = None if args.curve_keys is None else load_curve(args.curve_keys)
        check_endpoint(args.endpoint, curve)
        if args.max_queue < 0:
            raise ServerConfigError("--max-queue must be 0 or more.")
    except ServerConfigError as error:
        log.error("%s", error)
        return 2
    from backend.allocator import bound_library_caches, fix_mmap_threshold

    log.info("memory: %s", fix_mmap_threshold())  # before the engine allocates (see backend.allocator)
    log.info("memory: %s", bound_library_caches())  # before torch builds its first convolution

    try:
        engine = engine_from_options(args, compile=args.compile)
    except HiFillError as error:
        log.error("cannot start the engine: %s", error.message)
        return 1
    stop_event = threading.Event()
    install_signal_handlers(stop_event)
    try:
        run_server(engine, args.endpoint, Limits(), stop_event, max_queue=args.max_queue, curve=curve)
    except zmq.ZMQError as error:
        log.error("cannot listen on %s: %s (is another backend running?)", args.endpoint, error)
        return 1
    return 0

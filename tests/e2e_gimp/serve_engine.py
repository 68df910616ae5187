"""Serve the real engine (backend.engine.load_engine) with the real server for the GIMP end-to-end test.

    python -m tests.e2e_gimp.serve_engine --endpoint E --weights W [--allow-untrained]

`python -m backend serve` refuses untrained weights (rightly); the end-to-end test runs the real
network with clearly labelled untrained weights until trained ones are given (HIFILL_E2E_WEIGHTS), so
it loads the engine itself with allow_untrained and hands it to backend.server.run_server.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import torch

from backend.engine import load_engine
from backend.server import configure_logging, install_signal_handlers, run_server
from shared_protocol import HiFillError, Limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--allow-untrained", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (the test machine is shared)"
    )
    args = parser.parse_args(argv)
    configure_logging("INFO")
    torch.set_num_threads(args.threads)
    try:
        engine = load_engine(args.weights, "cpu", allow_untrained=args.allow_untrained)
    except HiFillError as error:
        print(f"cannot start the engine: {error.message}", file=sys.stderr)
        return 1
    stop_event = threading.Event()
    install_signal_handlers(stop_event)
    run_server(engine, args.endpoint, Limits(), stop_event)
    return 0


if __name__ == "__main__":
    sys.exit(main())

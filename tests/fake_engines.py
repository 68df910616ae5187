"""Scriptable stand-ins for the inpainting engine, and a runner that serves one of them.

The fakes implement backend.engine.InpaintEngine exactly (same arguments, same FillResult), so the
server under test cannot tell them from the real engine. Run one as a real backend process:

    python -m tests.fake_engines --engine slow --endpoint tcp://127.0.0.1:PORT [--max-queue N] ...
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import numpy as np

from backend.engine import FillOptions, FillResult, InpaintEngine
from backend.server import configure_logging, install_signal_handlers, run_server
from shared_protocol import ErrorKind, HiFillError, Limits

DEFAULT_OPTIONS = FillOptions()

# The value ColourEngine writes into every channel of every masked pixel, per dtype.
FILL_VALUE = {np.dtype(np.uint8): 200, np.dtype(np.uint16): 51400, np.dtype(np.float32): 0.75}


def mask_bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the nonzero mask pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def colour_fill(image: np.ndarray, mask: np.ndarray) -> FillResult:
    """The mask's bounding box of the image with every masked pixel set to FILL_VALUE."""
    box = mask_bounding_box(mask)
    if box is None:
        return FillResult(0, 0, np.zeros((0, 0, image.shape[2]), image.dtype))
    x, y, width, height = box
    region = image[y : y + height, x : x + width].copy()
    region[mask[y : y + height, x : x + width] > 0] = FILL_VALUE[image.dtype]
    return FillResult(x, y, region)


class ColourEngine(InpaintEngine):
    """Fills the masked pixels with a constant; its one progress message names the options it got."""

    name = "colour"

    def describe(self) -> dict:
        return {
            "device": "cpu",
            "model": f"fake-{self.name}",
            "weights": "none (test fake)",
            "precision": "fp32",
        }

    def fill(self, image, mask, options=DEFAULT_OPTIONS, progress=None, is_cancelled=None) -> FillResult:
        result = colour_fill(image, mask)
        if progress is not None:  # the message echoes the options so tests can see what arrived
            progress(1.0, f"Done (context_px={options.context_px})")
        return result


class SlowEngine(ColourEngine):
    """Takes steps * step_s seconds, reporting progress and checking for cancel after every step."""

    name = "slow"

    def __init__(self, steps: int = 20, step_s: float = 0.05) -> None:
        self.steps = steps
        self.step_s = step_s

    def fill(self, image, mask, options=DEFAULT_OPTIONS, progress=None, is_cancelled=None) -> FillResult:
        for step in range(self.steps):
            if is_cancelled is not None and is_cancelled():
                raise HiFillError(ErrorKind.CANCELLED, "The fill was cancelled.")
            time.sleep(self.step_s)
            if progress is not None:
                progress((step + 1) / self.steps, f"Step {step + 1} of {self.steps}")
        return colour_fill(image, mask)


class SilentEngine(ColourEngine):
    """Sleeps silent_s without reporting progress or looking at cancel, then fills."""

    name = "silent"

    def __init__(self, silent_s: float = 2.0) -> None:
        self.silent_s = silent_s

    def fill(self, image, mask, options=DEFAULT_OPTIONS, progress=None, is_cancelled=None) -> FillResult:
        time.sleep(self.silent_s)
        return colour_fill(image, mask)


class FailingEngine(ColourEngine):
    """The image width picks what goes wrong (see FAILURES); other widths fill normally."""

    name = "failing"
    FAILURES = {
        1: "RuntimeError with a private detail",
        2: "MemoryError",
        3: "HiFillError(OUT_OF_MEMORY)",
        4: "result with the wrong dtype",
        5: "result outside the image",
        6: "HiFillError(NO_WEIGHTS)",
    }
    PRIVATE_DETAIL = "secret /home/someone/detail"

    def fill(self, image, mask, options=DEFAULT_OPTIONS, progress=None, is_cancelled=None) -> FillResult:
        width = image.shape[1]
        if width == 1:
            raise RuntimeError(self.PRIVATE_DETAIL)
        if width == 2:
            raise MemoryError
        if width == 3:
            raise HiFillError(ErrorKind.OUT_OF_MEMORY, "The GPU ran out of memory.")
        if width == 4:
            return FillResult(0, 0, np.zeros((1, 1, image.shape[2]), np.float64))
        if width == 5:
            return FillResult(4, 0, np.zeros((1, 2, image.shape[2]), image.dtype))
        if width == 6:
            raise HiFillError(ErrorKind.NO_WEIGHTS, "No weights were found.")
        return colour_fill(image, mask)


ENGINES = {"colour": ColourEngine, "slow": SlowEngine, "silent": SilentEngine, "failing": FailingEngine}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake engine with the real backend server.")
    parser.add_argument("--engine", choices=sorted(ENGINES), required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--silent-s", type=float, default=2.0)
    parser.add_argument("--max-pixels", type=int, default=Limits().max_pixels)
    parser.add_argument("--max-frame-bytes", type=int, default=Limits().max_frame_bytes)
    args = parser.parse_args(argv)
    configure_logging("INFO")
    if args.engine == "slow":
        engine: InpaintEngine = SlowEngine(args.steps, args.step_s)
    elif args.engine == "silent":
        engine = SilentEngine(args.silent_s)
    else:
        engine = ENGINES[args.engine]()
    limits = Limits(max_pixels=args.max_pixels, max_frame_bytes=args.max_frame_bytes)
    stop_event = threading.Event()
    install_signal_handlers(stop_event)
    run_server(
        engine, args.endpoint, limits, stop_event, max_queue=args.max_queue, heartbeat_s=args.heartbeat
    )
    logging.getLogger("hifill.server").info("exiting")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command-line options of every command that loads the engine (serve, inpaint, evaluate, bench), and
the engine they describe."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_engine_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """--weights, --device, --precision (unless `precision` is False), --working-size, --detail and
    --allow-untrained, spelled and defaulted the same way everywhere (engine_from_options reads them)."""
    parser.add_argument(
        "--weights", type=Path, default=None, help="generator weights, .safetensors (default: shipped)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    if precision:
        parser.add_argument(
            "--precision", default="auto", help="auto, fp32, bf16 or fp16 autocast (default: auto per device)"
        )
    parser.add_argument(
        "--working-size",
        type=int,
        default=None,
        help="generator input side per context window, a multiple of 16 (default: the weights' own)",
    )
    parser.add_argument(
        "--detail",
        default="auto",
        choices=("auto", "attention", "patch"),
        help="where full-resolution detail comes from: the generator's attention (the paper's CRA), a "
        "patch search guided by the fill, or auto (attention for official weights, else patch)",
    )
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="accept weights labelled untrained (random); for tests of the plumbing only",
    )


def engine_from_options(args: argparse.Namespace, compile: bool = False):  # -> TorchInpaintEngine
    """The warm engine the options of add_engine_options describe (torch is imported here, not before).

    Raises shared_protocol.HiFillError (NO_WEIGHTS, BAD_REQUEST) with a sentence for the user.
    """
    from backend.inference import load_engine

    return load_engine(
        args.weights,
        args.device,
        precision=getattr(args, "precision", "auto"),
        allow_untrained=args.allow_untrained,
        compile=compile,
        working_size=args.working_size,
        detail=getattr(args, "detail", "auto"),
    )

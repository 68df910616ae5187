"""Command-line options of every command that loads the engine (serve, inpaint, evaluate, bench)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_engine_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """--weights, --device, --precision (unless `precision` is False) and --working-size, spelled and
    defaulted the same way everywhere (backend.inference.load_engine takes them as they are)."""
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

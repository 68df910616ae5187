"""Issue 16's acceptance check: the per-image time of a batch fill
(`python -m backend inpaint IMAGES_DIR MASKS_DIR -o OUT_DIR`, one process, one warm engine) against the
warm engine's fill time on the same images, in this process. Target: the batch within 20 % of it.

    .venv/bin/python -m lab.bench.batch_timing [--count 20] [--size 1024x768] [--hole 10] [engine options]

The batch's per-image time is its own report (read + fill + write of each image, the engine load
apart); the warm fill time is engine.fill alone. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.options import add_engine_options
from lab.bench.cases import REPO, blob_mask, natural_image, parse_size
from lab.bench.report import machine_description

TARGET = 1.20  # batch per image <= 1.2 x the warm engine's fill
SUMMARY = re.compile(
    r"Wrote (\d+) of \d+ images? .* in ([\d.]+) s \(([\d.]+) s per image; engine loaded in ([\d.]+) s\)"
)


def make_cases(folder: Path, count: int, width: int, height: int, hole: float) -> list[str]:
    """count PNG photos (the bench photo, shifted and mirrored so that no two are alike) in
    folder/images and a blob-shaped hole of about hole % for each in folder/masks."""
    photo = natural_image(width, height)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    names = []
    for i in range(count):
        pixels = np.roll(photo, shift=(i * 37) % width, axis=1)
        if i % 2:
            pixels = pixels[:, ::-1]
        name = f"case{i:02d}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / "images" / name)
        Image.fromarray(blob_mask(width, height, hole, seed=i)).save(folder / "masks" / name)
        names.append(name)
    return names


def engine_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--device", args.device, "--precision", args.precision]
    if args.weights:
        argv += ["--weights", str(args.weights)]
    if args.working_size:
        argv += ["--working-size", str(args.working_size)]
    return argv


def time_batch(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run the batch command once; its wall time and what it reports about itself."""
    command = [sys.executable, "-m", "backend", "inpaint", str(folder / "images"), str(folder / "masks")]
    command += ["-o", str(folder / "out"), *engine_argv(args)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    match = SUMMARY.search(done.stdout)
    if done.returncode != 0 or not match:
        sys.exit(f"the batch command failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    written, seconds, per_image, load = match.groups()
    return {
        "written": int(written),
        "seconds": float(seconds),
        "per_image": float(per_image),
        "load": float(load),
        "wall": wall,
    }


def load_warm_engine(args: argparse.Namespace):
    """The engine in this process, and how long it took to load."""
    from backend.inference import load_engine

    start = time.perf_counter()
    engine = load_engine(args.weights, args.device, precision=args.precision, working_size=args.working_size)
    return engine, time.perf_counter() - start


def time_warm_fills(engine, folder: Path, names: list[str]) -> list[float]:
    """engine.fill's time on each image (decoded before the clock starts)."""
    fills = []
    for name in names:
        image = np.asarray(Image.open(folder / "images" / name).convert("RGB")).copy()
        mask = np.asarray(Image.open(folder / "masks" / name).convert("L")).copy()
        start = time.perf_counter()
        engine.fill(image, mask)
        fills.append(time.perf_counter() - start)
    return fills


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.bench.batch_timing", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=20, help="images in the batch (default 20)")
    parser.add_argument("--size", default="1024x768", help="WxH of each image (default 1024x768)")
    parser.add_argument("--hole", type=float, default=10.0, help="hole share per image in %% (default 10)")
    add_engine_options(parser)
    args = parser.parse_args(argv)
    _, width, height = parse_size(args.size)
    machine = machine_description()

    # The warm fills run before and after the batch, so that a load that drifts weighs on both sides.
    with tempfile.TemporaryDirectory(prefix="batch-timing-") as temporary:
        folder = Path(temporary)
        names = make_cases(folder, args.count, width, height, args.hole)
        say(f"{args.count} images of {width}x{height} made; timing the warm engine in process...")
        engine, warm_load = load_warm_engine(args)
        before = time_warm_fills(engine, folder, names)
        say("running the batch command...")
        batch = time_batch(folder, args)
        say("timing the warm engine again...")
        after = time_warm_fills(engine, folder, names)

    fills = before + after
    mean_fill = statistics.fmean(fills)
    ratio = batch["per_image"] / mean_fill
    described = engine.describe()
    rows = [
        ("CPU", f"{machine['cpu']} ({machine['cpus']} cores), load {machine['load_at_start']} at start"),
        (
            "engine",
            f"{described['device']}, {described['precision']}, working size {described['working_size']}",
        ),
        ("images", f"{args.count} PNG, {width}x{height}, blob holes of about {args.hole:g} %"),
        ("engine load, batch command (once)", f"{batch['load']:.1f} s"),
        ("engine load, in process", f"{warm_load:.1f} s"),
        ("batch command, start to exit", f"{batch['wall']:.1f} s for {batch['written']} images"),
        ("batch, per image (read + fill + write)", f"{batch['per_image']:.2f} s"),
        (
            "warm engine.fill per image, before / after the batch",
            f"{statistics.fmean(before):.2f} s / {statistics.fmean(after):.2f} s",
        ),
        ("warm engine.fill per image: mean of both", f"{mean_fill:.2f} s"),
        (
            "warm engine.fill per image: median (min-max)",
            f"{statistics.median(fills):.2f} s ({min(fills):.2f}-{max(fills):.2f})",
        ),
        (
            "batch / warm fill",
            f"{ratio:.3f} (target <= {TARGET:.2f}: {'pass' if ratio <= TARGET else 'miss'})",
        ),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

"""Command line: one entry point, one sub-command per job; each job's module owns its own options."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

# sub-command -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("backend.server", "run the backend for the GIMP and Krita plug-ins"),
    "keys": ("backend.keys", "CURVE keys so the backend can serve other machines (server, client, allow)"),
    "inpaint": ("backend.cli", "fill IMAGE where MASK is white and write OUT (same code path as serve)"),
    "bench": ("lab.bench.run", "measure fills through a real backend over ZeroMQ (--compare: with peers)"),
    "train": ("lab.train", "train the generator (Algorithm 1), resumable"),
    "evaluate": ("lab.evaluate", "in-hole L1 / PSNR / SSIM vs OpenCV baselines, contact sheets"),
    "tally": ("lab.evaluation.tally", "rankings of a blind kit (evaluate --blind): mean ranks, preferences"),
    "figure": ("lab.evaluation.figure", "README figure: real object removals, ours beside the baselines"),
    "import-official": ("lab.official.convert", "convert the official TF checkpoint to our weights"),
    "build-dataset": ("lab.dataset.build", "build the training/validation photo folders"),
    "build-vgg": ("lab.perceptual", "VGG16 features for training's optional perceptual term"),
    "build-datapack": ("lab.datapack", "pack the training photos into one file of tiles for GPU machines"),
    "model-card": ("lab.model_card", "write the shipped weights' model card from their metadata"),
}


def usage() -> str:
    lines = ["usage: python -m backend <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\n'python -m backend <command> --help' shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "inpaint":
        return inpaint_main(rest)
    module_name = COMMANDS[command][0]
    if module_name.startswith("lab."):
        lab_error = find_lab()
        if lab_error:
            print(f"error: '{command}' {lab_error}", file=sys.stderr)
            return 2
    module = importlib.import_module(module_name)
    return module.main(rest)


def find_lab() -> str | None:
    """Make the lab importable for its commands; None when it is, else why not (a sentence's tail).

    The lab (training, evaluation, dataset, bench) stands above the serving runtime and is not part of
    the installed package: its commands run from a source checkout, where `lab/` sits beside `backend/`.
    The runtime never imports it by name (docs/architecture.md); this is the one door, opened by name.
    """
    if importlib.util.find_spec("lab") is not None:
        return None
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "lab" / "__init__.py").is_file():
        sys.path.insert(0, str(checkout))
        return None
    return (
        "is a lab command (training, evaluation, dataset, bench): it runs from a source checkout of "
        "HiFill, where lab/ sits beside backend/; this installation has the serving runtime only."
    )


def inpaint_main(argv: list[str]) -> int:
    """`python -m backend inpaint IMAGE MASK -o OUT`: the engine's fill, written as a full image.

    With a folder of images, `inpaint IMAGES_DIR MASKS_DIR -o OUT_DIR` fills each image where the mask
    of the same name is white (or one MASK file for all), with one warm engine (backend/batch.py)."""
    import argparse

    from backend.options import add_engine_options, engine_from_options

    parser = argparse.ArgumentParser(prog="python -m backend inpaint", description=inpaint_main.__doc__)
    parser.add_argument(
        "image",
        type=Path,
        help="photo to fill (PNG, JPEG, TIFF, WebP, BMP; RGB or RGBA, 8/16-bit), or a folder of photos",
    )
    parser.add_argument(
        "mask",
        type=Path,
        help="mask of the same size: white = fill, black = keep, grey = soft; with a folder of photos: "
        "a folder of masks named like the photos (any image type), or one mask for all",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="where to write the result (a folder for folders)"
    )
    parser.add_argument("--context", type=int, default=None, help="context margin around holes in px (auto)")
    add_engine_options(parser)
    parser.add_argument(
        "--resize-masks",
        action="store_true",
        help="resize a mask of another size to its image (nearest neighbour) instead of refusing it",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--skip-existing", action="store_true", help="folders: keep outputs already there (resume a batch)"
    )
    existing.add_argument("--overwrite", action="store_true", help="folders: replace outputs already there")
    args = parser.parse_args(argv)

    if args.image.is_dir():
        from backend.batch import batch_main

        return batch_main(args)
    if args.skip_existing or args.overwrite:
        parser.error("--skip-existing and --overwrite apply to a folder of images, not to one image")

    from backend.batch import read_mask, read_picture, resize_mask, write_image
    from backend.engine import FillOptions
    from shared_protocol import HiFillError

    try:
        picture = read_picture(args.image)
        image = picture.pixels
        mask = read_mask(args.mask)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the input: {exc}", file=sys.stderr)
        return 2
    if mask.shape != image.shape[:2] and args.resize_masks:
        mask = resize_mask(mask, image.shape[1], image.shape[0])
    if mask.shape != image.shape[:2]:
        print(
            f"error: the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}; they must match (or pass --resize-masks).",
            file=sys.stderr,
        )
        return 2
    try:
        engine = engine_from_options(args)
        from tqdm import tqdm

        with tqdm(total=100, unit="%", desc="Filling", leave=False) as bar:

            def progress(fraction: float, message: str) -> None:
                bar.set_description(message)
                bar.update(round(fraction * 100) - bar.n)

            result = engine.fill(image, mask, FillOptions(context_px=args.context), progress=progress)
    except HiFillError as exc:
        print(f"error ({exc.kind.value}): {exc.message}", file=sys.stderr)
        return 1
    h, w = result.pixels.shape[:2]
    try:
        write_image(result.applied_to(image), args.output, icc_profile=picture.icc_profile, exif=picture.exif)
    except (OSError, ValueError) as exc:
        print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output} ({image.shape[1]}x{image.shape[0]}, "
        f"filled region {w}x{h} at {result.x},{result.y})"
    )
    return 0

"""Batch fills from the shell: each image of a folder with the mask of the same stem, one warm engine.

plan_batch() pairs files by name only (nothing decoded, no engine); run_batch() reads, fills and writes
each pair with the engine it is given, reporting and skipping what it cannot do; batch_main() is
`python -m backend inpaint IMAGES_DIR MASKS -o OUT_DIR`. Image files are read and written here as
well (read_image, write_image), for the single-file form too: 8-bit through Pillow, 16-bit PNG and
TIFF through OpenCV (and TIFF writes through tifffile), because Pillow holds 16-bit RGB(A) only as
8-bit.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from backend.engine import FillOptions, InpaintEngine

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
PNG_COMPRESS_LEVEL = 3  # zlib level of 8-bit PNG outputs (see _write_with_pillow)
JPEG_QUALITY = 95  # with 4:4:4 chroma: re-encoding changes pixels by a level or two, not more
Existing = Literal["refuse", "skip", "overwrite"]  # what to do with an output that is already there


class BatchError(Exception):
    """The batch cannot start (bad arguments); the message is a sentence for the user."""


class SkipImage(Exception):
    """This image cannot be filled; the message says why (the batch goes on)."""


# ----------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Job:
    """One image to fill with its mask, and where the result goes."""

    image: Path
    mask: Path
    output: Path


@dataclass(frozen=True)
class Skipped:
    name: str  # the image's file name
    reason: str  # why it was not written, for the user


@dataclass
class BatchPlan:
    jobs: list[Job]
    skipped: list[Skipped]  # known from the names alone: no mask, two masks, output already there
    kept: list[str] = field(default_factory=list)  # outputs already there, left alone (--skip-existing)
    ignored: list[str] = field(default_factory=list)  # files in the images folder that are not images


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def plan_batch(images_dir: Path, masks: Path, out_dir: Path, existing: Existing = "refuse") -> BatchPlan:
    """Pair every image in images_dir with the mask of the same stem in the folder `masks` (or with the
    one mask file `masks`); outputs keep the image's name in out_dir. Raises BatchError on bad folders."""
    if not images_dir.is_dir():
        raise BatchError(f"{images_dir} is not a folder of images.")
    if not masks.exists():
        raise BatchError(f"{masks} does not exist: give a folder of masks or one mask file.")
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"The output {out_dir} is a file; with a folder of images it must be a folder.")
    source = images_dir.resolve()
    if out_dir.resolve() == source:
        raise BatchError("The output folder is the images folder: the fills would replace the originals.")
    if masks.is_dir() and masks.resolve() == source:
        raise BatchError("The masks folder is the images folder: put the masks in a folder of their own.")
    if masks.is_dir() and out_dir.resolve() == masks.resolve():
        raise BatchError("The output folder is the masks folder: choose another folder for the fills.")

    files = sorted(p for p in images_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    single_mask = masks.resolve() if masks.is_file() else None
    images = [p for p in files if is_image_file(p) and p.resolve() != single_mask]
    ignored = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not images:
        raise BatchError(f"There are no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}.")
    by_stem: dict[str, list[Path]] = {}
    if masks.is_dir():
        for path in sorted(masks.iterdir()):
            if is_image_file(path):
                by_stem.setdefault(path.stem, []).append(path)

    plan = BatchPlan(jobs=[], skipped=[], ignored=ignored)
    for image in images:
        candidates = [masks] if masks.is_file() else by_stem.get(image.stem, [])
        if not candidates:
            plan.skipped.append(Skipped(image.name, f"there is no mask {image.stem}.* in {masks}"))
            continue
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            plan.skipped.append(Skipped(image.name, f"{len(candidates)} masks match it ({names})"))
            continue
        output = out_dir / image.name
        if output.exists() and existing != "overwrite":
            if existing == "skip":
                plan.kept.append(image.name)
            else:
                plan.skipped.append(
                    Skipped(
                        image.name,
                        f"{output} is already there (--overwrite replaces it, --skip-existing keeps it)",
                    )
                )
            continue
        plan.jobs.append(Job(image, candidates[0], output))
    return plan


# ------------------------------------------------------------------------------------------- running


@dataclass
class BatchSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seconds: float = 0.0  # reading, filling and writing the jobs (the engine load is not in it)
    attempted: int = 0  # jobs the runner tried (written + skipped while running)
    interrupted: bool = False  # Ctrl+C: the jobs after the current one were not tried

    @property
    def exit_status(self) -> int:
        """0 when every image was written (or kept on request), 1 when any was skipped, 130 after Ctrl+C."""
        return 130 if self.interrupted else 1 if self.skipped else 0

    def text(self, out_dir: Path, load_seconds: float | None = None) -> str:
        """The closing report: counts, timings, and the names of the skipped images."""
        total = len(self.written) + len(self.skipped) + len(self.kept)
        line = f"Wrote {len(self.written)} of {images(total)} to {out_dir}"
        if self.attempted:
            line += f" in {self.seconds:.1f} s ({self.seconds / self.attempted:.2f} s per image"
            line += f"; engine loaded in {load_seconds:.1f} s)." if load_seconds is not None else ")."
        else:
            line += "."
        lines = [line]
        if self.kept:
            lines.append(f"Kept {len(self.kept)} already there (--skip-existing).")
        if self.skipped:
            names = ", ".join(s.name for s in self.skipped)
            lines.append(f"Skipped {len(self.skipped)}: {names}")
        if self.interrupted:
            lines.append("Interrupted: the same command with --skip-existing fills the rest.")
        return "\n".join(lines)


def run_batch(
    plan: BatchPlan,
    engine: InpaintEngine,
    options: FillOptions = FillOptions(),
    resize_masks: bool = False,
    say: Callable[[str], None] | None = None,
    show_progress: bool = True,
) -> BatchSummary:
    """Fill plan.jobs one after the other with `engine`; a job that fails is reported through `say`
    (default: a line on stderr above the progress bar) and skipped, never ending the batch. Each
    output is encoded and written by a writer thread while the next image is filled (PNG/JPEG encoders
    release the GIL). Ctrl+C ends it after the outputs under way are whole (or absent):
    summary.interrupted."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    summary = BatchSummary(skipped=list(plan.skipped), kept=list(plan.kept))
    masks: dict[Path, np.ndarray] = {}  # decoded once each (one mask file may serve every image)
    start = time.perf_counter()
    writing: list[tuple[Job, Future[None]]] = []  # at most one: the previous image's output

    with (
        tqdm(plan.jobs, desc="Filling", unit="image", disable=not show_progress, file=sys.stderr) as bar,
        ThreadPoolExecutor(1, thread_name_prefix="hifill-writer") as writer,
    ):
        report = say or (lambda text: bar.write(text, file=sys.stderr))

        def settle() -> None:
            """Wait for the output under way; count it as written or skipped."""
            while writing:
                job, future = writing.pop()
                try:
                    future.result()
                except SkipImage as skip:
                    summary.skipped.append(Skipped(job.image.name, str(skip)))
                    report(f"skipped {job.image.name}: {skip}")
                else:
                    summary.written.append(job.image.name)

        try:
            for job in bar:
                bar.set_postfix_str(job.image.name, refresh=False)
                summary.attempted += 1
                try:
                    filled, picture, warnings = fill_job(job, engine, options, resize_masks, masks)
                except SkipImage as skip:
                    summary.skipped.append(Skipped(job.image.name, str(skip)))
                    report(f"skipped {job.image.name}: {skip}")
                    continue
                settle()
                writing.append((job, writer.submit(write_job, job, filled, picture)))
                for warning in warnings:
                    report(f"{job.image.name}: {warning}")
            settle()
        except KeyboardInterrupt:
            summary.interrupted = True
            settle()
    summary.seconds = time.perf_counter() - start
    return summary


def fill_job(
    job: Job,
    engine: InpaintEngine,
    options: FillOptions,
    resize_masks: bool,
    masks: dict[Path, np.ndarray],
) -> tuple[np.ndarray, Picture, tuple[str, ...]]:
    """Read and fill one image: (the whole filled image, what was read, the engine's warnings).
    Raises SkipImage."""
    from shared_protocol import HiFillError

    try:
        picture = read_picture(job.image)
    except Exception as error:  # noqa: BLE001 -- any decoder failure is this file's problem
        raise SkipImage(f"cannot read the image ({reason(error)})") from None
    if job.mask not in masks:
        try:
            masks[job.mask] = read_mask(job.mask)
        except Exception as error:  # noqa: BLE001
            raise SkipImage(f"cannot read its mask {job.mask.name} ({reason(error)})") from None
    mask = masks[job.mask]
    height, width = picture.pixels.shape[:2]
    if mask.shape != (height, width):
        if not resize_masks:
            raise SkipImage(
                f"its mask {job.mask.name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{width}x{height} (--resize-masks resizes masks to their images)"
            )
        mask = resize_mask(mask, width, height)
    try:
        result = engine.fill(picture.pixels, mask, options)
    except HiFillError as error:
        raise SkipImage(f"the fill failed: {error.message}") from None
    except Exception as error:  # noqa: BLE001 -- one image's failure must not end a long batch
        raise SkipImage(f"the fill failed ({type(error).__name__}: {reason(error)})") from None
    return result.applied_to(picture.pixels), picture, result.warnings


def write_job(job: Job, pixels: np.ndarray, picture: Picture) -> None:
    """Write one filled image to job.output with the input's colour profile and EXIF. Raises SkipImage."""
    try:
        write_image(pixels, job.output, icc_profile=picture.icc_profile, exif=picture.exif)
    except Exception as error:  # noqa: BLE001 -- any encoder or disk failure is this file's problem
        raise SkipImage(f"cannot write {job.output} ({reason(error)})") from None


def images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def reason(error: BaseException) -> str:
    """The first line of an error's message, for a report line."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def batch_main(args: argparse.Namespace) -> int:
    """The folder form of `python -m backend inpaint` (arguments parsed by backend.cli.inpaint_main).

    Exit status: 0 all written, 1 something skipped, 2 bad arguments or no engine, 130 interrupted."""
    existing: Existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "refuse"
    try:
        plan = plan_batch(args.image, args.mask, args.output, existing)
    except BatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.mask.is_file():
        try:
            read_mask(args.mask)
        except Exception as error:  # noqa: BLE001
            print(f"error: cannot read the mask {args.mask} ({reason(error)}).", file=sys.stderr)
            return 2
    if plan.ignored:
        print(f"ignored (not images): {', '.join(plan.ignored)}", file=sys.stderr)
    for skipped in plan.skipped:
        print(f"skipped {skipped.name}: {skipped.reason}", file=sys.stderr)
    if not plan.jobs:
        summary = BatchSummary(skipped=list(plan.skipped), kept=list(plan.kept))
        print(summary.text(args.output))
        return summary.exit_status
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot make the output folder {args.output} ({reason(error)}).", file=sys.stderr)
        return 2
    from backend.options import engine_from_options
    from shared_protocol import HiFillError

    print(f"Loading the engine for {images(len(plan.jobs))}...", file=sys.stderr)
    start = time.perf_counter()
    try:
        engine = engine_from_options(args)
    except HiFillError as error:
        print(f"error ({error.kind.value}): {error.message}", file=sys.stderr)
        return 2
    load_seconds = time.perf_counter() - start
    summary = run_batch(plan, engine, FillOptions(context_px=args.context), resize_masks=args.resize_masks)
    print(summary.text(args.output, load_seconds))
    return summary.exit_status


# ---------------------------------------------------------------------------------------- image files


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (H, W, 3|4) uint8 or uint16, RGB(A)
    icc_profile: bytes | None = None
    exif: bytes | None = None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_picture(path: Path) -> Picture:
    """Pixels (RGB or RGBA, 8 or 16 bits as stored; grey becomes RGB) plus colour profile and EXIF."""
    from PIL import Image

    with open(path, "rb") as file:
        head = file.read(26)
    with Image.open(path) as im:
        icc, exif = im.info.get("icc_profile"), im.info.get("exif")
        sixteen = (head.startswith(PNG_SIGNATURE) and head[24] == 16) or (
            im.format == "TIFF" and max(_as_tuple(im.tag_v2.get(258, 8))) == 16
        )
        exif = exif if isinstance(exif, bytes) else None
        if sixteen:  # Pillow would hand 16-bit RGB(A) over as 8-bit
            return Picture(_read_with_opencv(path), icc, exif)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(im, dtype=np.uint16)[..., None].repeat(3, axis=2)
        else:
            if im.mode not in ("RGB", "RGBA"):
                alpha = "A" in im.getbands() or "transparency" in im.info
                im = im.convert("RGBA" if alpha else "RGB")
            pixels = np.asarray(im).copy()
    return Picture(pixels, icc, exif)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3|4) uint8 or uint16 array from an image file."""
    return read_picture(path).pixels


def read_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 mask: white = fill. A 16-bit grey mask is scaled to 8 bits."""
    from PIL import Image

    with Image.open(path) as m:
        if m.mode in ("I;16", "I;16B", "I;16L"):
            return ((np.asarray(m, dtype=np.uint32) + 128) // 257).astype(np.uint8)
        return np.asarray(m.convert("L")).copy()


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """The mask at width x height, nearest neighbour (no new grey levels)."""
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)).copy()


def write_image(
    pixels: np.ndarray, path: Path, icc_profile: bytes | None = None, exif: bytes | None = None
) -> None:
    """Write (H, W, 3|4) uint8/uint16 pixels in the format of path's suffix, via a temporary file, so
    that an interrupted batch never leaves a half-written output (which --skip-existing would keep).

    16-bit PNG and TIFF stay 16-bit; other formats get 8 bits. JPEG: quality 95, 4:4:4, no alpha.
    WebP: lossless. BMP: no alpha. The colour profile (and EXIF, except in 16-bit TIFF) is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        if pixels.dtype == np.uint16 and suffix in (".tif", ".tiff"):
            _write_tiff16(pixels, temporary, icc_profile)
        elif pixels.dtype == np.uint16 and suffix == ".png":
            temporary.write_bytes(_encode_png16(pixels, icc_profile, exif))
        else:
            _write_with_pillow(pixels, temporary, suffix, icc_profile, exif)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_with_pillow(
    pixels: np.ndarray, path: Path, suffix: str, icc_profile: bytes | None, exif: bytes | None
) -> None:
    from PIL import Image

    image_format = Image.registered_extensions().get(suffix)
    if image_format is None:
        raise ValueError(f"'{suffix or path.name}' is not an image file type this tool can write")
    if pixels.dtype == np.uint16:  # a 16-bit image into a format without 16-bit RGB: 8 bits
        pixels = (pixels.astype(np.float32) / 257.0).round().astype(np.uint8)
    if image_format in ("JPEG", "BMP") and pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    extra: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if exif and image_format in ("JPEG", "PNG", "WEBP"):
        extra["exif"] = exif
    if image_format == "JPEG":
        extra.update(quality=JPEG_QUALITY, subsampling=0)
    elif image_format == "WEBP":
        extra.update(lossless=True, exact=True)
    elif image_format == "PNG":
        # zlib level 3 (as OpenCV writes PNG): a 1024x768 photo in 0.08 s instead of 0.23 s at Pillow's
        # default 6, for a file 1.6 % larger (measured on the bench photo).
        extra.update(compress_level=PNG_COMPRESS_LEVEL)
    elif image_format == "TIFF":
        extra.update(compression="tiff_lzw")
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format=image_format, **extra)


def _read_with_opencv(path: Path) -> np.ndarray:
    import cv2

    pixels = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("the 16-bit image could not be decoded")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{pixels.dtype} pixels are not supported (8 or 16 bits per channel)")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels in (1, 2):  # grey (+ alpha)
        grey = pixels[..., :1].repeat(3, axis=2)
        pixels = np.concatenate([grey, pixels[..., 1:]], axis=2) if channels == 2 else grey
    elif channels == 3:
        pixels = pixels[..., ::-1]
    elif channels == 4:
        pixels = pixels[..., [2, 1, 0, 3]]
    else:
        raise ValueError(f"{channels} channels are not supported (RGB or RGBA)")
    return np.ascontiguousarray(pixels)


def _encode_png16(pixels: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit RGB(A) PNG (OpenCV's encoder) with the iCCP and eXIf chunks put in after IHDR."""
    import cv2

    order = [2, 1, 0, 3] if pixels.shape[2] == 4 else [2, 1, 0]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels[..., order]))
    if not ok:
        raise ValueError("OpenCV could not encode the 16-bit PNG")
    data = encoded.tobytes()
    chunks = b""
    if icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile))
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    after_ihdr = len(PNG_SIGNATURE) + 8 + 13 + 4  # length, type, 13 data bytes, CRC
    return data[:after_ihdr] + chunks + data[after_ihdr:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_tiff16(pixels: np.ndarray, path: Path, icc_profile: bytes | None) -> None:
    """tifffile, which marks a fourth channel as (unassociated) alpha as TIFF requires; Deflate."""
    import tifffile

    alpha = {"extrasamples": ["unassalpha"]} if pixels.shape[2] == 4 else {}
    tifffile.imwrite(
        path,
        np.ascontiguousarray(pixels),
        photometric="rgb",
        compression="zlib",
        iccprofile=icc_profile,
        **alpha,
    )


def _as_tuple(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)

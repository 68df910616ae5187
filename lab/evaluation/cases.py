"""Evaluation cases: validation photos cropped or scaled to a size, each with a seeded hole mask, and
the committed object removals (lab/evaluation/removals/: hand-made masks over real objects)."""

from __future__ import annotations

import csv
import itertools
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lab import masks
from lab.evaluation.errors import EvaluationError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MASK_BASE = 512  # masks of large cases are drawn with this long side, then scaled up (as in the paper)
NAMED_LONG_SIDES = {"hd": 1920, "fhd": 1920, "2k": 2560, "qhd": 2560, "4k": 3840, "8k": 7680}
CASE_SETS = ("random", "removals", "both")  # --cases: seeded random holes, object removals, or both
RANDOM, REMOVAL = "random", "removal"  # Case.kind
REMOVALS_DIR = Path(__file__).resolve().parent / "removals"
REMOVALS_MANIFEST = REMOVALS_DIR / "removals.tsv"
REMOVAL_SUFFIX = "-removal"  # size labels of removal cases: their own table sections
BUILD_HINT = "Build the validation photos with `python -m backend build-dataset`"


@dataclass(frozen=True)
class SizeSpec:
    """A case size: "square" crops of pixels x pixels, or "long" = whole photo scaled to a long side."""

    label: str
    kind: str
    pixels: int


def parse_sizes(text: str) -> list[SizeSpec]:
    """ "512,hd" -> [512x512 crop, long side 1920]. Tokens: N (NxN crop), hd/2k/4k/8k, longN."""
    sizes = []
    for token in (part.strip().lower() for part in text.split(",") if part.strip()):
        if token.isdigit():
            sizes.append(SizeSpec(token, "square", int(token)))
        elif token in NAMED_LONG_SIDES:
            sizes.append(SizeSpec(token, "long", NAMED_LONG_SIDES[token]))
        elif token.startswith("long") and token[4:].isdigit():
            sizes.append(SizeSpec(token, "long", int(token[4:])))
        else:
            raise EvaluationError(f"Unknown size {token!r}: use N (an NxN crop), hd, 2k, 4k, 8k or longN.")
    for size in sizes:
        if size.pixels < 64:
            raise EvaluationError(f"Size {size.label} is too small; use at least 64 pixels.")
    if not sizes:
        raise EvaluationError("No sizes given.")
    return sizes


@dataclass(frozen=True)
class Photo:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class Case:
    """One image + hole at one size; mask is (H, W) uint8 {0, 255}.

    kind RANDOM: a seeded random hole, image is the ground truth. kind REMOVAL: a hand-made mask over a
    real object, so the pixels under the hole are the object itself and there is no ground truth.
    """

    photo: str  # photo name; a removal case's id (unique even when one photo has several cases)
    size: SizeSpec
    image: np.ndarray
    mask: np.ndarray
    upscaled: bool  # the photo had to be enlarged to reach this size
    kind: str = RANDOM

    @property
    def hole_fraction(self) -> float:
        return float(np.count_nonzero(self.mask)) / self.mask.size

    @property
    def is_removal(self) -> bool:
        return self.kind == REMOVAL


def blank_hole(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The input a method sees: hole pixels set to 0 so the ground truth cannot leak."""
    out = image.copy()
    out[mask > 127] = 0
    return out


def list_photos(folder: Path, count: int | None = None) -> list[Path]:
    """Image files under folder (recursively), sorted; with count, that many spread evenly over the list.

    Spreading (rather than taking the first N) keeps a small run representative of every source
    sub-folder, and the same count always picks the same photos.
    """
    if not folder.is_dir():
        raise EvaluationError(
            f"No photo folder at {folder}. Build the validation photos with "
            "`python -m backend build-dataset` or pass --photos DIR."
        )
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not paths:
        raise EvaluationError(f"No photos (jpg, png, webp, bmp, tif) in {folder}.")
    if not count or count >= len(paths):
        return paths
    return [paths[index * len(paths) // count] for index in range(count)]


def load_photo(path: Path) -> Photo:
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        return Photo(path.stem, np.asarray(rgb))


def case_rng(seed: int, photo: str, size: SizeSpec) -> np.random.Generator:
    """The same photo, size and seed always give the same crop and mask, whatever else is evaluated."""
    return np.random.default_rng([seed, zlib.crc32(photo.encode()), zlib.crc32(size.label.encode())])


def make_case(
    photo: Photo,
    size: SizeSpec,
    seed: int,
    mask_kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
) -> Case:
    """Crop/scale the photo to the size and draw its hole mask, deterministically."""
    rng = case_rng(seed, photo.name, size)
    height, width = photo.pixels.shape[:2]
    if size.kind == "square":
        scale = max(size.pixels / min(height, width), 1.0)
        image = _resize(photo.pixels, round(width * scale), round(height * scale))
        top = int(rng.integers(0, image.shape[0] - size.pixels + 1))
        left = int(rng.integers(0, image.shape[1] - size.pixels + 1))
        image = image[top : top + size.pixels, left : left + size.pixels]
        mask = masks.random_mask(rng, size.pixels, size.pixels, mask_kind, hole_fraction)
        return Case(photo.name, size, np.ascontiguousarray(image), mask, upscaled=scale > 1.0)
    scale = size.pixels / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    image = _resize(photo.pixels, new_w, new_h)
    base = MASK_BASE / max(new_w, new_h)
    small = masks.random_mask(
        rng, max(8, round(new_h * base)), max(8, round(new_w * base)), mask_kind, hole_fraction
    )
    mask = np.asarray(Image.fromarray(small).resize((new_w, new_h), Image.Resampling.BILINEAR))
    mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    return Case(photo.name, size, image, mask, upscaled=scale > 1.0)


def iter_cases(
    photo_paths: Sequence[Path],
    sizes: Sequence[SizeSpec],
    seed: int,
    mask_kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
) -> Iterator[Case]:
    """Cases photo by photo (each photo is loaded once), sizes in the given order."""
    for path in photo_paths:
        photo = load_photo(path)
        for size in sizes:
            yield make_case(photo, size, seed, mask_kind, hole_fraction)


# --------------------------------------------------------------------------------------------------
# Object removals: committed masks over real objects of the validation photos
# --------------------------------------------------------------------------------------------------

REMOVAL_SIZES = {
    "hd": SizeSpec("hd" + REMOVAL_SUFFIX, "long", NAMED_LONG_SIDES["hd"]),
    "512": SizeSpec("512" + REMOVAL_SUFFIX, "square", 512),
}
REMOVAL_COLUMNS = ("case_id", "photo", "size", "crop", "removed", "mask_method")


@dataclass(frozen=True)
class RemovalSpec:
    """One row of removals.tsv: what to remove from which photo, at which size.

    size "hd": the whole photo scaled to a long side of 1920; "512": crop (x, y, w, h, a square in the
    photo's own pixels) scaled to 512x512. The mask PNG <case_id>.png has the case's size, white = hole.
    """

    case_id: str
    photo: str  # path relative to the photo folder (data/photos/val)
    size: str
    crop: tuple[int, int, int, int] | None
    removed: str
    mask_method: str
    folder: Path = REMOVALS_DIR  # where the manifest and its masks are

    @property
    def mask_path(self) -> Path:
        return self.folder / f"{self.case_id}.png"


def read_removals(manifest: Path | None = None) -> list[RemovalSpec]:
    """The rows of a removals manifest (default REMOVALS_MANIFEST; tab-separated, header
    REMOVAL_COLUMNS), checked for shape."""
    manifest = manifest or REMOVALS_MANIFEST
    with manifest.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or tuple(rows[0]) != REMOVAL_COLUMNS:
        raise EvaluationError(f"{manifest} must start with the header {' '.join(REMOVAL_COLUMNS)}.")
    specs = []
    for number, row in enumerate(rows[1:], start=2):
        where = f"{manifest}:{number}"
        if len(row) != len(REMOVAL_COLUMNS):
            raise EvaluationError(f"{where}: expected {len(REMOVAL_COLUMNS)} columns, got {len(row)}.")
        case_id, photo, size, crop_text, removed, method = row
        if size not in REMOVAL_SIZES:
            raise EvaluationError(f"{where}: size must be one of {', '.join(REMOVAL_SIZES)}.")
        numbers = [int(part) for part in crop_text.split(",")] if crop_text else []
        crop = (numbers[0], numbers[1], numbers[2], numbers[3]) if len(numbers) == 4 else None
        square = crop is not None and crop[2] == crop[3] > 0
        if (size == "512" and not square) or (size == "hd" and crop_text):
            raise EvaluationError(f"{where}: a 512 case needs a square crop x,y,w,h; an hd case none.")
        specs.append(RemovalSpec(case_id, photo, size, crop, removed, method, manifest.parent))
    if len({spec.case_id for spec in specs}) != len(specs):
        raise EvaluationError(f"{manifest}: case ids must be unique.")
    return specs


def load_removal_mask(spec: RemovalSpec) -> np.ndarray:
    """The committed mask of a removal case: (H, W) uint8 {0, 255}."""
    with Image.open(spec.mask_path) as image:
        return np.where(np.asarray(image.convert("L")) >= 128, 255, 0).astype(np.uint8)


def removal_case(photo: Photo, spec: RemovalSpec) -> Case:
    """The case of one removal row: the photo scaled (hd) or cropped and scaled (512), with its mask."""
    height, width = photo.pixels.shape[:2]
    size = REMOVAL_SIZES[spec.size]
    if spec.crop is None:
        scale = size.pixels / max(height, width)
        image = _resize(photo.pixels, max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        left, top, side, _ = spec.crop
        if left < 0 or top < 0 or left + side > width or top + side > height:
            raise EvaluationError(
                f"Removal case {spec.case_id}: crop {spec.crop} leaves the {width}x{height} photo."
            )
        scale = size.pixels / side
        square = np.ascontiguousarray(photo.pixels[top : top + side, left : left + side])
        image = _resize(square, size.pixels, size.pixels)
    mask = load_removal_mask(spec)
    if mask.shape != image.shape[:2]:
        raise EvaluationError(
            f"Removal case {spec.case_id}: mask {mask.shape[1]}x{mask.shape[0]} does not fit the "
            f"{image.shape[1]}x{image.shape[0]} case (was {spec.photo} replaced?)."
        )
    return Case(spec.case_id, size, np.ascontiguousarray(image), mask, upscaled=scale > 1.0, kind=REMOVAL)


def removal_cases(photos_dir: Path, manifest: Path | None = None) -> Iterator[Case]:
    """Every committed object-removal case, in manifest order (photos are loaded as cases are drawn).

    Raises EvaluationError before yielding anything when a photo is missing (data not built).
    """
    specs = read_removals(manifest)
    missing = list(dict.fromkeys(spec.photo for spec in specs if not (photos_dir / spec.photo).is_file()))
    if missing:
        raise EvaluationError(
            f"{len(missing)} photos of the object-removal cases are missing from {photos_dir} "
            f"(e.g. {missing[0]}). {BUILD_HINT}, or pass --photos DIR."
        )
    return (removal_case(load_photo(photos_dir / spec.photo), spec) for spec in specs)


def select_cases(
    case_set: str,
    photo_paths: Sequence[Path],
    sizes: Sequence[SizeSpec],
    seed: int,
    mask_kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
    photos_dir: Path | None = None,
) -> tuple[Iterator[Case], int]:
    """The cases of --cases (CASE_SETS) and how many there are: random holes on photo_paths x sizes,
    the object removals of photos_dir, or both (random first)."""
    if case_set not in CASE_SETS:
        raise EvaluationError(f"Unknown case set {case_set!r}: use {', '.join(CASE_SETS)}.")
    chosen: list[Iterator[Case]] = []
    count = 0
    if case_set in ("random", "both"):
        chosen.append(iter_cases(photo_paths, sizes, seed, mask_kind, hole_fraction))
        count += len(photo_paths) * len(sizes)
    if case_set in ("removals", "both"):
        if photos_dir is None:
            raise EvaluationError("Object-removal cases need the photo folder (--photos DIR).")
        chosen.append(removal_cases(photos_dir))  # checks every photo now, before any case runs
        count += len(read_removals())
    return itertools.chain(*chosen), count


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if (width, height) == (pixels.shape[1], pixels.shape[0]):
        return pixels
    enlarging = width > pixels.shape[1]
    resample = Image.Resampling.BICUBIC if enlarging else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample))

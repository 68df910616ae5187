"""Evaluation cases: validation photos cropped or scaled to a size, each with a seeded hole mask."""

from __future__ import annotations

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
    """One image + hole at one size. image is the ground truth; mask is (H, W) uint8 {0, 255}."""

    photo: str
    size: SizeSpec
    image: np.ndarray
    mask: np.ndarray
    upscaled: bool  # the photo had to be enlarged to reach this size

    @property
    def hole_fraction(self) -> float:
        return float(np.count_nonzero(self.mask)) / self.mask.size


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


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if (width, height) == (pixels.shape[1], pixels.shape[0]):
        return pixels
    enlarging = width > pixels.shape[1]
    resample = Image.Resampling.BICUBIC if enlarging else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample))

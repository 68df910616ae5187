"""Photos made ready to write: decoded and checked, kept or converted to RGB PNG, turned upright, and
fingerprinted so that copies (identical bytes, or the same picture re-encoded) are written once."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lab.dataset.errors import DatasetBuildError
from lab.dataset.files import write_if_changed

# Two photos whose 16x16 thumbnails differ by at most this much on average (0-255) and whose aspect
# ratios agree are one photo saved twice (e.g. a wallpaper re-encoded in a later release). Measured on
# the surveyed photos: copies <= 1.4, the closest distinct photos >= 8 (stereo pairs 14-18).
FINGERPRINT_SIZE = 16
NEAR_DUPLICATE_MAX_DISTANCE = 4.0
NEAR_DUPLICATE_MAX_ASPECT_DIFFERENCE = 0.02
# A photo may carry an alpha channel with a few see-through edge pixels (they are dropped); an image
# with more non-opaque pixels than this is an icon or a cut-out, and is refused.
MAX_TRANSPARENT_FRACTION = 0.01


@dataclass(frozen=True)
class PreparedImage:
    """A photo ready to be written: its bytes, extension, size and fingerprint."""

    data: bytes
    extension: str
    width: int
    height: int
    fingerprint: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def fingerprint(img: Image.Image) -> bytes:
    """A 16x16 RGB thumbnail (768 bytes, area-averaged): equal for re-encoded or rescaled copies."""
    size = FINGERPRINT_SIZE
    return img.convert("RGB").resize((size, size), Image.Resampling.BOX).tobytes()


def fingerprint_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two fingerprints, 0-255."""
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def prepare_image(data: bytes, conversions: Path | None = None, rotate_clockwise: int = 0) -> PreparedImage:
    """Check that ``data`` decodes completely; keep JPEG and plain RGB PNG bytes, else make RGB PNG.

    ``rotate_clockwise`` (0, 90, 180, 270) turns a photo stored sideways upright (written as PNG, so
    without another lossy step). ``conversions`` is a folder that keeps converted PNGs by the hash
    of their source, so a re-run does not encode them again.
    """
    if rotate_clockwise not in (0, *_CLOCKWISE):
        raise ValueError(f"rotation must be 0, 90, 180 or 270 degrees, not {rotate_clockwise}")
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        kind = img.format
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
            if np.count_nonzero(alpha < 255) > MAX_TRANSPARENT_FRACTION * alpha.size:
                raise DatasetBuildError("the image is largely transparent, so it is not a photo")
        keep = (kind == "JPEG" and img.mode in ("RGB", "L")) or (kind == "PNG" and img.mode == "RGB")
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        if rotate_clockwise:
            rgb = rgb.transpose(_CLOCKWISE[rotate_clockwise])
            keep = False
        print_ = fingerprint(rgb)
        if keep:
            extension = ".jpg" if kind == "JPEG" else ".png"
            return PreparedImage(data, extension, rgb.width, rgb.height, print_)
        key = hashlib.sha256(data).hexdigest() + (f"-cw{rotate_clockwise}" if rotate_clockwise else "")
        cached = conversions / f"{key}.png" if conversions else None
        if cached is not None and cached.is_file():
            return PreparedImage(cached.read_bytes(), ".png", rgb.width, rgb.height, print_)
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG", compress_level=6)
        if cached is not None:
            write_if_changed(cached, buffer.getvalue())
        return PreparedImage(buffer.getvalue(), ".png", rgb.width, rgb.height, print_)


@dataclass(frozen=True)
class KeptPhoto:
    """A photo already accepted into the data set (for duplicate checks)."""

    file: str
    sha256: str
    fingerprint: bytes
    aspect: float


class DuplicateIndex:
    """Photos accepted so far; finds byte-identical copies and near-duplicates of a new photo."""

    def __init__(
        self,
        max_distance: float = NEAR_DUPLICATE_MAX_DISTANCE,
        max_aspect_difference: float = NEAR_DUPLICATE_MAX_ASPECT_DIFFERENCE,
    ) -> None:
        self.max_distance = max_distance
        self.max_aspect_difference = max_aspect_difference
        self._by_sha: dict[str, KeptPhoto] = {}
        self._kept: list[KeptPhoto] = []

    def find(self, sha256: str, print_: bytes, width: int, height: int) -> tuple[str, KeptPhoto] | None:
        """("identical" | "near-duplicate", the kept photo) if the new photo repeats one, else None."""
        if sha256 in self._by_sha:
            return "identical", self._by_sha[sha256]
        aspect = width / height
        for kept in self._kept:
            if (
                abs(kept.aspect - aspect) <= self.max_aspect_difference * max(aspect, kept.aspect)
                and fingerprint_distance(kept.fingerprint, print_) <= self.max_distance
            ):
                return "near-duplicate", kept
        return None

    def add(self, file: str, sha256: str, print_: bytes, width: int, height: int) -> None:
        kept = KeptPhoto(file, sha256, print_, width / height)
        self._by_sha[sha256] = kept
        self._kept.append(kept)

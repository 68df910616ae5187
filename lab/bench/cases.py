"""Bench cases: sizes, an upscaled photo (or a procedural texture) and a blob-shaped hole."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = REPO / "samples" / "otters.jpg"
DEFAULT_OUT = REPO / "runs" / "bench"

NAMED_SIZES = {"512": (512, 512), "2k": (2048, 1080), "4k": (3840, 2160), "8k": (7680, 4320)}
DEFAULT_SIZES = ("512", "2k", "4k", "8k")
DEFAULT_HOLE_PERCENT = {"8k": 25.0}  # every other size: 10 %
COMPARE_HOLES = (5.0, 10.0, 25.0)

OURS = "hifill"
PEERS = ("telea", "ns", "patchmatch")
METHOD_TITLES = {
    OURS: "HiFill (ours, via ZeroMQ)",
    "telea": "OpenCV Telea",
    "ns": "OpenCV Navier-Stokes",
    "patchmatch": "PatchMatch",
}
OPENCV_RADIUS = 3
MB = 1_000_000

SERVE_CODE = "import sys; from backend.server import main; sys.exit(main(sys.argv[1:]))"
PEER_CHILD_CODE = (
    "import sys; from lab.bench.peers import peer_child_main; sys.exit(peer_child_main(sys.argv[1:]))"
)


class BenchError(Exception):
    """The bench cannot go on (a sentence for the person running it)."""


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One image size with one hole share."""

    size: str  # "512x512", "2K", "4K", "8K" or "WxH"
    width: int
    height: int
    hole_percent: float  # requested share of hole pixels

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def key(self) -> str:
        return f"{self.size} {self.hole_percent:g}%"


def parse_size(text: str) -> tuple[str, int, int]:
    """'512', '2k', '4k', '8k', 'N' (N x N) or 'WxH' -> (label, width, height)."""
    name = text.strip().lower()
    if name in NAMED_SIZES:
        width, height = NAMED_SIZES[name]
        return (f"{width}x{height}" if name == "512" else name.upper()), width, height
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", name)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use 512, 2k, 4k, 8k, N or WxH.")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"Size {width}x{height} is too small; use at least 32x32.")
    return f"{width}x{height}", width, height


def build_cases(sizes: Sequence[str], holes: Sequence[float] | None, compare: bool) -> list[Case]:
    """Cases in order of pixels, then hole share. holes=None: 5/10/25 % with --compare, else per size."""
    cases = []
    for text in sizes:
        label, width, height = parse_size(text)
        if holes:
            percents = list(holes)
        elif compare:
            percents = list(COMPARE_HOLES)
        else:
            percents = [DEFAULT_HOLE_PERCENT.get(text.strip().lower(), 10.0)]
        cases.extend(Case(label, width, height, percent) for percent in percents)
    unique = {case.key: case for case in cases}
    return sorted(unique.values(), key=lambda case: (case.pixels, case.hole_percent))


def natural_image(width: int, height: int, source: Path | None = DEFAULT_IMAGE) -> np.ndarray:
    """(height, width, 3) uint8: the source photo centre-cropped to the aspect ratio and resized.

    Without a readable source photo, a smooth multi-scale colour texture stands in.
    """
    if source is not None and Path(source).is_file():
        with Image.open(source) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        photo = ImageOps.fit(photo, (width, height), Image.Resampling.BICUBIC)
    else:
        photo = Image.fromarray(procedural_texture(min(width, 1024), min(height, 1024)))
        photo = photo.resize((width, height), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(photo, dtype=np.uint8))


def procedural_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour texture (octaves of upsampled noise), (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width, 3), dtype=np.float32)
    for octave in range(6):
        cells = 2 ** (octave + 2)
        noise = rng.integers(0, 256, (cells, max(2, cells * width // max(height, 1)), 3), dtype=np.uint8)
        layer = Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)
        total += np.asarray(layer, dtype=np.float32) * 0.6**octave
    total -= total.min()
    total *= 255.0 / max(float(total.max()), 1e-6)
    return total.astype(np.uint8)


@dataclass(frozen=True)
class _Ellipse:
    dx: float  # centre offset from the blob's centre, in blob units
    dy: float
    rx: float
    ry: float
    angle: float


def blob_mask(width: int, height: int, hole_percent: float, seed: int = 0) -> np.ndarray:
    """One connected blob-shaped hole (a union of rotated ellipses) covering about hole_percent %.

    (height, width) uint8, 255 = hole. The blob is star-shaped around its centre (every ellipse holds
    the centre), so its area grows with its scale; the scale is found by bisection on a small render.
    """
    if not 0.0 < hole_percent < 100.0:
        raise ValueError(f"hole share must lie between 0 and 100 %, got {hole_percent}")
    rng = np.random.default_rng(seed)
    centre = (width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6))
    ellipses = [
        _Ellipse(
            dx=rng.uniform(-0.35, 0.35),
            dy=rng.uniform(-0.35, 0.35),
            rx=rng.uniform(0.55, 1.0),
            ry=rng.uniform(0.55, 1.0),
            angle=rng.uniform(0.0, math.pi),
        )
        for _ in range(5)
    ]
    target = hole_percent / 100.0
    shrink = min(1.0, 512.0 / max(width, height))
    small = (max(8, round(width * shrink)), max(8, round(height * shrink)))
    low, high = 0.0, 2.0 * max(width, height)
    for _ in range(40):
        scale = (low + high) / 2
        share = _render_blob(small, centre, ellipses, scale, shrink).mean() / 255.0
        low, high = (scale, high) if share < target else (low, scale)
    return _render_blob((width, height), centre, ellipses, (low + high) / 2, 1.0)


def _render_blob(
    size: tuple[int, int],
    centre: tuple[float, float],
    ellipses: Sequence[_Ellipse],
    scale: float,
    zoom: float,
) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    angles = np.linspace(0.0, 2.0 * math.pi, 96, endpoint=False)
    for e in ellipses:
        cx = (centre[0] + e.dx * scale) * zoom
        cy = (centre[1] + e.dy * scale) * zoom
        x = e.rx * scale * zoom * np.cos(angles)
        y = e.ry * scale * zoom * np.sin(angles)
        cos, sin = math.cos(e.angle), math.sin(e.angle)
        points = list(zip((cx + x * cos - y * sin).tolist(), (cy + x * sin + y * cos).tolist(), strict=True))
        draw.polygon(points, fill=255)
    return np.asarray(canvas, dtype=np.uint8)


class CaseData:
    """Images (one per size) and masks (one per case), made once and reused by every method."""

    def __init__(self, source: Path | None, seed: int = 0) -> None:
        self.source = source
        self.seed = seed
        self._images: dict[tuple[int, int], np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}

    def image(self, width: int, height: int) -> np.ndarray:
        if (width, height) not in self._images:
            self._images[(width, height)] = natural_image(width, height, self.source)
        return self._images[(width, height)]

    def mask(self, case: Case) -> np.ndarray:
        if case.key not in self._masks:
            self._masks[case.key] = blob_mask(case.width, case.height, case.hole_percent, self.seed)
        return self._masks[case.key]

    def hole_share(self, case: Case) -> float:
        return float(np.count_nonzero(self.mask(case))) / case.pixels


@dataclass
class BenchSettings:
    cases: list[Case]
    repeats: int = 3
    compare: bool = False
    peers: tuple[str, ...] = PEERS
    cap_s: float = 120.0
    transport: tuple[str, int, int] | None = ("8K", 7680, 4320)
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    allow_untrained: bool = False
    working_size: int | None = None
    image: Path | None = DEFAULT_IMAGE
    out: Path = DEFAULT_OUT
    progress: bool = True
    paused: str = ""
    command: str = "python -m backend bench"

"""Contact sheets of an evaluation: input with hole, mask, every method, ground truth (and 1:1 zooms)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lab import masks
from lab.evaluation.cases import Case
from lab.evaluation.methods import METHOD_TITLES

ZOOM_ABOVE = 1024  # sizes with a long side above this also get a sheet of 1:1 crops


@dataclass
class SheetBuilder:
    """Collects thumbnail rows for the first `rows` cases of each size, then writes PNG sheets."""

    method_names: Sequence[str]
    rows: int = 6
    tile: int = 224
    zoom: int = 320
    _tiles: dict[str, list[list[Image.Image]]] = field(default_factory=dict)
    _zooms: dict[str, list[list[Image.Image]]] = field(default_factory=dict)

    def wants(self, case: Case) -> bool:
        return len(self._tiles.get(case.size.label, [])) < self.rows

    def add(self, case: Case, outputs: dict[str, np.ndarray]) -> None:
        shown = case.image.copy()
        shown[case.mask > 127] = (255, 255, 255)
        mask_rgb = np.repeat(case.mask[..., None], 3, axis=2)
        panels = [shown, mask_rgb] + [outputs[name] for name in self.method_names] + [case.image]
        self._tiles.setdefault(case.size.label, []).append([self._thumb(p) for p in panels])
        if max(case.image.shape[:2]) > ZOOM_ABOVE:
            top, left = _hole_window(case.mask, self.zoom)
            crop = (slice(top, top + self.zoom), slice(left, left + self.zoom))
            zooms = [Image.fromarray(np.ascontiguousarray(p[crop])) for p in panels]
            self._zooms.setdefault(case.size.label, []).append(zooms)

    def write(self, out_dir: Path) -> list[Path]:
        titles = (
            ["input + hole", "mask"] + [METHOD_TITLES.get(n, n) for n in self.method_names] + ["original"]
        )
        written = []
        for label, rows in self._tiles.items():
            written.append(out_dir / f"sheet_{label}.png")
            grid(rows, titles, self.tile).save(written[-1])
        for label, rows in self._zooms.items():
            written.append(out_dir / f"sheet_{label}_zoom.png")
            zoom_titles = [f"{titles[0]} (1:1 crop)", *titles[1:]]
            grid(rows, zoom_titles, self.zoom).save(written[-1])
        return written

    def _thumb(self, pixels: np.ndarray) -> Image.Image:
        image = Image.fromarray(np.ascontiguousarray(pixels))
        image.thumbnail((self.tile, self.tile), Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (self.tile, self.tile), (32, 32, 32))
        tile.paste(image, ((self.tile - image.width) // 2, (self.tile - image.height) // 2))
        return tile


def _hole_window(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the size x size window (inside the image) holding the most hole pixels."""
    from scipy import ndimage

    height, width = mask.shape
    size_h, size_w = min(size, height), min(size, width)
    step = 8
    coarse = (
        (mask[: height // step * step, : width // step * step] > 127)
        .reshape(height // step, step, width // step, step)
        .mean(axis=(1, 3))
    )
    counts = ndimage.uniform_filter(
        coarse, size=(max(size_h // step, 1), max(size_w // step, 1)), mode="constant"
    )
    cy, cx = np.unravel_index(int(np.argmax(counts)), counts.shape)
    top = int(np.clip(cy * step + step // 2 - size_h // 2, 0, height - size_h))
    left = int(np.clip(cx * step + step // 2 - size_w // 2, 0, width - size_w))
    return top, left


def grid(rows: list[list[Image.Image]], titles: Sequence[str], tile: int, font_size: int = 13) -> Image.Image:
    """Tiles (rows of tile x tile images) on white under one line of column titles."""
    gap, header = 4, font_size + 7
    columns = len(titles)
    sheet = Image.new("RGB", (columns * (tile + gap) + gap, header + len(rows) * (tile + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = masks.label_font(font_size)
    for column, title in enumerate(titles):
        draw.text((gap + column * (tile + gap) + 2, 4), title, fill=(0, 0, 0), font=font)
    for row_index, row in enumerate(rows):
        for column, image in enumerate(row):
            sheet.paste(image, (gap + column * (tile + gap), header + gap + row_index * (tile + gap)))
    return sheet

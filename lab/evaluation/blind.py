"""Blind comparison kit: anonymous per-case sheets for human judges, and the key kept away from them.

`python -m backend evaluate ... --blind DIR` writes, as the cases go:

- DIR/sheets/case-001.png, ... — one sheet per case: the whole image (when the zoom is a part of it)
  and a zoom on the hole, both with the hole marked (tinted, outlined; its content is never shown),
  then every method's result in the same zoom, labelled only A, B, C ... in an order shuffled per
  sheet (seeded by the run's seed); no ground truth, no method name in the pixels, the file name or
  the PNG's metadata;
- DIR/key.json — which label is which method on every sheet, and the case behind it (organiser only);
- DIR/judges.md — what a judge does and the exact rank-file format (`case-001: C > A > B`).

`python -m backend tally` (lab/evaluation/tally.py) turns the judges' rank files into a table.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lab import masks
from lab.evaluation.cases import Case
from lab.evaluation.errors import EvaluationError

LABELS = string.ascii_uppercase
TILE = 448  # a zoom panel's side when the hole and its margin fit in it (small holes are enlarged)
MAX_TILE = 896  # holes up to this (with margin) are shown at 1:1; larger ones are scaled down to it
MAX_ENLARGE = 4  # small holes are enlarged at most this many times (then shown with more context)
HOLE_OUTLINE = (255, 0, 255)  # bright magenta ring just outside the hole
HOLE_TINT = (160, 96, 160)  # the hole itself: flat grey with a faint magenta tint (content hidden)
CROP_FRAME = (255, 255, 0)  # the zoom's rectangle on the whole-image panel
BACKGROUND = (48, 48, 48)
TEXT = (235, 235, 235)
SHEET_PREFIX = "case-"


# --------------------------------------------------------------------------------------------------
# Pure functions: labels, zoom window, hole marking, sheet
# --------------------------------------------------------------------------------------------------


def sheet_name(index: int) -> str:
    """Neutral name of the index-th sheet (1-based): case-001, case-002, ..."""
    return f"{SHEET_PREFIX}{index:03d}"


def shuffled_labels(method_names: Sequence[str], seed: int, sheet: str) -> dict[str, str]:
    """Label -> method for one sheet: A, B, C ... over the methods in an order drawn from (seed, sheet)."""
    if len(method_names) > len(LABELS):
        raise EvaluationError(f"A blind sheet holds at most {len(LABELS)} methods; got {len(method_names)}.")
    order = list(method_names)
    random.Random(f"blind:{seed}:{sheet}").shuffle(order)
    return dict(zip(LABELS[: len(order)], order, strict=True))


@dataclass(frozen=True)
class Zoom:
    """The crop shown for every method: rows top..top+height, cols left..left+width, times scale."""

    top: int
    left: int
    height: int
    width: int
    scale: float

    @property
    def panel_size(self) -> tuple[int, int]:
        """(width, height) of a zoom panel in sheet pixels."""
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[self.top : self.top + self.height, self.left : self.left + self.width]


def hole_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), bottom/right exclusive, of the hole's pixels; None without a hole."""
    hole = mask > 127
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def zoom_on_hole(
    mask: np.ndarray, tile: int = TILE, max_tile: int = MAX_TILE, margin: float = 0.25, min_margin: int = 16
) -> Zoom:
    """The hole's bounding box plus a context margin, made square where the image allows.

    A window that fits in `tile` is grown to tile // k and enlarged k <= MAX_ENLARGE times (nearest
    neighbour: every pixel stays a sharp k x k block); one up to `max_tile` is shown at 1:1; a larger
    one is scaled down to `max_tile`. The whole hole is always inside the window.
    """
    height, width = mask.shape
    box = hole_box(mask)
    if box is None:
        top, bottom, left, right = 0, height, 0, width
    else:
        top, bottom, left, right = box
    side = max(bottom - top, right - left)
    side += 2 * max(min_margin, round(margin * side))
    window = _window(top, bottom, left, right, side, height, width)
    longest = max(window[2], window[3])
    if longest > max_tile:
        return Zoom(*window, scale=max_tile / longest)
    if longest >= tile:
        return Zoom(*window, scale=1.0)
    factor = min(MAX_ENLARGE, max(1, tile // longest))
    return Zoom(*_window(top, bottom, left, right, tile // factor, height, width), scale=float(factor))


def _window(
    top: int, bottom: int, left: int, right: int, side: int, height: int, width: int
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a side x side window centred on the box, clamped into the image."""
    size_h, size_w = min(max(side, bottom - top), height), min(max(side, right - left), width)
    first_row = int(np.clip((top + bottom - size_h) // 2, 0, height - size_h))
    first_col = int(np.clip((left + right - size_w) // 2, 0, width - size_w))
    return first_row, first_col, size_h, size_w


def mark_hole(pixels: np.ndarray, mask: np.ndarray, outline: int = 2) -> np.ndarray:
    """Hole pixels set to a flat tint (its content hidden), a bright `outline`-pixel ring just outside."""
    from scipy import ndimage

    hole = mask > 127
    marked = pixels.copy()
    ring = ndimage.binary_dilation(hole, np.ones((3, 3), bool), iterations=outline) & ~hole
    marked[hole] = HOLE_TINT
    marked[ring] = HOLE_OUTLINE
    return marked


def _resized(pixels: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if (pixels.shape[1], pixels.shape[0]) == size:
        return np.ascontiguousarray(pixels)
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(size, resample))


def zoom_panel(pixels: np.ndarray, zoom: Zoom) -> np.ndarray:
    """The zoom window of an image, enlarged (nearest) or reduced (Lanczos) to the panel size."""
    return _resized(zoom.crop(pixels), zoom.panel_size, nearest=zoom.scale >= 1)


def marked_zoom_panel(image: np.ndarray, mask: np.ndarray, zoom: Zoom) -> np.ndarray:
    """The zoomed input with its hole marked at sheet resolution (a crisp ring whatever the scale)."""
    panel_mask = _resized(zoom.crop(mask), zoom.panel_size, nearest=True)
    return mark_hole(zoom_panel(image, zoom), panel_mask)


def overview_panel(image: np.ndarray, mask: np.ndarray, zoom: Zoom, size: tuple[int, int]) -> np.ndarray:
    """The whole image fitted into size (width, height), hole marked, the zoom window framed."""
    height, width = mask.shape
    scale = min(size[0] / width, size[1] / height)
    fitted = max(1, round(width * scale)), max(1, round(height * scale))
    small_mask = np.where(_resized(mask, fitted, nearest=False) >= 128, 255, 0).astype(np.uint8)
    marked = Image.fromarray(mark_hole(_resized(image, fitted, nearest=False), small_mask, outline=1))
    frame = [
        round(zoom.left * scale),
        round(zoom.top * scale),
        round((zoom.left + zoom.width) * scale) - 1,
        round((zoom.top + zoom.height) * scale) - 1,
    ]
    ImageDraw.Draw(marked).rectangle(frame, outline=CROP_FRAME, width=2)
    panel = Image.new("RGB", size, BACKGROUND)
    panel.paste(marked, ((size[0] - fitted[0]) // 2, (size[1] - fitted[1]) // 2))
    return np.asarray(panel)


def render_sheet(
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    results: Mapping[str, np.ndarray],
    zoom: Zoom,
) -> Image.Image:
    """One judge's sheet: header `name`, the whole image (unless the zoom is the whole image), the
    marked zoom, then the results in label order. results maps a label (A, B, ...) to a full
    pasted-back output.
    """
    panel_w, panel_h = zoom.panel_size
    panels = []
    if (zoom.height, zoom.width) != mask.shape:
        whole = overview_panel(image, mask, zoom, (panel_w, panel_h))
        panels.append(("whole image (hole marked, zoom framed)", whole))
    panels.append(("the hole to fill (marked)", marked_zoom_panel(image, mask, zoom)))
    panels += [(label, zoom_panel(results[label], zoom)) for label in sorted(results)]
    text_px = max(14, panel_w // 36)  # captions grow with the panels, so big sheets stay readable
    small, large = masks.label_font(text_px), masks.label_font(2 * text_px)
    gap, header, caption = 10, 3 * text_px, 2 * text_px + 8
    columns = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / columns)
    size = (gap + columns * (panel_w + gap), header + rows * (caption + panel_h + gap))
    sheet = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title = f"{name}   rank the lettered results, most convincing first"
    draw.text((gap, text_px // 2), title, fill=TEXT, font=masks.label_font(round(1.4 * text_px)))
    for index, (title, pixels) in enumerate(panels):
        x = gap + (index % columns) * (panel_w + gap)
        y = header + (index // columns) * (caption + panel_h + gap)
        letter = len(title) == 1
        draw.text((x, y + (2 if letter else text_px)), title, fill=TEXT, font=large if letter else small)
        sheet.paste(Image.fromarray(np.ascontiguousarray(pixels)), (x, y + caption))
    return sheet


def judges_guide(sheet_names: Sequence[str], method_count: int) -> str:
    """judges.md: the task, what to look for, and the rank-file format with every sheet's line."""
    letters = " > ".join(LABELS[:method_count])
    lines = [
        "# Judging inpainting results",
        "",
        f"Each sheet in `sheets/` shows one photo in which a region (the *hole*) was removed and filled "
        f"by {method_count} different methods. The first panels show the photo with the hole marked: "
        "its outline is bright magenta and its inside is tinted (you never see what was really there); "
        "on large photos a panel of the whole photo frames the zoomed part in yellow. The lettered panels "
        "show the same zoom, filled by each method.",
        "",
        "For every sheet, rank the lettered results from the most to the least convincing as a real "
        "photo in which the marked region was never damaged. Look for:",
        "",
        "- wrong content (things that do not belong there, broken lines or edges, wrong perspective);",
        "- blur or smudge, colour blobs, texture that is smoother or coarser than its surroundings;",
        "- seams along the outline of the hole;",
        "- repeated patterns or copied patches;",
        "- ghost outlines of something that seems to have been removed.",
        "",
        "Rank every letter of a sheet exactly once; ties are not allowed (if two look equally good, "
        "pick one). Judge each sheet on its own: letters are shuffled on every sheet.",
        "",
        "## Your rank file",
        "",
        "A plain text file, one line per sheet: the sheet's name, a colon, the letters from best to "
        "worst separated by `>`. Blank lines and everything after `#` are ignored; case and spaces do "
        "not matter. Example:",
        "",
        "```",
        f"{sheet_names[0] if sheet_names else sheet_name(1)}: {letters}",
        "```",
        "",
        "Copy the lines below into a file named after you (e.g. `alex.txt`: the tally names judges by "
        "their file) and fill them in; a line left empty counts as not judged:",
        "",
        "```",
        "# judge: <your name>",
        *(f"{name}: " for name in sheet_names),
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The writer used by lab.evaluate
# --------------------------------------------------------------------------------------------------


class BlindKit:
    """Writes one anonymous sheet per case as the cases go, then key.json and judges.md.

    key.json is rewritten after every sheet, so an interrupted run still leaves a consistent kit.
    """

    def __init__(self, directory: Path, method_names: Sequence[str], seed: int, tile: int = TILE) -> None:
        self.directory = Path(directory)
        self.sheets_dir = self.directory / "sheets"
        self.key_path = self.directory / "key.json"
        self.guide_path = self.directory / "judges.md"
        self.method_names = list(method_names)
        self.seed = seed
        self.tile = tile
        self.key: dict[str, dict] = {}
        shuffled_labels(self.method_names, seed, "check")  # too many methods: fail before any work
        earlier = sorted(self.sheets_dir.glob(f"{SHEET_PREFIX}*.png")) if self.sheets_dir.is_dir() else []
        if earlier or self.key_path.exists():
            raise EvaluationError(
                f"{self.directory} already holds a blind kit; pass an empty or new folder to --blind so "
                "old sheets cannot mix with the new key."
            )
        self.sheets_dir.mkdir(parents=True, exist_ok=True)

    def add(self, case: Case, outputs: Mapping[str, np.ndarray]) -> Path:
        """Render and write the next case's sheet; record its key entry. outputs: method -> pasted output."""
        name = sheet_name(len(self.key) + 1)
        labels = shuffled_labels(self.method_names, self.seed, name)
        zoom = zoom_on_hole(case.mask, self.tile, max(self.tile, 2 * self.tile))
        results = {label: outputs[method] for label, method in labels.items()}
        path = self.sheets_dir / f"{name}.png"
        render_sheet(name, case.image, case.mask, results, zoom).save(path)  # no text chunks
        self.key[name] = {
            "photo": case.photo,
            "size": case.size.label,
            "hole_fraction": round(case.hole_fraction, 4),
            "zoom": {
                "top": zoom.top,
                "left": zoom.left,
                "height": zoom.height,
                "width": zoom.width,
                "scale": zoom.scale,
            },
            "labels": labels,
        }
        self._write_key()
        return path

    def finish(self) -> list[Path]:
        """Write key.json and judges.md; returns the kit's paths (sheets folder, key, guide)."""
        self._write_key()
        self.guide_path.write_text(judges_guide(list(self.key), len(self.method_names)), encoding="utf-8")
        return [self.sheets_dir, self.key_path, self.guide_path]

    def _write_key(self) -> None:
        self.key_path.write_text(json.dumps(self.key, indent=1) + "\n", encoding="utf-8")

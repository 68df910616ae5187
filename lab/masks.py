"""On-the-fly hole masks for training and evaluation (paper section 3.5), no files, no downloads.

Two families, as in the paper:

- **free-form**: brush strokes with varying width (in the spirit of DeepFill v2's strokes and Liu et
  al. 2018's irregular masks), thin scratches, clusters of spots, and back-and-forth "manual erasing"
  scribbles;
- **object-shaped**: procedurally generated silhouettes standing in for segmentation templates —
  star-convex blobs, smoothed unions of ellipses and polygons, people, four-legged animals, vehicles
  (car, truck, bicycle), lathe-turned objects (vases, bottles, lamps) — as a single object, several
  objects, or a crowd, each randomly rotated, flipped and scaled.

Masks are (H, W) uint8 with 255 = hole and 0 = keep. Every random choice comes from the
`np.random.Generator` passed in, so a given generator state always yields the same mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("free_form", "object", "mixed")
HOLE = 255

_TEMPLATE_SIZE = 160  # object templates are drawn on a canvas this big, then rotated and scaled
_MAX_ELEMENTS = 48  # strokes/objects tried before the deterministic top-up takes over

Point = tuple[float, float]

_CIRCLE_COS = np.cos(np.linspace(0, 2 * math.pi, 24, endpoint=False))
_CIRCLE_SIN = np.sin(np.linspace(0, 2 * math.pi, 24, endpoint=False))
_THRESHOLD_128 = [0] * 128 + [255] * 128  # point() lookup tables that binarise an L image
_THRESHOLD_100 = [0] * 100 + [255] * 156


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def random_mask(
    rng: np.random.Generator,
    height: int,
    width: int,
    kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
) -> np.ndarray:
    """One random hole mask, (height, width) uint8 in {0, 255}.

    kind: "free_form", "object" or "mixed" (either family, sometimes both combined).
    The share of hole pixels always lies within hole_fraction = (low, high), inclusive: elements that
    would overshoot are rejected and an undershoot is topped up by growing the hole outwards.
    """
    if kind not in KINDS:
        raise ValueError(f"mask kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if height < 8 or width < 8:
        raise ValueError(f"masks need at least 8x8 pixels, got {width}x{height}")
    low, high = (float(v) for v in hole_fraction)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"hole_fraction must satisfy 0 <= low <= high <= 1, got {hole_fraction}")
    total = height * width
    min_px, max_px = math.ceil(low * total), math.floor(high * total)
    if min_px > max_px:
        raise ValueError(f"no pixel count of a {width}x{height} mask lies in {hole_fraction}")

    if max_px == 0 or min_px == total:  # the range leaves a single answer: no hole, or all hole
        return np.full((height, width), 0 if max_px == 0 else HOLE, dtype=np.uint8)
    if kind == "mixed":
        draw = rng.random()
        kind = "free_form" if draw < 0.45 else "object" if draw < 0.85 else "both"
    target_px = int(rng.integers(min_px, max_px + 1))
    builder = _MaskBuilder(rng, height, width, min_px, max_px, target_px)
    if kind == "free_form":
        builder.fill_with(_free_form_element)
    elif kind == "object":
        builder.fill_with(_object_scene_element)
    else:  # both families in one mask: an object plus strokes around it
        builder.target_px = min_px + (target_px - min_px) // 2
        builder.fill_with(_object_scene_element)
        builder.target_px = target_px
        builder.fill_with(_free_form_element)
    return builder.finish()


def mask_batch(
    rng: np.random.Generator,
    batch: int,
    height: int,
    width: int,
    kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
) -> np.ndarray:
    """`batch` masks for the trainer: (batch, 1, height, width) float32 in {0, 1}, 1 = hole."""
    out = np.empty((batch, 1, height, width), dtype=np.float32)
    for index in range(batch):
        out[index, 0] = random_mask(rng, height, width, kind, hole_fraction) == HOLE
    return out


def contact_sheet(
    seed: int = 0,
    rows_per_kind: int = 2,
    columns: int = 8,
    tile: int = 160,
    kinds: Sequence[str] = ("free_form", "object"),
    hole_fraction: tuple[float, float] = (0.05, 0.35),
) -> Image.Image:
    """A labelled grid of sample masks (holes drawn dark on white), for docs/masks.png."""
    rng = np.random.default_rng(seed)
    label_h, gap = 18, 4
    font = label_font()
    rows = rows_per_kind * len(kinds)
    sheet = Image.new("RGB", (columns * (tile + gap) + gap, rows * (tile + label_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for kind_index, kind in enumerate(kinds):
        for row in range(rows_per_kind):
            y0 = gap + (kind_index * rows_per_kind + row) * (tile + label_h + gap)
            for column in range(columns):
                x0 = gap + column * (tile + gap)
                mask = random_mask(rng, tile, tile, kind, hole_fraction)
                tile_rgb = np.full((tile, tile, 3), 245, np.uint8)
                tile_rgb[mask == HOLE] = (40, 40, 60)
                sheet.paste(Image.fromarray(tile_rgb), (x0, y0 + label_h))
                fraction = float(np.count_nonzero(mask)) / mask.size
                draw.text((x0 + 2, y0 + 2), f"{kind} {fraction:.0%}", fill=(0, 0, 0), font=font)
    return sheet


def write_contact_sheet(path: str, seed: int = 0) -> None:
    """Write the contact sheet shown in the docs (docs/masks.png) to `path`."""
    contact_sheet(seed=seed).save(path, optimize=True)


# --------------------------------------------------------------------------------------------------
# Filling a mask up to a target area
# --------------------------------------------------------------------------------------------------

# An element draws one stroke/object group onto `draw`. `scale` < 1 asks for a smaller element after
# rejections; `budget_px` is the hole area still wanted.
ElementFn = Callable[[np.random.Generator, ImageDraw.ImageDraw, "_MaskBuilder", float, int], None]


class _MaskBuilder:
    """Adds random elements to a PIL canvas until the hole area reaches the target, never above max."""

    def __init__(
        self, rng: np.random.Generator, height: int, width: int, min_px: int, max_px: int, target_px: int
    ) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.min_px, self.max_px, self.target_px = min_px, max_px, target_px
        self.unit = math.sqrt(height * width) / 512.0  # sizes below are given for a 512x512 mask
        self.canvas = Image.new("L", (width, height), 0)
        self._candidate = self.canvas
        self.hole_px = 0

    def fill_with(self, element: ElementFn) -> None:
        scale = 1.0
        enough = max(self.min_px, int(0.85 * self.target_px))  # close enough: no tiny last elements
        for _ in range(_MAX_ELEMENTS):
            if self.hole_px >= enough:
                return
            candidate = self._candidate = self.canvas.copy()
            element(self.rng, ImageDraw.Draw(candidate), self, scale, self.target_px - self.hole_px)
            count = _count_hole(candidate)
            if count > self.max_px:
                scale *= 0.7  # too big: try a smaller element
                continue
            self.canvas, self.hole_px = candidate, count

    def paste(self, shape: Image.Image, x: int, y: int) -> None:
        """Paint the 255-pixels of `shape` (mode L) onto the element being drawn, top-left at (x, y)."""
        self._candidate.paste(255, (x, y), shape)

    def finish(self) -> np.ndarray:
        mask = np.asarray(self.canvas).copy()
        mask[mask > 0] = HOLE
        count = int(np.count_nonzero(mask))
        if count < self.min_px:
            mask = _grow_to(mask, self.target_px, self.rng)
        return mask


def _count_hole(image: Image.Image) -> int:
    return int(np.count_nonzero(np.asarray(image)))


def _grow_to(mask: np.ndarray, target_px: int, rng: np.random.Generator) -> np.ndarray:
    """Grow the hole outwards (nearest pixels first) until it holds exactly target_px pixels."""
    from scipy import ndimage

    if not mask.any():  # seed an empty mask with one random pixel
        mask = mask.copy()
        mask[rng.integers(mask.shape[0]), rng.integers(mask.shape[1])] = HOLE
    distance = ndimage.distance_transform_edt(mask == 0)
    order = np.argsort(distance, axis=None, kind="stable")[:target_px]
    grown = np.zeros(mask.size, dtype=np.uint8)
    grown[order] = HOLE
    return grown.reshape(mask.shape)


# --------------------------------------------------------------------------------------------------
# Free-form elements
# --------------------------------------------------------------------------------------------------


def _free_form_element(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, builder: _MaskBuilder, scale: float, budget: int
) -> None:
    pick = rng.random()
    if pick < 0.5:
        _brush_stroke(rng, draw, builder, scale)
    elif pick < 0.65:
        _scratches(rng, draw, builder, scale)
    elif pick < 0.85:
        _spots(rng, draw, builder, scale)
    else:
        _erasing(rng, draw, builder, scale)


def _round_polyline(draw: ImageDraw.ImageDraw, points: Sequence[Point], widths: Sequence[float]) -> None:
    """Thick polyline whose segments have their own width, with round joints and caps."""
    for index, (start, end) in enumerate(zip(points[:-1], points[1:], strict=False)):
        width = max(1, int(round(widths[index])))
        draw.line([start, end], fill=255, width=width)
        for x, y in (start, end):
            r = width / 2.0
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)


def _brush_stroke(rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, scale: float) -> None:
    """A DeepFill-v2-like stroke: a random walk of 4–12 vertices, width drifting along the way."""
    vertices = int(rng.integers(4, 13))
    width = rng.uniform(12, 45) * b.unit * scale
    mean_step = math.hypot(b.width, b.height) / 9.0 * scale
    angle = rng.uniform(0, 2 * math.pi)
    turn = rng.uniform(0.2, 1.2)
    x, y = rng.uniform(0, b.width), rng.uniform(0, b.height)
    points, widths = [(x, y)], []
    for _ in range(vertices - 1):
        angle += rng.normal(0, turn)
        step = _clip(rng.normal(mean_step, mean_step / 2), mean_step / 5, 2 * mean_step)
        x = _clip(x + step * math.cos(angle), 0, b.width - 1)
        y = _clip(y + step * math.sin(angle), 0, b.height - 1)
        points.append((x, y))
        width *= math.exp(rng.normal(0, 0.2))
        widths.append(width)
    _round_polyline(draw, points, widths)


def _scratches(rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, scale: float) -> None:
    """1–4 long, thin, gently curving scratches (tears in an old photo)."""
    for _ in range(int(rng.integers(1, 5))):
        width = rng.uniform(2, 9) * b.unit * max(scale, 0.5)
        length = rng.uniform(0.3, 0.9) * math.hypot(b.width, b.height) * scale
        segments = 12
        angle = rng.uniform(0, 2 * math.pi)
        bend = rng.normal(0, 0.08)
        x, y = rng.uniform(0, b.width), rng.uniform(0, b.height)
        points, widths = [(x, y)], []
        for _ in range(segments):
            angle += bend + rng.normal(0, 0.05)
            x += length / segments * math.cos(angle)
            y += length / segments * math.sin(angle)
            points.append((x, y))
            widths.append(width * rng.uniform(0.7, 1.3))
        _round_polyline(draw, points, widths)


def _spots(rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, scale: float) -> None:
    """A cluster of ellipses and round spots (stains, dust, blemishes)."""
    cx, cy = rng.uniform(0, b.width), rng.uniform(0, b.height)
    spread = rng.uniform(20, 110) * b.unit * scale
    for _ in range(int(rng.integers(3, 16))):
        x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
        rx = rng.uniform(3, 30) * b.unit * scale
        ry = rx * rng.uniform(0.5, 1.5)
        _rotated_ellipse(draw, (x, y), rx, ry, rng.uniform(0, math.pi))


def _erasing(rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, scale: float) -> None:
    """Back-and-forth zig-zag of a wide brush, like someone rubbing something out."""
    width = rng.uniform(18, 50) * b.unit * scale
    cx, cy = rng.uniform(0, b.width), rng.uniform(0, b.height)
    extent = rng.uniform(50, 170) * b.unit * scale
    angle = rng.uniform(0, math.pi)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    passes = int(rng.integers(3, 9))
    points, widths = [], []
    for index in range(passes + 1):
        offset = (index / passes - 0.5) * extent * rng.uniform(0.8, 1.2)
        side = extent / 2 * (1 if index % 2 else -1) * rng.uniform(0.7, 1.1)
        point = np.array([cx, cy]) + across * offset + along * side
        points.append((float(point[0]), float(point[1])))
        widths.append(width * rng.uniform(0.8, 1.2))
    _round_polyline(draw, points, widths)


def _rotated_ellipse(draw: ImageDraw.ImageDraw, center: Point, rx: float, ry: float, angle: float) -> None:
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    xs = center[0] + rx * _CIRCLE_COS * cos_a - ry * _CIRCLE_SIN * sin_a
    ys = center[1] + rx * _CIRCLE_COS * sin_a + ry * _CIRCLE_SIN * cos_a
    draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255)


# --------------------------------------------------------------------------------------------------
# Object-shaped elements: templates drawn on a small canvas, then rotated, flipped, scaled, placed
# --------------------------------------------------------------------------------------------------


def _object_scene_element(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, scale: float, budget: int
) -> None:
    """A single object, a few separate objects, or a crowd of overlapping people."""
    total = b.width * b.height
    pick = rng.random()
    if pick < 0.55:
        area = max(budget * rng.uniform(0.8, 1.2), 0.03 * total) * scale
        _place_object(rng, draw, b, _random_template(rng), area)
    elif pick < 0.85:
        count = int(rng.integers(2, 5))
        for _ in range(count):
            area = max(budget / count * rng.uniform(0.5, 1.4), 0.008 * total) * scale
            _place_object(rng, draw, b, _random_template(rng), area)
    else:
        _crowd(rng, draw, b, max(budget, 0.04 * total) * scale)


def _random_template(rng: np.random.Generator) -> Image.Image:
    makers = (_blob, _smooth_union, _person, _animal, _vehicle, _lathe_object)
    weights = np.array([0.2, 0.2, 0.2, 0.14, 0.14, 0.12])
    return makers[int(rng.choice(len(makers), p=weights))](rng)


def _place_object(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    b: _MaskBuilder,
    template: Image.Image,
    area_px: float,
    center: Point | None = None,
    upright: bool = False,
) -> None:
    """Rotate, flip and scale a template so that it covers about area_px pixels, then paste it."""
    if rng.random() < 0.5:
        template = template.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if not upright and rng.random() < 0.15:
        template = template.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    angle = _object_angle(rng, upright)
    box = template.getbbox()
    if box is None:
        return
    template = template.crop(box).rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    template = template.crop(template.getbbox())
    tw, th = template.size
    coverage = max(_count_hole(template) / (tw * th), 0.05)
    stretch = rng.uniform(0.8, 1.25)  # aspect jitter
    side = math.sqrt(max(area_px, 16.0) / (coverage * tw * th))
    width = max(2, int(round(tw * side * stretch)))
    height = max(2, int(round(th * side / stretch)))
    limit = 1.3 * max(b.width, b.height)
    if max(width, height) > limit:  # never much larger than the image itself
        shrink = limit / max(width, height)
        width, height = max(2, int(width * shrink)), max(2, int(height * shrink))
    shape = template.resize((width, height), Image.Resampling.BILINEAR)
    shape = shape.point(_THRESHOLD_128)
    if center is None:
        center = (rng.uniform(0, b.width), rng.uniform(0, b.height))
    b.paste(shape, int(round(center[0] - width / 2)), int(round(center[1] - height / 2)))


def _object_angle(rng: np.random.Generator, upright: bool) -> float:
    """Degrees: upright things barely tilt; others mostly tilt a little, sometimes any way at all."""
    if upright:
        return float(rng.normal(0, 5))
    return float(rng.uniform(0, 360) if rng.random() < 0.3 else rng.normal(0, 15))


def _crowd(rng: np.random.Generator, draw: ImageDraw.ImageDraw, b: _MaskBuilder, area_px: float) -> None:
    """4–10 people of similar size standing in overlapping rows, like a group photo or a queue."""
    count = int(rng.integers(4, 11))
    each = area_px / count * 1.25  # they overlap
    base_y = rng.uniform(0.3, 0.9) * b.height
    person_w = math.sqrt(each / 0.35 / 2.6)  # people are ~2.6x as tall as wide, ~35% of their box
    start_x = rng.uniform(-0.2, 0.6) * b.width
    for index in range(count):
        x = start_x + index * person_w * rng.uniform(0.5, 0.9)
        y = base_y + rng.normal(0, 0.25) * person_w
        area = each * rng.uniform(0.8, 1.2)
        _place_object(rng, draw, b, _person(rng), area, center=(x, y), upright=True)


def _template_canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (_TEMPLATE_SIZE, _TEMPLATE_SIZE), 0)
    return image, ImageDraw.Draw(image)


def _blob(rng: np.random.Generator) -> Image.Image:
    """A star-convex blob: radius = 1 + a few random Fourier harmonics of the angle."""
    image, draw = _template_canvas()
    angles = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    radius = np.ones_like(angles)
    for harmonic in range(1, int(rng.integers(3, 8))):
        amplitude = rng.uniform(0, 0.45) / harmonic**1.1
        radius += amplitude * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    radius = np.clip(radius, 0.25, None)
    radius *= 0.45 * _TEMPLATE_SIZE / radius.max()
    c = _TEMPLATE_SIZE / 2
    points = list(
        zip((c + radius * np.cos(angles)).tolist(), (c + radius * np.sin(angles)).tolist(), strict=True)
    )
    draw.polygon(points, fill=255)
    return image


def _smooth_union(rng: np.random.Generator) -> Image.Image:
    """A union of random ellipses and polygons around the centre, blurred and re-thresholded."""
    image, draw = _template_canvas()
    c = _TEMPLATE_SIZE / 2
    for _ in range(int(rng.integers(3, 8))):
        x, y = c + rng.normal(0, 16), c + rng.normal(0, 16)
        if rng.random() < 0.6:
            _rotated_ellipse(draw, (x, y), rng.uniform(8, 30), rng.uniform(6, 24), rng.uniform(0, math.pi))
        else:
            corners = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
            radii = rng.uniform(10, 32, corners)
            xs, ys = x + radii * np.cos(angles), y + radii * np.sin(angles)
            draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
    return image.point(_THRESHOLD_100)


def _limb(
    draw: ImageDraw.ImageDraw, start: Point, angles: Sequence[float], lengths: Sequence[float], width: float
) -> Point:
    """Draw a jointed limb from start (angles in radians from straight down); return its end."""
    points = [start]
    x, y = start
    for angle, length in zip(angles, lengths, strict=True):
        x, y = x + length * math.sin(angle), y + length * math.cos(angle)
        points.append((x, y))
    _round_polyline(draw, points, [width] * (len(points) - 1))
    return points[-1]


def _person(rng: np.random.Generator) -> Image.Image:
    """A standing, walking or gesturing person: head, torso, two arms, two legs."""
    image, draw = _template_canvas()
    cx = _TEMPLATE_SIZE / 2
    head_r = rng.uniform(6, 9)
    head_y = 8 + head_r
    draw.ellipse([cx - head_r, head_y - head_r, cx + head_r, head_y + head_r], fill=255)
    shoulder_y, hip_y = head_y + head_r + 3, head_y + head_r + rng.uniform(38, 48)
    shoulder_w, hip_w = rng.uniform(11, 15), rng.uniform(8, 12)
    lean = rng.normal(0, 3)
    draw.polygon(
        [
            (cx - shoulder_w, shoulder_y),
            (cx + shoulder_w, shoulder_y),
            (cx + hip_w + lean, hip_y),
            (cx - hip_w + lean, hip_y),
        ],
        fill=255,
    )
    if rng.random() < 0.3:  # coat or dress widening below the hips
        hem = rng.uniform(14, 22)
        draw.polygon(
            [
                (cx - hip_w + lean, hip_y - 2),
                (cx + hip_w + lean, hip_y - 2),
                (cx + hem + lean, hip_y + 22),
                (cx - hem + lean, hip_y + 22),
            ],
            fill=255,
        )
    arm_w = rng.uniform(5, 8)
    for side in (-1, 1):
        upper = side * (rng.uniform(0.05, 0.6) if rng.random() < 0.7 else rng.uniform(0.6, 2.6))
        lower = upper + side * rng.uniform(-0.3, 1.2)
        hand = _limb(draw, (cx + side * (shoulder_w - 2), shoulder_y + 3), (upper, lower), (20, 18), arm_w)
        if rng.random() < 0.15:  # carrying a bag
            draw.rectangle([hand[0] - 6, hand[1], hand[0] + 6, hand[1] + 14], fill=255)
    leg_w = rng.uniform(7, 10)
    stride = rng.uniform(0, 0.45)
    for side in (-1, 1):
        upper = side * stride * rng.uniform(0.5, 1.0)
        lower = upper + rng.normal(0, 0.15)
        _limb(draw, (cx + side * hip_w * 0.5 + lean, hip_y - 2), (upper, lower), (24, 24), leg_w)
    return image


def _animal(rng: np.random.Generator) -> Image.Image:
    """A four-legged animal seen from the side: body, neck, head, legs, tail (dog, horse, cow, cat)."""
    image, draw = _template_canvas()
    body_l, body_h = rng.uniform(28, 42), rng.uniform(11, 20)
    cx, cy = _TEMPLATE_SIZE / 2, _TEMPLATE_SIZE / 2 - 5
    draw.ellipse([cx - body_l, cy - body_h, cx + body_l, cy + body_h], fill=255)
    neck_angle = rng.uniform(0.5, 1.3)  # radians above horizontal
    neck_len = rng.uniform(8, 28)
    neck_start = (cx + body_l * 0.75, cy - body_h * 0.3)
    head = (neck_start[0] + neck_len * math.cos(neck_angle), neck_start[1] - neck_len * math.sin(neck_angle))
    _round_polyline(draw, [neck_start, head], [rng.uniform(8, 14)])
    head_l, head_h = rng.uniform(8, 15), rng.uniform(5, 9)
    snout = rng.uniform(-0.6, 0.3)
    _rotated_ellipse(draw, (head[0] + head_l * 0.5, head[1]), head_l, head_h, snout)
    if rng.random() < 0.5:  # ears or horns
        draw.polygon(
            [
                (head[0] - 2, head[1] - head_h + 2),
                (head[0] + 4, head[1] - head_h + 2),
                (head[0], head[1] - head_h - rng.uniform(4, 10)),
            ],
            fill=255,
        )
    leg_len, leg_w = rng.uniform(18, 38), rng.uniform(4, 8)
    for offset in (-0.75, -0.55, 0.55, 0.75):
        swing = rng.normal(0, 0.25)
        _limb(
            draw,
            (cx + offset * body_l, cy + body_h * 0.5),
            (swing, swing + rng.normal(0, 0.15)),
            (leg_len / 2, leg_len / 2),
            leg_w,
        )
    tail_start = (cx - body_l * 0.95, cy - body_h * 0.3)
    tail_angle = rng.uniform(-2.6, -0.6)  # pointing back and up or down
    tail_len = rng.uniform(6, 26)
    tail_end = (
        tail_start[0] + tail_len * math.sin(tail_angle),
        tail_start[1] - tail_len * math.cos(tail_angle),
    )
    _round_polyline(draw, [tail_start, tail_end], [rng.uniform(2, 6)])
    return image


def _vehicle(rng: np.random.Generator) -> Image.Image:
    """A car, a truck or a bicycle in profile."""
    image, draw = _template_canvas()
    c = _TEMPLATE_SIZE / 2
    pick = rng.random()
    if pick < 0.75:  # car or truck: body, cabin, wheels
        length = rng.uniform(45, 58)
        body_h = rng.uniform(12, 20)
        top = c - body_h / 2
        truck = pick < 0.25
        draw.rounded_rectangle([c - length, top, c + length, top + body_h], radius=body_h * 0.35, fill=255)
        if truck:
            box_h = rng.uniform(20, 38)
            draw.rectangle([c - length, top - box_h, c + length * rng.uniform(0.2, 0.45), top + 2], fill=255)
            draw.rounded_rectangle(
                [c + length * 0.5, top - box_h * 0.6, c + length * 0.95, top + 2], radius=3, fill=255
            )
        else:
            roof_h = rng.uniform(10, 18)
            rear, front = rng.uniform(-0.75, -0.4) * length, rng.uniform(0.2, 0.55) * length
            slope = rng.uniform(6, 16)
            draw.polygon(
                [
                    (c + rear, top + 1),
                    (c + rear + slope * 0.6, top - roof_h),
                    (c + front - slope, top - roof_h),
                    (c + front, top + 1),
                ],
                fill=255,
            )
        wheel_r = rng.uniform(7, 11)
        for axle in (-0.65, 0.65):
            wx, wy = c + axle * length, top + body_h
            draw.ellipse([wx - wheel_r, wy - wheel_r, wx + wheel_r, wy + wheel_r], fill=255)
    else:  # bicycle: two rings and a frame, maybe a rider's silhouette is left to the person shapes
        wheel_r = rng.uniform(16, 22)
        gap = wheel_r * rng.uniform(2.1, 2.6)
        rear, front = (c - gap / 2, c + 10), (c + gap / 2, c + 10)
        ring = rng.uniform(3, 5)
        for wx, wy in (rear, front):
            draw.ellipse(
                [wx - wheel_r, wy - wheel_r, wx + wheel_r, wy + wheel_r], outline=255, width=int(ring)
            )
        seat = (c - gap * 0.1, c + 10 - wheel_r * 1.3)
        bar = (c + gap * 0.35, c + 10 - wheel_r * 1.45)
        crank = (c, c + 10)
        frame = [rear, seat, crank, rear, crank, bar, front, bar, seat]
        _round_polyline(draw, frame, [rng.uniform(3, 5)] * (len(frame) - 1))
    return image


def _lathe_object(rng: np.random.Generator) -> Image.Image:
    """A symmetric turned object (vase, bottle, lamp, glass): a random smooth profile mirrored."""
    image, draw = _template_canvas()
    c = _TEMPLATE_SIZE / 2
    height = rng.uniform(70, 110)
    knots = int(rng.integers(4, 8))
    knot_y = np.linspace(0, 1, knots)
    knot_r = rng.uniform(0.15, 1.0, knots) * rng.uniform(18, 35)
    ys = np.linspace(0, 1, 32)
    radius = np.interp(ys, knot_y, knot_r)
    radius = np.convolve(np.pad(radius, 2, mode="edge"), np.ones(5) / 5, mode="valid") + 2
    top = c - height / 2
    right = [(c + r, top + y * height) for r, y in zip(radius.tolist(), ys.tolist(), strict=True)]
    left = [(c - r, top + y * height) for r, y in zip(radius.tolist(), ys.tolist(), strict=True)]
    draw.polygon(right + left[::-1], fill=255)
    return image


def label_font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px for contact-sheet labels (a fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType support
        return ImageFont.load_default()

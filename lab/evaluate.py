"""Evaluation harness: our model against classical baselines on the same photos and holes.

`python -m backend evaluate [--photos DIR] [--weights W] [--count N] [--sizes 512,hd] [--out DIR]
[--seed S] [--methods hifill,telea,ns] [--cases random|removals|both]`

For every validation photo and every requested size the harness builds one case — a 512x512 crop
(or any NxN) or the whole photo scaled to a long side of 1920 ("hd", through CRA) — and one hole mask
from a fixed seed (lab.masks), then runs every method on exactly that case. Methods receive the
image with the hole blanked to 0, so none can peek at the ground truth; their output is pasted back
into the original outside the hole (as in the paper) before scoring. `--cases removals` (or `both`)
runs the committed object removals instead (or as well): hand-made masks over real objects of the
validation photos (lab/evaluation/removals), in their own tables ("hd-removal", "512-removal"), where
the scores against the original are "–" because the hole holds the object. It writes:

- OUT/results.md — a markdown table per size (mean ± std of in-hole L1, PSNR, SSIM, MS-SSIM, hole
  detail, time) with a "ground truth" row for the detail column, and how often each method's detail
  lies within 0.7x–1.3x of the truth's; also printed. Hole detail (lab.metrics.hole_detail) is the fine
  texture in the hole relative to a ring around it: ~0 for a flat or blurry fill, ~1 as textured as the
  surroundings; a fill looks right when it is near the photo's own value, not when it is highest;
- OUT/cases.csv — every case and method, one row each (detail_truth: the ground truth's hole detail);
- OUT/sheet_<size>.png — contact sheets: input with hole, mask, each method, ground truth; for sizes
  above 1024 px also OUT/sheet_<size>_zoom.png with 1:1 crops around the hole.

Methods are pluggable (lab/evaluation/methods.py): `METHOD_FACTORIES` maps a name to a factory
building a `Method`
(callable(image (H, W, 3) uint8, mask (H, W) uint8 {0, 255}) -> (H, W, 3) uint8).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend.options import add_engine_options
from lab import masks, metrics
from lab.evaluation.blind import BlindKit
from lab.evaluation.cases import (
    CASE_SETS,
    MASK_BASE,
    NAMED_LONG_SIDES,
    REMOVAL_SUFFIX,
    Case,
    Photo,
    SizeSpec,
    blank_hole,
    list_photos,
    make_case,
    parse_sizes,
    select_cases,
)
from lab.evaluation.errors import EvaluationError
from lab.evaluation.methods import (
    METHOD_FACTORIES,
    METHOD_TITLES,
    Method,
    MethodConfig,
    add_cache_option,
    build_methods,
    config_from_options,
    mean_colour_method,
)
from lab.evaluation.sheets import SheetBuilder, _hole_window

__all__ = [  # re-exported for callers of the evaluation as one module
    "Case",
    "EvaluationError",
    "METHOD_FACTORIES",
    "Method",
    "MethodConfig",
    "Photo",
    "SizeSpec",
    "_hole_window",
    "build_methods",
    "list_photos",
    "make_case",
    "mean_colour_method",
    "parse_sizes",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = REPO_ROOT / "data" / "photos" / "val"
DEFAULT_OUT = Path("runs") / "evaluate"


# --------------------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------------------

METRIC_COLUMNS = (
    ("l1_hole", "in-hole L1 ↓", 2),
    ("psnr_hole", "PSNR hole ↑", 2),
    ("psnr_image", "PSNR image ↑", 2),
    ("ssim_image", "SSIM image ↑", 4),
    ("ssim_hole", "SSIM hole ↑", 4),
    ("ms_ssim", "MS-SSIM ↑", 4),
    ("detail_hole", "detail ≈ truth", 2),
    ("seconds", "time (s)", 3),
)
DETAIL_BAND = (0.7, 1.3)  # a fill's hole detail within these multiples of the ground truth's looks right


@dataclass
class CaseResult:
    photo: str
    size: str
    method: str
    hole_fraction: float
    upscaled: bool
    scores: dict[str, float]


def paste_back(output: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Method output inside the hole, original pixels outside it (the paper's pasting back)."""
    return np.where((mask > 127)[..., None], output, original)


def score(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """All metrics of one pasted-back prediction. Arrays: (H, W, 3) uint8 and (H, W) uint8."""
    prediction, target = prediction.astype(np.float64), target.astype(np.float64)  # convert once
    ssim_values = _ssim_map_outside_identical(prediction, target, mask)
    radius = metrics.SSIM_WINDOW // 2
    hole_windows = metrics.hole_mask(mask)[radius:-radius, radius:-radius]
    scores = {
        "l1_hole": metrics.hole_l1(prediction, target, mask),
        "psnr_hole": metrics.psnr(prediction, target, mask),
        "psnr_image": metrics.psnr(prediction, target),
        "ssim_image": float(ssim_values.mean()),
        "ssim_hole": float(ssim_values[hole_windows].mean()) if hole_windows.any() else math.nan,
        "detail_hole": metrics.hole_detail(prediction, mask),
    }
    smallest = metrics.SSIM_WINDOW * 2 ** (len(metrics.MS_SSIM_WEIGHTS) - 1)
    scores["ms_ssim"] = metrics.ms_ssim(prediction, target) if min(mask.shape) >= smallest else math.nan
    return scores


def _ssim_map_outside_identical(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """metrics.ssim_map, computed only near the hole when the images agree elsewhere.

    A window whose pixels are identical in both images scores exactly 1, so only windows touching
    the hole's bounding box (grown by the window radius) need the filters; the rest are set to 1.
    """
    hole = mask > 127
    radius = metrics.SSIM_WINDOW // 2
    height, width = mask.shape
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0 or not np.array_equal(prediction[~hole], target[~hole]):
        return metrics.ssim_map(prediction, target)
    top, bottom = max(rows[0] - 2 * radius, 0), min(rows[-1] + 2 * radius + 1, height)
    left, right = max(cols[0] - 2 * radius, 0), min(cols[-1] + 2 * radius + 1, width)
    values = np.ones((height - 2 * radius, width - 2 * radius))
    if bottom - top >= metrics.SSIM_WINDOW and right - left >= metrics.SSIM_WINDOW:
        crop = (slice(top, bottom), slice(left, right))
        values[top : bottom - 2 * radius, left : right - 2 * radius] = metrics.ssim_map(
            prediction[crop], target[crop]
        )
    else:  # a sliver of a hole against a border: no shortcut
        values = metrics.ssim_map(prediction, target)
    return values


# Scores that compare a fill with the image under the hole: nan for object removals (no ground truth).
GROUND_TRUTH_METRICS = frozenset(
    {"l1_hole", "psnr_hole", "psnr_image", "ssim_image", "ssim_hole", "ms_ssim", "detail_truth"}
)


def run_case(
    case: Case, name: str, method: Method, truth_detail: float | None = None
) -> tuple[CaseResult, np.ndarray]:
    """Run one method on one case; returns its scores and the pasted-back output (H, W, 3) uint8.

    truth_detail: the ground truth's hole detail (scores["detail_truth"]), computed here when None.
    """
    blanked = blank_hole(case.image, case.mask)
    start = time.perf_counter()
    output = method(blanked, case.mask.copy())
    seconds = time.perf_counter() - start
    output = np.asarray(output)
    if output.shape != case.image.shape or output.dtype != np.uint8:
        raise EvaluationError(
            f"Method {name} returned {output.dtype} {output.shape}; expected uint8 {case.image.shape}."
        )
    pasted = paste_back(output, case.image, case.mask)
    scores = score(pasted, case.image, case.mask)
    scores["seconds"] = seconds
    scores["detail_truth"] = (
        metrics.hole_detail(case.image, case.mask) if truth_detail is None else truth_detail
    )
    if case.is_removal:  # the pixels under the hole are the removed object: nothing to compare with
        scores.update(dict.fromkeys(GROUND_TRUTH_METRICS & scores.keys(), math.nan))
    result = CaseResult(case.photo, case.size.label, name, case.hole_fraction, case.upscaled, scores)
    return result, pasted


def warm_up(methods: dict[str, Method]) -> None:
    """One small untimed call per method, so first-call costs (allocations, JIT, caches) are not timed."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 50:90] = 255
    for method in methods.values():
        method(blank_hole(image, mask), mask)


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def summary_tables(results: Sequence[CaseResult], method_names: Sequence[str]) -> str:
    """Markdown: one table per size, mean ± std per metric, n cases; win rates of the first method."""
    lines = []
    for size in dict.fromkeys(result.size for result in results):
        of_size = [result for result in results if result.size == size]
        upscaled = len({r.photo for r in of_size if r.upscaled})
        photos = len({r.photo for r in of_size})
        noun = "cases" if size.endswith(REMOVAL_SUFFIX) else "photos"  # a removal's "photo" is its case id
        lines.append(f"### {_size_title(size)} — {photos} {noun} ({upscaled} enlarged to reach this size)\n")
        header = ["method", "n"] + [title for _, title, _ in METRIC_COLUMNS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for name in method_names:
            rows = [result for result in of_size if result.method == name]
            if not rows:
                continue
            cells = [METHOD_TITLES.get(name, name), str(len(rows))]
            for key, _, digits in METRIC_COLUMNS:
                cells.append(_mean_std([row.scores[key] for row in rows], digits))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(_truth_row(of_size))
        lines.append("")
        lines.extend(_win_rates(of_size, method_names))
        lines.extend(_detail_band(of_size, method_names))
    return "\n".join(lines)


def _truth_details(results: Sequence[CaseResult]) -> dict[str, float]:
    """The ground truth's hole detail per photo (the same for every method of a case)."""
    return {r.photo: r.scores.get("detail_truth", math.nan) for r in results}


def _truth_row(results: Sequence[CaseResult]) -> str:
    """Table row "ground truth": its hole detail; no other column applies ("–")."""
    truth = _truth_details(results)
    cells = ["ground truth", str(len(truth))]
    for key, _, digits in METRIC_COLUMNS:
        cells.append(_mean_std(list(truth.values()), digits) if key == "detail_hole" else "–")
    return "| " + " | ".join(cells) + " |"


def _detail_band(results: Sequence[CaseResult], method_names: Sequence[str]) -> list[str]:
    """How often each method's hole detail lies within DETAIL_BAND times the ground truth's."""
    truth = _truth_details(results)
    low, high = DETAIL_BAND
    counts = []
    for name in method_names:
        ratios = [
            r.scores["detail_hole"] / truth[r.photo]
            for r in results
            if r.method == name and truth[r.photo] > 0 and math.isfinite(r.scores["detail_hole"])
        ]
        if ratios:
            inside = sum(low <= ratio <= high for ratio in ratios)
            counts.append(f"{METHOD_TITLES.get(name, name)} {inside} of {len(ratios)}")
    if not counts:
        return []
    return [
        f"- Hole detail within the target band ({low}x–{high}x the ground truth's, as detailed as the "
        f"photo itself): {', '.join(counts)} cases.",
        "",
    ]


def _size_title(label: str) -> str:
    if label.endswith(REMOVAL_SUFFIX):
        base = label.removesuffix(REMOVAL_SUFFIX)
        return f"object removals, {'512² crops' if base == '512' else _size_title(base)}"
    if label.isdigit():
        return f"{label}×{label} crops"
    long_side = NAMED_LONG_SIDES.get(label, label[4:] if label.startswith("long") else label)
    return f"{label.upper()} (long side {long_side}, through CRA)"


def _mean_std(values: Sequence[float], digits: int) -> str:
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return "inf" if any(math.isinf(v) for v in values) else "–"
    text = f"{finite.mean():.{digits}f} ± {finite.std():.{digits}f}"
    skipped = len(values) - finite.size
    return text + (f" ({skipped} inf)" if skipped else "")


def _win_rates(results: Sequence[CaseResult], method_names: Sequence[str]) -> list[str]:
    if len(method_names) < 2:
        return []
    first = method_names[0]
    l1 = {(r.photo, r.method): r.scores["l1_hole"] for r in results if math.isfinite(r.scores["l1_hole"])}
    photos = list(dict.fromkeys(r.photo for r in results))
    lines = []
    for other in method_names[1:]:
        pairs = [(l1[(p, first)], l1[(p, other)]) for p in photos if (p, first) in l1 and (p, other) in l1]
        if pairs:
            wins = sum(a < b for a, b in pairs)
            lines.append(
                f"- {METHOD_TITLES.get(first, first)} has the lower in-hole L1 than "
                f"{METHOD_TITLES.get(other, other)} on {wins} of {len(pairs)} cases."
            )
    return lines + [""] if lines else []


def write_cases_csv(path: Path, results: Sequence[CaseResult]) -> None:
    keys = [key for key, _, _ in METRIC_COLUMNS] + ["detail_truth"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["photo", "size", "method", "hole_fraction", "upscaled", *keys])
        for r in results:
            row = [r.photo, r.size, r.method, f"{r.hole_fraction:.4f}", int(r.upscaled)]
            writer.writerow(row + [f"{r.scores.get(key, math.nan):.6g}" for key in keys])


# --------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    results: list[CaseResult]
    markdown: str
    files: list[Path]


def evaluate(
    photo_paths: Sequence[Path],
    methods: dict[str, Method],
    sizes: Sequence[SizeSpec],
    out_dir: Path,
    seed: int = 0,
    mask_kind: str = "mixed",
    hole_fraction: tuple[float, float] = (0.05, 0.35),
    sheet_rows: int = 6,
    progress: bool = True,
    header: str = "",
    blind_dir: Path | None = None,
    case_set: str = "random",
    photos_dir: Path | None = None,
) -> EvaluationReport:
    """Run every method on every case, write results.md, cases.csv and contact sheets into out_dir
    (with blind_dir, also a blind comparison kit there: lab/evaluation/blind.py).

    case_set: "random" (seeded holes on photo_paths x sizes), "removals" (the committed object
    removals of lab/evaluation/removals, photos from photos_dir) or "both"."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(methods)
    sheets = SheetBuilder(names, rows=sheet_rows)
    blind = BlindKit(blind_dir, names, seed) if blind_dir is not None else None
    results: list[CaseResult] = []
    cases, case_count = select_cases(
        case_set, photo_paths, sizes, seed, mask_kind, hole_fraction, photos_dir
    )  # before the warm-up: missing photos fail fast
    warm_up(methods)
    total = case_count * len(names)
    with tqdm(total=total, desc="evaluate", unit="fill", disable=not progress, dynamic_ncols=True) as bar:
        for case in cases:
            outputs = {}
            truth_detail = metrics.hole_detail(case.image, case.mask)
            for name, method in methods.items():
                bar.set_postfix_str(f"{case.size.label} {case.photo[:24]} {name}")
                result, outputs[name] = run_case(case, name, method, truth_detail)
                results.append(result)
                bar.update()
            if sheets.wants(case):
                sheets.add(case, outputs)
            if blind is not None:
                blind.add(case, outputs)
    markdown = header + summary_tables(results, names)
    results_path = out_dir / "results.md"
    results_path.write_text(markdown + "\n", encoding="utf-8")
    csv_path = out_dir / "cases.csv"
    write_cases_csv(csv_path, results)
    files = [results_path, csv_path, *sheets.write(out_dir), *(blind.finish() if blind else [])]
    return EvaluationReport(results, markdown, files)


def _report_header(args: argparse.Namespace, methods: dict[str, Method], photos: Sequence[Path]) -> str:
    lines = [
        "# Inpainting evaluation\n",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `python -m backend evaluate {' '.join(args.argv)}`",
        f"- photos: {len(photos)} from `{args.photos}`; seed {args.seed}; masks: {args.mask_kind}, "
        f"hole fraction {args.hole_fraction[0]:.2f}–{args.hole_fraction[1]:.2f} (masks of large sizes are "
        f"drawn at a long side of {MASK_BASE} and scaled up)",
        f"- machine: {_cpu_model()}, {_cpu_count()} logical CPUs, Python {platform.python_version()}",
    ]
    if getattr(args, "cases", "random") != "random":
        lines.append(
            f"- cases: {args.cases}; object removals are the hand-made masks over real objects of "
            "lab/evaluation/removals (removals.tsv). Their hole holds the object itself, so the scores "
            "against the original (L1, PSNR, SSIM, MS-SSIM, the truth's detail) are – for them"
        )
    for name, method in methods.items():
        description = getattr(method, "description", None)
        if isinstance(description, dict):
            description = ", ".join(f"{key} {value}" for key, value in description.items())
        if description:
            lines.append(f"- {METHOD_TITLES.get(name, name)}: {description}")
    if "prefill" in methods:
        lines.append(
            f"- {METHOD_TITLES['prefill']}: the same weights with their learned correction layers zeroed, "
            "i.e. the harmonic prefill of the hole (backend/prefill.py) through the same CRA path"
        )
    if "coarse" in methods:
        lines.append(
            f"- {METHOD_TITLES['coarse']}: the same weights with the refine stage's contribution removed, "
            "i.e. the coarse stage's result pasted into the hole, through the same CRA path"
        )
    if "refine" in methods:
        lines.append(
            f"- {METHOD_TITLES['refine']}: the same weights and path with the generator's refine stage "
            "run (the patch path of weights that start from a prefill skips it: backend/texture.py); "
            "against HiFill (ours) it shows what the refine stage adds to the shipped path (with "
            "--detail attention, or weights without a prefill, HiFill runs the stage already and the rows "
            "are the same)"
        )
    if "telea" in methods or "ns" in methods:
        lines.append(f"- OpenCV inpaint radius {args.opencv_radius}")
    lines.append(
        "- Methods see the image with the hole blanked; outputs are pasted back outside the hole before "
        "scoring. L1 on the 0–255 scale over hole pixels; SSIM 11×11 Gaussian σ 1.5 (image: all windows; "
        "hole: windows centred in the hole); MS-SSIM over the whole image (only sizes ≥ 176 px); detail "
        "is the mean |grey − its Gaussian blur (σ 1.5)| in the hole eroded by 2 px over the same mean in a "
        f"ring of known pixels around the hole ({metrics.DETAIL_RING_AT_512} px at a long side of 512, "
        f"scaled, at least {metrics.DETAIL_RING_MIN} px): ~0 flat, ~1 as textured as the surroundings; the "
        f"target is the ground truth's own value (row 'ground truth'), within {DETAIL_BAND[0]}x–"
        f"{DETAIL_BAND[1]}x of it; time is wall time per image of the method call alone, after one "
        "warm-up call.\n"
    )
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend evaluate",
        description="Score our model and classical baselines on the same photos and generated holes.",
    )
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of validation photos")
    add_engine_options(parser, precision=False)
    parser.add_argument(
        "--count", type=int, default=None, help="evaluate N photos spread evenly over the folder"
    )
    parser.add_argument("--sizes", default="512,hd", help="comma list: N (NxN crop), hd, 2k, 4k, 8k, longN")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of crops and masks")
    parser.add_argument(
        "--methods", default="hifill,telea,ns", help=f"comma list from: {', '.join(METHOD_FACTORIES)}"
    )
    parser.add_argument("--mask-kind", default="mixed", choices=masks.KINDS)
    parser.add_argument(
        "--hole-fraction", default="0.05,0.35", type=_fraction_range, help="low,high share of hole pixels"
    )
    parser.add_argument("--opencv-radius", type=int, default=3, help="inpaint radius of the OpenCV methods")
    parser.add_argument("--sheet-rows", type=int, default=6, help="cases per contact sheet")
    parser.add_argument(
        "--blind",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write a blind comparison kit to DIR: anonymous sheets, key.json, judges.md",
    )
    parser.add_argument(
        "--cases",
        default="random",
        choices=CASE_SETS,
        help="random: seeded holes on --count photos at --sizes; removals: the committed object "
        "removals (lab/evaluation/removals, HD and 512² with their own tables); both",
    )
    add_cache_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _fraction_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError("expected two numbers like 0.05,0.35") from error
    if not 0 <= low <= high <= 1:
        raise argparse.ArgumentTypeError("need 0 <= low <= high <= 1")
    return low, high


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m backend evaluate`; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.count is not None and args.count < 1:
            raise EvaluationError("--count must be at least 1.")
        sizes = parse_sizes(args.sizes)
        photos = list_photos(args.photos, args.count) if args.cases != "removals" else []
        names = [name.strip() for name in args.methods.split(",") if name.strip()]
        if not names:
            raise EvaluationError("No methods given.")
        methods = build_methods(names, config_from_options(args))
        report = evaluate(
            photos,
            methods,
            sizes,
            args.out,
            seed=args.seed,
            mask_kind=args.mask_kind,
            hole_fraction=args.hole_fraction,
            sheet_rows=args.sheet_rows,
            progress=not args.no_progress,
            header=_report_header(args, methods, photos),
            blind_dir=args.blind,
            case_set=args.cases,
            photos_dir=args.photos,
        )
    except EvaluationError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    print("wrote " + ", ".join(str(path) for path in report.files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

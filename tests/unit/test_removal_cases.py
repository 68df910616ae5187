"""Committed object-removal cases: the manifest and masks (everywhere), loading them given the photos,
and their scoring (no ground truth in the hole)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab import evaluate as ev
from lab.evaluation import cases

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos" / "val"
SPECS = cases.read_removals()
HOLE_RANGE = (0.02, 0.25)


def test_the_manifest_has_enough_cases_of_both_sizes_from_enough_photos() -> None:
    sizes = [spec.size for spec in SPECS]
    assert sizes.count("hd") >= 16 and sizes.count("512") >= 16
    assert len({spec.photo for spec in SPECS}) >= 20
    for spec in SPECS:
        assert spec.removed and spec.mask_method
        assert "/" in spec.photo and not spec.photo.startswith("/")  # relative to data/photos/val
        if spec.size == "512":
            assert spec.crop is not None and spec.crop[2] == spec.crop[3] and min(spec.crop) >= 0
        else:
            assert spec.crop is None


@pytest.mark.parametrize("spec", SPECS, ids=[spec.case_id for spec in SPECS])
def test_every_mask_is_binary_sized_for_its_case_with_a_plausible_hole(spec: cases.RemovalSpec) -> None:
    with Image.open(spec.mask_path) as image:
        assert image.mode in ("1", "L")
        width, height = image.size
        values = np.unique(np.asarray(image.convert("L")))
    assert set(values.tolist()) <= {0, 255}
    if spec.size == "512":
        assert (width, height) == (512, 512)
    else:
        assert max(width, height) == 1920
    mask = cases.load_removal_mask(spec)
    assert HOLE_RANGE[0] <= np.count_nonzero(mask) / mask.size <= HOLE_RANGE[1]


def test_the_folder_holds_only_the_manifest_and_its_masks_and_stays_small() -> None:
    files = sorted(path.name for path in cases.REMOVALS_DIR.iterdir())
    assert files == sorted(["removals.tsv", *(f"{spec.case_id}.png" for spec in SPECS)])
    assert sum(path.stat().st_size for path in cases.REMOVALS_DIR.iterdir()) < 1_000_000


def test_malformed_manifests_are_refused(tmp_path: Path) -> None:
    header = "\t".join(cases.REMOVAL_COLUMNS)
    for body in (
        "a\tp/x.jpg\t512\t\twhat\thow",
        "a\tp/x.jpg\thd\t0,0,9,9\twhat\thow",
        "a\tp/x.jpg\t4k\t\tw\th",
    ):
        manifest = tmp_path / "removals.tsv"
        manifest.write_text(f"{header}\n{body}\n", encoding="utf-8")
        with pytest.raises(ev.EvaluationError):
            cases.read_removals(manifest)


def test_a_missing_photo_says_how_to_build_the_data(tmp_path: Path) -> None:
    with pytest.raises(ev.EvaluationError, match="build-dataset"):
        cases.removal_cases(tmp_path / "nowhere")
    with pytest.raises(ev.EvaluationError, match="build-dataset"):
        cases.select_cases("removals", [], [], 0, photos_dir=tmp_path)


def test_a_synthetic_photo_loads_as_a_removal_case(tmp_path: Path) -> None:
    """Loading without the real data: a 600x400 photo, an hd and a 512 row with their own masks."""
    photo = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    (tmp_path / "set").mkdir()
    Image.fromarray(photo).save(tmp_path / "set" / "p.png")
    hd_mask = np.zeros((1280, 1920), np.uint8)
    hd_mask[300:600, 400:900] = 255
    crop_mask = np.zeros((512, 512), np.uint8)
    crop_mask[100:300, 200:260] = 255
    Image.fromarray(hd_mask).convert("1").save(tmp_path / "big.png")
    Image.fromarray(crop_mask).save(tmp_path / "small.png")
    (tmp_path / "removals.tsv").write_text(
        "\t".join(cases.REMOVAL_COLUMNS)
        + "\nbig\tset/p.png\thd\t\ta box\thand polygon"
        + "\nsmall\tset/p.png\t512\t100,50,300,300\ta bar\thand polygon\n",
        encoding="utf-8",
    )
    big, small = cases.removal_cases(tmp_path, tmp_path / "removals.tsv")
    assert (big.photo, big.size.label, big.image.shape, big.kind) == (
        "big",
        "hd-removal",
        (1280, 1920, 3),
        "removal",
    )
    assert np.array_equal(big.mask, hd_mask) and big.is_removal and big.upscaled
    assert small.size.label == "512-removal" and small.image.shape == (512, 512, 3)
    expected = np.asarray(
        Image.fromarray(photo[50:350, 100:400]).resize((512, 512), Image.Resampling.BICUBIC)
    )
    assert np.array_equal(small.image, expected) and np.array_equal(small.mask, crop_mask)


@pytest.mark.skipif(
    not PHOTOS.is_dir(), reason="validation photos not built (python -m backend build-dataset)"
)
def test_every_committed_case_loads_from_the_validation_photos() -> None:
    loaded = list(cases.removal_cases(PHOTOS))
    assert [case.photo for case in loaded] == [spec.case_id for spec in SPECS]
    for case, spec in zip(loaded, SPECS, strict=True):
        assert case.image.shape[:2] == case.mask.shape and case.is_removal
        assert case.size.label == f"{spec.size}-removal"
        if spec.size == "hd":
            assert max(case.mask.shape) == 1920
        assert HOLE_RANGE[0] <= case.hole_fraction <= HOLE_RANGE[1]


def _removal_case() -> cases.Case:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:60, 20:70] = 255
    return cases.Case("r1", cases.REMOVAL_SIZES["512"], image, mask, upscaled=False, kind=cases.REMOVAL)


def test_removal_rows_get_nan_ground_truth_metrics_and_their_own_table() -> None:
    case = _removal_case()
    methods = ev.build_methods(["mean", "telea"], ev.MethodConfig())
    results = [ev.run_case(case, name, method)[0] for name, method in methods.items()]
    for result in results:
        assert result.size == "512-removal" and result.scores["seconds"] >= 0
        assert {"l1_hole", "psnr_hole", "ssim_hole", "ms_ssim"} <= ev.GROUND_TRUTH_METRICS
        for key in ev.GROUND_TRUTH_METRICS & result.scores.keys():
            assert math.isnan(result.scores[key]), key
    markdown = ev.summary_tables(results, list(methods))
    assert "### object removals, 512² crops — 1 cases" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| mean colour |"))
    assert row.split(" | ")[2] == "–"  # in-hole L1
    assert "lower in-hole L1" not in markdown  # no win rates without a ground truth


def test_evaluate_runs_random_and_removal_cases_in_separate_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    (photos / "set").mkdir(parents=True)
    y, x = np.mgrid[0:120, 0:160]
    pixels = np.stack([x + 40, y + 60, (x + y) // 2], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(photos / "set" / "p.png")
    removals = tmp_path / "removals"
    removals.mkdir()
    mask = np.zeros((1440, 1920), np.uint8)
    mask[500:800, 700:1100] = 255
    Image.fromarray(mask).save(removals / "r-hd.png")
    (removals / "removals.tsv").write_text(
        "\t".join(cases.REMOVAL_COLUMNS) + "\nr-hd\tset/p.png\thd\t\ta box\thand polygon\n", encoding="utf-8"
    )
    monkeypatch.setattr(cases, "REMOVALS_MANIFEST", removals / "removals.tsv")
    methods = {"mean": ev.mean_colour_method}
    report = ev.evaluate(
        [photos / "set" / "p.png"],
        methods,
        ev.parse_sizes("64"),
        tmp_path / "out",
        progress=False,
        case_set="both",
        photos_dir=photos,
    )
    assert [(r.photo, r.size) for r in report.results] == [("p", "64"), ("r-hd", "hd-removal")]
    assert math.isfinite(report.results[0].scores["l1_hole"])
    assert math.isnan(report.results[1].scores["l1_hole"])
    assert "### 64×64 crops" in report.markdown
    assert "### object removals, HD (long side 1920, through CRA) — 1 cases" in report.markdown
    assert (tmp_path / "out" / "sheet_hd-removal.png").is_file()


def test_select_cases_counts_random_and_removal_cases(tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((80, 120, 3), 90, np.uint8)).save(photo)
    chosen, count = cases.select_cases("random", [photo], cases.parse_sizes("64,96"), 0)
    assert count == 2 and len(list(chosen)) == 2
    with pytest.raises(ev.EvaluationError):
        cases.select_cases("everything", [photo], cases.parse_sizes("64"), 0)


def test_the_readme_figure_has_a_titled_column_per_method_and_a_row_per_case() -> None:
    from lab.evaluation import figure

    panel = np.zeros((40, 60, 3), np.uint8)
    sheet = figure.comparison_figure([[panel, panel, panel], [panel, panel, panel]], ["a", "b", "c"], tile=50)
    assert sheet.size == (3 * 54 + 4, 23 + 2 * 54 + 4)


def test_the_readme_figure_refuses_an_unknown_case(capsys: pytest.CaptureFixture[str]) -> None:
    from lab.evaluation import figure

    assert figure.main(["--cases", "no-such-case", "--methods", "ns"]) == 2
    assert "Unknown removal case" in capsys.readouterr().err

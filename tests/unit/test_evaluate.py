"""Evaluation harness: cases, fairness (no peeking), scoring shortcuts, reports, CLI errors."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab import evaluate as ev
from lab import metrics


def write_photos(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """Smooth colourful test photos with some noise, as JPEG/PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height) in enumerate(sizes):
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack(
            [
                128 + 90 * np.sin(x / (20 + 7 * index)),
                128 + 80 * np.cos(y / 30),
                90 + 60 * np.sin((x + y) / 17),
            ],
            axis=-1,
        )
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        path = folder / f"photo{index}.{'png' if index % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def photo() -> ev.Photo:
    rng = np.random.default_rng(1)
    return ev.Photo("sample", rng.integers(0, 256, (150, 230, 3), dtype=np.uint8))


def test_parse_sizes() -> None:
    sizes = ev.parse_sizes("512, hd,4k,long900,96")
    assert [(s.label, s.kind, s.pixels) for s in sizes] == [
        ("512", "square", 512),
        ("hd", "long", 1920),
        ("4k", "long", 3840),
        ("long900", "long", 900),
        ("96", "square", 96),
    ]
    for bad in ("", "big", "32", "longx"):
        with pytest.raises(ev.EvaluationError):
            ev.parse_sizes(bad)


def test_list_photos_spreads_a_subset_over_all_sources(tmp_path: Path) -> None:
    for source in ("a", "b", "c"):
        for index in range(4):
            Image.new("RGB", (16, 16)).save(tmp_path / f"{source}{index}.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    every = ev.list_photos(tmp_path)
    assert [p.name for p in every] == sorted(f"{s}{i}.png" for s in "abc" for i in range(4))
    assert [p.name for p in ev.list_photos(tmp_path, 3)] == ["a0.png", "b0.png", "c0.png"]
    assert ev.list_photos(tmp_path, 50) == every


def test_square_case_is_a_deterministic_crop_with_its_own_mask(photo: ev.Photo) -> None:
    size = ev.SizeSpec("96", "square", 96)
    case = ev.make_case(photo, size, seed=3)
    again = ev.make_case(photo, size, seed=3)
    other_seed = ev.make_case(photo, size, seed=4)
    assert case.image.shape == (96, 96, 3) and case.mask.shape == (96, 96) and not case.upscaled
    np.testing.assert_array_equal(case.image, again.image)
    np.testing.assert_array_equal(case.mask, again.mask)
    assert not np.array_equal(case.mask, other_seed.mask)
    # the crop is a window of the photo itself (no resampling when the photo is large enough)
    windows = np.lib.stride_tricks.sliding_window_view(photo.pixels, (96, 96, 3))[..., 0, :, :, :]
    assert (windows == case.image).all(axis=(-3, -2, -1)).any()
    assert set(np.unique(case.mask).tolist()) == {0, 255}
    assert 0.05 <= case.hole_fraction <= 0.35


def test_small_photos_are_enlarged_for_square_cases(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("200", "square", 200), seed=0)
    assert case.image.shape == (200, 200, 3) and case.upscaled


def test_long_side_case_keeps_aspect_and_scales_a_low_resolution_mask(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("long690", "long", 690), seed=0, hole_fraction=(0.1, 0.2))
    assert case.image.shape == (450, 690, 3) and case.upscaled
    assert set(np.unique(case.mask).tolist()) == {0, 255}
    assert 0.08 <= case.hole_fraction <= 0.22  # drawn at a long side of 512, then scaled up
    shrunk = ev.make_case(photo, ev.SizeSpec("long115", "long", 115), seed=0)
    assert shrunk.image.shape == (75, 115, 3) and not shrunk.upscaled


def test_methods_never_see_the_ground_truth_of_the_hole(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("96", "square", 96), seed=0)
    seen = {}

    def spy(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        seen["image"], seen["mask"] = image.copy(), mask.copy()
        image[:] = 7  # scribbling on the input must not alter the case
        return image

    result, pasted = ev.run_case(case, "spy", spy)
    hole = case.mask > 127
    assert (seen["image"][hole] == 0).all()
    np.testing.assert_array_equal(seen["image"][~hole], case.image[~hole])
    np.testing.assert_array_equal(seen["mask"], case.mask)
    # outputs are pasted back: outside the hole the original pixels, inside the method's
    np.testing.assert_array_equal(pasted[~hole], case.image[~hole])
    assert (pasted[hole] == 7).all()
    assert result.scores["l1_hole"] == pytest.approx(np.abs(case.image[hole].astype(float) - 7).mean())


def test_oracle_scores_perfectly_and_mean_colour_matches_hand_computation(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("192", "square", 192), seed=1)
    oracle, _ = ev.run_case(case, "oracle", lambda image, mask: case.image.copy())
    assert oracle.scores["l1_hole"] == 0.0
    assert oracle.scores["psnr_hole"] == math.inf and oracle.scores["psnr_image"] == math.inf
    assert oracle.scores["ssim_image"] == pytest.approx(1.0) and oracle.scores["ssim_hole"] == pytest.approx(
        1.0
    )
    assert oracle.scores["ms_ssim"] == pytest.approx(1.0)
    assert oracle.scores["seconds"] >= 0.0
    mean, _ = ev.run_case(case, "mean", ev.mean_colour_method)
    hole = case.mask > 127
    fill = np.round(case.image[~hole].mean(axis=0))
    assert mean.scores["l1_hole"] == pytest.approx(np.abs(case.image[hole] - fill).mean())


def test_method_with_wrong_output_is_reported(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("96", "square", 96), seed=0)
    with pytest.raises(ev.EvaluationError, match="expected uint8"):
        ev.run_case(case, "bad", lambda image, mask: image.astype(np.float32))


@pytest.mark.parametrize(
    "box", [(40, 60, 50, 90), (0, 3, 0, 5), (117, 120, 150, 160), (0, 120, 0, 160), (60, 61, 80, 81)]
)
def test_score_shortcut_equals_full_metrics(box: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 255
    mask[100, 10] = 255  # a second, distant speck widens the bounding box
    prediction = ev.paste_back(rng.integers(0, 256, target.shape, dtype=np.uint8), target, mask)
    scores = ev.score(prediction, target, mask)
    assert scores["ssim_image"] == pytest.approx(metrics.ssim(prediction, target), abs=1e-12)
    if (mask[5:-5, 5:-5] > 0).any():
        assert scores["ssim_hole"] == pytest.approx(metrics.ssim(prediction, target, mask), abs=1e-12)
    assert scores["l1_hole"] == pytest.approx(metrics.hole_l1(prediction, target, mask))
    assert scores["psnr_hole"] == pytest.approx(metrics.psnr(prediction, target, mask))
    assert scores["psnr_image"] == pytest.approx(metrics.psnr(prediction, target))
    assert math.isnan(scores["ms_ssim"])  # 120 px is below MS-SSIM's 176 px minimum


def test_opencv_methods_fill_only_the_hole(photo: ev.Photo) -> None:
    case = ev.make_case(photo, ev.SizeSpec("96", "square", 96), seed=0)
    methods = ev.build_methods(["telea", "ns"], ev.MethodConfig())
    hole = case.mask > 127
    for method in methods.values():
        out = method(ev.blank_hole(case.image, case.mask), case.mask)
        assert out.shape == case.image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[~hole], case.image[~hole])
        assert out[hole].mean() > 20  # filled from the surroundings, not left black


def test_hole_window_finds_the_hole() -> None:
    mask = np.zeros((600, 900), np.uint8)
    mask[400:480, 700:760] = 255
    top, left = ev._hole_window(mask, 200)
    assert 0 <= top <= 400 and top + 200 >= 480 and 0 <= left <= 700 and left + 200 >= 760


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_photos(tmp_path / "photos", [(300, 220), (180, 260)])
    out = tmp_path / "out"
    common = ["--photos", str(tmp_path / "photos"), "--methods", "telea,ns,mean", "--seed", "5"]
    common += ["--no-progress", "--sheet-rows", "1", "--hole-fraction", "0.05,0.15"]
    assert ev.main([*common, "--sizes", "96,long1040", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = (out / "results.md").read_text(encoding="utf-8")
    assert results in printed
    for title in ("OpenCV Telea", "OpenCV Navier-Stokes", "mean colour", "96×96 crops", "LONG1040"):
        assert title in results
    assert "has the lower in-hole L1 than" in results
    with (out / "cases.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 3
    assert {row["method"] for row in rows} == {"telea", "ns", "mean"}
    # every case scored; a flat mean colour is worse than OpenCV in the hole on these smooth photos
    for photo_name in ("photo0", "photo1"):
        by_method = {r["method"]: float(r["l1_hole"]) for r in rows if r["photo"] == photo_name}
        assert by_method["telea"] < by_method["mean"] and by_method["ns"] < by_method["mean"]
    with Image.open(out / "sheet_96.png") as sheet:
        assert sheet.size == (6 * (224 + 4) + 4, 20 + 224 + 2 * 4)
    with Image.open(out / "sheet_long1040_zoom.png") as zoom:
        assert zoom.size == (6 * (320 + 4) + 4, 20 + 320 + 2 * 4)
    assert not (out / "sheet_96_zoom.png").exists()
    # same seed, same cases: a second run reproduces every score except the timings
    assert ev.main([*common, "--sizes", "96", "--out", str(tmp_path / "again")]) == 0
    with (tmp_path / "again" / "cases.csv").open() as handle:
        again = list(csv.DictReader(handle))
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in rows if row["size"] == "96"]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in again]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--photos", "/nonexistent/photos"], "No photo folder"),
        (["--methods", "telea,magic"], "Unknown method"),
        (["--sizes", "huge"], "Unknown size"),
        (["--count", "0"], "--count"),
    ],
)
def test_cli_reports_problems_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    write_photos(tmp_path / "photos", [(120, 100)])
    argv = ["--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--no-progress", *extra]
    assert ev.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_photo_folder_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert ev.main(["--photos", str(tmp_path / "empty"), "--methods", "telea", "--no-progress"]) == 2
    assert "No photos" in capsys.readouterr().err


def test_methods_are_pluggable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def factory(config: ev.MethodConfig) -> ev.Method:
        return lambda image, mask: np.full_like(image, 128)

    monkeypatch.setitem(ev.METHOD_FACTORIES, "grey", factory)
    paths = write_photos(tmp_path / "photos", [(120, 100)])
    methods = ev.build_methods(["grey", "mean"], ev.MethodConfig())
    report = ev.evaluate(paths, methods, ev.parse_sizes("64"), tmp_path / "out", progress=False)
    assert [r.method for r in report.results] == ["grey", "mean"]
    assert "| grey | 1 |" in report.markdown


def test_hifill_engine_with_untrained_weights(tmp_path: Path) -> None:
    """Our engine through the harness, with clearly untrained weights (quality is not judged)."""
    try:
        from backend.inference import load_engine  # noqa: F401
        from backend.weights import write_untrained_weights
    except ImportError as error:
        pytest.skip(f"the engine is not available yet: {error}")
    import torch

    torch.set_num_threads(1)
    weights = tmp_path / "untrained.safetensors"
    write_untrained_weights(weights, seed=0)
    write_photos(tmp_path / "photos", [(260, 200)])
    argv = ["--photos", str(tmp_path / "photos"), "--weights", str(weights), "--device", "cpu"]
    argv += ["--allow-untrained", "--methods", "hifill,telea", "--sizes", "96,long200", "--no-progress"]
    assert ev.main([*argv, "--out", str(tmp_path / "out")]) == 0
    results = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "untrained" in results  # the engine's description is in the header
    with (tmp_path / "out" / "cases.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    pairs = [(r["size"], r["method"]) for r in rows]
    assert pairs == [("96", "hifill"), ("96", "telea"), ("long200", "hifill"), ("long200", "telea")]
    assert all(math.isfinite(float(r["l1_hole"])) for r in rows)


def test_missing_engine_or_weights_is_an_error_not_a_silent_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_photos(tmp_path / "photos", [(120, 100)])
    argv = ["--photos", str(tmp_path / "photos"), "--weights", str(tmp_path / "missing.safetensors")]
    assert ev.main([*argv, "--methods", "hifill,telea", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate: ") and "Traceback" not in err
    assert not (tmp_path / "o" / "results.md").exists()


def _harmonic_untrained_weights(path: Path) -> Path:
    import dataclasses

    import torch

    from backend.network import Generator, init_official
    from backend.weights import ModelConfig, save_generator

    torch.manual_seed(0)
    generator = Generator("harmonic")
    init_official(generator)
    with torch.no_grad():  # a visible correction: the full method must differ from its prefill
        dict(generator.named_modules())["refine.re_de_toRGB__256"].feature.bias.fill_(0.2)
    config = ModelConfig(source="untrained", untrained=True, prefill="harmonic", working_size=128)
    save_generator(path, generator, dataclasses.replace(config, notes="tests only"))
    return path


def test_the_prefill_ablation_is_the_harmonic_fill_through_the_engine(tmp_path: Path) -> None:
    """'prefill' = the same weights with their corrections switched off: the exact harmonic fill of the
    hole (the image fits one 128² window, so CRA neither scales nor adds residuals here)."""
    import torch

    from backend.prefill import harmonic_fill

    torch.set_num_threads(1)
    weights = _harmonic_untrained_weights(tmp_path / "harmonic.safetensors")
    config = ev.MethodConfig(weights=weights, device="cpu", allow_untrained=True, detail="attention")
    methods = ev.build_methods(["hifill", "prefill"], config)
    image, mask = _test_image()
    hole = mask > 0
    ablated, full = methods["prefill"](image, mask), methods["hifill"](image, mask)
    known = torch.from_numpy(~hole).float()[None, None]
    scaled = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = ((harmonic_fill(scaled, known)[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert np.array_equal(ablated[~hole], image[~hole]) and np.array_equal(full[~hole], image[~hole])
    assert np.abs(ablated[hole].astype(float) - expected[hole]).max() <= 1.0
    assert np.abs(full[hole].astype(float) - ablated[hole]).mean() > 10  # the corrections count


def test_the_prefill_ablation_refuses_weights_without_a_prefill(untrained_weights: Path) -> None:
    config = ev.MethodConfig(weights=untrained_weights, device="cpu", allow_untrained=True)
    with pytest.raises(ev.EvaluationError, match="start from a prefill"):
        ev.build_methods(["prefill"], config)


def _test_image() -> tuple[np.ndarray, np.ndarray]:
    """A smooth 112x128 photo with a 40x56 hole: one 128² window, so CRA neither scales nor adds residuals."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:112, 0:128]
    smooth = np.stack([120 + 60 * np.sin(x / 9), 90 + y, 60 + x], -1)
    image = np.clip(smooth + rng.normal(0, 4, (112, 128, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((112, 128), np.uint8)
    mask[30:70, 40:96] = 255
    return image, mask


def test_the_coarse_ablation_is_the_same_weights_without_the_refine_stage(tmp_path: Path) -> None:
    """'coarse' = the refine stage's contribution removed. For harmonic weights that is exactly the full
    method of a copy whose refine correction is zeroed (same engine, same CRA); it keeps the coarse
    stage's own correction, so it is neither the full fill nor the prefill."""
    import dataclasses

    import torch

    from backend.network import zero_residual_outputs
    from backend.weights import load_generator, save_generator

    torch.set_num_threads(1)
    weights = _harmonic_untrained_weights(tmp_path / "harmonic.safetensors")  # refine correction +0.2
    generator, card = load_generator(weights)
    with torch.no_grad():  # and a visible coarse correction
        dict(generator.named_modules())["coarse.c_de_toRGB"].feature.bias.fill_(-0.3)
    save_generator(weights, generator, card)
    zero_residual_outputs(generator, "refine")
    save_generator(tmp_path / "no-refine.safetensors", generator, dataclasses.replace(card, notes="copy"))
    # The attention path: the patch path mixes Navier-Stokes into the border, which dilutes what the
    # stages add there; the ablation itself is the same on either path (first assertion below).
    config = ev.MethodConfig(weights=weights, device="cpu", allow_untrained=True, detail="attention")
    methods = ev.build_methods(["hifill", "coarse", "prefill"], config)
    without_refine = ev.build_methods(
        ["hifill"], dataclasses.replace(config, weights=tmp_path / "no-refine.safetensors")
    )["hifill"]
    image, mask = _test_image()
    hole = mask > 0
    coarse, full, prefill = (methods[name](image, mask) for name in ("coarse", "hifill", "prefill"))
    assert np.array_equal(coarse, without_refine(image, mask))
    assert np.array_equal(coarse[~hole], image[~hole])
    assert np.abs(full[hole].astype(float) - coarse[hole]).mean() > 10  # the refine stage counted
    assert np.abs(prefill[hole].astype(float) - coarse[hole]).mean() > 10  # the coarse stage counts
    patch = dataclasses.replace(config, detail="auto")  # the shipped path: the same ablation
    coarse_patch = ev.build_methods(["coarse"], patch)["coarse"](image, mask)
    no_refine = dataclasses.replace(patch, weights=tmp_path / "no-refine.safetensors")
    assert np.array_equal(coarse_patch, ev.build_methods(["hifill"], no_refine)["hifill"](image, mask))
    args = argparse.Namespace(
        argv=[], photos="p", seed=0, mask_kind="mixed", hole_fraction=(0.1, 0.2), opencv_radius=3
    )
    report_header = ev._report_header(args, methods, [])
    assert "coarse stage only (ablation)" in report_header


def test_the_refine_row_shows_what_the_refine_stage_adds_to_the_shipped_path(tmp_path: Path) -> None:
    """The patch path skips the refine stage of weights with a prefill, so 'coarse' equals 'hifill'
    there; 'refine' runs the stage on the same path: it differs exactly where the stage adds something."""
    import dataclasses

    import torch

    from backend.network import zero_residual_outputs
    from backend.weights import load_generator, save_generator

    torch.set_num_threads(1)
    weights = _harmonic_untrained_weights(tmp_path / "harmonic.safetensors")  # refine correction +0.2
    generator, card = load_generator(weights)
    zero_residual_outputs(generator, "refine")
    save_generator(tmp_path / "no-refine.safetensors", generator, dataclasses.replace(card, notes="copy"))
    config = ev.MethodConfig(weights=weights, device="cpu", allow_untrained=True, detail="patch")
    methods = ev.build_methods(["hifill", "coarse", "refine"], config)
    image, mask = _test_image()
    hole = mask > 0
    full, coarse, refined = (methods[name](image, mask) for name in ("hifill", "coarse", "refine"))
    assert np.array_equal(full, coarse)  # the shipped path has no refine stage to remove
    assert np.array_equal(refined[~hole], image[~hole])
    # the +0.2 correction shows through the search and the isophote mix (4.7 levels on this case)
    assert np.abs(refined[hole].astype(float) - full[hole]).mean() > 2
    dead = dataclasses.replace(config, weights=tmp_path / "no-refine.safetensors")
    dead_methods = ev.build_methods(["hifill", "refine"], dead)
    assert np.array_equal(dead_methods["refine"](image, mask), dead_methods["hifill"](image, mask))
    args = argparse.Namespace(
        argv=[], photos="p", seed=0, mask_kind="mixed", hole_fraction=(0.1, 0.2), opencv_radius=3
    )
    assert "with the refine stage (ablation)" in ev._report_header(args, methods, [])


def test_the_coarse_ablation_works_for_paper_style_weights(untrained_weights: Path) -> None:
    import torch

    torch.set_num_threads(1)
    config = ev.MethodConfig(weights=untrained_weights, device="cpu", allow_untrained=True)
    methods = ev.build_methods(["hifill", "coarse"], config)
    image, mask = _test_image()
    hole = mask > 0
    coarse, full = methods["coarse"](image, mask), methods["hifill"](image, mask)
    assert np.array_equal(coarse[~hole], image[~hole])
    assert not np.array_equal(coarse[hole], full[hole])

"""`python -m backend inpaint IMAGES_DIR MASKS -o OUT_DIR` (backend/batch.py): pairing by name, one warm
engine, 16-bit/alpha/JPEG outputs, bad files named and skipped, resume and overwrite rules, exit codes;
and the single-file form beside it. Fills use a real engine with untrained weights at working size 128.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from backend.batch import BatchError, Job, plan_batch, read_image, run_batch, write_image
from backend.cli import inpaint_main
from backend.engine import FillOptions, FillResult, InpaintEngine

ROOT = Path(__file__).resolve().parents[2]
H, W = 96, 128
ENGINE = ["--device", "cpu", "--working-size", "128", "--allow-untrained"]


@pytest.fixture(scope="module")
def engine(untrained_weights: Path) -> InpaintEngine:
    from backend.inference import load_engine

    return load_engine(untrained_weights, "cpu", allow_untrained=True, working_size=128)


class CountingEngine(InpaintEngine):
    """The real engine, counting its fills."""

    def __init__(self, engine: InpaintEngine) -> None:
        self.engine = engine
        self.fills = 0

    def fill(self, image, mask, options=FillOptions(), progress=None, is_cancelled=None) -> FillResult:
        self.fills += 1
        return self.engine.fill(image, mask, options, progress, is_cancelled)


def photo(seed: int, channels: int = 3, dtype: type = np.uint8, height: int = H, width: int = W):
    """A smooth colour picture with some grain; 16-bit ones use all 16 bits (not multiples of 257)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(3 * yy + c + seed) * np.cos(2 * xx - c) for c in range(channels)], axis=2)
    top = 255.0 if dtype == np.uint8 else 65535.0
    pixels = (0.5 + 0.4 * base) * top + rng.normal(0, top / 100, base.shape)
    return np.clip(pixels, 0, top).round().astype(dtype)


def hole(height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3 : height * 2 // 3, width // 4 : width // 2] = 255
    return mask


def save_rgb(path: Path, pixels: np.ndarray) -> None:
    """Write a test input without backend.batch: 16-bit through OpenCV/tifffile, 8-bit through Pillow."""
    if path.suffix in (".tif", ".tiff"):
        alpha = {"extrasamples": ["unassalpha"]} if pixels.shape[2] == 4 else {}
        tifffile.imwrite(path, pixels, photometric="rgb", **alpha)
    elif pixels.dtype == np.uint16:
        order = [2, 1, 0, 3] if pixels.shape[2] == 4 else [2, 1, 0]
        assert cv2.imwrite(str(path), np.ascontiguousarray(pixels[..., order]))
    else:
        Image.fromarray(pixels).save(path, quality=95)


def load_rgb(path: Path) -> np.ndarray:
    """Decode an output without backend.batch: OpenCV (all bits), RGB(A) order."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return pixels[..., [2, 1, 0, 3]] if pixels.shape[2] == 4 else pixels[..., ::-1]


GOOD = {  # name -> (seed, channels, dtype)
    "a.png": (1, 3, np.uint8),
    "b16.png": (2, 3, np.uint16),
    "c.png": (3, 4, np.uint8),
    "d.jpg": (4, 3, np.uint8),
    "e16.tif": (5, 4, np.uint16),
}


def make_folders(root: Path, good: dict = GOOD, bad: bool = True) -> tuple[Path, Path]:
    """images/ and masks/ with the GOOD pictures (masks in mixed formats), and if `bad`, a corrupt
    broken.png (with a mask) and lonely.png (without one), plus a text file that is no image."""
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for n, (name, (seed, channels, dtype)) in enumerate(good.items()):
        save_rgb(images / name, photo(seed, channels, dtype))
        mask_name = Path(name).stem + (".png", ".bmp", ".webp")[n % 3]
        Image.fromarray(hole()).save(masks / mask_name, lossless=True)  # (lossless: for WebP)
    if bad:
        (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
        Image.fromarray(hole()).save(masks / "broken.png")
        save_rgb(images / "lonely.png", photo(9))
        (images / "notes.txt").write_text("not an image")
    return images, masks


def assert_filled(output: Path, original: np.ndarray, mask: np.ndarray, jpeg: bool = False) -> None:
    """Same size, dtype and channels; outside the mask bit-exact (JPEG: within re-encoding noise);
    inside it the engine's pixels."""
    out = np.asarray(Image.open(output).convert("RGB")) if jpeg else load_rgb(output)
    assert out.shape == original.shape and out.dtype == original.dtype
    keep = mask == 0
    if jpeg:
        assert output.read_bytes()[:2] == b"\xff\xd8"
        diff = np.abs(out.astype(int) - original.astype(int))[keep]
        assert diff.mean() < 1.0 and diff.max() <= 8
    else:
        np.testing.assert_array_equal(out[keep], original[keep])
    assert (out[~keep] != original[~keep]).any()  # the hole was filled, not copied


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "backend", "inpaint", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_folder_is_filled_and_bad_files_are_named_and_skipped(tmp_path: Path, untrained_weights: Path):
    images, masks = make_folders(tmp_path)
    out = tmp_path / "out"
    done = run_cli(str(images), str(masks), "-o", str(out), "--weights", str(untrained_weights), *ENGINE)

    assert done.returncode == 1, done.stderr
    assert "skipped broken.png: cannot read the image" in done.stderr
    assert "skipped lonely.png: there is no mask lonely.*" in done.stderr
    assert "Wrote 5 of 7 images" in done.stdout
    assert "Skipped 2: lonely.png, broken.png" in done.stdout
    assert sorted(os.listdir(out)) == sorted(GOOD)  # nothing else, no temporary files
    for name, (seed, channels, dtype) in GOOD.items():
        original = photo(seed, channels, dtype)
        if name.endswith(".jpg"):
            original = np.asarray(Image.open(images / name))  # what was read: the decoded JPEG
        assert_filled(out / name, original, hole(), jpeg=name.endswith(".jpg"))


def test_skip_existing_keeps_outputs_and_fills_only_the_rest(tmp_path: Path, engine: InpaintEngine):
    images, masks = make_folders(tmp_path, bad=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"from an earlier run")
    counting = CountingEngine(engine)

    plan = plan_batch(images, masks, out, existing="skip")
    summary = run_batch(plan, counting, show_progress=False, say=lambda text: None)

    assert plan.kept == ["a.png"] and summary.kept == ["a.png"]
    assert counting.fills == len(GOOD) - 1
    assert (out / "a.png").read_bytes() == b"from an earlier run"
    assert sorted(summary.written) == sorted(set(GOOD) - {"a.png"})
    assert summary.exit_status == 0
    assert_filled(out / "c.png", photo(3, 4), hole())  # RGBA: alpha kept, exact outside the hole


def test_outputs_are_replaced_only_with_overwrite(tmp_path: Path, untrained_weights: Path, capsys):
    images, masks = make_folders(tmp_path, good={"a.png": GOOD["a.png"]}, bad=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"precious")
    args = [str(images), str(masks), "-o", str(out), "--weights", str(untrained_weights), *ENGINE]

    assert inpaint_main(args) == 1
    assert (out / "a.png").read_bytes() == b"precious"
    captured = capsys.readouterr()
    assert "skipped a.png:" in captured.err and "--overwrite replaces it" in captured.err
    assert "Skipped 1: a.png" in captured.out

    assert inpaint_main([*args, "--overwrite"]) == 0
    assert_filled(out / "a.png", photo(1), hole())
    assert "Wrote 1 of 1 image" in capsys.readouterr().out


def test_ctrl_c_ends_the_batch_with_whole_outputs_only(tmp_path: Path, engine: InpaintEngine):
    good = {name: GOOD[name] for name in ("a.png", "b16.png", "c.png")}
    images, masks = make_folders(tmp_path, good=good, bad=False)
    out = tmp_path / "out"

    class InterruptedOnTheSecondFill(CountingEngine):
        def fill(self, *args, **kwargs) -> FillResult:
            if self.fills == 1:
                raise KeyboardInterrupt
            return super().fill(*args, **kwargs)

    interrupting = InterruptedOnTheSecondFill(engine)
    summary = run_batch(plan_batch(images, masks, out), interrupting, show_progress=False)

    assert summary.interrupted and summary.exit_status == 130
    assert summary.written == ["a.png"] and summary.skipped == []
    assert sorted(os.listdir(out)) == ["a.png"]
    assert "with --skip-existing fills the rest" in summary.text(out)


def test_an_unwritable_output_is_named_and_the_batch_goes_on(tmp_path: Path, engine: InpaintEngine):
    """Outputs are written by a writer thread while the next image fills: a write that fails there is
    still reported by name, counted as skipped, and the other images are written."""
    good = {name: GOOD[name] for name in ("a.png", "c.png")}
    images, masks = make_folders(tmp_path, good=good, bad=False)
    out = tmp_path / "out"
    plan = plan_batch(images, masks, out)
    (out / "a.png").mkdir(parents=True)  # appears after planning: the write of a.png fails
    said: list[str] = []

    summary = run_batch(plan, engine, show_progress=False, say=said.append)

    assert summary.written == ["c.png"] and [s.name for s in summary.skipped] == ["a.png"]
    assert summary.exit_status == 1
    assert any(line.startswith("skipped a.png: cannot write") for line in said)
    assert_filled(out / "c.png", photo(3, 4), hole())
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]  # no temporary file left behind


def test_a_mask_of_another_size_is_skipped_or_resized_on_request(tmp_path: Path, engine: InpaintEngine):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    save_rgb(images / "a.png", photo(1))
    small = hole(H // 2, W // 2)
    Image.fromarray(small).save(masks / "a.png")
    reports: list[str] = []

    plan = plan_batch(images, masks, tmp_path / "out")
    summary = run_batch(plan, engine, show_progress=False, say=reports.append)
    assert summary.written == [] and summary.exit_status == 1
    assert reports == [f"skipped a.png: {summary.skipped[0].reason}"]
    assert "64x48 but the image is 128x96" in reports[0]
    assert not (tmp_path / "out" / "a.png").exists()

    summary = run_batch(
        plan_batch(images, masks, tmp_path / "out"), engine, resize_masks=True, show_progress=False
    )
    assert summary.written == ["a.png"]
    assert_filled(tmp_path / "out" / "a.png", photo(1), small.repeat(2, axis=0).repeat(2, axis=1))


def test_the_single_file_form_still_works(tmp_path: Path, untrained_weights: Path, capsys):
    Image.fromarray(hole()).save(tmp_path / "mask.png")
    for name, (seed, channels, dtype) in (("a.png", GOOD["a.png"]), ("b16.png", GOOD["b16.png"])):
        save_rgb(tmp_path / name, photo(seed, channels, dtype))
        out = tmp_path / "filled" / name
        argv = [str(tmp_path / name), str(tmp_path / "mask.png"), "-o", str(out)]

        assert inpaint_main([*argv, "--weights", str(untrained_weights), *ENGINE]) == 0
        assert f"wrote {out} (128x96, filled region" in capsys.readouterr().out
        assert_filled(out, photo(seed, channels, dtype), hole())  # 16-bit stays 16-bit here too


def test_bad_arguments_exit_with_2_before_loading_anything(tmp_path: Path, capsys):
    images, masks = make_folders(tmp_path, good={"a.png": GOOD["a.png"]}, bad=False)
    (tmp_path / "a-file").write_text("x")
    cases = {
        "is a file": [str(images), str(masks), "-o", str(tmp_path / "a-file")],
        "replace the originals": [str(images), str(masks), "-o", str(images)],
        "does not exist": [str(images), str(tmp_path / "no-masks"), "-o", str(tmp_path / "out")],
        "cannot read the input": [str(tmp_path / "no-images"), str(masks), "-o", str(tmp_path / "out")],
    }
    for message, argv in cases.items():
        assert inpaint_main([*argv, "--weights", str(tmp_path / "none.safetensors")]) == 2, message
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        inpaint_main([str(images), str(masks), "-o", str(tmp_path / "out"), "--overwrite", "--skip-existing"])
    assert exited.value.code == 2
    assert not (tmp_path / "out").exists()


def test_images_pair_with_masks_of_the_same_stem_in_any_format(tmp_path: Path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    for name in ("photo.JPG", "scan.tiff", "two.png", "none.webp", "notes.txt", ".hidden.png"):
        (images / name).write_bytes(b"")
    for name in ("photo.png", "scan.bmp", "two.png", "two.jpeg", "other.png"):
        (masks / name).write_bytes(b"")

    plan = plan_batch(images, masks, out)
    assert plan.jobs == [
        Job(images / "photo.JPG", masks / "photo.png", out / "photo.JPG"),
        Job(images / "scan.tiff", masks / "scan.bmp", out / "scan.tiff"),
    ]
    assert [(s.name, s.reason) for s in plan.skipped] == [
        ("none.webp", f"there is no mask none.* in {masks}"),
        ("two.png", "2 masks match it (two.jpeg, two.png)"),
    ]
    assert plan.ignored == ["notes.txt"]

    (images / "mask.png").write_bytes(b"")  # one mask for all; inside the folder it is no image to fill
    plan = plan_batch(images, images / "mask.png", out)
    assert [job.image.name for job in plan.jobs] == ["none.webp", "photo.JPG", "scan.tiff", "two.png"]
    assert {job.mask for job in plan.jobs} == {images / "mask.png"}

    with pytest.raises(BatchError, match="masks folder is the images folder"):
        plan_batch(images, images, out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no images"):
        plan_batch(tmp_path / "empty", masks, out)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_files_keep_all_16_bits_and_the_colour_profile(tmp_path: Path, suffix: str, channels: int):
    pixels = photo(7, channels, np.uint16)
    profile = _srgb_profile()
    path = tmp_path / f"x{suffix}"

    write_image(pixels, path, icc_profile=profile)

    np.testing.assert_array_equal(load_rgb(path), pixels)  # all bits, RGB(A) order
    with Image.open(path) as im:
        assert im.info.get("icc_profile") == profile
        high = np.asarray(im.convert("RGBA" if channels == 4 else "RGB"))  # Pillow: 8 bits
    if suffix == ".png":  # Pillow keeps the high byte of each 16-bit PNG value
        np.testing.assert_array_equal(high, (pixels >> 8).astype(np.uint8))
    back = read_image(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, pixels)


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

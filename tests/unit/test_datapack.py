"""GPU-ready training: the datapack, crops and masks drawn on the device, the device prefill, and a tiny
run through the whole path on the CPU (train from a datapack, resume, out-of-memory fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from backend.prefill import harmonic_fill
from backend.weights import load_generator
from lab import train as train_module
from lab.datapack import MaskPool, TileCrops, build_datapack, load_tiles, main, photo_tiles
from lab.gpu_prefill import harmonic_fill_cg
from lab.masks import mask_batch

torch.set_num_threads(1)


def smooth_photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like RGB image (smooth gradients plus a little noise) that JPEG keeps faithfully."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([60 + 100 * x / width, 50 + 150 * y / height, 120 + 60 * np.sin(x / 7 + y / 11)], -1)
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def write_photos(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(smooth_photo(rng, w, h)).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")  # skipped, as by PhotoCrops
    return folder


def test_photo_tiles_cover_the_long_side_with_square_tiles():
    wide = Image.new("RGB", (300, 100))
    tiles = photo_tiles(wide, 64)  # rescaled to 192 x 64: three tiles at x = 0, 64, 128
    assert [t.size for t in tiles] == [(64, 64)] * 3
    tall = photo_tiles(Image.new("RGB", (100, 150)), 64)  # 64 x 96: two overlapping tiles
    assert len(tall) == 2 and all(t.size == (64, 64) for t in tall)
    assert len(photo_tiles(Image.new("RGB", (40, 30)), 64)) == 2  # a small photo is enlarged


def test_a_datapack_holds_every_tile_faithfully_and_says_what_it_is(tmp_path: Path, capsys):
    photos = write_photos(tmp_path / "photos", [(160, 96), (96, 96)])
    out = tmp_path / "pack.safetensors"
    assert main(["--photos", str(photos), "--out", str(out), "--tile", "64", "--quality", "95"]) == 0
    assert "3 tiles of 64 px from 2 photos" in capsys.readouterr().out
    tiles, meta = load_tiles(out)
    assert tiles.shape == (3, 3, 64, 64) and tiles.dtype == torch.uint8
    assert meta["count"] == "3" and meta["photos"] == "2" and meta["tile"] == "64"
    square = np.asarray(Image.open(photos / "p1.png").convert("RGB").resize((64, 64), Image.LANCZOS))
    error = np.abs(tiles[2].permute(1, 2, 0).numpy().astype(float) - square).mean()
    assert error < 2.0  # JPEG at quality 95 of the rescaled photo


def test_a_folder_without_photos_and_a_file_that_is_no_datapack_are_refused(tmp_path: Path):
    from safetensors.torch import save_file

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="No photos"):
        build_datapack(tmp_path / "empty", tmp_path / "x.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SystemExit, match="not a datapack"):
        load_tiles(tmp_path / "other.safetensors")


def test_tile_crops_are_the_tile_itself_at_scale_one_and_flip_at_random():
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    crops = TileCrops(tiles, 32, 64, torch.Generator().manual_seed(0)).batch()  # crop side = tile side
    expected = tiles.float() / 127.5 - 1
    candidates = torch.cat([expected, expected.flip(3)])  # the two tiles and their mirror images
    distance = (crops[:, None] - candidates[None]).abs().flatten(2).amax(2)  # (64, 4)
    assert distance.min(1).values.max() < 1e-4  # every crop is one of them, exactly
    assert len(set(distance.argmin(1).tolist())) == 4  # and all four occur


def test_tile_crops_rescale_deterministically_within_range():
    tiles = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, 96, 96), dtype=np.uint8))
    one = TileCrops(tiles, 32, 8, torch.Generator().manual_seed(3)).batch()
    two = TileCrops(tiles, 32, 8, torch.Generator().manual_seed(3)).batch()
    assert one.shape == (8, 3, 32, 32) and torch.equal(one, two)
    assert one.min() >= -1 and one.max() <= 1
    with pytest.raises(SystemExit, match="smaller than --size"):
        TileCrops(tiles, 128, 8, torch.Generator())


def test_mask_pool_draws_pool_masks_flipped_or_transposed():
    pool = MaskPool(np.random.default_rng(0), 3, 32, (0.1, 0.3), torch.device("cpu"), torch.Generator())
    variants = []
    for mask in pool.masks.float():
        for m in (mask, mask.transpose(1, 2)):
            variants += [m, m.flip(2), m.flip(1), m.flip(1).flip(2)]
    masks = pool.batch(40)
    assert masks.shape == (40, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert all(any(torch.equal(m, v) for v in variants) for m in masks)
    assert 0.1 <= masks.mean().item() <= 0.3


def test_the_device_prefill_matches_the_exact_solver():
    rng = np.random.default_rng(4)
    hole = torch.from_numpy(mask_batch(rng, 3, 64, 48, "mixed", (0.1, 0.35)))
    noise = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 8, 6)).astype(np.float32))
    image = torch.nn.functional.interpolate(noise, size=(64, 48), mode="bilinear")
    exact = harmonic_fill(image * (1 - hole), 1 - hole)
    device = harmonic_fill_cg(image * (1 - hole), 1 - hole)
    assert (device - exact).abs().max() < 1e-4
    assert torch.equal(device * (1 - hole), image * (1 - hole))  # known pixels untouched
    nothing_known = harmonic_fill_cg(image, torch.zeros(3, 1, 64, 48))
    assert torch.equal(nothing_known, torch.zeros_like(image))


def test_a_tiny_run_from_a_datapack_trains_resumes_and_reports(tmp_path: Path, capsys):
    photos = write_photos(tmp_path / "photos", [(120, 80), (80, 80), (90, 140)])
    pack = tmp_path / "pack.safetensors"
    build_datapack(photos, pack, tile=80)
    run = tmp_path / "run"
    argv = ["--datapack", str(pack), "--run", str(run), "--init", "", "--device", "cpu", "--threads", "1"]
    argv += ["--export", str(run / "generator.safetensors"), "--commit-state", ""]
    argv += ["--size", "64", "--batch", "2", "--prefill", "harmonic", "--mask-pool", "8"]
    argv += ["--prefill-solver", "device", "--health-every", "1"]
    assert train_module.main([*argv, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "at batch 2" in out and "peak memory" in out and "health" in out
    for name in ("state.safetensors", "generator.safetensors", "losses.csv", "health.csv", "samples.png"):
        assert (run / name).is_file(), name
    assert train_module.main([*argv, "--steps", "1"]) == 0  # resumes from run/state.safetensors
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "3" and json.loads(meta["train_config"])["prefill"] == "harmonic"
    assert json.loads(meta["extra"])["health"]["checks"] == 4  # at the start (step 0) and steps 1, 2, 3
    generator, card = load_generator(run / "generator.safetensors")
    assert card.steps == 3 and card.notes.startswith("CPU-trained on 5 datapack tiles")
    assert "Resuming" in capsys.readouterr().out


def test_out_of_memory_halves_the_batch_and_says_so(tmp_path: Path, monkeypatch, capsys):
    photos = write_photos(tmp_path / "photos", [(80, 80)])
    pack = tmp_path / "pack.safetensors"
    build_datapack(photos, pack, tile=64)
    real_step, batches = train_module.train_step, []

    def step_that_needs_a_small_batch(generator, critic, opt_g, opt_d, real, hole, *rest):
        batches.append(real.shape[0])
        if real.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step(generator, critic, opt_g, opt_d, real, hole, *rest)

    monkeypatch.setattr(train_module, "train_step", step_that_needs_a_small_batch)
    run = tmp_path / "run"
    argv = ["--datapack", str(pack), "--run", str(run), "--init", "", "--device", "cpu", "--threads", "1"]
    argv += ["--export", str(run / "g.safetensors"), "--commit-state", "", "--size", "64", "--batch", "4"]
    assert train_module.main([*argv, "--steps", "2", "--health-every", "0"]) == 0
    assert batches == [4, 2, 1, 1]
    out = capsys.readouterr().out
    assert "batch halved to 2" in out and "batch halved to 1" in out and "at batch 1" in out
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        extra = json.loads(f.metadata()["extra"])
    assert extra["batch_halved"] == [{"step": 0, "batch": 2}, {"step": 0, "batch": 1}]

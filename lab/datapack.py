"""Datapack: the training photos as one compact file of square uint8 tiles, for machines without them.

python -m backend build-datapack --photos data/photos/train --out data/train-pack.safetensors

Each photo is rescaled so that its short side is ``--tile`` pixels (never enlarged) and cut into as
many square tiles as cover its long side (evenly spaced, overlapping); every tile is stored as a
JPEG (quality ``--quality``, no chroma sub-sampling) in one safetensors file: a flat uint8 buffer
``jpeg`` with ``offsets`` (int64, N + 1) and the metadata (tile side, count, source, quality). No pickle.
At the defaults (448 px, quality 90) the 238 training photos make 481 tiles and 26.7 MB (decoded:
290 MB of uint8); 320 px at quality 92 makes 16.7 MB.

Training (lab.train --datapack) decodes every tile once into one (N, 3, T, T) uint8 tensor on the
training device; ``TileCrops`` then draws whole batches there with one ``grid_sample``: a random scale
(a crop side between the training size and the whole tile, log-uniform), a random position and a
random horizontal flip per sample — the same augmentation as lab.train.PhotoCrops, with no CPU work
per step (a GPU is not starved by a 2-core host).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
FORMAT = "hifill-datapack-1"


def photo_tiles(image: Image.Image, tile: int) -> list[Image.Image]:
    """Square tiles of ``tile`` px covering an RGB photo rescaled to a short side of ``tile`` (photos
    smaller than that are cropped square as they are, then enlarged); overlapping, evenly spaced."""
    scale = tile / min(image.size)
    size = (max(tile, round(image.width * scale)), max(tile, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS) if size != image.size else image
    long_side = max(size)
    count = math.ceil(long_side / tile)
    starts = [round(i * (long_side - tile) / max(count - 1, 1)) for i in range(count)]
    if image.width >= image.height:
        return [image.crop((s, 0, s + tile, tile)) for s in starts]
    return [image.crop((0, s, tile, s + tile)) for s in starts]


def build_datapack(photos: Path, out: Path, tile: int = 448, quality: int = 90) -> dict:
    """Write the datapack of every photo under ``photos`` (recursive) to ``out``; returns its metadata."""
    paths = sorted(p for p in photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    blobs: list[bytes] = []
    used = 0
    for path in paths:
        try:
            with Image.open(path) as im:
                tiles = photo_tiles(im.convert("RGB"), tile)
        except OSError:
            continue  # unreadable file: skipped (the dataset builder validates files)
        used += 1
        for t in tiles:
            buffer = io.BytesIO()
            t.save(buffer, "JPEG", quality=quality, subsampling=0)
            blobs.append(buffer.getvalue())
    if not blobs:
        raise SystemExit(f"No photos found in {photos}; run 'python -m backend build-dataset'.")
    offsets = np.cumsum([0, *(len(b) for b in blobs)], dtype=np.int64)
    meta = {
        "format": FORMAT,
        "tile": str(tile),
        "count": str(len(blobs)),
        "photos": str(used),
        "quality": str(quality),
        "source": str(photos),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tensors = {
        "jpeg": torch.from_numpy(np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()),
        "offsets": torch.from_numpy(offsets),
    }
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)
    return meta


def load_tiles(path: Path) -> tuple[torch.Tensor, dict]:
    """Decode a datapack: (N, 3, T, T) uint8 tiles (CPU, contiguous) and the metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise SystemExit(f"{path} is not a datapack (python -m backend build-datapack makes one).")
        jpeg, offsets = f.get_tensor("jpeg").numpy(), f.get_tensor("offsets").tolist()
    tile = int(meta["tile"])
    tiles = np.empty((len(offsets) - 1, tile, tile, 3), dtype=np.uint8)
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        with Image.open(io.BytesIO(jpeg[start:end].tobytes())) as im:
            tiles[i] = np.asarray(im.convert("RGB"))
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous(), meta


class TileCrops:
    """Random training crops of datapack tiles, drawn on the tiles' device (see the module docstring).

    ``batch_size`` and ``size`` may change between calls (the out-of-memory fallback halves the batch).
    """

    def __init__(self, tiles: torch.Tensor, size: int, batch_size: int, generator: torch.Generator) -> None:
        if tiles.shape[-1] < size:
            raise SystemExit(f"The datapack's tiles are {tiles.shape[-1]} px, smaller than --size {size}.")
        self.tiles, self.size, self.batch_size, self.generator = tiles, size, batch_size, generator
        self.paths = range(tiles.shape[0])  # len() is what the trainer reports as "photos"

    def refresh(self) -> int:
        return self.tiles.shape[0]

    def batch(self) -> torch.Tensor:
        """(B, 3, S, S) float32 in [-1, 1] on the tiles' device."""
        b, tile, size = self.batch_size, self.tiles.shape[-1], self.size
        dev = self.tiles.device
        u = torch.rand(b, 4, generator=self.generator, device="cpu")
        index = torch.randint(self.tiles.shape[0], (b,), generator=self.generator, device="cpu")
        crop = torch.exp(u[:, 0] * math.log(tile / size)) * size  # crop side in tile px, in [size, tile]
        half = crop / tile  # half the crop side in grid units ([-1, 1] spans the tile)
        centre_x = (u[:, 1] * 2 - 1) * (1 - half)
        centre_y = (u[:, 2] * 2 - 1) * (1 - half)
        flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = half * flip, centre_x
        theta[:, 1, 1], theta[:, 1, 2] = half, centre_y
        grid = F.affine_grid(theta.to(dev), [b, 3, size, size], align_corners=False)
        source = self.tiles[index.to(dev)].float()
        crops = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if tile > 2 * size:  # crops shrunk more than 2x come from the half-size tile (a 2-level mipmap)
            half_tiles = F.avg_pool2d(source, 2)
            coarse = F.grid_sample(
                half_tiles, grid, mode="bilinear", padding_mode="border", align_corners=False
            )
            crops = torch.where((crop > 2 * size).to(dev).view(b, 1, 1, 1), coarse, crops)
        return (crops / 127.5 - 1.0).clamp(-1.0, 1.0)


class MaskPool:
    """Hole masks drawn once (lab.masks.mask_batch: ~2 ms each on the CPU) and kept on the training
    device; each batch picks masks at random and applies one of the 8 flips/transposes of the square
    to each, so a pool of N gives 8N distinct masks at no CPU cost per step."""

    def __init__(
        self,
        rng: np.random.Generator,
        count: int,
        size: int,
        hole_fraction: tuple[float, float],
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        from lab.masks import mask_batch

        masks = torch.from_numpy(mask_batch(rng, count, size, size, "mixed", hole_fraction)).to(torch.uint8)
        self.masks, self.generator = masks.to(device), generator

    def batch(self, batch_size: int) -> torch.Tensor:
        """(B, 1, S, S) float32 in {0, 1} (1 = hole) on the pool's device."""
        index = torch.randint(self.masks.shape[0], (batch_size,), generator=self.generator)
        ops = torch.randint(2, (3, batch_size, 1, 1, 1), generator=self.generator).bool()
        masks = self.masks[index.to(self.masks.device)].float()
        masks = torch.where(ops[0].to(masks.device), masks.flip(3), masks)
        masks = torch.where(ops[1].to(masks.device), masks.flip(2), masks)
        return torch.where(ops[2].to(masks.device), masks.transpose(2, 3), masks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend build-datapack", description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=Path("data/photos/train"), help="folder of photos")
    p.add_argument("--out", type=Path, default=Path("data/train-pack.safetensors"), help="datapack to write")
    p.add_argument("--tile", type=int, default=448, help="tile side in px (>= the training --size)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored tiles")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    meta = build_datapack(args.photos, args.out, args.tile, args.quality)
    megabytes = args.out.stat().st_size / 2**20
    print(
        f"Wrote {args.out}: {meta['count']} tiles of {meta['tile']} px from {meta['photos']} photos, "
        f"{megabytes:.1f} MB ({json.dumps({k: meta[k] for k in ('quality', 'source')})})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

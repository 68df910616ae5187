"""Training (Algorithm 1): WGAN-GP critic + reconstruction losses (Eq. 9-14), resumable, CPU or CUDA.

python -m backend train --photos data/photos/train --run runs/cpu --minutes 60
python -m backend train --datapack data/train-pack.safetensors --device cuda --run OUT ...  (a GPU)

State lives in RUN/state.safetensors (generator fp32, critic fp16, step, history; no pickle) and is
resumed automatically; the shipped generator (fp16) is exported to --export at every checkpoint.
Every checkpoint (and every --health-every steps) checks the generator's health (lab.health) on a
fixed batch: RUN/health.csv, RUN/health.json, and the run's record in the state's extra["health"].
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from backend.device import choose_device, choose_precision
from backend.inference import check_working_size, to_device
from backend.network import (
    Discriminator,
    Generator,
    hold_output_gates_open,
    init_data_dependent,
    init_official,
    renormalise_layers,
    zero_residual_outputs,
)
from backend.prefill import PREFILL_KINDS
from backend.weights import ModelConfig, save_generator
from lab.health import HealthLog, check, recorded_output_stds, std_excess
from lab.masks import mask_batch
from lab.perceptual import PerceptualError, VggFeatures, perceptual_loss
from lab.train_config import TrainConfig, build_parser
from lab.train_visuals import plot_losses, sample_sheet
from shared_protocol import HiFillError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class PhotoCrops:
    """Random crops of photos cached in RAM at a modest size (random scale, crop, horizontal flip)."""

    def __init__(self, folder: Path, config: TrainConfig, rng: np.random.Generator) -> None:
        self.folder, self.config, self.rng = folder, config, rng
        self.cache: dict[Path, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> int:
        """Pick up photos added to the folder since the last call. Returns the number of photos."""
        for path in list_photos(self.folder):
            if path in self.cache:
                continue
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    scale = self.config.cache_short_side / min(im.size)
                    if scale < 1:
                        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
                    self.cache[path] = np.asarray(im)
            except OSError:
                continue  # unreadable file: skipped (the dataset builder validates files)
        if not self.cache:
            raise SystemExit(f"No photos found in {self.folder}; run 'python -m backend build-dataset'.")
        self.paths = list(self.cache)
        return len(self.paths)

    def batch(self) -> torch.Tensor:
        """(B, 3, S, S) float32 in [-1, 1]."""
        size = self.config.size
        out = np.empty((self.config.batch, size, size, 3), dtype=np.uint8)
        for i in range(self.config.batch):
            photo = self.cache[self.paths[self.rng.integers(len(self.paths))]]
            h, w = photo.shape[:2]
            low = size / min(h, w)
            scale = math.exp(self.rng.uniform(math.log(low), math.log(max(low, 1.0))))
            crop = max(size, round(size / scale))  # crop in cache pixels, resized to size
            y, x = self.rng.integers(0, h - crop + 1), self.rng.integers(0, w - crop + 1)
            patch = photo[y : y + crop, x : x + crop]
            if crop != size:
                patch = np.asarray(Image.fromarray(patch).resize((size, size), Image.BILINEAR))
            out[i] = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# Losses (section 3.5)
# ---------------------------------------------------------------------------------------------


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, hole: torch.Tensor, c: TrainConfig):
    """Eq. 11-13: alpha_1 * mean |y - x| over hole pixels + alpha_2 * mean over context pixels."""
    error = (prediction - target).abs().mean(1, keepdim=True)
    in_hole = (error * hole).sum() / hole.sum().clamp_min(1.0)
    context = (error * (1 - hole)).sum() / (1 - hole).sum().clamp_min(1.0)
    return c.in_hole_weight * in_hole + c.context_weight * context, in_hole


def gradient_penalty(critic: Discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Eq. 9's last term: (||grad D(x_hat)||_2 - 1)^2 at x_hat = (1 - a) x + a x_tilde, a ~ U[0, 1]."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


# ---------------------------------------------------------------------------------------------
# State (safetensors, no pickle)
# ---------------------------------------------------------------------------------------------


def save_state(path: Path, generator, critic, step: int, config: TrainConfig, extra: dict) -> None:
    tensors = {
        f"generator.{k}": v.detach().cpu().float().contiguous() for k, v in generator.state_dict().items()
    }
    tensors.update(
        {f"critic.{k}": v.detach().cpu().half().contiguous() for k, v in critic.state_dict().items()}
    )
    meta = {"step": str(step), "train_config": json.dumps(asdict(config)), "extra": json.dumps(extra)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def compact_state(source: Path, target: Path) -> None:
    """The run state with every tensor in fp16 (about 17 MB): what the repository commits to resume from."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        meta = f.metadata()
    tensors = {k: v.half().contiguous() for k, v in load_file(str(source)).items()}
    tmp = target.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(target)


def load_state(path: Path, generator, critic) -> tuple[int, dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    generator.load_state_dict({k[10:]: v.float() for k, v in tensors.items() if k.startswith("generator.")})
    saved_critic = {k[7:]: v.float() for k, v in tensors.items() if k.startswith("critic.")}
    if all(v.shape == saved_critic[k].shape for k, v in critic.state_dict().items()):
        critic.load_state_dict(saved_critic)
    else:  # the critic's linear layer depends on the crop size: another size starts a new critic
        init_official(critic)
        print("The stored critic was trained at another crop size: the critic starts afresh")
    return int(meta["step"]), json.loads(meta["train_config"]), json.loads(meta["extra"])


# ---------------------------------------------------------------------------------------------
# Loop
# ---------------------------------------------------------------------------------------------


def restore_state(
    generator: Generator,
    critic: Discriminator,
    state_path: Path,
    init_from: Path | None,
    config: TrainConfig,
    overrides: dict,
) -> tuple[int, TrainConfig, dict]:
    """Load the run's state, else the initial state ``init_from``, else nothing (step 0).

    Returns (step, config, extra): the saved config with ``overrides`` applied, the generator set to
    its prefill (switched, with zeroed output layers, when the overrides change it).
    """
    step, extra = 0, {"wall_seconds": 0.0}
    start_from = state_path if state_path.exists() else None
    if start_from is None and init_from and init_from.exists():
        start_from = init_from
    if start_from:
        step, saved_config, extra = load_state(start_from, generator, critic)
        config = TrainConfig(**{**saved_config, **overrides})
        print(f"{'Resuming' if start_from == state_path else 'Starting from'} {start_from} at step {step}")
        generator.prefill = saved_config.get("prefill", "none")
    if config.prefill != generator.prefill:
        switch_prefill(generator, config.prefill, extra, step)
        if step:
            print(f"Prefill switched to {config.prefill!r}: both stages now learn a correction to it")
    return step, config, extra


def switch_prefill(generator: Generator, prefill: str, extra: dict, step: int) -> None:
    """Continue a run with another prefill: the learned layers stay, the output layers restart at zero."""
    if prefill not in PREFILL_KINDS:
        raise SystemExit(f"Unknown prefill {prefill!r}; choose from {', '.join(PREFILL_KINDS)}.")
    generator.prefill = prefill
    if prefill != "none":
        zero_residual_outputs(generator)
    extra.setdefault("prefill_switches", []).append({"step": step, "prefill": prefill})


def default_working_size(config: TrainConfig) -> int:
    """The generator input side stored with exported weights (docs/evaluation.md has the measurements).

    Paper-style weights run where they were trained (256 beat 512 for them); weights with the harmonic
    prefill run at the paper's 512: their prefill is exact at any size and 512 keeps more of the hole's
    border than 256 (in-hole L1 22.6 vs 24.6 at 512², 17.5 vs 18.7 at HD, prefill alone).
    """
    return 512 if config.prefill != "none" else max(config.size, 128)


def revive_stage(generator, data, rng, config: TrainConfig, device, prefix: str, extra: dict, step: int):
    """Rescale the gated layers named ``prefix``* of a resumed generator to output std 0.5 on a batch
    (backend.network.renormalise_layers); a residual output layer among them restarts at zero."""
    sample = data.batch()[:2].to(device)
    sample_hole = torch.from_numpy(mask_batch(rng, 2, config.size, config.size)).to(device)
    before = renormalise_layers(generator, sample, sample_hole, prefix)
    if not before:
        raise SystemExit(f"No layer of the generator is named {prefix!r}*; try 'refine' or 'coarse'.")
    if generator.prefill != "none":
        zero_residual_outputs(generator, prefix)
    name, largest = max(before, key=lambda pair: pair[1])
    print(f"Renormalised {len(before)} layers named {prefix}* (largest output std was {largest:.3g}, {name})")
    extra.setdefault("renormalised", []).append({"step": step, "prefix": prefix, "largest_std": largest})


def open_output_gates(generator: Generator, extra: dict, step: int) -> list[str]:
    """backend.network.hold_output_gates_open (the fix of the dead refine stage, measurements there);
    a switch that changed the generator is recorded in extra["output_gates_opened"]."""
    changed = hold_output_gates_open(generator)
    if changed:
        extra.setdefault("output_gates_opened", []).append({"step": step, "layers": changed})
    return changed


class StopFlag:
    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: object) -> None:
        self.stop = True


def training_precision(device: torch.device, precision: str) -> torch.dtype | None:
    """Autocast dtype for training: 'auto' is bf16 on CUDA (fp16 would need a gradient scaler) and
    backend.device.choose_precision's choice elsewhere."""
    if precision == "auto" and device.type == "cuda":
        return torch.bfloat16
    return choose_precision(device, precision)


def peek_config(state_path: Path, init_from: Path | None) -> dict:
    """The train config stored in the state a run would start from ({} for a fresh run)."""
    from safetensors import safe_open

    for path in (state_path, init_from):
        if path and path.exists():
            with safe_open(str(path), framework="pt") as f:
                return json.loads(f.metadata()["train_config"])
    return {}


HEALTH_CROPS = 16  # the health checks' fixed batch (4 crops proved too few: lab.health's docstring)


def open_data(args: argparse.Namespace, config: TrainConfig, device: torch.device, rng, step: int):
    """The training crops (photos, or a datapack's tiles on the device), a fixed batch of 4 with its holes
    (samples.png) and a fixed batch of HEALTH_CROPS with theirs (the health checks)."""

    def fixed_batch(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        fixed_rng = np.random.default_rng(seed)
        if args.datapack:
            real = TileCrops(tiles, config.size, count, torch.Generator().manual_seed(seed)).batch()
        else:
            sized = TrainConfig(**{**asdict(config), "batch": count})
            real = to_device(PhotoCrops(Path(args.photos), sized, fixed_rng).batch(), device)
        hole = to_device(torch.from_numpy(mask_batch(fixed_rng, count, config.size, config.size)), device)
        return real, hole

    if args.datapack:
        from lab.datapack import TileCrops, load_tiles

        tiles, meta = load_tiles(Path(args.datapack))
        tiles = to_device(tiles, device)
        print(f"Datapack: {meta['count']} tiles of {meta['tile']} px ({meta['photos']} photos)")
        draw = torch.Generator().manual_seed(args.seed + step)
        data = TileCrops(tiles, config.size, config.batch, draw)
    else:
        data = PhotoCrops(Path(args.photos), config, rng)
    return data, fixed_batch(4, 1234), fixed_batch(HEALTH_CROPS, 4321)


def prefill_on_device(choice: str, device: torch.device) -> bool:
    """Whether the harmonic prefill is solved on the training device (lab.gpu_prefill) rather than by
    backend.prefill's exact CPU solver: 'auto' does so on CUDA only."""
    return choice == "device" or (choice == "auto" and device.type == "cuda")


def open_masks(args: argparse.Namespace, config: TrainConfig, device: torch.device, rng, step: int):
    """A pool of masks on the device (lab.datapack.MaskPool; default 4096 on CUDA), else None: masks are
    then drawn on the CPU every step."""
    count = args.mask_pool if args.mask_pool is not None else (4096 if device.type == "cuda" else 0)
    if not count:
        return None
    from lab.datapack import MaskPool

    begun = time.time()
    hole_range = (config.hole_min, config.hole_max)
    pool = MaskPool(
        rng, count, config.size, hole_range, device, torch.Generator().manual_seed(args.seed + step)
    )
    print(f"Mask pool: {count} masks of {config.size} px drawn in {time.time() - begun:.1f} s")
    return pool


def stage_parameters(generator: Generator) -> dict[str, list[torch.nn.Parameter]]:
    return {"coarse": list(generator.coarse.parameters()), "refine": list(generator.refine.parameters())}


def generator_optimiser(generator: Generator, config: TrainConfig) -> torch.optim.Adam:
    """Adam (betas 0.5, 0.9 as the official code) with one parameter group per stage; the refine
    stage's learning rate is lr_g * refine_lr_scale."""
    stages = stage_parameters(generator)
    groups = [
        {"params": stages["coarse"], "lr": config.lr_g, "name": "coarse"},
        {"params": stages["refine"], "lr": config.lr_g * config.refine_lr_scale, "name": "refine"},
    ]
    return torch.optim.Adam(groups, betas=(0.5, 0.9))


def train_step(
    generator: Generator,
    critic: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    hole: torch.Tensor,
    config: TrainConfig,
    step: int,
    autocast_kwargs: dict,
    vgg: VggFeatures | None = None,
) -> dict[str, float]:
    """One generator update (Eq. 10-14) and, when the adversarial term is on, one critic update
    (Eq. 9) every critic_every steps. Returns the step's losses and per-stage gradient norms.

    With config.perceptual_weight > 0 (and ``vgg``) the update adds that weight times the perceptual
    term (lab.perceptual) of each stage's fill pasted into the photo; with config.std_weight > 0 it
    adds that weight times lab.health.std_excess of the gated layers' output stds on this batch."""
    recording = recorded_output_stds(generator) if config.std_weight > 0 else nullcontext([])
    with recording as stds, torch.autocast(**autocast_kwargs):
        out = generator(real, hole)
    bound = std_excess(stds, config.std_ceiling)
    pasted = out.refined.float() * hole + real * (1 - hole)

    adversarial_on = step >= config.adversarial_start
    critic_loss = torch.zeros(())
    if adversarial_on and step % config.critic_every == 0:  # Eq. 9
        opt_d.zero_grad(set_to_none=True)
        fake = pasted.detach()
        critic_loss = critic(fake).mean() - critic(real).mean()
        critic_loss = critic_loss + config.gradient_penalty * gradient_penalty(critic, real, fake)
        critic_loss.backward()
        opt_d.step()

    opt_g.zero_grad(set_to_none=True)  # Eq. 10-14
    rec_coarse, hole_l1_coarse = reconstruction_loss(out.coarse.float(), real, hole, config)
    rec_refined, hole_l1_refined = reconstruction_loss(out.refined.float(), real, hole, config)
    adversarial = torch.zeros(())
    if adversarial_on:  # Eq. 10: the critic's score of the pasted fill; the critic itself is frozen
        for p in critic.parameters():
            p.requires_grad_(False)
        adversarial = -critic(pasted).mean()
        for p in critic.parameters():
            p.requires_grad_(True)
    perceptual = torch.zeros(())
    if config.perceptual_weight > 0:
        if vgg is None:
            raise ValueError("perceptual_weight > 0 needs the VGG features (lab.perceptual.VggFeatures)")
        pasted_coarse = out.coarse.float() * hole + real * (1 - hole)
        with torch.autocast(**autocast_kwargs):
            perceptual = perceptual_loss(vgg, pasted_coarse, real) + perceptual_loss(vgg, pasted, real)
    total = rec_coarse + rec_refined + config.adversarial_weight * adversarial
    (total + config.perceptual_weight * perceptual + config.std_weight * bound).backward()
    norms = {}
    for name, params in stage_parameters(generator).items():
        clip = config.grad_clip if config.grad_clip > 0 else math.inf
        norms[f"grad_{name}"] = torch.nn.utils.clip_grad_norm_(params, clip).item()
    opt_g.step()
    return {
        "in_hole_l1_coarse": hole_l1_coarse.item(),
        "in_hole_l1_refined": hole_l1_refined.item(),
        "critic": critic_loss.item(),
        "adversarial": adversarial.item(),
        "perceptual": float(perceptual.item()),
        "std_excess": float(bound.item()),
        **norms,
    }


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB on {name}"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process peak RSS)"


def train(args: argparse.Namespace) -> int:
    started = time.time()  # --minutes counts from here: start-up, training and the last checkpoint
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.safetensors"
    torch.manual_seed(args.seed)
    device = choose_device(args.device)
    autocast = training_precision(device, args.precision)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    generator = Generator().to(device)
    # Batch and critic cadence follow the command line; the other options only when given
    # (otherwise a resumed run keeps its own, and options it never stored take their defaults).
    overrides: dict = {"batch": args.batch, "critic_every": args.critic_every}
    given = {
        "size": args.size,
        "adversarial_start": args.adversarial_start,
        "adversarial_weight": args.adversarial_weight,
        "prefill": args.prefill,
        "grad_clip": args.grad_clip,
        "refine_lr_scale": args.refine_lr_scale,
        "open_output_gates": args.open_output_gates,
        "perceptual_weight": args.perceptual_weight,
        "std_ceiling": args.std_ceiling,
        "std_weight": args.std_weight,
    }
    overrides.update({k: v for k, v in given.items() if v is not None})
    if args.lr:
        overrides.update(lr_g=args.lr, lr_d=args.lr)
    if args.export_working_size:  # refused now, not when the exported weights are loaded
        try:
            check_working_size(args.export_working_size)
        except HiFillError as error:
            raise SystemExit(f"--export-working-size: {error.message}") from None
    init_from = Path(args.init) if args.init else None
    config = TrainConfig(**{**peek_config(state_path, init_from), **overrides})
    if config.size < 64 or config.size % 16:
        raise SystemExit(f"--size {config.size}: training crops are a multiple of 16 from 64 up.")
    critic = Discriminator(config.size).to(device)
    step, config, extra = restore_state(generator, critic, state_path, init_from, config, overrides)
    extra.setdefault("seed", args.seed)
    rng = np.random.default_rng(args.seed + step)
    data, (fixed_real, fixed_hole), (health_real, health_hole) = open_data(args, config, device, rng, step)
    masks = open_masks(args, config, device, rng, step)
    if config.prefill != "none" and prefill_on_device(args.prefill_solver, device):
        from lab.gpu_prefill import harmonic_fill_cg

        generator.prefill_solver = harmonic_fill_cg
    if args.renormalise and step:
        revive_stage(generator, data, rng, config, device, args.renormalise, extra, step)
    elif args.renormalise:
        print("--renormalise has nothing to do in a fresh run: its initialisation rescales every layer")
    if step == 0:  # a fresh run: data-dependent init of the generator (see init_data_dependent)
        init_official(critic)
        sample = data.batch()[:2].to(device)
        sample_hole = torch.from_numpy(mask_batch(rng, 2, config.size, config.size)).to(device)
        init_data_dependent(generator, sample, sample_hole)
        extra["init"] = "data-dependent (LSUV-style, output std 0.5 per gated layer)"
        if config.prefill != "none":
            zero_residual_outputs(generator)
            extra["init"] += "; residual outputs zeroed (prefill)"
            extra.pop("prefill_switches", None)
    if config.open_output_gates and config.prefill != "none" and open_output_gates(generator, extra, step):
        print("Residual output gates held open (their corrections restart at zero): --open-output-gates")
    if args.channels_last:
        generator.to(memory_format=torch.channels_last)
        critic.to(memory_format=torch.channels_last)
    opt_g = generator_optimiser(generator, config)
    opt_d = torch.optim.Adam(critic.parameters(), lr=config.lr_d, betas=(0.5, 0.9))
    vgg = None
    if config.perceptual_weight > 0:
        try:
            vgg = VggFeatures.load(Path(args.vgg)).to(device)
        except PerceptualError as error:
            raise SystemExit(f"--perceptual-weight: {error}") from None

    losses_csv = run / "losses.csv"
    new_csv = not losses_csv.exists()
    log = open(losses_csv, "a", newline="")  # noqa: SIM115 -- open for the whole run, closed at the end
    writer = csv.writer(log)
    if new_csv:
        writer.writerow(
            ["step", "in_hole_l1_coarse", "in_hole_l1_refined", "critic", "adversarial", "seconds"]
        )
    health_log = HealthLog(run, extra)

    stop = StopFlag()
    budget = args.minutes * 60 if args.minutes else math.inf
    deadline = started + budget - min(30.0, 0.05 * budget)  # the rest is for the last checkpoint
    end_step = step + args.steps if args.steps else math.inf
    bar = tqdm(
        initial=step, total=None if end_step == math.inf else end_step, unit="step", dynamic_ncols=True
    )
    first_step, loop_started = step, time.time()
    last_save, wall_before = time.time(), float(extra.get("wall_seconds", 0.0))
    autocast_kwargs = {
        "device_type": device.type,
        "dtype": autocast or torch.float32,
        "enabled": autocast is not None,
    }
    running: dict[str, float] = {}
    kind = "GPU" if device.type == "cuda" else "CPU"
    source = f"{len(data.paths)} {'datapack tiles' if args.datapack else 'photos'}"

    def check_health() -> None:
        if extra.get("health", {}).get("last_step") != step:  # once per step
            health_log.record(step, check(generator, health_real, health_hole), running, bar.write)

    def checkpoint() -> None:
        check_health()
        extra["wall_seconds"] = wall_before + time.time() - started
        extra["photos"] = len(data.paths)
        save_state(state_path, generator, critic, step, config, extra)
        if args.commit_state:
            compact_state(state_path, Path(args.commit_state))
        card = ModelConfig(
            source="ours",
            train_resolution=config.size,
            working_size=args.export_working_size or default_working_size(config),
            prefill=config.prefill,
            steps=step,
            notes=f"{kind}-trained on {source}; {extra['wall_seconds'] / 3600:.2f} h wall time",
            extra={
                "train_config": asdict(config),
                "device": str(device),
                "precision": str(autocast).removeprefix("torch.") if autocast else "float32",
                "init": extra.get("init", ""),
                "prefill_switches": extra.get("prefill_switches", []),
                "renormalised": extra.get("renormalised", []),
                "health": extra.get("health", {}),
            },
        )
        if args.export:  # '' = keep the shipped weights as they are
            save_generator(Path(args.export), generator, card)
        generator.eval()
        with torch.no_grad(), torch.autocast(**autocast_kwargs):
            out = generator(fixed_real, fixed_hole)
        generator.train()
        sample_sheet(run / "samples.png", fixed_real, fixed_hole, out.coarse.float(), out.refined.float())
        log.flush()
        plot_losses(losses_csv, run / "losses.png")

    check_health()  # where this session starts from
    while step < end_step and time.time() < deadline and not stop.stop:
        real = data.batch().to(device, non_blocking=True)  # a datapack's crops are on the device already
        if masks is not None:
            hole = masks.batch(config.batch)
        else:
            hole_range = (config.hole_min, config.hole_max)
            hole = torch.from_numpy(
                mask_batch(rng, config.batch, config.size, config.size, "mixed", hole_range)
            )
            hole = to_device(hole, device)
        if args.channels_last:
            real, hole = (
                real.contiguous(memory_format=torch.channels_last),
                hole.contiguous(memory_format=torch.channels_last),
            )
        try:
            values = train_step(
                generator, critic, opt_g, opt_d, real, hole, config, step, autocast_kwargs, vgg
            )
        except torch.cuda.OutOfMemoryError:
            values = None  # handled below, once the traceback no longer holds the step's tensors
        if values is None:
            del real, hole
            if config.batch == 1:
                raise SystemExit("Out of device memory at batch 1: use a smaller --size.") from None
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            config = replace(config, batch=config.batch // 2)
            data.config, data.batch_size = config, config.batch  # PhotoCrops reads one, TileCrops the other
            extra.setdefault("batch_halved", []).append({"step": step, "batch": config.batch})
            bar.write(f"Out of device memory: batch halved to {config.batch} at step {step}")
            continue
        step += 1
        for k, v in values.items():
            running[k] = 0.98 * running.get(k, v) + 0.02 * v
        bar.update(1)
        bar.set_postfix(
            hole_l1=f"{running['in_hole_l1_refined'] * 127.5:.1f}", critic=f"{running['critic']:.2f}"
        )
        if step % 10 == 0:
            row = [running[k] for k in ("in_hole_l1_coarse", "in_hole_l1_refined", "critic", "adversarial")]
            writer.writerow([step, *(f"{v:.5f}" for v in row), f"{time.time() - loop_started:.0f}"])
        if step % 500 == 0:
            data.refresh()
        if args.health_every and step % args.health_every == 0:
            check_health()
        if time.time() - last_save > args.save_minutes * 60:
            checkpoint()
            last_save = time.time()
    seconds = time.time() - loop_started
    checkpoint()
    bar.close()
    log.close()
    done = step - first_step
    print(
        f"Stopped at step {step}; state in {state_path}, generator exported to {args.export or 'nowhere'}\n"
        f"{done} steps in {seconds:.0f} s ({done / max(seconds, 1e-9):.2f} steps/s) at batch {config.batch}, "
        f"size {config.size}, {kind} {autocast or 'float32'}; peak memory {peak_memory(device)}; "
        f"{time.time() - started:.0f} s since start; {health_log.summary()}"
    )
    return 0


def main(argv: list[str]) -> int:
    return train(build_parser().parse_args(argv))

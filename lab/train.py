"""Training (Algorithm 1): WGAN-GP critic + reconstruction losses (Eq. 9-14), resumable, CPU or CUDA.

python -m backend train --photos data/photos/train --run runs/cpu --minutes 60

State lives in RUN/state.safetensors (generator fp32, critic fp16, step, history; no pickle) and is
resumed automatically; the shipped generator (fp16) is exported to --export at every checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from backend.device import choose_device, choose_precision
from backend.inference import check_working_size
from backend.network import (
    Discriminator,
    Generator,
    init_data_dependent,
    init_official,
    renormalise_layers,
    zero_residual_outputs,
)
from backend.prefill import PREFILL_KINDS
from backend.weights import DEFAULT_WEIGHTS, ModelConfig, save_generator
from lab.masks import mask_batch
from shared_protocol import HiFillError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; stored with the state so a resumed run keeps them."""

    size: int = 256  # training crop side
    batch: int = 4
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    in_hole_weight: float = 1.0  # alpha_1, Eq. 13
    context_weight: float = 1.2  # alpha_2, Eq. 13
    adversarial_weight: float = 1e-4  # beta, Eq. 14
    gradient_penalty: float = 10.0  # sigma, Eq. 9 (official WGAN_GP_LAMBDA)
    critic_every: int = 1  # critic updates every N generator steps (Algorithm 1 uses 5 per step)
    adversarial_start: int = 0  # steps of reconstruction-only warm-up before the critic and Eq. 14's term
    hole_min: float = 0.05
    hole_max: float = 0.35
    cache_short_side: int = 640  # photos are cached at this short side; crops come from rescales of it
    prefill: str = "none"  # the generator's prefill (backend.network.Generator); "harmonic" for ours


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
    critic.load_state_dict({k[7:]: v.float() for k, v in tensors.items() if k.startswith("critic.")})
    return int(meta["step"]), json.loads(meta["train_config"]), json.loads(meta["extra"])


# ---------------------------------------------------------------------------------------------
# Visuals
# ---------------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def sample_sheet(path: Path, real, hole, coarse, refined) -> None:
    """Rows: masked input | coarse | refined | pasted result | ground truth."""
    rows = []
    for i in range(real.shape[0]):
        masked = real[i] * (1 - hole[i]) + hole[i]
        pasted = refined[i] * hole[i] + real[i] * (1 - hole[i])
        rows.append(
            np.concatenate([to_uint8(t) for t in (masked, coarse[i], refined[i], pasted, real[i])], 1)
        )
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def plot_losses(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        return
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("in_hole_l1_coarse", "in_hole_l1_refined"):
        axes[0].plot(steps, [float(r[key]) * 127.5 for r in rows], label=key)
    axes[0].set_ylabel("in-hole L1 (0-255 scale)")
    axes[1].plot(steps, [float(r["critic"]) for r in rows], label="critic loss")
    axes[1].plot(steps, [float(r["adversarial"]) for r in rows], label="generator adversarial")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


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


class StopFlag:
    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: object) -> None:
        self.stop = True


def train(args: argparse.Namespace) -> int:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.safetensors"
    torch.manual_seed(args.seed)
    device = choose_device(args.device)
    autocast = choose_precision(device, args.precision)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)

    generator, critic = Generator().to(device), None
    # Batch and critic cadence follow the command line; lr and the adversarial start only when given
    # (otherwise a resumed run keeps its own).
    overrides: dict = {"batch": args.batch, "critic_every": args.critic_every}
    if args.adversarial_start is not None:
        overrides["adversarial_start"] = args.adversarial_start
    if args.lr:
        overrides.update(lr_g=args.lr, lr_d=args.lr)
    if args.prefill:
        overrides["prefill"] = args.prefill
    if args.export_working_size:  # refused now, not when the exported weights are loaded
        try:
            check_working_size(args.export_working_size)
        except HiFillError as error:
            raise SystemExit(f"--export-working-size: {error.message}") from None
    config = TrainConfig(**{"size": args.size, **overrides})
    critic = Discriminator(config.size).to(device)
    init_from = Path(args.init) if args.init else None
    step, config, extra = restore_state(generator, critic, state_path, init_from, config, overrides)
    extra.setdefault("seed", args.seed)
    rng = np.random.default_rng(args.seed + step)
    data = PhotoCrops(Path(args.photos), config, rng)
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
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=config.lr_d, betas=(0.5, 0.9))

    fixed_rng = np.random.default_rng(1234)
    fixed = PhotoCrops(Path(args.photos), TrainConfig(**{**asdict(config), "batch": 4}), fixed_rng)
    fixed_real = fixed.batch().to(device)
    fixed_hole = torch.from_numpy(mask_batch(fixed_rng, 4, config.size, config.size)).to(device)

    losses_csv = run / "losses.csv"
    new_csv = not losses_csv.exists()
    log = open(losses_csv, "a", newline="")  # noqa: SIM115 -- open for the whole run, closed at the end
    writer = csv.writer(log)
    if new_csv:
        writer.writerow(
            ["step", "in_hole_l1_coarse", "in_hole_l1_refined", "critic", "adversarial", "seconds"]
        )

    stop = StopFlag()
    deadline = time.time() + args.minutes * 60 if args.minutes else math.inf
    end_step = step + args.steps if args.steps else math.inf
    bar = tqdm(
        initial=step, total=None if end_step == math.inf else end_step, unit="step", dynamic_ncols=True
    )
    last_save, started = time.time(), time.time()
    wall_before = float(extra.get("wall_seconds", 0.0))
    autocast_kwargs = {
        "device_type": device.type,
        "dtype": autocast or torch.float32,
        "enabled": autocast is not None,
    }
    running = {}

    def checkpoint() -> None:
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
            notes=f"CPU-trained on {len(data.paths)} photos; {extra['wall_seconds'] / 3600:.2f} h wall time",
            extra={
                "train_config": asdict(config),
                "device": str(device),
                "precision": str(autocast).removeprefix("torch.") if autocast else "float32",
                "init": extra.get("init", ""),
                "prefill_switches": extra.get("prefill_switches", []),
                "renormalised": extra.get("renormalised", []),
            },
        )
        save_generator(Path(args.export), generator, card)
        generator.eval()
        with torch.no_grad(), torch.autocast(**autocast_kwargs):
            out = generator(fixed_real, fixed_hole)
        generator.train()
        sample_sheet(run / "samples.png", fixed_real, fixed_hole, out.coarse.float(), out.refined.float())
        log.flush()
        plot_losses(losses_csv, run / "losses.png")

    while step < end_step and time.time() < deadline and not stop.stop:
        real = data.batch().to(device)
        hole = torch.from_numpy(
            mask_batch(
                rng, config.batch, config.size, config.size, "mixed", (config.hole_min, config.hole_max)
            )
        ).to(device)
        with torch.autocast(**autocast_kwargs):
            out = generator(real, hole)
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
        (rec_coarse + rec_refined + config.adversarial_weight * adversarial).backward()
        opt_g.step()
        step += 1

        values = {
            "in_hole_l1_coarse": hole_l1_coarse.item(),
            "in_hole_l1_refined": hole_l1_refined.item(),
            "critic": critic_loss.item(),
            "adversarial": adversarial.item(),
        }
        for k, v in values.items():
            running[k] = 0.98 * running.get(k, v) + 0.02 * v
        bar.update(1)
        bar.set_postfix(
            hole_l1=f"{running['in_hole_l1_refined'] * 127.5:.1f}", critic=f"{running['critic']:.2f}"
        )
        if step % 10 == 0:
            writer.writerow([step, *(f"{running[k]:.5f}" for k in values), f"{time.time() - started:.0f}"])
        if step % 500 == 0:
            data.refresh()
        if time.time() - last_save > args.save_minutes * 60:
            checkpoint()
            last_save = time.time()
    checkpoint()
    bar.close()
    log.close()
    print(f"Stopped at step {step}; state in {state_path}, generator exported to {args.export}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend train", description=__doc__.splitlines()[0])
    p.add_argument("--photos", default="data/photos/train", help="folder of training photos (recursive)")
    p.add_argument("--run", default="runs/cpu", help="run folder: state, samples.png, losses.csv/png")
    p.add_argument(
        "--init",
        default="lab/state/training-state.safetensors",
        help="state to start from when the run folder has none (the committed state)",
    )
    p.add_argument("--export", default=str(DEFAULT_WEIGHTS), help="where to write the shipped generator")
    p.add_argument(
        "--commit-state",
        default="lab/state/training-state.safetensors",
        help="compact (fp16) copy of the state written at each checkpoint, for the repository ('' = none)",
    )
    p.add_argument(
        "--export-working-size",
        type=int,
        default=0,
        help="generator input side stored with the exported weights (0: 512 with a prefill, else the crop)",
    )
    p.add_argument("--steps", type=int, default=0, help="stop after this many more steps (0: no limit)")
    p.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0: no limit)")
    p.add_argument("--save-minutes", type=float, default=10)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: the resumed run's, else 2e-4)"
    )
    p.add_argument("--critic-every", type=int, default=1)
    p.add_argument(
        "--adversarial-start",
        type=int,
        default=None,
        help="train with the reconstruction loss alone until this step, then add the critic "
        "(default: the resumed run's, else 0 = from the start as in Algorithm 1)",
    )
    p.add_argument(
        "--prefill",
        choices=PREFILL_KINDS,
        default=None,
        help="start the hole from a smooth fill, learn corrections (default: the resumed run's, else none)",
    )
    p.add_argument(
        "--renormalise",
        default="",
        metavar="PREFIX",
        help="on resuming, rescale the layers named PREFIX* (e.g. 'refine') to output std 0.5 on a batch: "
        "revives a stage whose activations blew up and whose gates saturated",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 autocast")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    return p


def main(argv: list[str]) -> int:
    return train(build_parser().parse_args(argv))

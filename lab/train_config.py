"""The training run's settings: its hyper-parameters (TrainConfig, stored with the state) and its
command line (python -m backend train --help)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from backend.prefill import PREFILL_KINDS
from backend.weights import DEFAULT_WEIGHTS
from lab.perceptual import DEFAULT_VGG

TRAIN_DESCRIPTION = (
    "Training (Algorithm 1): WGAN-GP critic + reconstruction losses (Eq. 9-14), resumable, CPU or CUDA."
)


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
    open_output_gates: bool = (
        True  # prefill generators: residual output gates held open (see open_output_gates)
    )
    grad_clip: float = 0.0  # max L2 norm of each stage's gradient per step (0: off)
    refine_lr_scale: float = 1.0  # the refine stage's Adam learning rate is lr_g * this
    perceptual_weight: float = 0.0  # VGG16 feature L1 of both stages' pasted fills (lab.perceptual; 0: off)
    std_ceiling: float = 2.0  # gated layers' output std above this is penalised (lab.health.std_excess)
    std_weight: float = 1e-2  # weight of that penalty (0: off)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend train", description=TRAIN_DESCRIPTION)
    p.add_argument("--photos", default="data/photos/train", help="folder of training photos (recursive)")
    p.add_argument(
        "--datapack",
        default="",
        help="train from this datapack (python -m backend build-datapack) instead of --photos",
    )
    p.add_argument("--run", default="runs/cpu", help="run folder: state, samples.png, losses.csv/png")
    p.add_argument(
        "--init",
        default="lab/state/training-state.safetensors",
        help="state to start from when the run folder has none (the committed state)",
    )
    p.add_argument(
        "--export", default=str(DEFAULT_WEIGHTS), help="where to write the shipped generator ('' = nowhere)"
    )
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
    p.add_argument(
        "--minutes",
        type=float,
        default=0,
        help="stop so that the whole command, start-up and last checkpoint included, takes about this "
        "long (0: no limit)",
    )
    p.add_argument("--save-minutes", type=float, default=10)
    p.add_argument(
        "--health-every",
        type=int,
        default=250,
        help="check the generator's health every N steps as well as at checkpoints (0: checkpoints only)",
    )
    p.add_argument(
        "--size", type=int, default=None, help="training crop side (default: the resumed run's, else 256)"
    )
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
        "--adversarial-weight",
        type=float,
        default=None,
        help=f"beta of Eq. 14 (default: the resumed run's, else {TrainConfig.adversarial_weight})",
    )
    p.add_argument(
        "--open-output-gates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with a prefill, hold the residual output layers' gates open (constant 0.5) so that a stage "
        "cannot shut itself off (default: the resumed run's, else on)",
    )
    p.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        help="clip each stage's gradient to this L2 norm per step, 0 = off (default: the resumed run's, "
        f"else {TrainConfig.grad_clip})",
    )
    p.add_argument(
        "--refine-lr-scale",
        type=float,
        default=None,
        help="the refine stage's learning rate as a multiple of --lr (default: the resumed run's, "
        f"else {TrainConfig.refine_lr_scale})",
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
    p.add_argument(
        "--mask-pool",
        type=int,
        default=None,
        help="draw this many masks at the start and reuse them flipped/transposed (default: 4096 on CUDA, "
        "else 0 = new masks every step on the CPU)",
    )
    solvers = "exact (SuperLU, CPU), device (conjugate gradients, lab.gpu_prefill), auto (device on CUDA)"
    p.add_argument("--prefill-solver", choices=("auto", "exact", "device"), default="auto", help=solvers)
    p.add_argument(
        "--perceptual-weight",
        type=float,
        default=None,
        help="weight of the VGG16 perceptual term of both stages (0: off, the default for a new run; "
        "needs 'python -m backend build-vgg' once)",
    )
    p.add_argument(
        "--std-ceiling",
        type=float,
        default=None,
        help="gated layers' output std above this adds a penalty, the bound that keeps the unnormalised "
        f"stack from growing (default: the resumed run's, else {TrainConfig.std_ceiling})",
    )
    p.add_argument(
        "--std-weight",
        type=float,
        default=None,
        help=f"weight of that penalty, 0 = off (default: the resumed run's, else {TrainConfig.std_weight})",
    )
    p.add_argument("--vgg", default=str(DEFAULT_VGG), help=f"VGG16 features (default {DEFAULT_VGG})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), fp32, bf16 or fp16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    return p

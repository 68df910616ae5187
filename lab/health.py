"""Training health: are the generator's gated layers alive? Pure functions on a generator and a batch.

Every layer of both stages is a Light-Weight Gated Convolution (section 3.4, Eq. 5):
output = ELU(conv_f(x)) * sigmoid(gate(x)). Two ways for such a stack to die, both seen in our runs:

- blown-up activations: nothing normalises the stack, so a layer's output can grow without bound
  (the refine decoder reached std 275); its successors' gates, fed with huge inputs, saturate;
- shut gates: sigmoid(gate) ~ 0 on (nearly) every pixel; the layer then passes neither signal nor
  gradient, and nothing pulls it back open.

``measure`` records, per gated layer, the std of its output and the share of its gate values below
``SHUT_BELOW``, over all pixels and over the hole's; ``verdict`` turns that into a pass/fail with a
sentence per problem naming the layer: a layer is dead when its gates are shut on nearly all (90 %) of
its values in the hole, or on all but 1 % of all its values; a stage when they are on most (50 %) of
all its gate values. A gate may rightly close where a layer has nothing to pass: the coarse decoder's
c_de_up_128 of the CPU run (step 10,731), on 16 validation crops at 256², is shut on 73 % of all its
values but 44 % of those in the hole (mean gate there 0.15, outside 0.035), and zeroing its output
raises the coarse stage's in-hole L1 there from 19.10 to 20.72: alive where the fill is made, which
the share over all pixels alone called dead. On the run's fixed training batch it sits at 81-90 % in
the hole (89-94 % of all values) at every committed state from step 5,739 to 11,156.
That batch held 4 crops until session 10, too few for a share near a line: at step 13,478 the layer
was shut on 87 % of its in-hole values on those 4 crops (seed 1234), on 53-92 % (median 68 %) on 12
other batches of 4 training crops with training holes, on 60-71 % on four batches of 16 and on 60 and
72 % on two of 32. The training run's checks now use a fixed batch of 16 crops (lab.train.HEALTH_CROPS;
samples.png keeps the 4).
The band for the output std is 0.02..20 around the initialisation's 0.5 (backend.network
.init_data_dependent): below 0.02 (1/25 of the start) a layer carries almost no signal through ~25
more layers of ELU x sigmoid; above 20 (40x the start, 20x the [-1, 1] image range) gates downstream
are pushed into saturation. The residual output layers of a prefill generator
(Generator.RESIDUAL_OUTPUTS) output a correction that starts at exactly 0 and may stay small, so only
the upper bound applies to them.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from backend.network import GatedConv, Generator

SHUT_BELOW = 0.05  # a gate value below this passes less than 5 % of its feature
STD_BAND = (0.02, 20.0)
NEARLY_ALL = 0.9  # a layer whose gates are shut on more than this share of its hole's values is dead
EVERYWHERE = 0.99  # ... and so is one whose gates are shut on more than this share of all its values
MOST = 0.5  # a stage whose gates are shut on more than this share of all its gate values is dead


@dataclass(frozen=True)
class LayerHealth:
    """One gated layer on one batch: its output's std and the share of its gate values below SHUT_BELOW."""

    name: str  # e.g. "refine.re_de_conv_128"
    stage: str  # "coarse" or "refine"
    output_std: float
    shut: float  # share of gate values (pixels x gate channels) below SHUT_BELOW
    gate_values: int  # how many gate values the share is over
    residual_output: bool  # a correction layer of a prefill generator: no lower bound on its std
    shut_in_hole: float = 0.0  # the same share over the gate values at hole positions (the layer's
    # resolution: a position is in the hole when any input pixel it covers is)


@dataclass(frozen=True)
class Health:
    """The verdict on one batch: healthy, the problems as sentences, the per-layer numbers and the
    refine stage's mean in-hole contribution |refined - coarse| (0-255 scale)."""

    healthy: bool
    problems: tuple[str, ...]
    layers: tuple[LayerHealth, ...]
    refine_contribution: float

    def summary(self) -> str:
        """One line: green or RED, the extremes, and the problems."""
        std = max(self.layers, key=lambda layer: layer.output_std)
        shut = max(self.layers, key=lambda layer: layer.shut_in_hole)
        head = "health green" if self.healthy else "HEALTH RED"
        line = (
            f"{head}: largest output std {std.output_std:.3g} ({std.name}), most shut gates in the hole "
            f"{shut.shut_in_hole:.0%} ({shut.name}; {shut.shut:.0%} of all its values), refine "
            f"contribution {self.refine_contribution:.2f}/255"
        )
        return line if self.healthy else line + " -- " + "; ".join(self.problems)

    def as_dict(self) -> dict:
        return {
            "healthy": self.healthy,
            "problems": list(self.problems),
            "refine_contribution": self.refine_contribution,
            "layers": [asdict(layer) for layer in self.layers],
        }


@torch.no_grad()
def measure(
    generator: Generator, image: torch.Tensor, mask: torch.Tensor, shut_below: float = SHUT_BELOW
) -> tuple[list[LayerHealth], float]:
    """Run ``generator`` once (eval mode, no autocast) on image (B, 3, H, W) in [-1, 1] and mask
    (B, 1, H, W), 1 = hole. Returns per gated layer, in forward order, its health, and the refine
    stage's mean in-hole |refined - coarse| on the 0-255 scale."""
    stats: dict[str, list[float]] = {}
    handles = []
    residual = set(Generator.RESIDUAL_OUTPUTS) if generator.prefill != "none" else set()
    logit = torch.logit(torch.tensor(shut_below)).item()
    hole = mask.float()
    layers = [(n, m) for n, m in generator.named_modules() if isinstance(m, GatedConv)]
    for name, layer in layers:

        def on_output(_m, _i, out, name=name):
            stats.setdefault(name, [0.0, 0.0, 0.0, 0.0])[0] = out.float().std().item()

        def on_gate(_m, _i, out, name=name):
            shut = (out.float() < logit).float()  # (B, C, h, w)
            at_hole = F.adaptive_max_pool2d(hole.to(shut.device), shut.shape[-2:])  # (B, 1, h, w)
            in_hole = (shut * at_hole).sum() / (at_hole.sum() * shut.shape[1]).clamp_min(1.0)
            entry = stats.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            entry[1:] = shut.mean().item(), float(out.numel()), in_hole.item()

        handles += [layer.register_forward_hook(on_output), layer.gate.register_forward_hook(on_gate)]
    was_training = generator.training
    generator.eval()
    try:
        out = generator(image.float(), mask.float())
    finally:
        generator.train(was_training)
        for handle in handles:
            handle.remove()
    hole = hole.to(out.refined.device)
    change = ((out.refined.float() - out.coarse.float()).abs().mean(1, keepdim=True) * hole).sum()
    contribution = (change / hole.sum().clamp_min(1.0)).item() * 127.5
    result = [
        LayerHealth(
            n, n.split(".")[0], stats[n][0], stats[n][1], int(stats[n][2]), n in residual, stats[n][3]
        )
        for n, _ in layers
    ]
    return result, contribution


@contextmanager
def recorded_output_stds(generator: Generator) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass appends every gated layer's output std (a 0-d tensor that
    keeps its graph, so a loss can use it) to the yielded list."""
    stds: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: stds.append(out.float().std()))
        for m in generator.modules()
        if isinstance(m, GatedConv)
    ]
    try:
        yield stds
    finally:
        for handle in handles:
            handle.remove()


def std_excess(stds: list[torch.Tensor], ceiling: float) -> torch.Tensor:
    """sum over layers of max(0, std - ceiling)^2: the training-time bound on the gated activations.

    Why the stack needs one: nothing normalises it, and ELU x sigmoid is close to scale-free where the
    gates are open, so a layer's gain can rise while its successor's falls at almost no cost to the
    loss; Adam's noisy steps then random-walk the gains, and the walk compounds through the ~15
    layers of the refine stage (measured: re_de_conv_128's output std 3.9 -> 6.9 in 860 steps while no
    weight norm moved more than 8 %; std 275 with shut gates in an earlier run). The term is zero
    inside the bound and pulls a layer back along exactly those cheap directions when it leaves it.
    """
    if not stds:
        return torch.zeros(())
    return torch.stack([F.relu(s - ceiling) ** 2 for s in stds]).sum()


def verdict(
    layers: list[LayerHealth],
    refine_contribution: float = 0.0,
    band: tuple[float, float] = STD_BAND,
    nearly_all: float = NEARLY_ALL,
    most: float = MOST,
    everywhere: float = EVERYWHERE,
) -> Health:
    """Fail when a layer's output std leaves ``band`` (only the upper bound for residual outputs), when
    a layer's gates are shut on more than ``nearly_all`` of its values in the hole or on more than
    ``everywhere`` of all its values, or a stage's on more than ``most`` of all of its gate values."""
    problems = []
    low, high = band
    for layer in layers:
        if not layer.output_std <= high:  # NaN fails too
            problems.append(f"{layer.name} output std {layer.output_std:.3g} is above {high:g}")
        elif layer.output_std < low and not layer.residual_output:
            problems.append(f"{layer.name} output std {layer.output_std:.3g} is below {low:g}")
        if layer.shut_in_hole > nearly_all:
            problems.append(f"{layer.name} gates shut on {layer.shut_in_hole:.0%} of values in the hole")
        elif layer.shut > everywhere:
            problems.append(f"{layer.name} gates shut on {layer.shut:.0%} of values")
    for stage in sorted({layer.stage for layer in layers}):
        members = [layer for layer in layers if layer.stage == stage]
        total = sum(layer.gate_values for layer in members)
        shut = sum(layer.shut * layer.gate_values for layer in members) / max(total, 1)
        if shut > most:
            problems.append(f"the {stage} stage's gates are shut on {shut:.0%} of values")
    return Health(not problems, tuple(problems), tuple(layers), refine_contribution)


def check(generator: Generator, image: torch.Tensor, mask: torch.Tensor, **limits) -> Health:
    """measure + verdict: the generator's health on this batch (limits: band, nearly_all, most)."""
    layers, contribution = measure(generator, image, mask)
    return verdict(layers, contribution, **limits)


class HealthLog:
    """A run's health record: RUN/health.csv (one row per check), RUN/health.json (the last check, per
    layer) and ``extra["health"]`` (stored with the training state: checks, red checks, the first red
    one, the steps covered) so that a model card can say whether health was green over the whole run."""

    FIELDS = (
        "step", "healthy", "largest_std", "largest_std_layer", "most_shut", "most_shut_layer",
        "refine_contribution", "in_hole_l1_coarse", "in_hole_l1_refined", "grad_coarse", "grad_refine",
        "problems", "most_shut_in_hole", "most_shut_in_hole_layer",
    )  # fmt: skip

    def __init__(self, run: Path, extra: dict) -> None:
        self.csv, self.json, self.extra = run / "health.csv", run / "health.json", extra

    def record(
        self, step: int, health: Health, running: dict[str, float], write: Callable[[str], None] = print
    ) -> None:
        """Log one check; an unhealthy one is also written to stderr in a banner."""
        std = max(health.layers, key=lambda layer: layer.output_std)
        shut = max(health.layers, key=lambda layer: layer.shut)
        shut_in_hole = max(health.layers, key=lambda layer: layer.shut_in_hole)
        row = {
            "step": step,
            "healthy": int(health.healthy),
            "largest_std": f"{std.output_std:.4g}",
            "largest_std_layer": std.name,
            "most_shut": f"{shut.shut:.4f}",
            "most_shut_layer": shut.name,
            "refine_contribution": f"{health.refine_contribution:.4f}",
            **{k: f"{running[k]:.5g}" if k in running else "" for k in self.FIELDS[7:11]},
            "problems": "; ".join(health.problems),
            "most_shut_in_hole": f"{shut_in_hole.shut_in_hole:.4f}",
            "most_shut_in_hole_layer": shut_in_hole.name,
        }
        self._upgrade_header()
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.json.write_text(json.dumps({"step": step, **health.as_dict()}, indent=1))
        record = self.extra.setdefault("health", {"checks": 0, "red": 0, "first_step": step})
        record["checks"] += 1
        record["last_step"] = step
        record["last"] = health.summary()
        if not health.healthy:
            record["red"] += 1
            record.setdefault("first_red", {"step": step, "problems": list(health.problems)})
            banner = "!" * 100
            print(f"{banner}\nstep {step}: {health.summary()}\n{banner}", file=sys.stderr, flush=True)
        else:
            write(f"step {step}: {health.summary()}")

    def _upgrade_header(self) -> None:
        """A health.csv of an older run (fewer columns) is rewritten with today's, its new cells empty."""
        if not self.csv.exists():
            return
        with open(self.csv, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) == self.FIELDS:
                return
            rows = list(reader)
        with open(self.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.FIELDS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def summary(self) -> str:
        """ "health green over steps A-B (N checks)" or "HEALTH RED on K of N checks since step A"."""
        record = self.extra.get("health")
        if not record:
            return "health not checked"
        span = f"steps {record['first_step']}-{record['last_step']} ({record['checks']} checks)"
        if record["red"] == 0:
            return f"health green over {span}"
        return (
            f"HEALTH RED on {record['red']} of {record['checks']} checks over {span}, first at step "
            f"{record['first_red']['step']}"
        )

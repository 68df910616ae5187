"""The model card is written from what the weights file and an evaluation report say."""

from __future__ import annotations

from pathlib import Path

import torch

from backend.network import Generator, init_official
from backend.weights import ModelConfig, save_generator
from lab import model_card


def _weights(path: Path) -> Path:
    torch.manual_seed(0)
    generator = Generator("harmonic")
    init_official(generator)
    config = ModelConfig(
        source="ours",
        prefill="harmonic",
        working_size=512,
        steps=4321,
        notes="CPU-trained on 3 photos; 1.50 h wall time",
        extra={
            "train_config": {"size": 256, "batch": 4, "critic_every": 10, "lr_g": 0.0002},
            "device": "cpu",
            "precision": "bfloat16",
            "prefill_switches": [{"step": 2276, "prefill": "harmonic"}],
            "renormalised": [{"step": 3349, "prefix": "refine", "largest_std": 275.4}],
        },
    )
    save_generator(path, generator, config)
    return path


def test_the_card_states_the_weights_facts_and_the_evaluation(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "w.safetensors")
    evaluation = tmp_path / "results.md"
    evaluation.write_text("| method | in-hole L1 |\n|---|---|\n| HiFill (ours, CRA) | 12.34 |\n")
    card = model_card.render(weights, evaluation, "python -m backend evaluate --count 3")
    assert "- Training steps: 4,321" in card
    assert "precision bfloat16" in card and "CPU-trained on 3 photos; 1.50 h wall time" in card
    assert "exact harmonic (Laplace) fill" in card and "(switched to harmonic at step 2,276)" in card
    assert "layers refine* rescaled to output std 0.5 at step 3,349" in card and "std 275)" in card
    assert "| generator working size at run time | 512² per context window | 512² |" in card
    assert "`python -m backend evaluate --count 3`" in card and "| HiFill (ours, CRA) | 12.34 |" in card


def test_a_card_without_an_evaluation_says_so(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "w.safetensors")
    card = model_card.render(weights, tmp_path / "missing.md", "python -m backend evaluate")
    assert "No evaluation run recorded for these weights yet." in card

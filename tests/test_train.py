"""Training: losses as the equations say, and a tiny real run that checkpoints, exports and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from backend.network import Discriminator, Generator
from backend.weights import load_generator
from lab.train import TrainConfig, gradient_penalty, main, reconstruction_loss, restore_state

torch.set_num_threads(1)


def test_reconstruction_loss_weights_hole_and_context_as_eq_13():
    target = torch.zeros(1, 3, 4, 4)
    prediction = torch.zeros(1, 3, 4, 4)
    hole = torch.zeros(1, 1, 4, 4)
    hole[..., :2, :] = 1  # top half is the hole
    prediction[..., :2, :] = 0.5  # error 0.5 in the hole
    prediction[..., 2:, :] = 0.1  # error 0.1 in the context
    loss, in_hole = reconstruction_loss(prediction, target, hole, TrainConfig())
    assert abs(in_hole.item() - 0.5) < 1e-6
    assert abs(loss.item() - (1.0 * 0.5 + 1.2 * 0.1)) < 1e-6


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its gradient norm is |w| everywhere, so the penalty is (|w| - 1)^2 exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_matches_the_analytic_value():
    w = torch.full((1, 3, 2, 2), 0.5)  # |w| = sqrt(12 * 0.25) = sqrt(3)
    critic = LinearCritic(w)
    penalty = gradient_penalty(critic, torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2))
    assert abs(penalty.item() - (3**0.5 - 1) ** 2) < 1e-5


def write_photos(folder: Path, count: int, seed: int) -> Path:
    """``count`` random 96x80 RGB photos in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_a_tiny_run_checkpoints_exports_and_resumes(tmp_path: Path):
    photos = write_photos(tmp_path / "photos", 3, seed=0)
    run, export, compact = tmp_path / "run", tmp_path / "g.safetensors", tmp_path / "state16.safetensors"
    common = [
        "--photos",
        str(photos),
        "--run",
        str(run),
        "--export",
        str(export),
        "--init",
        "",
        "--commit-state",
        str(compact),
        "--size",
        "64",
        "--batch",
        "1",
        "--critic-every",
        "1",
    ]
    assert main([*common, "--steps", "2"]) == 0
    assert main([*common, "--steps", "1"]) == 0  # resumes from run/state.safetensors
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["step"] == "3"
    assert "data-dependent" in json.loads(meta["extra"])["init"]
    generator, config = load_generator(export)
    assert config.steps == 3 and config.source == "ours" and not config.untrained
    with safe_open(str(compact), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118 -- safe_open has no __iter__
    assert (run / "samples.png").is_file()
    assert (run / "losses.csv").read_text().startswith("step,")


def test_the_critic_waits_for_the_adversarial_start_and_an_explicit_lr_wins_on_resume(tmp_path: Path):
    from safetensors.torch import load_file

    photos = write_photos(tmp_path / "photos", 2, seed=1)
    run = tmp_path / "run"
    common = ["--photos", str(photos), "--run", str(run), "--export", str(tmp_path / "g.safetensors")]
    common += ["--init", "", "--commit-state", "", "--size", "64", "--batch", "1", "--critic-every", "1"]

    def critic_and_config() -> tuple[dict, dict]:
        with safe_open(str(run / "state.safetensors"), framework="pt") as f:
            config = json.loads(f.metadata()["train_config"])
        tensors = load_file(str(run / "state.safetensors"))
        return {k: v for k, v in tensors.items() if k.startswith("critic.")}, config

    assert main([*common, "--steps", "1", "--adversarial-start", "3"]) == 0
    before, config = critic_and_config()
    assert config["adversarial_start"] == 3 and config["lr_g"] == 2e-4
    assert main([*common, "--steps", "1"]) == 0  # step 2 < 3: still reconstruction only
    during, config = critic_and_config()
    assert config["adversarial_start"] == 3  # kept from the resumed run
    assert all(torch.equal(before[k], during[k]) for k in before)
    assert main([*common, "--steps", "2", "--lr", "1e-4"]) == 0  # steps 3-4: the critic trains
    after, config = critic_and_config()
    assert config["lr_g"] == config["lr_d"] == 1e-4
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_run_switched_to_the_harmonic_prefill_records_it_and_exports_it(tmp_path: Path):
    photos = write_photos(tmp_path / "photos", 2, seed=2)
    run, export = tmp_path / "run", tmp_path / "g.safetensors"
    common = ["--photos", str(photos), "--run", str(run), "--export", str(export), "--init", ""]
    common += ["--commit-state", "", "--size", "64", "--batch", "1", "--steps", "1"]
    assert main(common) == 0
    assert load_generator(export)[1].prefill == "none"
    assert load_generator(export)[1].working_size == 128  # paper-style weights: their crop, at least 128
    assert main([*common, "--prefill", "harmonic"]) == 0
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["train_config"])["prefill"] == "harmonic"
    assert json.loads(meta["extra"])["prefill_switches"] == [{"step": 1, "prefill": "harmonic"}]
    generator, config = load_generator(export)
    assert config.prefill == "harmonic" and generator.prefill == "harmonic"
    assert config.working_size == 512 and config.extra["precision"] in ("float32", "bfloat16")
    assert main([*common, "--export-working-size", "384"]) == 0
    with pytest.raises(SystemExit, match="multiple of 16"):
        main([*common, "--export-working-size", "100"])
    assert load_generator(export)[1].working_size == 384
    resumed = Generator()  # what a resumed run trains: the run's prefill without asking again
    state = run / "state.safetensors"
    _, _, extra = restore_state(resumed, Discriminator(64), state, None, TrainConfig(), {})
    assert resumed.prefill == "harmonic" and len(extra["prefill_switches"]) == 1
    assert resumed.refine["re_de_toRGB__256"].feature.weight.abs().sum() > 0  # trained, not re-zeroed
    assert main(common) == 0
    assert load_generator(export)[1].prefill == "harmonic"
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        assert len(json.loads(f.metadata()["extra"])["prefill_switches"]) == 1


def test_renormalise_on_resume_revives_a_stage_and_records_it(tmp_path: Path, capsys):
    photos = write_photos(tmp_path / "photos", 2, seed=3)
    run, export = tmp_path / "run", tmp_path / "g.safetensors"
    common = ["--photos", str(photos), "--run", str(run), "--export", str(export), "--init", ""]
    common += ["--commit-state", "", "--size", "64", "--batch", "1", "--steps", "1", "--prefill", "harmonic"]
    assert main(common) == 0
    assert main([*common, "--renormalise", "refine"]) == 0
    assert "Renormalised 22 layers named refine*" in capsys.readouterr().out
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        extra = json.loads(f.metadata()["extra"])
    assert [(r["step"], r["prefix"]) for r in extra["renormalised"]] == [(1, "refine")]
    with pytest.raises(SystemExit, match="No layer"):
        main([*common, "--renormalise", "decoder"])

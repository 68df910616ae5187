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


def tiny_run_args(tmp_path: Path, photos: Path, *more: str) -> list[str]:
    run = tmp_path / "run"
    args = ["--photos", str(photos), "--run", str(run), "--export", str(tmp_path / "g.safetensors")]
    return [*args, "--init", "", "--commit-state", "", "--batch", "1", "--threads", "1", *more]


def run_meta(tmp_path: Path) -> tuple[dict, dict]:
    with safe_open(str(tmp_path / "run" / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
    return json.loads(meta["train_config"]), json.loads(meta["extra"])


def test_output_gates_are_held_open_once_and_stay_frozen(tmp_path: Path, capsys):
    """A harmonic run holds its residual output gates at sigmoid(0): switched on for a run that learned
    them, the corrections restart at zero (recorded); later sessions train the features, not the gates."""
    from safetensors.torch import load_file

    photos = write_photos(tmp_path / "photos", 2, seed=4)
    common = tiny_run_args(tmp_path, photos, "--size", "64", "--steps", "2", "--prefill", "harmonic")
    assert main([*common, "--no-open-output-gates"]) == 0  # the old behaviour: gates learn
    gates = [f"generator.{name}.gate.weight" for name in Generator.RESIDUAL_OUTPUTS]
    state = load_file(str(tmp_path / "run" / "state.safetensors"))
    assert all(state[g].abs().sum() > 0 for g in gates)
    assert main(common) == 0  # stored False, so the command line must ask for it
    assert main([*common, "--open-output-gates"]) == 0
    assert "Residual output gates held open" in capsys.readouterr().out
    config, extra = run_meta(tmp_path)
    assert config["open_output_gates"] is True
    assert extra["output_gates_opened"] == [{"step": 4, "layers": list(Generator.RESIDUAL_OUTPUTS)}]
    state = load_file(str(tmp_path / "run" / "state.safetensors"))
    assert all(not state[g].any() and not state[g.replace("weight", "bias")].any() for g in gates)
    features = [g.replace("gate", "feature") for g in gates]
    assert all(state[f].abs().sum() > 0 for f in features)  # trained since they restarted at zero
    assert main(common) == 0  # a later session: nothing re-zeroed, nothing recorded again
    _, extra = run_meta(tmp_path)
    assert len(extra["output_gates_opened"]) == 1
    assert not any(load_file(str(tmp_path / "run" / "state.safetensors"))[g].any() for g in gates)


def test_a_fresh_harmonic_run_holds_its_gates_open_by_default_and_records_its_health(tmp_path: Path):
    photos = write_photos(tmp_path / "photos", 2, seed=5)
    assert main(tiny_run_args(tmp_path, photos, "--size", "64", "--steps", "2", "--prefill", "harmonic")) == 0
    config, extra = run_meta(tmp_path)
    assert config["open_output_gates"] is True and config["grad_clip"] == 0.0
    assert extra["health"]["checks"] == 2 and extra["health"]["red"] == 0  # at the start and the end
    assert (tmp_path / "run" / "health.csv").read_text().count("\n") == 3  # header and two checks
    assert load_generator(tmp_path / "g.safetensors")[1].extra["health"]["checks"] == 2  # on the card
    generator = Generator("harmonic")
    restore_state(
        generator, Discriminator(64), tmp_path / "run" / "state.safetensors", None, TrainConfig(), {}
    )
    gate = generator.refine["re_de_toRGB__256"].gate
    assert not gate.weight.any() and not gate.bias.any()


def test_size_and_stage_options_override_a_resumed_run_and_the_critic_restarts_at_a_new_size(
    tmp_path: Path, capsys
):
    from lab.train import generator_optimiser

    photos = write_photos(tmp_path / "photos", 2, seed=6)
    assert main(tiny_run_args(tmp_path, photos, "--size", "64", "--steps", "1")) == 0
    config, _ = run_meta(tmp_path)
    assert (config["std_ceiling"], config["std_weight"]) == (2.0, 1e-2)  # the bound is on by default
    more = ["--steps", "1", "--size", "80", "--refine-lr-scale", "0.25", "--grad-clip", "1.5"]
    more += ["--std-ceiling", "3", "--std-weight", "0.5"]
    assert main(tiny_run_args(tmp_path, photos, *more)) == 0
    assert "critic starts afresh" in capsys.readouterr().out
    kept = ("size", "refine_lr_scale", "grad_clip", "std_ceiling", "std_weight")
    config, _ = run_meta(tmp_path)
    assert tuple(config[k] for k in kept) == (80, 0.25, 1.5, 3.0, 0.5)
    assert main(tiny_run_args(tmp_path, photos, "--steps", "1")) == 0  # nothing given: all kept
    config, _ = run_meta(tmp_path)
    assert tuple(config[k] for k in kept) == (80, 0.25, 1.5, 3.0, 0.5)
    groups = generator_optimiser(Generator(), TrainConfig(**config)).param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("coarse", 2e-4), ("refine", 2e-4 * 0.25)]


def test_a_train_step_adds_the_std_bound_only_when_a_layer_leaves_it():
    from lab.train import train_step

    torch.manual_seed(0)
    generator, critic = Generator("harmonic"), Discriminator(64)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    hole = torch.zeros(2, 1, 64, 64)
    hole[:, :, 16:40, 20:44] = 1

    def step_with(config: TrainConfig) -> dict[str, float]:
        opt_g = torch.optim.Adam(generator.parameters(), lr=0.0)  # lr 0: the weights stay put
        opt_d = torch.optim.Adam(critic.parameters(), lr=0.0)
        autocast = {"device_type": "cpu", "dtype": torch.float32, "enabled": False}
        return train_step(generator, critic, opt_g, opt_d, real, hole, config, 0, autocast)

    with torch.no_grad():
        dict(generator.named_modules())["refine.re_de_conv_128"].feature.weight.mul_(0.0).add_(0.05)
    grown = step_with(TrainConfig(std_ceiling=1e-3))
    assert grown["std_excess"] > 0
    assert step_with(TrainConfig(std_ceiling=1e6))["std_excess"] == 0.0
    assert step_with(TrainConfig(std_ceiling=1e-3, std_weight=0.0))["std_excess"] == 0.0


def test_an_empty_export_path_checkpoints_without_writing_weights(tmp_path: Path, monkeypatch):
    """--export '' (like --commit-state '') means nowhere: the run checkpoints and stops cleanly."""
    photos = write_photos(tmp_path / "photos", 2, seed=2)
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    args = ["--photos", str(photos), "--run", str(run), "--export", "", "--init", "", "--commit-state", ""]
    assert main([*args, "--size", "64", "--batch", "1", "--steps", "1"]) == 0
    assert (run / "state.safetensors").is_file()
    assert not list(tmp_path.glob("*.safetensors"))

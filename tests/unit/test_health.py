"""Training health (lab.health): a fresh generator is green; blown-up, vanished or shut layers fail, named."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.network import Generator, init_data_dependent, zero_residual_outputs
from lab.health import (
    STD_BAND,
    HealthLog,
    LayerHealth,
    check,
    measure,
    recorded_output_stds,
    std_excess,
    verdict,
)
from lab.masks import mask_batch

torch.set_num_threads(1)


def batch(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth random images in [-1, 1] and two training holes."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.uniform(-1, 1, (2, 3, size // 8, size // 8)).astype(np.float32))
    image = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear")
    return image, torch.from_numpy(mask_batch(rng, 2, size, size, "mixed", (0.1, 0.3)))


@functools.cache
def fresh_state(prefill: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    generator = Generator(prefill)
    init_data_dependent(generator, *batch(seed=1))
    if prefill != "none":
        zero_residual_outputs(generator)
    return generator.state_dict()


def fresh(prefill: str) -> Generator:
    """A generator as a fresh training run starts it (data-dependent init, zeroed corrections)."""
    generator = Generator(prefill)
    generator.load_state_dict(fresh_state(prefill))
    return generator


@pytest.mark.parametrize("prefill", ["none", "harmonic"])
def test_a_freshly_initialised_generator_is_healthy(prefill: str):
    health = check(fresh(prefill), *batch())
    assert health.healthy, health.problems
    assert len(health.layers) == 48 and {layer.stage for layer in health.layers} == {"coarse", "refine"}
    assert all(STD_BAND[0] < layer.output_std < STD_BAND[1] for layer in health.layers if layer.output_std)
    assert "health green" in health.summary()
    if prefill == "harmonic":  # zeroed corrections: exactly nothing added, and no lower bound for them
        assert health.refine_contribution == 0.0
        assert [layer.name for layer in health.layers if layer.residual_output] == list(
            Generator.RESIDUAL_OUTPUTS
        )


def test_a_blown_up_decoder_fails_naming_the_layer():
    generator = fresh("harmonic")
    with torch.no_grad():
        dict(generator.named_modules())["refine.re_de_conv_128"].feature.weight.mul_(200)
    health = check(generator, *batch())
    assert not health.healthy
    assert any(p.startswith("refine.re_de_conv_128 output std") and "above 20" in p for p in health.problems)
    assert "HEALTH RED" in health.summary() and "refine.re_de_conv_128" in health.summary()


def test_std_excess_is_zero_inside_the_bound_and_squares_what_lies_above_it():
    stds = [torch.tensor(v) for v in (0.5, 2.0, 3.0, 5.5)]
    assert std_excess(stds, 2.0).item() == pytest.approx(1.0**2 + 3.5**2)
    assert std_excess(stds[:2], 2.0).item() == 0.0 and std_excess([], 2.0).item() == 0.0


def test_recorded_stds_match_the_health_measure_and_the_hooks_go_away():
    generator, (image, mask) = fresh("harmonic"), batch()
    with recorded_output_stds(generator) as stds:
        generator(image, mask)
    layers, _ = measure(generator, image, mask)
    assert [s.item() for s in stds] == pytest.approx([layer.output_std for layer in layers], rel=1e-5)
    assert all(s.requires_grad for s in stds)
    generator(image, mask)
    assert len(stds) == 48  # the hooks were removed with the block


def test_the_std_bound_pulls_a_grown_decoder_back_inside_it():
    """A refine decoder grown 12x (std ~6, as in the CPU run) falls inside the ceiling of 2 within a
    few Adam steps on the penalty alone, without anything else leaving it."""
    generator, (image, mask) = fresh("harmonic"), batch()
    with torch.no_grad():
        dict(generator.named_modules())["refine.re_de_conv_128"].feature.weight.mul_(12)
    names = [layer.name for layer in measure(generator, image, mask)[0]]
    at = names.index("refine.re_de_conv_128")
    optimiser = torch.optim.Adam(generator.parameters(), lr=2e-3)
    before = None
    for _ in range(30):
        with recorded_output_stds(generator) as stds:
            generator(image, mask)
        penalty = std_excess(stds, 2.0)
        before = penalty.item() if before is None else before
        optimiser.zero_grad()
        penalty.backward()
        optimiser.step()
    layers, _ = measure(generator, image, mask)
    assert before > 4 and layers[at].output_std < 2.0 + 0.1
    assert std_excess([torch.tensor(layer.output_std) for layer in layers], 2.0).item() < 0.01


def test_a_shut_output_gate_fails_and_so_does_a_stage_whose_gates_are_mostly_shut():
    generator = fresh("harmonic")
    with torch.no_grad():
        dict(generator.named_modules())["refine.re_de_toRGB__256"].gate.bias.fill_(-20)
    problems = check(generator, *batch()).problems
    assert problems == ("refine.re_de_toRGB__256 gates shut on 100% of values in the hole",)
    with torch.no_grad():
        for name, module in generator.named_modules():
            if name.startswith("coarse.") and hasattr(module, "gate"):
                module.gate.bias.fill_(-20)
    problems = check(generator, *batch()).problems
    assert "the coarse stage's gates are shut on 100% of values" in problems


def test_a_vanished_layer_fails_but_a_zero_correction_does_not():
    generator = fresh("harmonic")
    with torch.no_grad():
        dict(generator.named_modules())["coarse.c_dil_d5"].feature.weight.mul_(1e-3)
    problems = check(generator, *batch()).problems
    assert any(p.startswith("coarse.c_dil_d5 output std") and "below 0.02" in p for p in problems)
    assert not any("toRGB" in p for p in problems)  # the zeroed correction layers (std 0) are fine


def test_a_gate_shut_outside_the_hole_only_is_alive_one_shut_inside_it_is_dead():
    """The first coarse layer sees the mask as its 4th input channel: a gate driven by it alone opens
    where its 5x5 window touches the hole (alive: shut only on context), its negation shuts there."""
    image, hole = batch()
    generator = fresh("harmonic")
    gate = dict(generator.named_modules())["coarse.c_en_down_128"].gate
    for sign, dead in ((1.0, False), (-1.0, True)):
        with torch.no_grad():
            gate.weight.zero_()
            gate.weight[0, 3] = sign * 20.0  # the mask channel, every tap of the 5x5 kernel
            gate.bias.fill_(-sign * 10.0)
        health = check(generator, image, hole)
        first = {h.name: h for h in health.layers}["coarse.c_en_down_128"]
        if not dead:
            assert first.shut_in_hole == 0.0 and first.shut > 0.3
            assert health.healthy, health.problems
        else:
            assert first.shut_in_hole > 0.9 and first.shut < 0.5
            assert health.problems == (
                f"coarse.c_en_down_128 gates shut on {first.shut_in_hole:.0%} of values in the hole",
            )


def layer(
    name: str, std: float, shut: float = 0.0, values: int = 100, residual: bool = False, in_hole: float = -1.0
) -> LayerHealth:
    """A layer's health; shut in the hole as over all values unless given."""
    return LayerHealth(
        name, name.split(".")[0], std, shut, values, residual, shut if in_hole < 0 else in_hole
    )


def test_verdict_band_edges_nan_and_stage_share():
    assert verdict([layer("coarse.a", 0.02), layer("refine.b", 20.0)]).healthy  # the band is inclusive
    assert not verdict([layer("coarse.a", 0.0199)]).healthy
    assert not verdict([layer("coarse.a", 20.01)]).healthy
    assert not verdict([layer("coarse.a", float("nan"))]).healthy
    assert verdict([layer("refine.out", 0.0, residual=True)]).healthy
    assert not verdict([layer("refine.out", 25.0, residual=True)]).healthy
    # 80 % and 40 % of values shut: no layer is dead (over 90 %), the stage is (over 50 % of its values)
    stage = [layer("refine.a", 1, 0.8, values=300), layer("refine.b", 1, 0.4, values=100)]
    assert verdict(stage).problems == ("the refine stage's gates are shut on 70% of values",)
    assert verdict(stage, most=0.75).healthy
    assert verdict([layer("refine.a", 1, 0.95), layer("refine.b", 1, 0.0, values=900)]).problems == (
        "refine.a gates shut on 95% of values in the hole",
    )
    # shut on 95 % of all values but 85 % of the hole's: alive; on 99.5 % of all values: dead anyway
    assert verdict([layer("coarse.a", 1, 0.95, in_hole=0.85), layer("coarse.b", 1, 0.0, values=900)]).healthy
    assert verdict(
        [layer("coarse.a", 1, 0.995, in_hole=0.5), layer("coarse.b", 1, 0.0, values=900)]
    ).problems == ("coarse.a gates shut on 100% of values",)


def test_measure_counts_gate_values_below_the_threshold():
    generator = fresh("none")
    gate = dict(generator.named_modules())["refine.re_en_conv_256"].gate
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias[:16] = -5.0  # sigmoid(-5) = 0.0067: shut; the other 16 channels at sigmoid(0) = 0.5
        gate.bias[16:] = 0.0
    by_name = {h.name: h for h in measure(generator, *batch())[0]}
    assert by_name["refine.re_en_conv_256"].shut == pytest.approx(0.5)
    assert by_name["refine.re_en_conv_256"].shut_in_hole == pytest.approx(0.5)
    assert by_name["refine.re_en_conv_256"].gate_values == 2 * 32 * 32 * 32


def test_health_log_writes_csv_json_and_the_run_record_and_is_loud_when_red(tmp_path: Path, capsys):
    extra: dict = {}
    log = HealthLog(tmp_path, extra)
    generator = fresh("harmonic")
    log.record(10, check(generator, *batch()), {"grad_refine": 0.5})
    assert extra["health"]["red"] == 0 and log.summary() == "health green over steps 10-10 (1 checks)"
    with torch.no_grad():
        dict(generator.named_modules())["refine.re_de_toRGB__256"].gate.bias.fill_(-20)
    log.record(20, check(generator, *batch()), {})
    err = capsys.readouterr().err
    assert "!!!!" in err and "HEALTH RED" in err and "refine.re_de_toRGB__256" in err
    assert extra["health"]["first_red"]["step"] == 20 and extra["health"]["checks"] == 2
    assert log.summary().startswith("HEALTH RED on 1 of 2 checks")
    rows = (tmp_path / "health.csv").read_text().splitlines()
    assert rows[0].endswith(",problems,most_shut_in_hole,most_shut_in_hole_layer")
    assert rows[2].endswith(",1.0000,refine.re_de_toRGB__256")
    assert rows[0].startswith("step,healthy,") and rows[1].startswith("10,1,") and rows[2].startswith("20,0,")
    assert json.loads((tmp_path / "health.json").read_text())["step"] == 20


def test_health_log_upgrades_an_older_runs_csv_keeping_its_rows(tmp_path: Path):
    old_fields = HealthLog.FIELDS[:12]  # the columns before the in-hole share was recorded
    (tmp_path / "health.csv").write_text(",".join(old_fields) + "\n5,1" + "," * 10 + "\n")
    HealthLog(tmp_path, {}).record(10, check(fresh("harmonic"), *batch()), {})
    rows = (tmp_path / "health.csv").read_text().splitlines()
    assert (
        rows[0] == ",".join(HealthLog.FIELDS) and rows[1].startswith("5,1,") and rows[2].startswith("10,1,")
    )
    assert len(rows) == 3 and rows[1].count(",") == rows[2].count(",") == len(HealthLog.FIELDS) - 1

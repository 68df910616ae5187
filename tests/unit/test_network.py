"""Generator/discriminator structure vs the official checkpoint, and the attention modules vs slow loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend import layers as L
from backend.network import (
    Discriminator,
    Generator,
    attention_scores,
    background_patches,
    init_official,
    official_parameter_map,
    resize_bilinear_tf1,
    same_padding,
    transfer_attention,
)

torch.set_num_threads(1)
VARIABLES = Path(__file__).parents[1] / "data" / "official-checkpoint-variables.txt"


def official_variables() -> dict[str, list[int]]:
    table = {}
    for line in VARIABLES.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _dtype, shape = line.split(" ", 2)
        table[name] = [int(v) for v in shape.strip("[]").split(",") if v.strip()]
    return table


def tf_layout(tensor: torch.Tensor) -> list[int]:
    """Our tensor's shape in TF layout: conv (cout, cin, kh, kw) -> (kh, kw, cin, cout); dense transposed."""
    if tensor.dim() == 4:
        return list(tensor.permute(2, 3, 1, 0).shape)
    if tensor.dim() == 2:
        return list(tensor.t().shape)
    return list(tensor.shape)


def test_generator_has_the_official_parameter_count():
    generator = Generator()
    assert sum(p.numel() for p in generator.parameters()) == L.GENERATOR_PARAMETERS == 2_722_791


def test_every_official_generator_variable_has_exactly_one_counterpart_with_its_shape():
    official = {k: v for k, v in official_variables().items() if k.startswith("generator/")}
    assert len(official) == 192
    generator = Generator()
    state = generator.state_dict()
    mapping = official_parameter_map(generator)
    assert set(mapping) == set(official)
    assert len(set(mapping.values())) == len(mapping) == len(state)  # one-to-one onto our parameters
    for name, ours in mapping.items():
        assert tf_layout(state[ours]) == official[name], name
    assert sum(int(np.prod(s)) for s in official.values()) == L.GENERATOR_PARAMETERS


def test_discriminator_matches_the_official_shapes_at_512():
    official = {k: v for k, v in official_variables().items() if k.startswith("discriminator/")}
    critic = Discriminator(512)
    state = critic.state_dict()
    for i in range(6):
        assert tf_layout(state[f"convs.{i}.weight"]) == official[f"discriminator/conv{i + 1}/w"]
        assert list(state[f"convs.{i}.bias"].shape) == official[f"discriminator/conv{i + 1}/biases"]
    assert tf_layout(state["linear.weight"]) == official["discriminator/linear/kernel"]
    assert critic(torch.zeros(2, 3, 512, 512)).shape == (2,)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [(64, 3, 2, 1, (0, 1)), (256, 5, 2, 1, (1, 2)), (65, 3, 2, 1, (1, 1)), (32, 3, 1, 8, (8, 8))],
)
def test_same_padding_follows_tensorflow(size, kernel, stride, dilation, expected):
    assert same_padding(size, kernel, stride, dilation) == expected


def slow_resize_tf1(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear, one output pixel at a time: source = dst * in/out, no half-pixel offset."""
    _, _, h, w = x.shape
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    for i in range(out_h):
        sy = i * h / out_h
        y0 = min(int(np.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = j * w / out_w
            x0 = min(int(np.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = x[:, :, y0, x0] * (1 - fx) + x[:, :, y0, x1] * fx
            bottom = x[:, :, y1, x0] * (1 - fx) + x[:, :, y1, x1] * fx
            out[:, :, i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize(("in_hw", "out_hw"), [((5, 7), (10, 14)), ((8, 6), (4, 3)), ((5, 7), (9, 4))])
def test_tf1_bilinear_resize_matches_the_per_pixel_definition(in_hw, out_hw):
    x = torch.rand(2, 3, *in_hw, dtype=torch.float64)
    fast = resize_bilinear_tf1(x, *out_hw).numpy()
    np.testing.assert_allclose(fast, slow_resize_tf1(x.numpy(), *out_hw), atol=1e-12)


def slow_attention_scores(features: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """Eq. 1-2 as the official code computes them, one (query, source) pair at a time. Batch of 1."""
    p = features[0][:, ::2, ::2]
    c, h, w = p.shape
    padded = np.pad(p, ((0, 0), (1, 1), (1, 1)))
    patches = [padded[:, y : y + 3, x : x + 3].ravel() for y in range(h) for x in range(w)]
    n = h * w
    raw = np.zeros((n, n))
    for q in range(n):
        for r in range(n):
            raw[q, r] = patches[q] @ patches[r] / max(np.linalg.norm(patches[r]), 1e-8)

    def fuse(s):  # 3-tap identity filter along the diagonal
        out = s.copy()
        out[:-1, :-1] += s[1:, 1:]
        out[1:, 1:] += s[:-1, :-1]
        return out

    def swap(s, hh, ww):  # row-major (y, x) <-> (x, y) order of both axes
        return s.reshape(hh, ww, hh, ww).transpose(1, 0, 3, 2).reshape(n, n)

    fused = swap(fuse(swap(fuse(raw), h, w)), w, h)
    cell = mask.shape[2] // h
    valid = np.zeros(n)
    for y in range(h):
        for x in range(w):
            ys = slice(max(0, y - 1) * cell, min(h, y + 2) * cell)
            xs = slice(max(0, x - 1) * cell, min(w, x + 2) * cell)
            valid[y * w + x] = 0.0 if mask[0, 0, ys, xs].max() > 0 else 1.0
    logits = fused * valid[None] * scale
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True) * valid[None]


def test_attention_scores_equal_an_explicit_per_patch_computation():
    torch.manual_seed(0)
    features = torch.randn(1, 3, 8, 12, dtype=torch.float64)  # attention map 4 x 6
    mask = torch.zeros(1, 1, 64, 96, dtype=torch.float64)  # generator input 64 x 96 -> cells of 16
    mask[:, :, 20:40, 30:50] = 1
    fast = attention_scores(features, mask, softmax_scale=10.0)[0].numpy()
    slow = slow_attention_scores(features.numpy(), mask.numpy(), 10.0)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-7)  # scores are computed in float32
    valid = background_patches(mask, 4, 6)[0].numpy()
    assert fast[:, valid == 0].max() == 0.0  # no weight ever comes from a hole cell


def slow_transfer(
    features: np.ndarray, scores: np.ndarray, grid_h: int, grid_w: int, patch: int
) -> np.ndarray:
    """Eq. 3 by pasting: each query cell j receives sum_i s_ji * patch_i at its own place; overlaps add."""
    _, c, height, width = features.shape
    rate = height // grid_h
    top = max((grid_h - 1) * rate + patch - height, 0) // 2
    left = max((grid_w - 1) * rate + patch - width, 0) // 2
    big = np.zeros((c, (grid_h - 1) * rate + patch, (grid_w - 1) * rate + patch))
    padded = np.zeros_like(big)
    padded[:, top : top + height, left : left + width] = features[0]
    cells = [(y, x) for y in range(grid_h) for x in range(grid_w)]
    for j, (yj, xj) in enumerate(cells):
        acc = np.zeros((c, patch, patch))
        for i, (yi, xi) in enumerate(cells):
            acc += scores[j, i] * padded[:, yi * rate : yi * rate + patch, xi * rate : xi * rate + patch]
        big[:, yj * rate : yj * rate + patch, xj * rate : xj * rate + patch] += acc
    return big[:, top : top + height, left : left + width]


@pytest.mark.parametrize(("rate", "patch"), [(2, 3), (4, 8), (2, 4)])
def test_attention_transfer_equals_an_explicit_paste_loop(rate, patch):
    rng = np.random.default_rng(rate * 10 + patch)
    grid_h, grid_w = 3, 4
    features = rng.standard_normal((1, 2, grid_h * rate, grid_w * rate))
    scores = rng.random((grid_h * grid_w, grid_h * grid_w))
    fast = transfer_attention(
        torch.from_numpy(features), torch.from_numpy(scores)[None], grid_h, grid_w, patch
    )
    np.testing.assert_allclose(
        fast[0].numpy(), slow_transfer(features, scores, grid_h, grid_w, patch), atol=1e-10
    )


def test_generator_runs_on_a_non_square_input_and_keeps_outputs_in_range():
    torch.manual_seed(1)
    generator = Generator()
    init_official(generator)
    image = torch.rand(2, 3, 64, 96) * 2 - 1
    hole = torch.zeros(2, 1, 64, 96)
    hole[:, :, 16:40, 20:60] = 1
    with torch.no_grad():
        out = generator(image, hole)
    assert out.coarse.shape == out.refined.shape == (2, 3, 64, 96)
    assert out.scores.shape == (2, 24, 24)
    assert out.refined.abs().max() <= 1.0
    assert torch.all(out.scores.sum(2) <= 1.0 + 1e-5)
    with pytest.raises(ValueError, match="multiple of 16"):
        generator(torch.zeros(1, 3, 40, 96), torch.zeros(1, 1, 40, 96))


@pytest.mark.parametrize("prefill", ["none", "harmonic"])
def test_stopping_after_the_coarse_stage_returns_the_refine_stages_input(prefill: str):
    torch.manual_seed(2)
    generator = Generator(prefill)
    init_official(generator)
    image = torch.rand(2, 3, 64, 96) * 2 - 1
    hole = torch.zeros(2, 1, 64, 96)
    hole[:, :, 16:40, 20:60] = 1
    with torch.no_grad():
        both, coarse_only = generator(image, hole), generator(image, hole, refine=False)
    assert torch.equal(coarse_only.coarse, both.coarse)
    assert torch.equal(coarse_only.refined, torch.where(hole > 0, both.coarse, image))
    assert coarse_only.scores.shape == (2, 0, 0)


def test_data_dependent_init_keeps_the_signal_alive_where_the_official_start_loses_it():
    from backend.network import GatedConv, init_data_dependent, renormalise_layers

    torch.manual_seed(2)
    image = torch.rand(1, 3, 128, 128) * 2 - 1
    hole = torch.zeros(1, 1, 128, 128)  # leaves background cells for the attention branches
    hole[:, :, 40:70, 50:80] = 1

    def layer_stds(generator: Generator) -> dict[str, float]:
        stds = {}
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, n=n: stds.__setitem__(n, out.std().item()))
            for n, m in generator.named_modules()
            if isinstance(m, GatedConv)
        ]
        with torch.no_grad():
            generator(image, hole)
        for h in hooks:
            h.remove()
        return stds

    official = Generator()
    init_official(official)
    assert layer_stds(official)["coarse.c_de_toRGB"] < 1e-3  # the deep coarse stack has gone flat
    ours = Generator()
    init_data_dependent(ours, image, hole)
    stds = layer_stds(ours)
    assert all(0.4 < s < 0.6 for s in stds.values()), stds

    # A stage whose activations blew up in training (seen: std 275 before the refine output, its gates
    # shut) is revived by rescaling that stage alone; the other stage keeps its weights exactly.
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, GatedConv) and name.startswith("refine.re_de"):
                module.feature.weight.mul_(4.0)
    blown = layer_stds(ours)
    assert blown["refine.re_de_conv_256"] > 50, blown
    coarse_before = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("coarse.")}
    found = dict(renormalise_layers(ours, image, hole, "refine"))
    assert set(found) == {n for n in stds if n.startswith("refine.")}
    assert found["refine.re_de_conv_256"] > 1.2  # its own x4 (its inputs were already rescaled)
    stds = layer_stds(ours)
    assert all(0.4 < s < 0.6 for s in stds.values()), stds
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in coarse_before.items())


@pytest.mark.parametrize("size", [64, 80, 96, 256])
def test_the_critic_fits_any_training_crop_that_is_a_multiple_of_16(size):
    """Each K5S2 'SAME' convolution rounds the side up (80 -> 40 -> 20 -> 10 -> 5 -> 3 -> 2)."""
    assert Discriminator(size)(torch.zeros(2, 3, size, size)).shape == (2,)


def test_held_open_output_gates_are_constant_frozen_and_restart_the_corrections():
    from backend.network import hold_output_gates_open

    torch.manual_seed(0)
    generator = Generator("harmonic")
    init_official(generator)
    image, mask = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:44] = 1
    assert hold_output_gates_open(generator) == list(Generator.RESIDUAL_OUTPUTS)
    modules = dict(generator.named_modules())
    for name in Generator.RESIDUAL_OUTPUTS:
        gate = modules[name].gate
        assert not gate.weight.requires_grad and not gate.bias.requires_grad
        assert torch.all(torch.sigmoid(gate(torch.randn(1, gate.in_channels, 8, 8))) == 0.5)
    out = generator(image, mask)  # corrections restart at zero: both stages return the prefill
    assert torch.equal(out.refined, out.coarse)
    assert hold_output_gates_open(generator) == []  # held open already: nothing changes


def test_fused_gates_give_the_unfused_output_and_see_zeroed_corrections() -> None:
    from backend.network import fuse_gates, zero_residual_outputs

    torch.manual_seed(4)
    generator = Generator("harmonic")
    init_official(generator)
    with torch.no_grad():
        dict(generator.named_modules())["coarse.c_de_toRGB"].feature.bias.fill_(0.3)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 16:40, 8:56] = 1
    with torch.no_grad():
        unfused = generator(image, mask)
        assert fuse_gates(generator) == len(L.COARSE_LAYERS)  # the coarse stage's single-channel gates
        fused = generator(image, mask)
        torch.testing.assert_close(fused.coarse, unfused.coarse, rtol=0, atol=1e-5)
        torch.testing.assert_close(fused.refined, unfused.refined, rtol=0, atol=1e-5)
        assert "coarse.c_en_conv_128.fused_weight" not in generator.state_dict()  # never saved
        zero_residual_outputs(generator)
        prefill = generator(image, mask).refined
    assert (prefill - unfused.coarse)[mask.expand_as(prefill) > 0].abs().mean() > 0.1  # the correction went

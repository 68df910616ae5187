"""HiFill generator and discriminator (section 3.3-3.5 and the appendix), built from backend.layers.

Tensors are NCHW, colours in [-1, 1], masks in {0, 1} with 1 = hole. Padding follows TensorFlow's
'SAME' rule and up-sampling TensorFlow 1's bilinear resize (no half-pixel offset), so that the
official checkpoint imported by lab.official.convert behaves as it did in TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backend import layers as L
from backend.prefill import PREFILL_KINDS, harmonic_fill


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def upsample2x_tf1(x: torch.Tensor) -> torch.Tensor:
    """tf.image.resize_bilinear to exactly twice the size (TF1, no half-pixel centres), x: (B, C, h, w).

    Output 2i is input i; output 2i+1 is the mean of inputs i and i+1 (the last one repeats the edge).
    """
    for axis in (2, 3):
        nxt = torch.cat([x.narrow(axis, 1, x.shape[axis] - 1), x.narrow(axis, x.shape[axis] - 1, 1)], axis)
        x = torch.stack([x, (x + nxt) * 0.5], axis + 1).flatten(axis, axis + 1)
    return x


def resize_bilinear_tf1(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """tf.image.resize_bilinear (TF1, align_corners=False, no half-pixel centres). x: (B, C, h, w)."""
    _, _, in_h, in_w = x.shape
    if (in_h, in_w) == (height, width):
        return x
    if (height, width) == (2 * in_h, 2 * in_w):
        return upsample2x_tf1(x)
    if in_h % height == 0 and in_w % width == 0:  # integer down-scale: source coordinates are exact
        return x[:, :, :: in_h // height, :: in_w // width]
    for axis, (n_in, n_out) in ((2, (in_h, height)), (3, (in_w, width))):
        src = torch.arange(n_out, device=x.device, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = n_out
        frac = (src - i0.double()).to(x.dtype).view(shape)
        x0 = x.index_select(axis, i0)
        x = x0 + (x.index_select(axis, i1) - x0) * frac
    return x


class GatedConv(nn.Module):
    """Light-Weight Gated Convolution, Eq. 5 with the gate of Eq. 7 (pixel-wise) or Eq. 8 (single-channel).

    output = ELU(conv_f(x)) * sigmoid(gate(x)); an optional TF1-bilinear 2x up-sampling first.
    """

    def __init__(self, spec: L.ConvSpec) -> None:
        super().__init__()
        self.spec = spec
        # Stride 1 with an odd kernel: TF 'SAME' is symmetric, so the convolution pads by itself.
        self.inner_padding = spec.dilation * (spec.kernel - 1) // 2 if spec.stride == 1 else 0
        self.feature = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel,
            spec.stride,
            padding=self.inner_padding,
            dilation=spec.dilation,
        )
        if spec.gate == "single_channel":
            self.gate = nn.Conv2d(
                spec.in_channels,
                1,
                spec.kernel,
                spec.stride,
                padding=self.inner_padding,
                dilation=spec.dilation,
            )
        else:
            self.gate = nn.Conv2d(spec.in_channels, spec.out_channels, 1, spec.stride)
        # Inference only (fuse_gates): the feature and single-channel gate filters as one convolution.
        # Buffers, so that .to() / .float() / copies carry them; not persistent: never in saved weights.
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    def fuse_gate(self) -> bool:
        """Stack a single-channel gate's filter under the feature filters (same input, kernel, stride,
        dilation), so that one convolution computes both: (out + 1, in, k, k). Used in eval mode without
        gradients only; later changes to the weights are not seen (zero_residual_outputs fuses again).
        Returns whether this layer was fused."""
        if self.spec.gate != "single_channel":
            return False
        with torch.no_grad():
            self.fused_weight = torch.cat([self.feature.weight, self.gate.weight]).contiguous()
            self.fused_bias = torch.cat([self.feature.bias, self.gate.bias]).contiguous()
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        if s.upsample_first:
            x = resize_bilinear_tf1(x, x.shape[2] * 2, x.shape[3] * 2)
        padded = x
        if s.stride != 1:
            top, bottom = same_padding(x.shape[2], s.kernel, s.stride, s.dilation)
            left, right = same_padding(x.shape[3], s.kernel, s.stride, s.dilation)
            padded = F.pad(x, (left, right, top, bottom))
        if self.fused_weight is not None and not self.training and not torch.is_grad_enabled():
            both = F.conv2d(
                padded, self.fused_weight, self.fused_bias, s.stride, self.inner_padding, s.dilation
            )
            return F.elu(both[:, :-1]) * torch.sigmoid(both[:, -1:])
        features = self.feature(padded)
        gate_input = padded if s.gate == "single_channel" else x
        return F.elu(features) * torch.sigmoid(self.gate(gate_input))


def _stack(specs: tuple[L.ConvSpec, ...]) -> nn.ModuleDict:
    return nn.ModuleDict({spec.name: GatedConv(spec) for spec in specs})


# ---------------------------------------------------------------------------------------------
# Attention Computing Module and Attention Transfer Module (section 3.2)
# ---------------------------------------------------------------------------------------------


def _shift_diagonal(scores: torch.Tensor, offset: int) -> torch.Tensor:
    """scores[b, q + offset, r + offset] with zeros outside. scores: (B, Lq, Lr)."""
    if offset > 0:
        return F.pad(scores[:, offset:, offset:], (0, offset, 0, offset))
    return F.pad(scores[:, :offset, :offset], (-offset, 0, -offset, 0))


def _fuse(scores: torch.Tensor) -> torch.Tensor:
    """The official 'fuse' step: a 3-tap identity filter along the diagonal of the score matrix."""
    return scores + _shift_diagonal(scores, 1) + _shift_diagonal(scores, -1)


def _transpose_spatial(scores: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Re-index (q=(y, x), r=(y', x')) row-major as (q=(x, y), r=(x', y')). scores: (B, h*w, h*w)."""
    b = scores.shape[0]
    return scores.view(b, h, w, h, w).permute(0, 2, 1, 4, 3).reshape(b, h * w, h * w)


def background_patches(mask: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Attention-map cells usable as sources: no hole pixel within one cell. mask (B,1,H,W) -> (B, h*w)."""
    pooled = F.adaptive_max_pool2d(mask, (grid_h, grid_w))
    dilated = F.max_pool2d(pooled, 3, stride=1, padding=1)
    return (1.0 - dilated).flatten(1)


def attention_scores(
    features: torch.Tensor, mask: torch.Tensor, softmax_scale: float = L.ATTENTION_SOFTMAX_SCALE
) -> torch.Tensor:
    """Attention Computing Module: scores s[b, j, i] of background patch i for every patch j (Eq. 1-2).

    features: P^{l=3} (B, C, 2h, 2w), sub-sampled 2x to the attention map P (B, C, h, w); 3x3 patches
    of P; background patches are L2-normalised (as in the official code, which gives Eq. 1 up to the
    per-query norm); the official diagonal 'fuse'; softmax over background patches only.
    mask: (B, 1, H, W) generator-resolution hole mask. Returns (B, h*w, h*w), rows sum to 1 (or 0).
    Computed in float32 whatever the autocast state.
    """
    with torch.autocast(features.device.type, enabled=False):
        p = features[:, :, ::2, ::2].float()
        b, c, h, w = p.shape
        patches = F.unfold(p, L.ATTENTION_PATCH, padding=L.ATTENTION_PATCH // 2)  # (B, C*9, h*w)
        keys = patches / patches.norm(dim=1, keepdim=True).clamp_min(1e-8)
        scores = torch.bmm(patches.transpose(1, 2), keys)  # (B, Lq, Lr)
        scores = _fuse(scores)
        scores = _transpose_spatial(_fuse(_transpose_spatial(scores, h, w)), w, h)
        valid = background_patches(mask.float(), h, w).unsqueeze(1)  # (B, 1, Lr)
        return torch.softmax(scores * valid * softmax_scale, dim=2) * valid


def transfer_attention(
    features: torch.Tensor, scores: torch.Tensor, grid_h: int, grid_w: int, patch: int | None = None
) -> torch.Tensor:
    """Attention Transfer Module, Eq. 3: every patch j becomes sum_i s[j, i] * patch_i.

    features: (B, C, H, W) with H = r*grid_h; scores: (B, grid_h*grid_w, grid_h*grid_w).
    Patches are ``patch`` x ``patch`` (default 2r, the official choice) with stride r, placed with
    TF 'SAME' alignment; overlaps add up. Returns (B, C, H, W).
    """
    b, c, height, width = features.shape
    rate = height // grid_h
    patch = patch or 2 * rate
    top, _ = same_padding(height, patch, rate, 1)
    left, _ = same_padding(width, patch, rate, 1)
    out_h, out_w = (grid_h - 1) * rate + patch, (grid_w - 1) * rate + patch
    padded = F.pad(features, (left, out_w - width - left, top, out_h - height - top))
    source = F.unfold(padded, patch, stride=rate)  # (B, C*k*k, Lr)
    mixed = torch.bmm(source, scores.transpose(1, 2).to(source.dtype))  # (B, C*k*k, Lq)
    out = F.fold(mixed, (out_h, out_w), patch, stride=rate)
    return out[:, :, top : top + height, left : left + width]


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorOutput:
    coarse: torch.Tensor  # (B, 3, H, W) stage-1 prediction in [-1, 1]
    refined: torch.Tensor  # (B, 3, H, W) stage-2 prediction in [-1, 1]
    scores: torch.Tensor  # (B, h*w, h*w) attention scores on the (H/16, W/16) attention map


class Generator(nn.Module):
    """Two-stage coarse-to-fine generator (Fig. 2). Input sides must be multiples of 16.

    prefill "none" is the paper's network: the hole is blanked and each stage outputs an image.
    prefill "harmonic" (our CPU-trained weights, not in the paper) starts from a smooth fill of the
    hole (backend.prefill) and each stage's last layer outputs a correction added to its input image
    inside the hole (outside it the input comes back unchanged: no loss term pulls the corrections to 0);
    with those two layers zeroed (zero_residual_outputs) the generator returns the prefill itself.
    """

    RESIDUAL_OUTPUTS = ("coarse.c_de_toRGB", "refine.re_de_toRGB__256")

    def __init__(self, prefill: str = "none") -> None:
        super().__init__()
        if prefill not in PREFILL_KINDS:
            raise ValueError(f"unknown prefill {prefill!r}; expected one of {PREFILL_KINDS}")
        self.prefill = prefill
        # (image, known) -> image filled where known is 0: backend.prefill's exact CPU solver; training
        # on a GPU swaps in lab.gpu_prefill's (same system, solved on the device).
        self.prefill_solver = harmonic_fill
        self.coarse = _stack(L.COARSE_LAYERS)
        self.refine = _stack(L.REFINE_LAYERS)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, refine: bool = True) -> GeneratorOutput:
        """image: (B, 3, H, W) in [-1, 1]; mask: (B, 1, H, W), 1 = hole.

        refine=False stops after stage 1: ``refined`` is then the coarse result pasted into the hole
        (the refine stage's input) and ``scores`` is empty, (B, 0, 0).
        """
        b, _, height, width = image.shape
        if height % L.ATTENTION_DOWNSCALE or width % L.ATTENTION_DOWNSCALE:
            raise ValueError(f"generator input must be a multiple of 16 on each side, got {width}x{height}")
        masked = image * (1.0 - mask)
        residual = self.prefill != "none"
        if residual:
            masked = masked + self.prefill_solver(masked, 1.0 - mask).to(masked.dtype) * mask

        # Stage 1 at half resolution.
        x = resize_bilinear_tf1(torch.cat([masked, mask], 1), height // 2, width // 2)
        for layer in self.coarse.values():
            x = layer(x)
        if residual:
            coarse = (masked + resize_bilinear_tf1(x, height, width) * mask).clamp(-1.0, 1.0)
        else:
            coarse = resize_bilinear_tf1(x.clamp(-1.0, 1.0), height, width)
        composed = coarse * mask + masked * (1.0 - mask)
        if not refine:
            return GeneratorOutput(coarse=coarse, refined=composed, scores=image.new_zeros(b, 0, 0))

        # Stage 2 encoder.
        r = self.refine
        x = torch.cat([composed, mask], 1)
        x = r["re_en_conv_256"](r["re_en_down_256"](x))
        level1 = x  # P^{l=1}: (B, 32, H/2, W/2)
        x = r["re_en_conv_128"](r["re_en_down_128"](x))
        level2 = x  # P^{l=2}: (B, 64, H/4, W/4)
        x = r["re_en_conv_64"](r["re_en_down_64"](x))
        for spec in L.REFINE_DILATED:
            x = r[spec.name](x)
        hallucinated = x  # P^{l=3}: (B, 128, H/8, W/8)

        grid_h, grid_w = height // L.ATTENTION_DOWNSCALE, width // L.ATTENTION_DOWNSCALE
        scores = attention_scores(hallucinated, mask)
        attended = transfer_attention(hallucinated, scores, grid_h, grid_w, patch=3)
        attended = r["re_att_64_att1"](attended)
        x = r["re_att_64_att3"](torch.cat([hallucinated, attended], 1))

        # Decoder with attention transfer at two more levels, same scores.
        for prefix, skip in (("128", level2), ("256", level1)):
            x = r[f"re_de_conv_{prefix}"](r[f"re_de_up__{prefix}"](x))
            transferred = transfer_attention(skip, scores, grid_h, grid_w)
            transferred = r[f"re_de_att_{prefix}_2"](r[f"re_de_att_{prefix}_1"](transferred))
            x = torch.cat([transferred, x], 1)
        refined = r["re_de_toRGB__256"](x)
        refined = (composed + refined * mask if residual else refined).clamp(-1.0, 1.0)
        return GeneratorOutput(coarse=coarse, refined=refined, scores=scores)


def fuse_gates(generator: nn.Module) -> int:
    """Fuse every single-channel gate with its features (GatedConv.fuse_gate): one convolution per
    layer in place of two. For inference: call after the weights are final. Returns layers fused."""
    return sum(module.fuse_gate() for module in generator.modules() if isinstance(module, GatedConv))


@torch.no_grad()
def zero_residual_outputs(generator: Generator, prefix: str = "") -> None:
    """Zero the last feature convolutions of the stages named ``prefix``* (default both): a "harmonic"
    generator with both zeroed returns its prefill. Fused layers (fuse_gates) are fused again."""
    modules = dict(generator.named_modules())
    for name in Generator.RESIDUAL_OUTPUTS:
        if name.startswith(prefix):
            modules[name].feature.weight.zero_()
            modules[name].feature.bias.zero_()
            if modules[name].fused_weight is not None:
                modules[name].fuse_gate()


@torch.no_grad()
def hold_output_gates_open(generator: Generator) -> list[str]:
    """Training of a prefill generator: hold the gate of each residual output layer (RESIDUAL_OUTPUTS)
    at the constant sigmoid(0) = 0.5 (gate weights and bias 0, frozen). The network and its inference
    are unchanged: the gate convolution just computes a constant.

    Why (section 3.4's gated output, our residual use of it): with reconstruction losses alone the best
    correction a stage can add to a smooth, L1-optimal fill is (nearly) none, and a gated output gets
    there fastest by shutting its gate; the gradient that shuts it also grows the layers feeding the
    gate, and once shut (sigmoid' ~ 0) the stage passes no gradient while Adam's normalised steps keep
    moving it. Measured at 128 px from the committed state (refine stage renormalised): at lr 2e-4 the
    refine decoder's output std went 0.5 -> 38 and its output gate shut on 100 % of values within 40
    steps, at 5e-5 within 200 steps; with the gate held open a correction goes to zero through its
    features, where gradients keep flowing (refine gradient norm 0.15 after 300 steps, not 0.02 and
    falling). Returns the layers changed now (their corrections restart at zero); [] when they were
    held open already.
    """
    modules = dict(generator.named_modules())
    changed = []
    for name in Generator.RESIDUAL_OUTPUTS:
        layer = modules[name]
        if layer.gate.weight.any() or layer.gate.bias.any():
            for conv in (layer.gate, layer.feature):
                conv.weight.zero_()
                conv.bias.zero_()
            changed.append(name)
        layer.gate.requires_grad_(False)
    return changed


class Discriminator(nn.Module):
    """WGAN-GP critic: six K5S2 convolutions with leaky ReLU, then a linear layer (appendix)."""

    def __init__(self, image_size: int = 512) -> None:
        super().__init__()
        channels = (3, *L.DISCRIMINATOR_CHANNELS)
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, L.DISCRIMINATOR_KERNEL, 2)
            for cin, cout in zip(channels[:-1], channels[1:], strict=True)
        )
        side = image_size
        for _ in self.convs:  # each K5S2 'SAME' convolution halves the side, rounding up
            side = -(-side // 2)
        self.linear = nn.Linear(side * side * channels[-1], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, S, S) -> (B,) critic scores."""
        x = image
        for conv in self.convs:
            top, bottom = same_padding(x.shape[2], L.DISCRIMINATOR_KERNEL, 2, 1)
            left, right = same_padding(x.shape[3], L.DISCRIMINATOR_KERNEL, 2, 1)
            x = F.leaky_relu(conv(F.pad(x, (left, right, top, bottom))), 0.2)
        # Flatten in TF's NHWC order so an imported linear kernel lines up.
        return self.linear(x.permute(0, 2, 3, 1).flatten(1)).squeeze(1)


def init_official(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The official initialisation: truncated normal (std 0.05) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            with torch.no_grad():
                nn.init.trunc_normal_(m.weight, std=0.05, a=-0.1, b=0.1, generator=generator)
                nn.init.zeros_(m.bias)


class _StopForward(Exception):
    pass


@torch.no_grad()
def init_data_dependent(
    generator: Generator, image: torch.Tensor, mask: torch.Tensor, target_std: float = 0.5, rounds: int = 3
) -> list[tuple[str, float]]:
    """Official initialisation, then every gated layer rescaled by renormalise_layers.

    With the official truncated-normal (std 0.05) start, each ELU x sigmoid layer roughly halves the
    signal, so after the ~25 layers of the coarse stack the output is constant and gradients vanish
    (measured: layer 15's output std is 0.0000). This layer-sequential, data-dependent rescaling (as in
    LSUV, Mishkin & Matas 2016) keeps the signal alive through the deep, normalisation-free stack.
    image: (B, 3, H, W) in [-1, 1]; mask: (B, 1, H, W). Returns (layer, std before rescaling) per layer.
    """
    init_official(generator)
    return renormalise_layers(generator, image, mask, "", target_std, rounds)


@torch.no_grad()
def renormalise_layers(
    generator: Generator,
    image: torch.Tensor,
    mask: torch.Tensor,
    prefix: str = "",
    target_std: float = 0.5,
    rounds: int = 3,
) -> list[tuple[str, float]]:
    """Scale the feature weights of each gated layer named ``prefix``* (in forward order) so that its
    output has std ``target_std`` on this data; the other layers and all gates are left as they are.

    Also revives a trained stage whose activations blew up: a gate fed with huge inputs saturates at 0,
    and the stage then passes neither signal nor gradient. Returns (layer, output std found before
    rescaling it) per layer.
    """
    modules = generator.named_modules()
    layers = [(n, m) for n, m in modules if isinstance(m, GatedConv) and n.startswith(prefix)]
    result = []
    for name, layer in layers:
        first = None
        for _ in range(rounds):
            captured: list[float] = []

            def hook(_m, _i, out, captured=captured):
                captured.append(out.float().std().item())
                raise _StopForward

            handle = layer.register_forward_hook(hook)
            try:
                generator(image, mask)
            except _StopForward:
                pass
            finally:
                handle.remove()
            std = captured[0]
            first = std if first is None else first
            if std < 1e-12:
                break
            layer.feature.weight.mul_(target_std / std)
        result.append((name, first))
    return result


def official_parameter_map(generator: Generator) -> dict[str, str]:
    """Official variable name ('generator/...') -> our state_dict key, from the layer table."""
    mapping = {}
    for stage, specs in (("coarse", L.COARSE_LAYERS), ("refine", L.REFINE_LAYERS)):
        for spec in specs:
            for official, (sub, param) in L.official_variable_names(spec).items():
                mapping[f"generator/{official}"] = f"{stage}.{spec.name}.{sub}.{param}"
    return mapping

"""The paper's layer table (appendix "Network Architectures") as data, named as in the official checkpoint.

Each row is one Light-Weight Gated Convolution (LWGC, section 3.4). The coarse network uses
single-channel LWGC (Eq. 8), the refine network pixel-wise LWGC (Eq. 7: a 1x1 gate convolution with
as many channels as the features). The names are the official TensorFlow variable scopes, so that
``official_variable_names`` can list every checkpoint variable from this table alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GateKind = Literal["single_channel", "pixelwise"]


@dataclass(frozen=True)
class ConvSpec:
    """One LWGC layer: K (kernel), S (stride), C (channels), D (dilation) as in the appendix."""

    name: str  # official scope, e.g. "c_en_down_128" or "re_dil_d16"
    in_channels: int
    out_channels: int
    kernel: int = 3
    stride: int = 1
    dilation: int = 1
    upsample_first: bool = False  # "upsample(2x) - conv": the official gen_deconv_* layers
    gate: GateKind = "single_channel"


def _coarse(name: str, cin: int, cout: int, k: int = 3, s: int = 1, d: int = 1, up: bool = False) -> ConvSpec:
    return ConvSpec(name, cin, cout, k, s, d, up, "single_channel")


def _refine(name: str, cin: int, cout: int, k: int = 3, s: int = 1, d: int = 1, up: bool = False) -> ConvSpec:
    return ConvSpec(name, cin, cout, k, s, d, up, "pixelwise")


# Coarse network (runs at half the generator's input size, 256x256 for a 512x512 input):
# K5S2C32 - K3S1C32 - K3S2C64 - 3 x K3S1C64 - 14 dilated K3S1C64 (D 1,1,1,2,2,2,2,2,4,4,4,4,8,8)
# - 3 x K3S1C64 - upsample - K3S1C32 - K3S1C32 - upsample - K3S1C3 - clip
COARSE_DILATIONS = (1, 1, 1, 2, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8)
COARSE_LAYERS: tuple[ConvSpec, ...] = (
    _coarse("c_en_down_128", 4, 32, k=5, s=2),
    _coarse("c_en_conv_128", 32, 32),
    _coarse("c_en_down_64", 32, 64, s=2),
    _coarse("c_en_conv1_64", 64, 64),
    _coarse("c_en_conv2_64", 64, 64),
    _coarse("c_en_conv3_64", 64, 64),
    *(_coarse(f"c_dil_d{i + 1}", 64, 64, d=d) for i, d in enumerate(COARSE_DILATIONS)),
    _coarse("c_de_conv1_64", 64, 64),
    _coarse("c_de_conv2_64", 64, 64),
    _coarse("c_de_conv3_64", 64, 64),
    _coarse("c_de_up_128", 64, 32, up=True),
    _coarse("c_de_conv_128", 32, 32),
    _coarse("c_de_toRGB", 32, 3, up=True),
)

# Refine network encoder (input: coarse result pasted into the hole + mask, 4 channels).
REFINE_ENCODER: tuple[ConvSpec, ...] = (
    _refine("re_en_down_256", 4, 32, s=2),
    _refine("re_en_conv_256", 32, 32),  # -> P^{l=1} (half resolution)
    _refine("re_en_down_128", 32, 64, s=2),
    _refine("re_en_conv_128", 64, 64),  # -> P^{l=2} (quarter resolution)
    _refine("re_en_down_64", 64, 128, s=2),
    _refine("re_en_conv_64", 128, 128),
)
REFINE_DILATED: tuple[ConvSpec, ...] = tuple(_refine(f"re_dil_d{d}", 128, 128, d=d) for d in (1, 2, 4, 8, 16))
# Attention branch on P^{l=3} (eighth resolution): ATM output conv, then conv on [hallucinated, attended].
REFINE_ATTENTION: tuple[ConvSpec, ...] = (
    _refine("re_att_64_att1", 128, 128),
    _refine("re_att_64_att3", 256, 128),
)
# Decoder: per level, upsample-conv, conv, and the ATM branch (two convs, the second dilated).
REFINE_DECODER_128: tuple[ConvSpec, ...] = (
    _refine("re_de_up__128", 128, 64, up=True),
    _refine("re_de_conv_128", 64, 64),
    _refine("re_de_att_128_1", 64, 64),
    _refine("re_de_att_128_2", 64, 64, d=2),
)
REFINE_DECODER_256: tuple[ConvSpec, ...] = (
    _refine("re_de_up__256", 128, 32, up=True),
    _refine("re_de_conv_256", 32, 32),
    _refine("re_de_att_256_1", 32, 32),
    _refine("re_de_att_256_2", 32, 32, d=2),
)
REFINE_TO_RGB = _refine("re_de_toRGB__256", 64, 3, up=True)

REFINE_LAYERS: tuple[ConvSpec, ...] = (
    *REFINE_ENCODER,
    *REFINE_DILATED,
    *REFINE_ATTENTION,
    *REFINE_DECODER_128,
    *REFINE_DECODER_256,
    REFINE_TO_RGB,
)

# Discriminator: six K5S2 convolutions (64, 128, 256, 256, 256, 256) + a linear layer to one score.
# (The appendix says K3; the official checkpoint holds 5x5 kernels, which we follow.)
DISCRIMINATOR_CHANNELS = (64, 128, 256, 256, 256, 256)
DISCRIMINATOR_KERNEL = 5

ATTENTION_PATCH = 3  # ACM patch size on the attention map (section 3.2)
ATTENTION_SOFTMAX_SCALE = 10.0  # official contextual_attention softmax_scale
ATTENTION_DOWNSCALE = 16  # the attention map is 1/16 of the generator input (32x32 at 512x512)

GENERATOR_PARAMETERS = 2_722_791  # official Places2 checkpoint


def official_variable_names(spec: ConvSpec) -> dict[str, tuple[str, str]]:
    """Official TF variable name -> (our sub-module, our parameter) for one layer of the table."""
    scope = f"{spec.name}/{spec.name}_conv" if spec.upsample_first else spec.name
    if spec.gate == "single_channel":
        return {
            f"{scope}_feat/w": ("feature", "weight"),
            f"{scope}_feat/biases": ("feature", "bias"),
            f"{scope}_gate/w": ("gate", "weight"),
            f"{scope}_gate/biases": ("gate", "bias"),
        }
    return {
        f"{scope}/w": ("feature", "weight"),
        f"{scope}/biases": ("feature", "bias"),
        f"{scope}/pw": ("gate", "weight"),
        f"{scope}/ds_biases": ("gate", "bias"),
    }

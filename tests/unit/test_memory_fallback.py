"""Out of device memory: the engine retries at a smaller working size, then on the CPU, and says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.inference import SMALLEST_WORKING_SIZE, TorchInpaintEngine, check_working_size, fallback_plan
from backend.weights import write_untrained_weights
from shared_protocol import ErrorKind, HiFillError

CPU, GPU = torch.device("cpu"), torch.device("cuda:0")


def test_the_plan_shrinks_the_working_size_then_moves_to_the_cpu():
    assert fallback_plan(GPU, 512) == [(GPU, 512), (GPU, 384), (GPU, 256), (CPU, 512)]
    assert fallback_plan(CPU, 512) == [(CPU, 512), (CPU, 384), (CPU, 256)]
    assert fallback_plan(GPU, 144) == [(GPU, 144), (GPU, SMALLEST_WORKING_SIZE), (CPU, 144)]
    assert fallback_plan(CPU, SMALLEST_WORKING_SIZE) == [(CPU, SMALLEST_WORKING_SIZE)]
    for _device, side in fallback_plan(GPU, 1008):
        check_working_size(side)  # every step is a size the engine accepts


@pytest.mark.parametrize("side", [0, 100, 120, 4096])
def test_unsupported_working_sizes_are_refused(side):
    with pytest.raises(HiFillError) as error:
        check_working_size(side)
    assert error.value.kind == ErrorKind.BAD_REQUEST and "multiple of 16" in error.value.message


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> TorchInpaintEngine:
    path = write_untrained_weights(tmp_path_factory.mktemp("w") / "untrained.safetensors")
    # fp32 on purpose: 'auto' is bf16 autocast on CPUs with native bf16, and the fallback test below
    # compares the engine's own pass with its float32 CPU copy.
    return TorchInpaintEngine.load(
        path, device="cpu", precision="fp32", allow_untrained=True, warm_up=False, working_size=256
    )


def _case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    mask = np.zeros((300, 400), np.uint8)
    mask[100:160, 150:260] = 255
    return image, mask


def _out_of_memory_above(engine: TorchInpaintEngine, monkeypatch, pixels: int) -> list[tuple[int, int]]:
    """Make the generator raise CUDA's out-of-memory error for inputs larger than ``pixels``."""
    seen: list[tuple[int, int]] = []
    real_forward = engine._forward

    def forward(image, hole):
        seen.append(tuple(image.shape[2:]))
        if image.shape[2] * image.shape[3] > pixels:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(image, hole)

    monkeypatch.setattr(engine, "_forward", forward)
    return seen


def test_out_of_memory_retries_smaller_with_a_warning_and_keeps_the_outside_exact(
    engine, monkeypatch, caplog
):
    image, mask = _case()
    messages: list[str] = []
    seen = _out_of_memory_above(engine, monkeypatch, 200 * 200)
    with caplog.at_level("WARNING", logger="hifill.engine"):
        result = engine.fill(image, mask, progress=lambda f, m: messages.append(m))
    assert len(seen) == 2 and seen[0][0] * seen[0][1] > 200 * 200 >= seen[1][0] * seen[1][1]
    assert len(result.warnings) == 1 and "ran out of memory at working size 256" in result.warnings[0]
    assert "working size 192" in result.warnings[0]
    assert any("ran out of memory" in r.getMessage() for r in caplog.records)
    assert any("Out of memory; retrying" in m for m in messages)
    region = result.pixels
    outside = mask[result.y : result.y + region.shape[0], result.x : result.x + region.shape[1]] == 0
    original = image[result.y : result.y + region.shape[0], result.x : result.x + region.shape[1]]
    assert np.array_equal(region[outside], original[outside])
    assert not np.array_equal(region, original)  # the hole was filled


def test_out_of_memory_at_every_size_is_a_clear_error(engine, monkeypatch):
    image, mask = _case()
    seen = _out_of_memory_above(engine, monkeypatch, 0)
    with pytest.raises(HiFillError) as error:
        engine.fill(image, mask)
    assert error.value.kind == ErrorKind.OUT_OF_MEMORY and "not enough memory" in error.value.message
    assert len(seen) == len(fallback_plan(CPU, 256))


def test_the_cpu_fallback_runs_a_float32_copy_of_the_generator(engine):
    image, hole = torch.rand(1, 3, 64, 64) * 2 - 1, torch.zeros(1, 1, 64, 64)
    hole[:, :, 16:40, 20:48] = 1
    on_device = engine.run_generator(image, hole)
    on_cpu = engine._run_on_cpu(image, hole)
    assert engine._cpu_generator is not engine.eager_generator
    assert torch.allclose(on_device[0], on_cpu[0]) and torch.allclose(on_device[1], on_cpu[1])

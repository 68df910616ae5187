"""Device and precision choice, shared by the serving engine and training."""

from __future__ import annotations

import torch

from shared_protocol.errors import ErrorKind, HiFillError


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (bf16 convolutions are then fast in oneDNN)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is validated."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HiFillError(
            ErrorKind.BAD_REQUEST, f"Device '{device}' was asked for but CUDA is not available."
        )
    return dev


def choose_precision(device: torch.device, precision: str) -> torch.dtype | None:
    """Autocast dtype or None for float32. 'auto': fp16 on CUDA; bf16 on CPUs with AMX/AVX512-BF16.

    On CPUs without native bf16 (e.g. AVX2 only) bf16 convolutions fall back to slow reference
    kernels (measured here ~100x slower), so auto keeps float32 there.
    """
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        if precision not in table:
            raise HiFillError(ErrorKind.BAD_REQUEST, f"Unknown precision '{precision}' (fp32, bf16, fp16).")
        return table[precision]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None

"""The torch side of the engine: device and precision choice, warm generator, CRA fills."""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from backend import cra, search_kernels
from backend.device import choose_device, choose_precision
from backend.engine import CancelCheck, FillOptions, FillResult, InpaintEngine, ProgressCallback
from backend.network import Generator, GeneratorOutput, fuse_gates
from backend.texture import TextureConfig, beside_thread
from backend.weights import DEFAULT_WEIGHTS, ModelConfig, load_generator
from shared_protocol import ErrorKind, HiFillError

log = logging.getLogger("hifill.engine")

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float32)


class TorchInpaintEngine(InpaintEngine):
    """A generator kept warm on one device; fill() runs CRA (backend.cra) around each hole."""

    def __init__(
        self,
        generator: Generator,
        config: ModelConfig,
        weights_path: Path,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        working_size: int = cra.DEFAULT_MODEL_SIDE,
        texture: TextureConfig | None = None,
    ) -> None:
        check_working_size(working_size)
        self.working_size = working_size
        self.texture = texture  # None: the paper's attention-weighted residuals (Eq. 4)
        # The attention path needs the refine stage's scores; the patch path of weights that start from a
        # prefill does without the stage (backend.texture, the note above TextureConfig).
        self.refine_stage = texture is None or texture.refine_stage or generator.prefill == "none"
        self.generator = generator.to(device).eval()
        fuse_gates(self.generator)  # one convolution per gated layer: 0.206 s against 0.233 s a 512² pass
        self.eager_generator = self.generator  # what run_generator falls back to if compilation fails
        self._cpu_generator: Generator | None = None  # made on the first out-of-memory fallback to the CPU
        self.compiled = False
        self.config = config
        self.weights_path = weights_path
        self.device = device
        self.autocast_dtype = autocast_dtype
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @classmethod
    def load(
        cls,
        weights: Path | str | None = None,
        device: str = "auto",
        precision: str = "auto",
        allow_untrained: bool = False,
        warm_up: bool = True,
        compile: bool = False,
        working_size: int | None = None,
        detail: str = "auto",
    ) -> TorchInpaintEngine:
        """Load weights onto a device; ``compile`` asks for torch.compile of the generator (see compile).

        detail: where the full-resolution detail comes from (DETAIL_SOURCES): "attention" (the paper's
        CRA), "patch" (a patch search guided by the fill, backend.texture), "auto" (attention for the
        official weights, patch for ours).

        working_size: the generator's input is about working_size^2 pixels per context window
        (default: the size stored with the weights, ModelConfig.working_size).
        """
        path = Path(weights) if weights else DEFAULT_WEIGHTS
        generator, config = load_generator(path)
        if config.untrained and not allow_untrained:
            raise HiFillError(
                ErrorKind.NO_WEIGHTS,
                f"{path} holds untrained (random) weights, which only tests may use. "
                "Use the shipped weights (backend/weights/hifill-places-cpu.safetensors) or your own.",
            )
        if config.untrained:
            log.warning("Serving UNTRAINED weights from %s: fills will be noise (tests only).", path)
        dev = choose_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        side = working_size or config.working_size
        texture = default_texture(config) if detail == "auto" else TEXTURE_MODES[detail]
        engine = cls(generator, config, path, dev, choose_precision(dev, precision), side, texture)
        if compile:
            engine.compile()
        if warm_up:
            engine.warm_up()
        return engine

    def compile(self, side: int = 256) -> bool:
        """torch.compile the generator and run it once at side x side; True if the compiled one is used.

        Compilation needs a working backend (on CPU a C++ compiler); any failure -- now or later, when a
        new window shape recompiles -- is logged as a warning and the eager generator is used from then
        on, never silently. Compiled kernels may round differently from eager ones (fused operations),
        so fills are close to, not bit-identical with, uncompiled fills; hence it is opt-in.
        """
        try:
            self.generator = torch.compile(self.eager_generator, dynamic=None)
            self.compiled = True
            self.run_generator(*self._warm_up_input(side))
        except Exception as error:  # noqa: BLE001 -- any compiler failure falls back, with a warning
            self._use_eager(error)
        if self.compiled:
            log.info("Generator compiled with torch.compile on %s.", self.device)
        return self.compiled

    def _use_eager(self, error: BaseException) -> None:
        log.warning(
            "torch.compile of the generator failed on %s (%s: %s); using the uncompiled generator.",
            self.device,
            type(error).__name__,
            str(error).strip().splitlines()[0] if str(error).strip() else "no message",
        )
        self.generator = self.eager_generator
        self.compiled = False

    def describe(self) -> dict:
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return {
            "device": str(self.device),
            "model": f"{self.config.architecture} ({self.config.source}, {self.config.steps} steps)",
            "weights": str(self.weights_path),
            "precision": precision,
            "untrained": self.config.untrained,
            "compiled": self.compiled,
            "working_size": self.working_size,
            "prefill": self.config.prefill,
            "detail": "attention" if self.texture is None else "patch",
            "stages": "coarse + refine" if self.refine_stage else "coarse",
        }

    def warm_up(self, side: int = 256) -> float:
        """One small forward pass so the first real fill doesn't pay for kernel selection, and, on the
        patch path, one small fill so that it doesn't pay for loading the compiled search and prefill
        kernels either (backend.search_kernels, backend.multigrid: ~1 s, on the fill's second thread
        while the forward pass runs). Returns s."""
        start = time.perf_counter()
        kernels = beside_thread().submit(load_compiled_kernels) if self.texture is not None else None
        self.run_generator(*self._warm_up_input(side))
        if kernels is not None:
            kernels.result()
            ramp = np.linspace(0, 255, 96 * 96 * 3).reshape(96, 96, 3).astype(np.uint8)
            hole = np.zeros((96, 96), np.uint8)
            hole[32:56, 40:64] = 255  # compact: the multigrid prefill
            self.fill(ramp, hole)
        return time.perf_counter() - start

    @staticmethod
    def _warm_up_input(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.zeros(1, 3, side, side)
        hole = torch.zeros(1, 1, side, side)
        # Two small squares far apart: a scattered hole, whose prefill takes the direct solve, so that
        # the multigrid's compiled kernels can load on the other thread meanwhile (warm_up).
        hole[:, :, side // 8 : side // 4, side // 8 : side // 4] = 1
        hole[:, :, -side // 4 : -side // 8, -side // 4 : -side // 8] = 1
        return image, hole

    @torch.no_grad()
    def run_generator(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1,3,h,w) in [-1,1], hole (1,1,h,w) -> refined (1,3,h,w) and scores (1,L,L), on CPU
        (without the refine stage: the coarse fill and empty scores, (1,0,0))."""
        image, hole = to_device(image, self.device), to_device(hole, self.device)
        try:
            out = self._forward(image, hole)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 -- only a compiled generator's failure is caught
            if not self.compiled:
                raise
            self._use_eager(error)  # e.g. a new window shape whose recompilation failed
            out = self._forward(image, hole)
        return out.refined.float().cpu(), out.scores.float().cpu()

    def _forward(self, image: torch.Tensor, hole: torch.Tensor) -> GeneratorOutput:
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            return self.generator(image, hole, refine=self.refine_stage)

    def fill(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        options: FillOptions = FillOptions(),
        progress: ProgressCallback | None = None,
        is_cancelled: CancelCheck | None = None,
    ) -> FillResult:
        validate_fill_input(image, mask, options)
        report = progress or (lambda f, m: None)
        warnings: list[str] = []
        attempts = fallback_plan(self.device, self.working_size)
        for n, (device, side) in enumerate(attempts):
            try:
                top, left, region = cra.inpaint(
                    image,
                    mask,
                    self.run_generator if device == self.device else self._run_on_cpu,
                    context_px=options.context_px,
                    model_side=side,
                    cancelled=is_cancelled or (lambda: False),
                    progress=report,
                    texture=self.texture,
                )
                return FillResult(x=left, y=top, pixels=region, warnings=tuple(warnings))
            except cra.FillCancelled:
                raise HiFillError(ErrorKind.CANCELLED, "The fill was cancelled.") from None
            except torch.cuda.OutOfMemoryError:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if n + 1 == len(attempts):
                    break
                next_device, next_side = attempts[n + 1]
                warning = (
                    f"{device_label(device)} ran out of memory at working size {side}; "
                    f"filled on {device_label(next_device)} at working size {next_side} instead."
                )
                log.warning("%s", warning)
                warnings.append(warning)
                report(0.0, "Out of memory; retrying " + f"on {device_label(next_device)} at {next_side} px")
        raise HiFillError(
            ErrorKind.OUT_OF_MEMORY,
            "There was not enough memory for this fill, even at the smallest working size; "
            "try a smaller selection or less context.",
        )

    @torch.no_grad()
    def _run_on_cpu(self, image: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator on the CPU in float32 (a copy made on first use): the last out-of-memory resort."""
        if self._cpu_generator is None:
            self._cpu_generator = copy.deepcopy(self.eager_generator).float().cpu().eval()
        out = self._cpu_generator(image.cpu().float(), hole.cpu().float(), refine=self.refine_stage)
        return out.refined.float(), out.scores.float()


def load_compiled_kernels() -> None:
    """Load the numba kernels of the patch path from their cache (compile them on a first run);
    nothing to load without numba (backend.search_kernels says so once)."""
    if not search_kernels.COMPILED:
        return
    from backend import multigrid

    multigrid.warm_up()
    search_kernels.warm_up()


TEXTURE_MODES: dict[str, TextureConfig | None] = {"attention": None, "patch": TextureConfig()}
DETAIL_SOURCES = ("auto", *TEXTURE_MODES)


def default_texture(config: ModelConfig) -> TextureConfig | None:
    """The official checkpoint keeps the paper's CRA; our weights copy detail by guided patch search."""
    return None if config.source == "official-import" else TextureConfig()


SMALLEST_WORKING_SIZE = 128  # 8 x 8 attention cells: below this the generator has too little to work with


def check_working_size(side: int) -> None:
    """Working sizes are multiples of the attention cell (16 px) from SMALLEST_WORKING_SIZE to 2048."""
    if not (SMALLEST_WORKING_SIZE <= side <= 2048 and side % cra.CELL_DOWNSCALE == 0):
        raise HiFillError(
            ErrorKind.BAD_REQUEST,
            f"Working size {side} is not supported; "
            f"use a multiple of 16 from {SMALLEST_WORKING_SIZE} to 2048.",
        )


def fallback_plan(device: torch.device, side: int) -> list[tuple[torch.device, int]]:
    """(device, working size) to try in order when a fill runs out of device memory.

    The asked size first, then 3/4 and 1/2 of it (in 16-px steps, not below SMALLEST_WORKING_SIZE) on
    the same device, then -- from a GPU -- the asked size on the CPU.
    """
    sizes = [side]
    for fraction in (0.75, 0.5):
        smaller = max(SMALLEST_WORKING_SIZE, int(side * fraction) // cra.CELL_DOWNSCALE * cra.CELL_DOWNSCALE)
        if smaller < sizes[-1]:
            sizes.append(smaller)
    plan = [(device, s) for s in sizes]
    if device.type != "cpu":
        plan.append((torch.device("cpu"), side))
    return plan


def device_label(device: torch.device) -> str:
    return "the CPU" if device.type == "cpu" else f"the graphics card ({device})"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a host tensor to ``device``: on CUDA via pinned memory and an asynchronous copy.

    The CUDA stream orders the copy before the kernels that read it. On CPU the same tensor comes
    back: nothing is pinned or copied.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def validate_fill_input(image: np.ndarray, mask: np.ndarray, options: FillOptions) -> None:
    """Shape/dtype checks with sentences a user understands."""
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise HiFillError(ErrorKind.BAD_REQUEST, f"The image must be RGB or RGBA, got shape {image.shape}.")
    if image.dtype.type not in SUPPORTED_DTYPES:
        raise HiFillError(ErrorKind.BAD_REQUEST, f"Unsupported pixel type {image.dtype} (8/16-bit or float).")
    if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
        raise HiFillError(
            ErrorKind.BAD_REQUEST,
            f"The mask must be 8-bit and {image.shape[1]}x{image.shape[0]} like the image, "
            f"got {mask.dtype} {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}.",
        )
    if options.context_px is not None and not (0 <= options.context_px <= 65536):
        raise HiFillError(ErrorKind.BAD_REQUEST, f"Context size {options.context_px} px is out of range.")


def load_engine(
    weights: Path | str | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_untrained: bool = False,
    compile: bool = False,
    working_size: int | None = None,
    detail: str = "auto",
) -> TorchInpaintEngine:
    """The torch engine, warmed up. Raises HiFillError(NO_WEIGHTS) when weights are missing or unusable.

    Untrained (random) weights are refused unless allow_untrained is set (tests of the plumbing only);
    compile asks for torch.compile of the generator (falls back to eager with a logged warning);
    working_size is the generator's input side per context window (None: the weights' own setting).
    Callers outside the torch side import this module inside a function, so the server stays light.
    """
    return TorchInpaintEngine.load(
        weights,
        device=device,
        precision=precision,
        allow_untrained=allow_untrained,
        compile=compile,
        working_size=working_size,
        detail=detail,
    )

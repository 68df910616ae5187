"""Inpainting methods the evaluation compares: ours (and its ablations) and classical baselines.

A `Method` is callable(image (H, W, 3) uint8 with the hole blanked, mask (H, W) uint8 {0, 255})
-> (H, W, 3) uint8. `METHOD_FACTORIES` maps a name to a factory building one from a `MethodConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.evaluation.errors import EvaluationError

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MethodConfig:
    """What factories may need: our engine's weights, device and whether untrained weights are
    acceptable (plumbing tests only), and OpenCV's inpaint radius."""

    weights: Path | None = None
    device: str = "auto"
    allow_untrained: bool = False
    opencv_radius: int = 3
    working_size: int | None = None


def opencv_method(flag: int, radius: int = 3) -> Method:
    """OpenCV's cv2.inpaint (flag: cv2.INPAINT_TELEA or cv2.INPAINT_NS) as a Method."""
    import cv2

    def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return cv2.inpaint(image, mask, radius, flag)

    return fill


def mean_colour_method(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A floor to beat: fill the hole with the mean colour of everything outside it."""
    hole = mask > 127
    out = image.copy()
    out[hole] = np.round(image[~hole].mean(axis=0)).astype(np.uint8)
    return out


def engine_method(
    weights: Path | None = None,
    device: str = "auto",
    allow_untrained: bool = False,
    working_size: int | None = None,
    corrections: bool = True,
    refine: bool = True,
) -> Method:
    """Our HiFill engine (backend.engine, CRA path) as a Method; raises EvaluationError if unusable.

    corrections=False is the ablation of weights that start from a prefill (ModelConfig.prefill):
    their learned correction layers are zeroed, so the fill is the prefill alone, through the same CRA.
    refine=False is the "coarse stage only" ablation: the same weights with the refine stage's
    contribution removed (section 3.3: its input, the coarse result pasted into the hole, is the
    fill), through the same CRA (which still uses the refine stage's attention scores).
    """
    try:
        from backend.inference import load_engine
        from shared_protocol import HiFillError
    except ImportError as error:
        raise EvaluationError(
            f"The HiFill engine cannot be loaded ({error}). Evaluate the baselines alone with "
            "--methods telea,ns until it is available."
        ) from error
    try:
        engine = load_engine(
            weights, device=device, allow_untrained=allow_untrained, working_size=working_size
        )
    except HiFillError as error:
        raise EvaluationError(error.message) from error
    if not corrections:
        _switch_off_corrections(engine)
    if not refine:
        _switch_off_refine(engine)

    def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        result = engine.fill(image, mask)
        out = image.copy()
        height, width = result.pixels.shape[:2]
        out[result.y : result.y + height, result.x : result.x + width] = result.pixels[..., :3]
        return out

    fill.description = engine.describe()  # type: ignore[attr-defined]  # shown in results.md
    return fill


def _switch_off_corrections(engine) -> None:
    from backend.network import zero_residual_outputs

    generator = getattr(engine, "eager_generator", None)
    if generator is None or generator.prefill == "none":
        raise EvaluationError(
            "The 'prefill' method needs weights that start from a prefill (ours since the harmonic "
            "prefill); these weights paint the hole themselves. Leave 'prefill' out of --methods."
        )
    zero_residual_outputs(generator)


def _switch_off_refine(engine) -> None:
    """Give the engine a generator whose refined output is the coarse result pasted into the hole:
    exactly the image its refine stage receives (backend.network.Generator.forward)."""
    import torch

    from backend.network import GeneratorOutput

    class CoarseOnly(torch.nn.Module):
        def __init__(self, generator: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.prefill = generator, generator.prefill

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> GeneratorOutput:
            out = self.inner(image, mask)
            composed = out.coarse * mask + image * (1.0 - mask) * (1.0 - mask)  # as Generator.forward
            return GeneratorOutput(coarse=out.coarse, refined=composed, scores=out.scores)

    engine.generator = engine.eager_generator = CoarseOnly(engine.eager_generator)


def _cv2_flag(name: str) -> int:
    import cv2

    return {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[name]


METHOD_FACTORIES: dict[str, Callable[[MethodConfig], Method]] = {
    "hifill": lambda config: engine_method(
        config.weights, config.device, config.allow_untrained, config.working_size
    ),
    "prefill": lambda config: engine_method(
        config.weights, config.device, config.allow_untrained, config.working_size, corrections=False
    ),
    "coarse": lambda config: engine_method(
        config.weights, config.device, config.allow_untrained, config.working_size, refine=False
    ),
    "telea": lambda config: opencv_method(_cv2_flag("telea"), config.opencv_radius),
    "ns": lambda config: opencv_method(_cv2_flag("ns"), config.opencv_radius),
    "mean": lambda config: mean_colour_method,
}
METHOD_TITLES = {
    "hifill": "HiFill (ours, CRA)",
    "prefill": "prefill only (ablation)",
    "coarse": "coarse stage only (ablation)",
    "telea": "OpenCV Telea",
    "ns": "OpenCV Navier-Stokes",
    "mean": "mean colour",
}


def build_methods(names: Sequence[str], config: MethodConfig) -> dict[str, Method]:
    """Instantiate the named methods in order; unknown names raise EvaluationError."""
    unknown = [name for name in names if name not in METHOD_FACTORIES]
    if unknown:
        raise EvaluationError(
            f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_FACTORIES)}."
        )
    return {name: METHOD_FACTORIES[name](config) for name in names}

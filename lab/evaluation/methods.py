"""Inpainting methods the evaluation compares: ours (and its ablations) and classical baselines.

A `Method` is callable(image (H, W, 3) uint8 with the hole blanked, mask (H, W) uint8 {0, 255})
-> (H, W, 3) uint8. `METHOD_FACTORIES` maps a name to a factory building one from a `MethodConfig`.

The third-party baselines are dev extras, imported only when their factory runs: `resynth`
(Resynthesizer's Heal Selection through the resynthesizer wheel, GPL-3, so evaluation only) and
`patchmatch` (patchmatch-cython, shared with the bench through lab.peer_fills).
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
    detail: str = "auto"  # backend.inference.DETAIL_SOURCES: where our full-resolution detail comes from
    cache: Path | None = None  # folder of the slow baselines' outputs, reused when the input is the same


def config_from_options(args) -> MethodConfig:
    """The MethodConfig of parsed engine options (backend.options.add_engine_options)."""
    return MethodConfig(
        weights=args.weights,
        device=args.device,
        allow_untrained=args.allow_untrained,
        opencv_radius=getattr(args, "opencv_radius", 3),
        working_size=args.working_size,
        detail=args.detail,
        cache=getattr(args, "cache", None),
    )


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
    detail: str = "auto",
    refine_stage: bool = False,
) -> Method:
    """Our HiFill engine (backend.engine, CRA path) as a Method; raises EvaluationError if unusable.

    corrections=False is the ablation of weights that start from a prefill (ModelConfig.prefill):
    their learned correction layers are zeroed, so the fill is the prefill alone, through the same CRA.
    refine=False is the "coarse stage only" ablation: the same weights with the refine stage's
    contribution removed (section 3.3: its input, the coarse result pasted into the hole, is the
    fill), through the same CRA (which still uses the refine stage's attention scores).
    detail: "attention" (the paper's residual aggregation), "patch" (backend.texture) or "auto".
    refine_stage=True runs the refine stage where the patch path would skip it (TextureConfig.
    refine_stage): the "with the refine stage" row, which shows what the stage adds to the shipped path.
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
            weights,
            device=device,
            allow_untrained=allow_untrained,
            working_size=working_size,
            detail=detail,
        )
    except HiFillError as error:
        raise EvaluationError(error.message) from error
    if refine_stage:
        engine.refine_stage = True
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

        def forward(self, image: torch.Tensor, mask: torch.Tensor, refine: bool = True) -> GeneratorOutput:
            out = self.inner(image, mask, refine=refine)  # the attention path needs the scores
            composed = out.coarse * mask + image * (1.0 - mask) * (1.0 - mask)  # as Generator.forward
            return GeneratorOutput(coarse=out.coarse, refined=composed, scores=out.scores)

    engine.generator = engine.eager_generator = CoarseOnly(engine.eager_generator)


# GIMP's Filters > Enhance > Heal Selection with its defaults (plugin-heal-selection.py/.scm of
# bootchk/resynthesizer): the corpus is the selection grown by the "context sampling width" (50 px)
# minus the selection ("all around"); filling order "random" (use_border 1); the engine is called with
# no tiling, map weight 0.0, autism 0.117, neighbourhood 16, trys 500.
HEAL_CONTEXT_WIDTH = 50
HEAL_SETTINGS = {
    "isMakeSeamlesslyTileableHorizontally": 0,
    "isMakeSeamlesslyTileableVertically": 0,
    "matchContextType": 1,  # match the target's context, fill in random order
    "mapWeight": 0.0,
    "sensitivityToOutliers": 0.117,
    "patchSize": 16,  # neighbourhood: pixels per patch
    "maxProbeCount": 500,
}
RESYNTH_ERRORS = {
    1: "invalid image format",
    2: "image and mask sizes differ",
    3: "patch size too large",
    4: "match context type out of range",
    5: "nothing to fill",
    6: "no pixels to sample from",
}


def resynth_method(context_width: int = HEAL_CONTEXT_WIDTH) -> Method:
    """Resynthesizer's Heal Selection (GIMP defaults) as a Method, through the resynthesizer wheel's
    libresynthesizer (ctypes). The engine seeds its own generator (a fixed srand), so a fill is
    deterministic. Raises EvaluationError when the wheel is missing."""
    try:
        from resynthesizer import resynthesizer as library
    except (ImportError, OSError) as error:
        raise EvaluationError(
            f"The 'resynth' baseline needs the Resynthesizer library ({error}). Install it with "
            "`pip install resynthesizer==1.2` (it is in the dev extra; GPL-3, evaluation only), or leave "
            "'resynth' out of --methods."
        ) from error
    import ctypes

    try:  # imageSynth2: the simple API with a separate corpus mask (the wheel wraps only imageSynth)
        synth = library.resynthesizer_lib.imageSynth2
    except AttributeError as error:
        raise EvaluationError(
            "This build of libresynthesizer has no imageSynth2 (a separate corpus); install "
            "`pip install resynthesizer==1.2`."
        ) from error
    buffer = ctypes.POINTER(library.ImageBuffer)
    progress_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)
    synth.argtypes = [buffer, buffer, buffer, ctypes.c_int]
    synth.argtypes += [ctypes.POINTER(library.TImageSynthParameters), progress_type, ctypes.c_void_p]
    synth.argtypes += [ctypes.POINTER(ctypes.c_int)]
    synth.restype = ctypes.c_int
    settings = library.TImageSynthParameters(**HEAL_SETTINGS)
    no_progress = progress_type(lambda percent, context: None)

    def as_buffer(pixels: np.ndarray) -> object:
        height, width = pixels.shape[:2]
        data = pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte))
        return library.ImageBuffer(data, width, height, pixels.strides[0])

    def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hole = mask > 127
        pixels = np.array(image[..., :3], dtype=np.uint8, order="C")  # the engine fills it in place
        if not hole.any():
            return pixels
        target = np.ascontiguousarray(hole, dtype=np.uint8) * np.uint8(255)
        corpus = heal_selection_corpus(hole, context_width).astype(np.uint8) * np.uint8(255)
        buffers = as_buffer(pixels), as_buffer(target), as_buffer(corpus)
        cancel = ctypes.c_int(0)
        code = synth(*buffers, library.T_RGB, ctypes.byref(settings), no_progress, None, ctypes.byref(cancel))
        if code:
            reason = RESYNTH_ERRORS.get(code, "unknown error")
            raise EvaluationError(f"Resynthesizer could not heal this hole (error {code}: {reason}).")
        return pixels

    fill.description = (  # type: ignore[attr-defined]  # shown in results.md
        f"GIMP's Heal Selection defaults: corpus a {context_width} px context band all around the hole, "
        f"random filling order; engine neighbourhood {HEAL_SETTINGS['patchSize']}, "
        f"{HEAL_SETTINGS['maxProbeCount']} probes, sensitivity {HEAL_SETTINGS['sensitivityToOutliers']}, "
        "no map, no tiling (libresynthesizer of the resynthesizer 1.2 wheel, fixed seed)"
    )
    return fill


def heal_selection_corpus(hole: np.ndarray, context_width: int = HEAL_CONTEXT_WIDTH) -> np.ndarray:
    """Heal Selection's corpus: known pixels within context_width px (Euclidean, as GIMP's round
    "grow selection") of the hole. hole: (H, W) bool -> (H, W) bool."""
    from scipy import ndimage

    return ~hole & (ndimage.distance_transform_edt(~hole) <= context_width)


def patchmatch_method() -> Method:
    """patchmatch-cython's PatchMatch (lab.peer_fills, as the bench runs it) as a Method."""
    try:
        import patchmatch_cython  # noqa: F401
    except ImportError as error:
        raise EvaluationError(
            f"The 'patchmatch' baseline needs patchmatch-cython ({error}). Install it with "
            "`pip install patchmatch-cython==0.2.1` (it is in the dev extra), or leave 'patchmatch' out "
            "of --methods."
        ) from error
    from lab.peer_fills import PATCHMATCH_SEED, patchmatch_fill

    def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(patchmatch_fill(image, mask), dtype=np.uint8)

    fill.description = (  # type: ignore[attr-defined]  # shown in results.md
        f"patchmatch-cython 0.2.1 inpaint_pyramid, its defaults (5x5 patches, seam blending), seed "
        f"{PATCHMATCH_SEED}"
    )
    return fill


def _cv2_flag(name: str) -> int:
    import cv2

    return {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[name]


def _ours(config: MethodConfig, **changes) -> Method:
    settings = {"detail": config.detail, **changes}
    return engine_method(
        config.weights, config.device, config.allow_untrained, config.working_size, **settings
    )


METHOD_FACTORIES: dict[str, Callable[[MethodConfig], Method]] = {
    "hifill": lambda config: _ours(config),
    "attention": lambda config: _ours(config, detail="attention"),
    "prefill": lambda config: _ours(config, corrections=False),
    "coarse": lambda config: _ours(config, refine=False),
    "refine": lambda config: _ours(config, refine_stage=True),
    "telea": lambda config: opencv_method(_cv2_flag("telea"), config.opencv_radius),
    "ns": lambda config: opencv_method(_cv2_flag("ns"), config.opencv_radius),
    "mean": lambda config: mean_colour_method,
    "resynth": lambda config: resynth_method(),
    "patchmatch": lambda config: patchmatch_method(),
}
METHOD_TITLES = {
    "hifill": "HiFill (ours)",
    "attention": "ours, detail by attention (paper's CRA)",
    "prefill": "prefill only (ablation)",
    "coarse": "coarse stage only (ablation)",
    "refine": "with the refine stage (ablation)",
    "telea": "OpenCV Telea",
    "ns": "OpenCV Navier-Stokes",
    "mean": "mean colour",
    "resynth": "Resynthesizer Heal Selection",
    "patchmatch": "PatchMatch",
}


CACHEABLE = ("resynth", "patchmatch")  # deterministic baselines that take seconds to minutes per case


def add_cache_option(parser) -> None:
    """The --cache DIR option of evaluate and figure (read by config_from_options)."""
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"keep the outputs of the slow baselines ({', '.join(CACHEABLE)}) in DIR and reuse them "
        "when the same case comes again (Resynthesizer takes ~75 s per HD case)",
    )


def cached_method(method: Method, name: str, folder: Path) -> Method:
    """method, with its outputs kept in folder/name/<key>.png and read back for the same input.

    The key hashes the method's name and description, the input image and the mask, so another
    setting or case never reads a stale output. Times of outputs read back are not the method's.
    """
    import hashlib

    from PIL import Image

    description = getattr(method, "description", "")
    store = folder / name

    def fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        digest = hashlib.sha256(f"{name}\n{description}\n{image.shape}\n{mask.shape}\n".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        digest.update(np.ascontiguousarray(mask).tobytes())
        path = store / f"{digest.hexdigest()[:32]}.png"
        if path.is_file():
            with Image.open(path) as saved:
                return np.asarray(saved.convert("RGB"))
        output = np.asarray(method(image, mask), dtype=np.uint8)
        store.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part.png")
        Image.fromarray(output).save(partial)
        partial.replace(path)  # a stopped run never leaves half a file under the key
        return output

    fill.description = (  # type: ignore[attr-defined]
        f"{description}; outputs cached in {store} (times of outputs read back are read times)"
    )
    return fill


def build_methods(names: Sequence[str], config: MethodConfig) -> dict[str, Method]:
    """Instantiate the named methods in order; unknown names raise EvaluationError. With
    config.cache, the slow deterministic baselines (CACHEABLE) keep their outputs there."""
    unknown = [name for name in names if name not in METHOD_FACTORIES]
    if unknown:
        raise EvaluationError(
            f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_FACTORIES)}."
        )
    methods = {name: METHOD_FACTORIES[name](config) for name in names}
    if config.cache is not None:
        for name in CACHEABLE:
            if name in methods:
                methods[name] = cached_method(methods[name], name, config.cache)
    return methods

"""Generator weights on disk: safetensors (never pickle) with the model card config in the metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from backend.network import Generator, init_official
from backend.prefill import PREFILL_KINDS
from shared_protocol import ErrorKind, HiFillError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "hifill-places-cpu.safetensors"
ARCHITECTURE = "hifill-cra-v1"  # the layer table in backend/layers.py
METADATA_KEY = "hifill_config"

WHERE_TO_GET_WEIGHTS = (
    "The default weights ship with the repository (backend/weights/hifill-places-cpu.safetensors); "
    "restore them with 'git checkout backend/weights', train your own with 'python -m backend train', "
    "or import the official HiFill checkpoint with 'python -m backend import-official PATH'."
)


@dataclass(frozen=True)
class ModelConfig:
    """What a weights file says about itself (stored as JSON in the safetensors metadata)."""

    architecture: str = ARCHITECTURE
    source: str = "ours"  # "ours" | "official-import" | "untrained"
    untrained: bool = False  # random initialisation: for tests only, refused at run time by default
    train_resolution: int = 256  # side of the training crops
    working_size: int = 512  # generator input side per context window at run time (backend.cra)
    prefill: str = "none"  # "none" (the paper's generator) | "harmonic" (see backend.network.Generator)
    steps: int = 0
    notes: str = ""
    extra: dict = field(default_factory=dict)


def save_generator(path: Path, generator: Generator, config: ModelConfig, half: bool = True) -> None:
    """Write the generator's tensors (fp16 by default: a few MB) and the config."""
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in generator.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(asdict(config))})
    tmp.replace(path)


def read_config(path: Path) -> ModelConfig:
    """The config stored in a weights file, without loading tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    return _parse_config(path, meta)


def load_generator(path: Path | None = None) -> tuple[Generator, ModelConfig]:
    """Load a generator in float32 with its config; clear HiFillError if missing, corrupt or foreign."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise HiFillError(ErrorKind.NO_WEIGHTS, f"No model weights at {path}. {WHERE_TO_GET_WEIGHTS}")
    config = read_config(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from exc
    generator = Generator(config.prefill)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (missing or unexpected or wrong)[:3]
        raise HiFillError(
            ErrorKind.NO_WEIGHTS,
            f"The weights file {path} does not fit this HiFill generator (mismatched tensors such as "
            f"{', '.join(detail)}). {WHERE_TO_GET_WEIGHTS}",
        )
    generator.load_state_dict({k: v.float() for k, v in tensors.items()})
    generator.eval()
    return generator, config


def write_untrained_weights(path: Path, seed: int = 0) -> Path:
    """Random (official-style) initialisation, labelled untrained: for tests of the plumbing only."""
    torch.manual_seed(seed)
    generator = Generator()
    init_official(generator)
    config = ModelConfig(source="untrained", untrained=True, notes="random initialisation, tests only")
    save_generator(Path(path), generator, config)
    return Path(path)


def _parse_config(path: Path, meta: dict) -> ModelConfig:
    if METADATA_KEY not in meta:
        raise HiFillError(
            ErrorKind.NO_WEIGHTS,
            f"{path} is a safetensors file but not HiFill weights (no '{METADATA_KEY}' metadata). "
            f"{WHERE_TO_GET_WEIGHTS}",
        )
    try:
        raw = json.loads(meta[METADATA_KEY])
        known = {k: raw[k] for k in ModelConfig.__dataclass_fields__ if k in raw}
        config = ModelConfig(**known)
    except (ValueError, TypeError) as exc:
        raise _unreadable(path, exc) from exc
    if config.prefill not in PREFILL_KINDS:
        raise HiFillError(
            ErrorKind.NO_WEIGHTS,
            f"{path} asks for a prefill '{config.prefill}' this backend does not know "
            f"({', '.join(PREFILL_KINDS)}); update HiFill or use other weights.",
        )
    if config.architecture != ARCHITECTURE:
        raise HiFillError(
            ErrorKind.NO_WEIGHTS,
            f"{path} holds weights for '{config.architecture}', this backend runs '{ARCHITECTURE}'.",
        )
    return config


def _unreadable(path: Path, exc: Exception) -> HiFillError:
    return HiFillError(
        ErrorKind.NO_WEIGHTS,
        f"The weights file {path} is corrupt or truncated and cannot be read ({exc}). {WHERE_TO_GET_WEIGHTS}",
    )

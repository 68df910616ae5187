"""`python -m backend import-official`: the official HiFill Places2 TF checkpoint as our weights.

The checkpoint (github.com/duxingren14/Hifill-tensorflow, model_logs/places2) is a TensorFlow tensor
bundle, read without TensorFlow by lab.official.tf_bundle. Generator variables map onto
``backend.network.Generator`` through ``official_parameter_map`` (convolutions transposed from TF
``[kh, kw, cin, cout]`` to torch ``[cout, cin, kh, kw]``); optimizer slots, the global step and the
discriminator are reported and skipped.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.network import Discriminator, Generator, official_parameter_map
from backend.weights import WEIGHTS_DIR, ModelConfig, save_generator
from lab.official.tf_bundle import DT_FLOAT, BundleEntry, CheckpointError, TensorBundle, shard_path
from shared_protocol import HiFillError

DEFAULT_OUTPUT = WEIGHTS_DIR / "hifill-places2-official.safetensors"
OFFICIAL_SOURCE = "github.com/duxingren14/Hifill-tensorflow, model_logs/places2"

OPTIMIZER_SLOT = re.compile(r"/(Adam|RMSProp|Momentum|Adagrad|ExponentialMovingAverage)(_\d+)?$")
OPTIMIZER_GLOBAL = re.compile(r"(^|/)(beta[12]_power|global_step)(_\d+)?$")


# ---------------------------------------------------------------------------------------------
# Mapping onto our networks
# ---------------------------------------------------------------------------------------------


def variable_kind(name: str) -> str:
    """'generator', 'discriminator', 'optimizer' (slots, beta powers, global step) or 'other'."""
    if OPTIMIZER_SLOT.search(name) or OPTIMIZER_GLOBAL.search(name):
        return "optimizer"
    if name.startswith("generator/"):
        return "generator"
    if name.startswith("discriminator/"):
        return "discriminator"
    return "other"


def tf_to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """conv [kh, kw, cin, cout] -> [cout, cin, kh, kw]; dense [in, out] -> [out, in]; vectors unchanged."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def tf_to_torch(array: np.ndarray) -> np.ndarray:
    """The array in torch layout (see tf_to_torch_shape), contiguous."""
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def discriminator_parameter_map(discriminator: Discriminator) -> dict[str, str]:
    """Official discriminator variable name -> our state_dict key."""
    mapping = {}
    for i in range(len(discriminator.convs)):
        mapping[f"discriminator/conv{i + 1}/w"] = f"convs.{i}.weight"
        mapping[f"discriminator/conv{i + 1}/biases"] = f"convs.{i}.bias"
    mapping["discriminator/linear/kernel"] = "linear.weight"
    mapping["discriminator/linear/bias"] = "linear.bias"
    return mapping


@dataclass
class ImportPlan:
    """How the checkpoint's variables line up with one of our networks."""

    mapping: dict[str, str]  # official name -> our state_dict key, for every variable we load
    skipped: dict[str, list[str]] = field(default_factory=dict)  # kind -> names not loaded
    parameters: int = 0


def plan_import(
    entries: Mapping[str, BundleEntry], module: torch.nn.Module, mapping: Mapping[str, str], scope: str
) -> ImportPlan:
    """Check that every variable under ``scope`` has exactly one counterpart of the same shape, and back.

    Raises CheckpointError naming missing, unexpected and mis-shaped variables.
    """
    ours = module.state_dict()
    skipped: dict[str, list[str]] = {}
    selected = {}
    for name, entry in entries.items():
        kind = variable_kind(name)
        if kind == scope:
            selected[name] = entry
        else:
            skipped.setdefault(kind, []).append(name)
    targets = list(mapping.values())
    if len(set(targets)) != len(targets) or set(targets) != set(ours):
        raise CheckpointError(f"Internal error: the {scope} name map does not cover our network one to one.")
    missing = sorted(set(mapping) - set(selected))
    unexpected = sorted(set(selected) - set(mapping))
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} {scope} variable(s) are missing from the checkpoint ({_few(missing)})"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} {scope} variable(s) have no counterpart in our network ({_few(unexpected)})"
        )
    for name in sorted(set(mapping) & set(selected)):
        entry, key = selected[name], mapping[name]
        wanted = tuple(ours[key].shape)
        if tf_to_torch_shape(entry.shape) != wanted:
            problems.append(
                f"{name} has shape {list(entry.shape)} but our {key} needs "
                f"{list(_torch_to_tf_shape(wanted))} in TensorFlow layout"
            )
        elif entry.dtype != DT_FLOAT:
            problems.append(f"{name} is {entry.dtype_name}, expected float32")
    if problems:
        raise CheckpointError(
            "This checkpoint does not fit the HiFill generator of this backend: "
            + "; ".join(problems[:6])
            + ("" if len(problems) <= 6 else f"; and {len(problems) - 6} more problem(s)")
            + ". Use the official Places2 checkpoint (model_logs/places2) of Hifill-tensorflow."
        )
    parameters = sum(selected[name].elements for name in mapping)
    return ImportPlan(mapping=dict(mapping), skipped=skipped, parameters=parameters)


def _torch_to_tf_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[2], shape[3], shape[1], shape[0])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def _few(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _load(bundle: TensorBundle, module: torch.nn.Module, plan: ImportPlan, verify: bool) -> None:
    state = {}
    for name, key in plan.mapping.items():
        state[key] = torch.from_numpy(tf_to_torch(bundle.read(name, verify=verify)).astype(np.float32))
    module.load_state_dict(state, strict=True)
    module.eval()


def import_generator(path: Path, verify: bool = True) -> tuple[Generator, ImportPlan, TensorBundle]:
    """Read the checkpoint at PATH (prefix, .index or folder) into a float32 Generator."""
    bundle = TensorBundle(path)
    generator = Generator()
    plan = plan_import(bundle.entries, generator, official_parameter_map(generator), "generator")
    _load(bundle, generator, plan, verify)
    return generator, plan, bundle


def import_discriminator(path: Path, image_size: int = 512, verify: bool = True) -> Discriminator:
    """The official critic as our Discriminator (its linear layer fixes the image size: 512 for Places2)."""
    bundle = TensorBundle(path)
    discriminator = Discriminator(image_size)
    plan = plan_import(
        bundle.entries, discriminator, discriminator_parameter_map(discriminator), "discriminator"
    )
    _load(bundle, discriminator, plan, verify)
    return discriminator


def global_step(bundle: TensorBundle) -> int | None:
    """The checkpoint's training step, if it stores a readable scalar global_step."""
    entry = bundle.entries.get("global_step")
    if entry is None or entry.shape != () or entry.dtype not in (3, 9):
        return None
    try:
        return int(bundle.read("global_step"))
    except CheckpointError:
        return None


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m backend import-official`."""
    parser = argparse.ArgumentParser(
        prog="python -m backend import-official",
        description="Convert the official HiFill Places2 TensorFlow checkpoint (no TensorFlow needed) into "
        "this backend's safetensors weights.",
    )
    parser.add_argument(
        "path",
        type=Path,
        help="checkpoint prefix (e.g. model_logs/places2/0), its .index file, or its folder",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}"
    )
    parser.add_argument(
        "--fp32", action="store_true", help="store float32 tensors (default: float16, half the size)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--no-verify", action="store_true", help="skip the CRC-32C check of the tensor bytes")
    parser.add_argument(
        "--list",
        action="store_true",
        help="only list the checkpoint's variables and their mapping (needs the .index only)",
    )
    return parser


def list_variables(bundle: TensorBundle) -> list[str]:
    """One line per variable: name, dtype, TF shape, and our parameter (or why it is skipped)."""
    generator_map = official_parameter_map(Generator())
    discriminator_map = discriminator_parameter_map(Discriminator(512))
    lines = []
    for name, entry in bundle.entries.items():
        kind = variable_kind(name)
        target = generator_map.get(name) or discriminator_map.get(name)
        if kind == "generator":
            where = f"-> {target}" if target else "(no counterpart in our generator)"
        else:
            where = f"({kind}, not imported)"
        lines.append(f"{name}  {entry.dtype_name}  {list(entry.shape)}  {where}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m backend import-official`; returns the process exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.list:
            bundle = TensorBundle(args.path)
            print("\n".join(list_variables(bundle)))
            plan = plan_import(bundle.entries, Generator(), official_parameter_map(Generator()), "generator")
            print(
                f"{len(plan.mapping)} generator tensors ({plan.parameters:,} parameters) "
                "map onto our generator."
            )
            return 0
        output = Path(args.output)
        if output.exists() and not args.force:
            raise CheckpointError(
                f"{output} already exists; pass --force to overwrite it or -o to write elsewhere."
            )
        generator, plan, bundle = import_generator(args.path, verify=not args.no_verify)
        step = global_step(bundle)
        skipped = {kind: len(names) for kind, names in sorted(plan.skipped.items())}
        config = ModelConfig(
            source="official-import",
            train_resolution=512,
            working_size=512,  # the paper's inference size for its 512-trained generator
            steps=step or 0,
            notes=(
                f"Official HiFill Places2 checkpoint ({OFFICIAL_SOURCE}), converted from "
                f"{bundle.index_path.name} without TensorFlow: {len(plan.mapping)} generator tensors, "
                f"{plan.parameters:,} parameters; stored as {'float32' if args.fp32 else 'float16'}."
            ),
            extra={
                "checkpoint": bundle.prefix.name,
                "tensors": len(plan.mapping),
                "parameters": plan.parameters,
                "skipped": skipped,
                "crc32c_verified": not args.no_verify,
                "tf_producer": bundle.header.producer,
            },
        )
        save_generator(output, generator, config, half=not args.fp32)
    except HiFillError as exc:
        print(f"error ({exc.kind.value}): {exc.message}", file=sys.stderr)
        return 1
    print(f"read {bundle.index_path} (+ {shard_path(bundle.prefix, 0, bundle.header.num_shards).name})")
    print(
        f"mapped {len(plan.mapping)} generator tensors ({plan.parameters:,} parameters)"
        + (", CRC-32C verified" if not args.no_verify else ", CRC-32C not checked")
    )
    for kind, names in sorted(plan.skipped.items()):
        print(f"skipped {len(names)} {kind} variable(s): {_few(sorted(names), 3)}")
    print(f"wrote {output} ({'float32' if args.fp32 else 'float16'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

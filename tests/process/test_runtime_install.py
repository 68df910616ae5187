"""The serving runtime installs and runs without the lab: build the wheel, install it into an empty
folder, fill a picture from there, and check that the lab and the training state are not in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of what packaging reads (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("backend", "shared_protocol", "lab"):  # lab is copied so that leaving it out is tested
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run(
        [*build, "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m backend ARGS` with only the installed copy importable (not this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "backend", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_the_runtime_not_the_lab(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"backend", "shared_protocol"}
    assert "backend/weights/hifill-places-cpu.safetensors" in names
    assert "backend/weights/MODEL_CARD.md" in names
    assert not [name for name in names if "training-state" in name or name.startswith("lab/")]
    assert {"backend/server/__init__.py", "backend/inference.py", "shared_protocol/launcher.py"} <= set(names)


def test_installed_runtime_fills_without_the_lab(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import backend, shared_protocol as p; print(backend.__file__, p.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(Path(p).is_relative_to(installed) for p in where.stdout.split())  # not this checkout's
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:60, 40:90] = 255
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")

    done = run_installed(installed, tmp_path, "inpaint", "in.png", "mask.png", "-o", "out.png")
    assert done.returncode == 0, done.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[mask == 0], image[mask == 0])  # outside the hole: bit-exact
    assert not np.array_equal(out[mask == 255], image[mask == 255])

    probe = run_installed(installed, tmp_path, "train", "--help")
    assert probe.returncode == 2
    assert "source checkout" in probe.stderr and "Traceback" not in probe.stderr

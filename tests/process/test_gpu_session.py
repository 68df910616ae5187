"""The prepared GPU call (tools/gpu_session.sh) run through on the CPU: train from a datapack, then the
benchmark; every result lands in $OUT and the call says how it went."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.datapack import build_datapack
from tests.unit.test_datapack import write_photos

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_session_script_trains_and_benchmarks_on_the_cpu(tmp_path: Path):
    photos = write_photos(tmp_path / "photos", [(120, 80), (80, 80), (90, 140)])
    pack = tmp_path / "pack.safetensors"
    build_datapack(photos, pack, tile=80)
    out = tmp_path / "out"
    settings = {
        "OUT": str(out),
        "DEVICE": "cpu",
        "DATAPACK": str(pack),
        "INIT": "",
        "TRAIN_MINUTES": "3",  # a bound only: --steps ends the run (a time budget alone can pass with
        # no step on a loaded machine, start-up counting against it)
        "BATCH": "1",
        "SIZE": "64",
        "TEST_SECONDS": "0",
        "BENCH_SIZES": "128",
        "PYTHON": sys.executable,
        "TRAIN_ARGS": "--mask-pool 8 --threads 1 --steps 2",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu_session.sh")],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== training (3 min, batch 1, size 64, cpu)" in done.stdout
    assert "Stopped at step 2;" in done.stdout
    assert (
        "Mask pool: 8 masks" in (out / "train.log").read_text()
        and "Stopped at step" in done.stdout
        and "== benchmark (128, cpu)" in done.stdout
    )
    for name in ("generator.safetensors", "training-state.safetensors", "losses.csv", "health.csv"):
        assert (out / "run" / name).is_file(), name
    bench = (out / "bench" / "bench.md").read_text()
    assert "| 128x128 10% |" in bench and "torch" in (out / "machine.txt").read_text()

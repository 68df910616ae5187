"""What the editors' end-to-end tests share (tests/e2e/test_e2e_gimp.py, tests/e2e/test_e2e_krita.py): the
editors root they run in, the backend on the host, and the checks of a fill.

The editors root (tools/editors_root.sh; $HIFILL_EDITORS_ROOT, default /work/editors-root) is a
Debian root with GIMP 3 and Krita, entered with chroot (so the tests need root; they never build it).
It shares the host's network, so plug-ins inside it reach a backend on the host; this checkout and the
venv's base interpreter are bound read-only at their host paths.

The backend: HIFILL_E2E_BACKEND=real (default) runs `python -m backend serve --weights W` with the
shipped weights (backend/weights/hifill-places-cpu.safetensors) or $HIFILL_E2E_WEIGHTS; =fake runs the
real server with the colour-filling engine of tests/fake_engines.py (plumbing only). The backend uses
one CPU thread (the test machine is shared). HIFILL_E2E_KEEP=1 keeps the run folders inside the root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared_protocol import Client, HiFillError  # noqa: E402
from shared_protocol.endpoints import free_tcp_port  # noqa: E402
from shared_protocol.launcher import BackendProcess  # noqa: E402

ROOT = Path(os.environ.get("HIFILL_EDITORS_ROOT", "/work/editors-root"))
ROOT_TOOL = REPO / "tools" / "editors_root.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SHIPPED_WEIGHTS = REPO / "backend" / "weights" / "hifill-places-cpu.safetensors"
BACKEND_ENVIRONMENT = {"OMP_NUM_THREADS": "1"}  # one torch thread: the machine is shared
BACKEND_START_TIMEOUT_S = 300.0

# The plausibility check of a fill by early weights: loose on purpose, see assert_plausible_fill.
MEAN_COLOUR_REACH = (
    0.75  # how far from the surroundings' mean a fill's mean may be (of the farthest possible)
)
MAX_NOISE_FRACTION = 0.1  # of the neighbour-difference energy of uniform random pixels (1/6)
RING_PX = 16


# --------------------------------------------------------------------------------------- the editors root


def root_skip_reason(editor_binary: str, editor_name: str) -> str | None:
    """Why the end-to-end tests of an editor cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (chroot into the editors root)"
    status = subprocess.run([str(ROOT_TOOL), "status"], capture_output=True, text=True, check=False)
    if status.returncode != 0:
        return f"editors root {ROOT} is not built (run: tools/editors_root.sh build)"
    if not (ROOT / "usr" / "bin" / editor_binary).exists():
        return f"{editor_name} is not installed in {ROOT}"
    return None


def root_binds() -> str:
    """HIFILL_EDITORS_BIND: the checkout and the venv's base interpreter, read-only, at their host paths."""
    base = subprocess.run(
        [str(VENV_PYTHON), "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{REPO}:ro {base}:ro"


def root_command(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """argv that runs `args` inside the root with a clean environment plus `env`."""
    return [str(ROOT_TOOL), "run", *(f"{key}={value}" for key, value in (env or {}).items()), *args]


def root_process_environment() -> dict[str, str]:
    """The environment of tools/editors_root.sh itself (it reads the binds from it)."""
    return dict(os.environ, HIFILL_EDITORS_BIND=root_binds())


def run_in_root(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command inside the root; with check, an AssertionError shows its output when it fails."""
    completed = subprocess.run(
        root_command(args, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=root_process_environment(),
        check=False,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"{args[0]} failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
            f"{completed.stderr[-3000:]}"
        )
    return completed


def run_folder(prefix: str) -> Iterator[tuple[Path, Path]]:
    """A fresh folder inside the root: yields (its host path, its path inside the root); removed
    afterwards unless HIFILL_E2E_KEEP is set. For module-scoped fixtures."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    host = ROOT / "tmp" / name
    host.mkdir(parents=True)
    yield host, Path("/tmp") / name
    if not os.environ.get("HIFILL_E2E_KEEP"):
        shutil.rmtree(host, ignore_errors=True)


# ------------------------------------------------------------------------------------------ processes


def start_process(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` in its own process group (in the checkout), output to `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group started by start_process, SIGKILL after 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stop_processes_serving(endpoint: str) -> None:
    """SIGTERM every process whose command line names `endpoint` (a backend a plug-in started and
    left running); the endpoint's port is unique to one test."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if endpoint.encode() in command:
            os.kill(int(proc.name), signal.SIGTERM)


# -------------------------------------------------------------------------------------------- backend


@dataclass(frozen=True)
class Backend:
    """A backend process on the host: where it listens, what it is and how it was started."""

    endpoint: str
    kind: str  # "real" or "fake"
    hello: dict
    command: list[str]  # argv without --endpoint (the stand-in backend Python repeats it)

    @property
    def is_real(self) -> bool:
        return self.kind == "real"


def backend_kind() -> str:
    kind = os.environ.get("HIFILL_E2E_BACKEND", "real")
    if kind not in ("real", "fake"):
        raise AssertionError(f"HIFILL_E2E_BACKEND must be real or fake, not {kind!r}")
    return kind


def backend_command(kind: str) -> list[str]:
    """argv (without --endpoint) of the backend: the shipped or given weights, or the colour fake."""
    if kind == "fake":
        return [str(VENV_PYTHON), "-m", "tests.fake_engines", "--engine", "colour"]
    weights = Path(os.environ.get("HIFILL_E2E_WEIGHTS") or SHIPPED_WEIGHTS)
    if not weights.is_file():
        raise AssertionError(
            f"no weights at {weights}: the shipped weights belong there (or set HIFILL_E2E_WEIGHTS, "
            "or HIFILL_E2E_BACKEND=fake to test the plumbing only)"
        )
    return [str(VENV_PYTHON), "-m", "backend", "serve", "--device", "cpu", "--weights", str(weights)]


def answers(endpoint: str) -> bool:
    """True when a backend answers hello at `endpoint`."""
    client = Client(endpoint, timeout_s=3.0, connect_timeout_s=1.0)
    try:
        client.hello()
        return True
    except HiFillError:
        return False
    finally:
        client.close()


def serve_backend(log_path: Path) -> Iterator[Backend]:
    """Run the backend chosen by HIFILL_E2E_BACKEND on the host until the generator is closed."""
    kind = backend_kind()
    command = backend_command(kind)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    argv = [*command, "--endpoint", endpoint]
    process = BackendProcess(argv, endpoint, log_path, cwd=REPO, env=dict(os.environ, **BACKEND_ENVIRONMENT))
    try:
        try:
            hello = process.start().wait_for_hello(BACKEND_START_TIMEOUT_S)
        except HiFillError as error:
            raise AssertionError(f"the backend did not start: {error}\n{process.output()[-2000:]}") from None
        yield Backend(endpoint, kind, hello, command)
    finally:
        process.stop(15.0)


def stand_in_backend_python(
    host: Path, inside: Path, command: list[str], fail_port: int | None = None
) -> Path:
    """A script to give install.py as the backend's Python. The plug-in runs it as `<it> -m backend
    serve --endpoint E`; it runs `command` with the same --endpoint instead (the venv and the checkout
    are bound in the root; files of the run folder are named by their path inside the root), with one
    CPU thread. With `fail_port`, an E on that port fails like a backend without weights (exit 3).
    Returns its path inside the root."""
    script = host / "backend-python"
    quoted = " ".join("'" + part.replace(str(host), str(inside)) + "'" for part in command)
    fail = (
        f'case "$2" in *:{fail_port}) echo "simulated start failure: no weights found" >&2; exit 3;; esac\n'
        if fail_port is not None
        else ""
    )
    threads = " ".join(f"{key}={value}" for key, value in BACKEND_ENVIRONMENT.items())
    script.write_text(f'#!/bin/sh\nshift 3  # -m backend serve\n{fail}export {threads}\nexec {quoted} "$@"\n')
    script.chmod(0o755)
    return inside / script.name


# --------------------------------------------------------------------------------------- images, checks


def gradient_picture(width: int, height: int, dtype: type = np.uint8) -> np.ndarray:
    """A deterministic RGB test picture (gradients and waves), uint8 or uint16, shape (H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack(
        [x / (width - 1), y / (height - 1), 0.5 + 0.4 * np.sin(x / 8.0) * np.cos(y / 11.0)], axis=-1
    )
    return np.round(rgb * np.iinfo(dtype).max).astype(dtype)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An RGB uint8 or uint16 array as a PNG of that depth."""
    import cv2

    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def unit_float(pixels: np.ndarray) -> np.ndarray:
    """u8/u16 pixels scaled to [0, 1]; float pixels as they are."""
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float64) / np.iinfo(pixels.dtype).max
    return pixels.astype(np.float64)


def assert_plausible_fill(after: np.ndarray, selected: np.ndarray, label: str) -> None:
    """A fill by early weights is smooth, blurry and often greyish, so this asks only that it is plausible:

    - per channel, its mean lies within MEAN_COLOUR_REACH of the way from the mean of the ring of
      RING_PX pixels around the selection to the farther end of the range (0 or 1): a fill cannot be
      black where the surroundings are mid-grey, nor white on dark grass, nor far off in a channel;
    - it is not noise: the mean squared difference of neighbouring pixels inside the fill is below
      MAX_NOISE_FRACTION of that of uniform random pixels (1/6).

    after: (H, W, C >= 3) the image after the fill; selected: (H, W) bool, the fully selected pixels.
    """
    from scipy import ndimage

    rgb = unit_float(after[..., :3])
    ring = ndimage.binary_dilation(selected, iterations=RING_PX) & ~selected
    assert selected.any() and ring.any(), f"{label}: nothing selected, or no surroundings"
    fill_mean, ring_mean = rgb[selected].mean(axis=0), rgb[ring].mean(axis=0)
    reach = MEAN_COLOUR_REACH * np.maximum(ring_mean, 1.0 - ring_mean)
    assert np.all(np.abs(fill_mean - ring_mean) <= reach), (
        f"{label}: the fill's mean colour {fill_mean.round(3)} is too far from its surroundings'"
        f" {ring_mean.round(3)} (allowed per channel: {reach.round(3)}): not a plausible fill"
    )
    across = selected[:, 1:] & selected[:, :-1]
    down = selected[1:] & selected[:-1]
    steps = np.concatenate([(rgb[:, 1:] - rgb[:, :-1])[across], (rgb[1:] - rgb[:-1])[down]])
    energy = float(np.mean(steps**2)) if steps.size else 0.0
    assert energy < MAX_NOISE_FRACTION / 6.0, (
        f"{label}: neighbouring fill pixels differ like noise (energy {energy:.4f}, random: {1 / 6:.4f})"
    )

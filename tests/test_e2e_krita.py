"""End-to-end: the HiFill docker in real Krita 5.2.9 (Debian trixie root, Xvfb) against a real backend.

    sudo .venv/bin/pytest -m editor tests/test_e2e_krita.py        (root user; builds nothing)

Needs the editors root (tools/editors_root.sh build; $HIFILL_EDITORS_ROOT, default /work/editors-root)
and root privileges (chroot); skipped with the reason otherwise. The backend runs on the host:
`python -m backend serve --weights W` with untrained weights written by
backend.weights.write_untrained_weights (HIFILL_E2E_BACKEND=real, the default; skipped while the real
engine is missing) or the real server with the colour-filling test engine (HIFILL_E2E_BACKEND=fake).

Inside the root: install.py installs the plug-in into a fresh profile (twice: idempotent), the test
adds its driver plug-in (tests/e2e_krita/driver, enabled only in this profile's kritarc, active only
because HIFILL_KRITA_E2E_JOB names the job) and starts Krita under Xvfb. The driver opens each image,
selects a rectangle, presses the docker's Fill button (8-bit, new layer) or triggers the hifill_fill
action (16-bit, in place), exports, takes a screenshot, undoes, exports again and quits.
HIFILL_KRITA_SCREENSHOT=PATH adds a case on a photo (HIFILL_KRITA_SCREENSHOT_IMAGE, default a
BSD-licensed dataset photo; HIFILL_KRITA_SCREENSHOT_SELECTION=x,y,w,h) and copies its screenshot there
(docs/krita-docker.png).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from installer.common import ini_set  # noqa: E402
from shared_protocol import Client, HiFillError  # noqa: E402

pytestmark = pytest.mark.editor

ROOT = Path(os.environ.get("HIFILL_EDITORS_ROOT", "/work/editors-root"))
ROOT_TOOL = REPO / "tools" / "editors_root.sh"
E2E_DIR = REPO / "tests" / "e2e_krita"
KRITA_TIMEOUT_S = int(os.environ.get("HIFILL_KRITA_TIMEOUT_S", "300"))
SOURCES = ("install.py", "installer", "plugin_krita", "shared_protocol")
WIDTH, HEIGHT = 320, 240
SELECTION = (120, 90, 64, 48)  # x, y, w, h
# The documentation screenshot (HIFILL_KRITA_SCREENSHOT): a BSD-3-Clause photo from the dataset, with
# two default dockers hidden to give the HiFill docker room.
DEFAULT_PHOTO = REPO / "data" / "photos" / "val" / "opencv-doc-bookworm" / "data-home.jpg"  # birds in the sky
HIDE_DOCKERS = ["PresetDocker", "ColorSelectorNg"]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (chroot into the editors root)"
    if not ROOT_TOOL.exists():
        return "tools/editors_root.sh is missing"
    status = subprocess.run([str(ROOT_TOOL), "status"], capture_output=True, text=True, check=False)
    if status.returncode != 0:
        return f"editors root {ROOT} is not built (run: sudo tools/editors_root.sh build)"
    if not (ROOT / "usr" / "bin" / "krita").exists():
        return f"Krita is not installed in {ROOT}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _test_image(depth: int) -> np.ndarray:
    """A deterministic RGB picture (gradients + waves) as uint8 or uint16, shape (H, W, 3)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    red = x / (WIDTH - 1)
    green = y / (HEIGHT - 1)
    blue = 0.5 + 0.4 * np.sin(x / 9.0) * np.cos(y / 13.0)
    rgb = np.stack([red, green, blue], axis=-1)
    top = 255 if depth == 8 else 65535
    return np.round(rgb * top).astype(np.uint8 if depth == 8 else np.uint16)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _read_png_or_jpeg(path: Path) -> np.ndarray:
    """RGB uint8 of any image file OpenCV reads."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert data is not None, f"cannot read {path}"
    return data[..., ::-1]


def _read_png(path: Path) -> np.ndarray:
    """RGBA (alpha added as opaque when the file has none), in the file's bit depth."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert data is not None, f"cannot read {path}"
    if data.shape[2] == 3:
        opaque = np.full(data.shape[:2] + (1,), np.iinfo(data.dtype).max, data.dtype)
        data = np.concatenate([data, opaque], axis=2)
    return data[..., [2, 1, 0, 3]]


@pytest.fixture(scope="module")
def backend_endpoint(tmp_path_factory):
    kind = os.environ.get("HIFILL_E2E_BACKEND", "real")
    port = _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    python = REPO / ".venv" / "bin" / "python"
    log_path = tmp_path_factory.mktemp("backend") / "backend.log"
    if kind == "real":
        try:
            from backend.weights import write_untrained_weights
        except ImportError as error:
            pytest.skip(
                f"the real backend is not available yet ({error}); HIFILL_E2E_BACKEND=fake uses a test engine"
            )
        weights = log_path.parent / "untrained.safetensors"
        write_untrained_weights(weights, seed=0)
        command = [
            str(python),
            "-m",
            "backend",
            "serve",
            "--endpoint",
            endpoint,
            "--weights",
            str(weights),
            "--device",
            "cpu",
        ]
    elif kind == "fake":
        command = [str(python), "-m", "tests.fake_engines", "--engine", "colour", "--endpoint", endpoint]
    else:
        raise ValueError(f"HIFILL_E2E_BACKEND must be real or fake, not {kind!r}")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    client = Client(endpoint, timeout_s=5.0, connect_timeout_s=1.0)
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                info = client.hello()
                break
            except HiFillError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"backend did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield endpoint, kind, info
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _in_root(*command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT_TOOL), "run", *command], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture()
def run_dir():
    """A fresh folder inside the root (seen there as /tmp/<name>), removed afterwards."""
    host = Path(ROOT / "tmp")
    host.mkdir(exist_ok=True)
    folder = Path(__import__("tempfile").mkdtemp(prefix="hifill-krita-e2e-", dir=host))
    yield folder, "/tmp/" + folder.name
    shutil.rmtree(folder, ignore_errors=True)


def test_docker_fills_selection_in_real_krita(backend_endpoint, run_dir, tmp_path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    endpoint, backend_kind, hello = backend_endpoint
    host_dir, inside = run_dir
    for name in SOURCES:  # what a fresh clone holds (no caches)
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, host_dir / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (host_dir / "src").mkdir(exist_ok=True)
            shutil.copy2(source, host_dir / "src" / name)
    home_inside = f"{inside}/home"
    env = ["/usr/bin/env", f"HOME={home_inside}"]
    install_command = [
        *env,
        "python3",
        f"{inside}/src/install.py",
        "krita",
        "--backend-python",
        "/usr/bin/python3",
    ]
    started = time.monotonic()
    first = _in_root(*install_command)
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = host_dir / "home/.local/share/krita/pykrita/hifill/hifill-install-manifest.json"
    before = manifest.read_text()
    again = _in_root(*install_command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert manifest.read_text() == before, "a second install changed what was installed"
    install_s = time.monotonic() - started

    pykrita = host_dir / "home/.local/share/krita/pykrita"
    shutil.copy2(E2E_DIR / "driver" / "hifill_e2e_driver.desktop", pykrita)
    shutil.copytree(E2E_DIR / "driver" / "hifill_e2e_driver", pykrita / "hifill_e2e_driver")
    kritarc = host_dir / "home/.config/kritarc"
    text = kritarc.read_text()
    assert "enable_hifill=true" in text
    text = ini_set(text, "python", "enable_hifill_e2e_driver", "true")
    text = ini_set(text, "hifill", "endpoint", endpoint)
    kritarc.write_text(text)
    shutil.copy2(E2E_DIR / "run_krita.sh", host_dir / "run_krita.sh")

    images = {"u8": _test_image(8), "u16": _test_image(16)}
    for name, rgb in images.items():
        _write_png(host_dir / f"{name}.png", rgb)
    cases = [
        {
            "name": "u8",
            "image": f"{inside}/u8.png",
            "selection": SELECTION,
            "output_mode": "new_layer",
            "trigger": "button",
            "output": f"{inside}/u8-filled.png",
            "screenshot": f"{inside}/screenshot.png",
            "undo_steps": 1,
            "output_after_undo": f"{inside}/u8-undone.png",
        },
        {
            "name": "u16",
            "image": f"{inside}/u16.png",
            "selection": SELECTION,
            "output_mode": "in_place",
            "trigger": "action",
            "output": f"{inside}/u16-filled.png",
            "undo_steps": 2,
            "output_after_undo": f"{inside}/u16-undone.png",
        },
    ]
    screenshot = os.environ.get("HIFILL_KRITA_SCREENSHOT")
    if screenshot:  # one more case, on a photo, for the documentation's screenshot
        photo = _read_png_or_jpeg(Path(os.environ.get("HIFILL_KRITA_SCREENSHOT_IMAGE", DEFAULT_PHOTO)))
        _write_png(host_dir / "photo.png", photo)
        selection = os.environ.get("HIFILL_KRITA_SCREENSHOT_SELECTION", "120,40,150,100")
        cases.append(
            {
                "name": "photo",
                "image": f"{inside}/photo.png",
                "selection": [int(v) for v in selection.split(",")],
                "output_mode": "new_layer",
                "trigger": "button",
                "output": f"{inside}/photo-filled.png",
                "screenshot": f"{inside}/photo-screenshot.png",
            }
        )
    job = {
        "cases": cases,
        "hide_dockers": HIDE_DOCKERS if screenshot else [],
        "failure_screenshot": f"{inside}/failure.png",
        "result": f"{inside}/result.json",
        "timeout_s": KRITA_TIMEOUT_S - 30,
        "window_size": [1600, 1000],
    }
    (host_dir / "job.json").write_text(json.dumps(job))

    started = time.monotonic()
    krita = _in_root(
        "/bin/sh", f"{inside}/run_krita.sh", inside, str(KRITA_TIMEOUT_S), timeout=KRITA_TIMEOUT_S + 60
    )
    krita_s = time.monotonic() - started
    for artefact in (
        "result.json",
        "krita.log",
        "screenshot.png",
        "photo-screenshot.png",
        "failure.png",
        "u8-filled.png",
        "u16-filled.png",
    ):
        if (host_dir / artefact).exists():
            shutil.copy2(host_dir / artefact, tmp_path / artefact)
    log_tail = (
        (host_dir / "krita.log").read_text(errors="replace")[-3000:]
        if (host_dir / "krita.log").exists()
        else ""
    )
    assert (host_dir / "result.json").exists(), (
        f"the driver wrote no result (exit {krita.returncode}): {log_tail}"
    )
    result = json.loads((host_dir / "result.json").read_text())
    assert "error" not in result, f"{result.get('error')}\n{json.dumps(result['log'], indent=1)}\n{log_tail}"
    assert result.get("ok") and krita.returncode == 0, f"exit {krita.returncode}: {log_tail}"
    print(
        f"\nbackend: {backend_kind} ({hello.get('device')}, {hello.get('model')});"
        f" install (x2) {install_s:.1f} s; Krita run {krita_s:.1f} s; artefacts in {tmp_path}"
    )
    for line in result["log"]:
        print("  driver", line)

    x, y, w, h = SELECTION
    inside_sel = np.zeros((HEIGHT, WIDTH), bool)
    inside_sel[y : y + h, x : x + w] = True
    by_name = {case["name"]: case for case in result["cases"]}
    for name, expected_depth, dtype in (("u8", "U8", np.uint8), ("u16", "U16", np.uint16)):
        case = by_name[name]
        original = images[name]
        top = np.iinfo(dtype).max
        expected = np.concatenate([original, np.full((HEIGHT, WIDTH, 1), top, dtype)], axis=2)
        assert (case["color_model"], case["color_depth"]) == ("RGBA", expected_depth)
        assert "connected" in case["status"], case["status"]
        filled = _read_png(host_dir / f"{name}-filled.png")
        assert filled.dtype == dtype and filled.shape == expected.shape
        assert np.array_equal(filled[~inside_sel], expected[~inside_sel]), f"{name}: pixels outside changed"
        changed = np.any(filled[inside_sel] != expected[inside_sel], axis=-1)
        assert changed.mean() > 0.5, f"{name}: only {changed.mean():.0%} of the selected pixels changed"
        undone = _read_png(host_dir / f"{name}-undone.png")
        assert np.array_equal(undone, expected), f"{name}: undo did not restore the image"
        assert case["layers_after_undo"] == case["layers_before"]
    u8 = by_name["u8"]
    source = next(layer for layer in u8["layers_before"] if layer.endswith(":paintlayer"))
    added = [layer for layer in u8["layers_after"] if layer not in u8["layers_before"]]
    assert added == [source.rsplit(":", 1)[0] + " (HiFill):paintlayer"], u8["layers_after"]
    assert u8["layers_after"].index(added[0]) == u8["layers_after"].index(source) + 1  # directly above
    assert u8["active_after"] == source, "the source layer must stay active for the next fill"
    u16 = by_name["u16"]
    assert len(u16["layers_after"]) == len(u16["layers_before"])  # in place: replaced, not added
    assert u16["action_shortcut"] == "Ctrl+Alt+Shift+F"
    if screenshot:
        shutil.copy2(host_dir / "photo-screenshot.png", screenshot)
        print(f"screenshot of the photo case written to {screenshot}")

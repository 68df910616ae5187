"""End-to-end: the HiFill docker in real Krita 5.2.9 (Debian trixie root, Xvfb) against a real backend.

    tools/editors_root.sh build && .venv/bin/pytest -m editor tests/e2e/test_e2e_krita.py     (as root)

Needs the editors root and root privileges; skipped with the reason otherwise. The backend runs on the
host: by default the real one with the shipped weights (HIFILL_E2E_WEIGHTS overrides them,
HIFILL_E2E_BACKEND=fake serves a colour-filling fake instead); see tests/e2e/e2e_common.py.

Inside the root, with this checkout bound read-only at the same path, install.py installs the
plug-in into a fresh profile (twice: the second run changes nothing) and records a stand-in "backend
Python" that serves the same kind of backend. The test adds its driver plug-in
(tests/e2e/in_krita/driver, enabled only in this profile's kritarc, active only because
HIFILL_KRITA_E2E_JOB names the job) and starts Krita under Xvfb. In one Krita session the driver runs:

- u8: 8-bit image, rectangle selection, docker's Fill button, backend already running on the host,
  result into a new layer above the source; export, screenshot, one undo, export again;
- u16: 16-bit image, the hifill_fill action (default shortcut Ctrl+Alt+Shift+F), in place; two undos;
- f32: the image converted to 32-bit float RGBA in Krita; the raw composite changes exactly inside
  the selection;
- no_selection: the action without a selection: a message in the panel, nothing changed;
- cancel_while_starting: the docker's endpoint set to a port where nothing answers: the plug-in
  starts the installed backend (status "starting"); Cancel 0.3 s later: a message, nothing changed;
- autostart: the same endpoint again: the backend started before is waited for, not started twice;
  the fill lands; the plug-in stops that backend when Krita quits.

The host compares the exports with the input: outside the selection bit-exact, inside a plausible
fill (e2e_common.assert_plausible_fill; with the fake backend: changed), undo restores everything.
HIFILL_KRITA_SCREENSHOT=PATH adds a case on a photo (HIFILL_KRITA_SCREENSHOT_IMAGE, default a
dataset photo of windsurfers; HIFILL_KRITA_SCREENSHOT_MASK, a PNG of the photo's size, white where selected,
default the committed selection around one windsurfer; or HIFILL_KRITA_SCREENSHOT_SELECTION=x,y,w,h
for a rectangle) and copies its screenshot there
(docs/krita-docker.png); its fill is checked like the others. HIFILL_E2E_KEEP=1 keeps the run folder
(logs, exports) inside the root.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import e2e_common as e2e
import numpy as np
import pytest
from e2e_common import REPO, run_in_root

from installer.ini import ini_set

pytestmark = pytest.mark.editor

E2E_DIR = REPO / "tests" / "e2e" / "in_krita"
KRITA_TIMEOUT_S = int(os.environ.get("HIFILL_KRITA_TIMEOUT_S", "400"))
WIDTH, HEIGHT = 320, 240
SELECTION = (120, 90, 64, 48)  # x, y, w, h
# The documentation screenshot (HIFILL_KRITA_SCREENSHOT): a photo from the dataset (sporco's sail.png,
# windsurfers) and a selection around one windsurfer with his sail and board (the removal case
# 512-sail-windsurfer at the photo's own size), with two default dockers hidden to give the HiFill
# docker room.
DEFAULT_PHOTO = REPO / "data" / "photos" / "val" / "sporco-pypi" / "sail.png"
DEFAULT_PHOTO_MASK = REPO / "tests" / "e2e" / "screenshot" / "sail-windsurfer-mask.png"
HIDE_DOCKERS = ["PresetDocker", "ColorSelectorNg"]

_SKIP = e2e.root_skip_reason("krita", "Krita")
if _SKIP:
    pytestmark = [pytest.mark.editor, pytest.mark.skip(reason=_SKIP)]


def _screenshot_selection(shape_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the screenshot case's selection (HIFILL_KRITA_SCREENSHOT_SELECTION or _MASK)."""
    rectangle = os.environ.get("HIFILL_KRITA_SCREENSHOT_SELECTION")
    selected = np.zeros(shape_hw, bool)
    if rectangle:
        x, y, w, h = (int(v) for v in rectangle.split(","))
        selected[y : y + h, x : x + w] = True
        return selected
    import cv2

    path = os.environ.get("HIFILL_KRITA_SCREENSHOT_MASK", str(DEFAULT_PHOTO_MASK))
    shape = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    assert shape is not None and shape.shape == tuple(shape_hw), f"{path}: a PNG of the photo's size"
    return shape > 127


def _read_rgb(path: Path) -> np.ndarray:
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
def workdir():
    """A fresh folder inside the root (/tmp/hifill-krita-e2e-*): (host path, path inside the root)."""
    yield from e2e.run_folder("hifill-krita-e2e")


@pytest.fixture(scope="module")
def backend(workdir):
    """The backend on the host (e2e_common.Backend), stopped afterwards."""
    host, _ = workdir
    yield from e2e.serve_backend(host / "host-backend.log")


def test_docker_fills_selection_in_real_krita(backend, workdir) -> None:
    endpoint, hello = backend.endpoint, backend.hello
    host, inside = workdir
    home = str(inside / "home")
    backend_python = str(e2e.stand_in_backend_python(host, inside, backend.command))
    install = ["python3", str(REPO / "install.py"), "krita", "--backend-python", backend_python]
    started = time.monotonic()
    first = run_in_root(install, {"HOME": home}, timeout=120, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    pykrita = host / "home/.local/share/krita/pykrita"
    installed = {
        str(p.relative_to(pykrita)): p.read_bytes() for p in sorted(pykrita.rglob("*")) if p.is_file()
    }
    again = run_in_root(install, {"HOME": home}, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {
        str(p.relative_to(pykrita)): p.read_bytes() for p in sorted(pykrita.rglob("*")) if p.is_file()
    } == installed
    install_s = time.monotonic() - started
    config = json.loads((pykrita / "hifill_krita/support/hifill-backend.json").read_text())
    assert config["command"] == [backend_python, "-m", "backend", "serve"] and config["cwd"] == str(REPO)

    shutil.copy2(E2E_DIR / "driver" / "hifill_e2e_driver.desktop", pykrita)
    shutil.copytree(E2E_DIR / "driver" / "hifill_e2e_driver", pykrita / "hifill_e2e_driver")
    kritarc = host / "home/.config/kritarc"
    text = kritarc.read_text()
    assert "enable_hifill_krita=true" in text
    text = ini_set(text, "python", "enable_hifill_e2e_driver", "true")
    text = ini_set(text, "hifill", "endpoint", endpoint)
    text = ini_set(text, "hifill", "output_mode", "in_place")  # the spelling stored before the shared names
    kritarc.write_text(text)
    shutil.copy2(E2E_DIR / "run_krita.sh", host / "run_krita.sh")

    images = {
        "u8": e2e.gradient_picture(WIDTH, HEIGHT),
        "u16": e2e.gradient_picture(WIDTH, HEIGHT, np.uint16),
    }
    for name, rgb in images.items():
        e2e.write_png(host / f"{name}.png", rgb)
    autostart_endpoint = f"tcp://127.0.0.1:{e2e.free_tcp_port()}"
    cases = [
        {
            "name": "u8",
            "image": f"{inside}/u8.png",
            "selection": SELECTION,
            "output_mode": "new-layer",
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
            "output_mode": "in-place",
            "trigger": "action",
            "output": f"{inside}/u16-filled.png",
            "undo_steps": 2,
            "output_after_undo": f"{inside}/u16-undone.png",
        },
        {
            "name": "f32",
            "image": f"{inside}/u8.png",
            "convert_to": ["RGBA", "F32", "sRGB-elle-V2-g10.icc"],
            "selection": SELECTION,
            "output_mode": "new-layer",
            "trigger": "button",
            "output": f"{inside}/f32-filled.png",
        },
        {
            "name": "no_selection",
            "image": f"{inside}/u8.png",
            "selection": None,
            "output_mode": "new-layer",
            "trigger": "action",
            "hide_docker": True,  # the message then goes to the canvas (floating message)
            "expect_error": "Select the area to fill",
            "screenshot": f"{inside}/no-selection.png",
        },
        {
            "name": "cancel_while_starting",
            "image": f"{inside}/u8.png",
            "selection": SELECTION,
            "endpoint": autostart_endpoint,
            "output_mode": "new-layer",
            "trigger": "button",
            "cancel_after_ms": 300,
            "expect_message": "Cancelled while the backend was starting",
        },
        {
            "name": "autostart",
            "image": f"{inside}/u8.png",
            "selection": SELECTION,
            "endpoint": autostart_endpoint,
            "output_mode": "new-layer",
            "trigger": "button",
            "output": f"{inside}/autostart-filled.png",
        },
    ]
    screenshot = os.environ.get("HIFILL_KRITA_SCREENSHOT")
    if screenshot:  # one more case, on a photo, for the documentation's screenshot
        photo = _read_rgb(Path(os.environ.get("HIFILL_KRITA_SCREENSHOT_IMAGE", DEFAULT_PHOTO)))
        e2e.write_png(host / "photo.png", photo)
        photo_selected = _screenshot_selection(photo.shape[:2])
        (host / "photo-selection.raw").write_bytes((photo_selected * np.uint8(255)).tobytes())
        rows, cols = np.nonzero(photo_selected)
        box = [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1]
        cases.append(
            {
                "name": "photo",
                "image": f"{inside}/photo.png",
                "selection": box,
                "selection_mask": f"{inside}/photo-selection.raw",
                "endpoint": endpoint,
                "output_mode": "new-layer",
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
    (host / "job.json").write_text(json.dumps(job))

    started = time.monotonic()
    krita = run_in_root(
        ["/bin/sh", f"{inside}/run_krita.sh", str(inside), str(KRITA_TIMEOUT_S)],
        timeout=KRITA_TIMEOUT_S + 60,
        check=False,
    )
    krita_s = time.monotonic() - started
    log_tail = (
        (host / "krita.log").read_text(errors="replace")[-3000:] if (host / "krita.log").exists() else ""
    )
    assert (host / "result.json").exists(), (
        f"the driver wrote no result (exit {krita.returncode}): {log_tail}"
    )
    result = json.loads((host / "result.json").read_text())
    assert "error" not in result, f"{result.get('error')}\n{json.dumps(result['log'], indent=1)}\n{log_tail}"
    assert result.get("ok") and krita.returncode == 0, f"exit {krita.returncode}: {log_tail}"
    krita_log = (host / "krita.log").read_text(errors="replace")
    assert "SAFE ASSERT" not in krita_log, "Krita reported an internal assertion:\n" + krita_log[-3000:]
    assert "Traceback" not in krita_log, "a Python error inside Krita:\n" + krita_log[-3000:]
    by_name = {case["name"]: case for case in result["cases"]}
    assert result["settings_at_start"]["output_mode"] == "in-place", "the old spelling was not read"
    print(
        f"\nbackend: {backend.kind} ({hello.get('device')}, {hello.get('model')});"
        f" install (x2) {install_s:.1f} s;"
        f" Krita session {krita_s:.1f} s; fills "
        + ", ".join(f"{name} {case['fill_seconds']} s" for name, case in by_name.items())
    )
    for line in result["log"]:
        print("  driver", line)

    x, y, w, h = SELECTION
    selected = np.zeros((HEIGHT, WIDTH), bool)
    selected[y : y + h, x : x + w] = True
    for name, image, dtype in (
        ("u8", "u8", np.uint8),
        ("u16", "u16", np.uint16),
        ("autostart", "u8", np.uint8),
    ):
        case = by_name[name]
        top = np.iinfo(dtype).max
        expected = np.concatenate([images[image], np.full((HEIGHT, WIDTH, 1), top, dtype)], axis=2)
        assert (case["color_model"], case["color_depth"]) == ("RGBA", "U8" if dtype == np.uint8 else "U16")
        assert "connected" in case["status"], case["status"]
        filled = _read_png(host / f"{name}-filled.png")
        assert filled.dtype == dtype and filled.shape == expected.shape
        assert np.array_equal(filled[~selected], expected[~selected]), (
            f"{name}: pixels outside the selection changed"
        )
        changed = np.any(filled[selected] != expected[selected], axis=-1)
        assert changed.mean() > 0.5, f"{name}: only {changed.mean():.0%} of the selected pixels changed"
        if backend.is_real:
            e2e.assert_plausible_fill(filled, selected, name)
        if case.get("layers_after_undo") is not None:
            undone = _read_png(host / f"{name}-undone.png")
            assert np.array_equal(undone, expected), f"{name}: undo did not restore the image"
            assert case["layers_after_undo"] == case["layers_before"]
    u8 = by_name["u8"]
    source = next(layer for layer in u8["layers_before"] if layer.endswith(":paintlayer"))
    added = [layer for layer in u8["layers_after"] if layer not in u8["layers_before"]]
    assert added == [source.rsplit(":", 1)[0] + " (HiFill):paintlayer"], u8["layers_after"]
    assert u8["layers_after"].index(added[0]) == u8["layers_after"].index(source) + 1  # directly above
    assert u8["active_after"] == source, "the source layer must stay active for the next fill"
    assert "connected" in u8["status_label"] and str(hello.get("model")) in u8["status_label"]
    u16 = by_name["u16"]
    assert len(u16["layers_after"]) == len(u16["layers_before"])  # in place: replaced, not added
    assert u16["action_shortcut"] == "Ctrl+Alt+Shift+F"
    f32 = by_name["f32"]
    assert (f32["color_model"], f32["color_depth"], f32["pixel_bytes"]) == ("RGBA", "F32", 16), f32
    assert f32["outside_changed"] == 0 and f32["inside_changed"] > 0.5, f32
    refused = by_name["no_selection"]
    assert refused["layers_after"] == refused["layers_before"] == ["Background:paintlayer"]
    assert refused["message_label"].startswith("Select the area to fill"), refused["message_label"]
    cancelled = by_name["cancel_while_starting"]
    assert cancelled["layers_after"] == cancelled["layers_before"], cancelled
    assert cancelled["states"][-1] == "starting" and cancelled["progress"] == 0, cancelled
    autostart = by_name["autostart"]
    assert autostart["states"][-1] == "connected", autostart["states"]
    assert not e2e.answers(autostart_endpoint), "the backend the plug-in started still runs after Krita quit"
    launcher_log = (host / "tmp" / "hifill-backend.log").read_text()
    starts = launcher_log.count(f"--endpoint {autostart_endpoint}")
    assert starts == 1, f"the backend was started {starts} times (the cancelled start must be reused)"
    if screenshot:
        photo = _read_png(host / "photo.png")
        photo_filled = _read_png(host / "photo-filled.png")
        assert np.array_equal(photo_filled[~photo_selected], photo[~photo_selected]), "photo: outside changed"
        if backend.is_real:
            e2e.assert_plausible_fill(photo_filled, photo_selected, "photo")
        shutil.copy2(host / "photo-screenshot.png", screenshot)
        print(f"screenshot of the photo case written to {screenshot}")

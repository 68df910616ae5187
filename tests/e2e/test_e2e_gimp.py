"""End-to-end: the HiFill procedure in real GIMP 3.0.4 (Debian trixie root) against a real backend.

    tools/editors_root.sh build && .venv/bin/pytest -m editor tests/e2e/test_e2e_gimp.py     (as root)

Needs the editors root and root privileges; skipped with the reason otherwise. The backend runs on the
host: by default the real one with the shipped weights (HIFILL_E2E_WEIGHTS overrides them,
HIFILL_E2E_BACKEND=fake serves a colour-filling fake instead); see tests/e2e/e2e_common.py.

Inside the root, with this checkout bound read-only at the same path: install.py installs the
plug-in into a fresh GIMP profile (twice: the second run must change nothing), gimp-console runs
tests/e2e/in_gimp/batch_fill.py over several cases in one session, and the host compares raw dumps of
the composite, the source layer and the selection before and after: outside the selection bit-exact,
inside a plausible fill (e2e_common.assert_plausible_fill). A second profile gets pyzmq and msgpack
vendored as wheels by install.py (--vendor always) and must fill the same way. The GUI test runs
gimp-3.0 under Xvfb: one Ctrl+Z must undo a whole fill, the interactive dialog must appear and work.
HIFILL_GIMP_SCREENSHOTS=DIR saves gimp-dialog.png and gimp-result.png there (docs/); the GUI test then
removes a lightning mast from a dataset photo (SCREENSHOT_PHOTO, selected by the committed mask
SCREENSHOT_MASK, as a user would select it) instead of the red ball of the synthetic scene.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import e2e_common as e2e
import numpy as np
import pytest
from e2e_common import REPO, VENV_PYTHON, run_in_root

pytestmark = pytest.mark.editor

E2E_DIR = REPO / "tests" / "e2e" / "in_gimp"
WIDTH, HEIGHT = 160, 120
PLUGIN_FILES = {
    "hifill.py",
    "hifill-backend.json",
    "hifill-install-manifest.json",
}

# The documentation screenshots: a CC0 photo from the dataset (python3-skimage's rocket.jpg) and a
# selection around its right lightning mast (the removal case hd-rocket-mast at the photo's own size).
SCREENSHOT_PHOTO = REPO / "data" / "photos" / "val" / "python3-skimage-bookworm" / "rocket.jpg"
SCREENSHOT_MASK = REPO / "tests" / "e2e" / "screenshot" / "rocket-mast-mask.png"

_SKIP = e2e.root_skip_reason("gimp-console-3.0", "GIMP 3")
if _SKIP:
    pytestmark = [pytest.mark.editor, pytest.mark.skip(reason=_SKIP)]


def _scene(width: int = 480, height: int = 320) -> np.ndarray:
    """A small landscape with a red ball to remove (for the GUI test and the README screenshots)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = height * 0.45
    sky = np.stack([0.45 + 0.3 * y / horizon, 0.65 + 0.2 * y / horizon, np.full_like(y, 0.95)], -1)
    grass_noise = rng.normal(0, 0.04, (height, width))
    grass = np.stack([0.25 + grass_noise, 0.55 + 0.1 * np.sin(x / 11.0) + grass_noise, 0.2 + grass_noise], -1)
    picture = np.where((y < horizon)[..., None], sky, grass)
    ball = (x - width * 0.55) ** 2 + (y - height * 0.62) ** 2 < (height * 0.09) ** 2
    picture[ball] = [0.85, 0.12, 0.1]
    return np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir():
    """A fresh folder inside the root (/tmp/hifill-gimp-e2e-*): (host path, path inside the root)."""
    yield from e2e.run_folder("hifill-gimp-e2e")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The backend on the host (e2e_common.Backend), stopped afterwards."""
    yield from e2e.serve_backend(tmp_path_factory.mktemp("gimp-backend") / "backend.log")


def _install_in_root(profile_root: Path, home_root: Path, backend_python: Path, *extra: str):
    return run_in_root(
        [
            "python3",
            str(REPO / "install.py"),
            "gimp",
            "--profile",
            str(profile_root),
            "--backend-python",
            str(backend_python),
            *extra,
        ],
        env={"HOME": str(home_root)},
    )


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mode) for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def profile(workdir, backend):
    """A fresh GIMP profile with the plug-in installed by install.py run inside the root (twice). The
    recorded backend Python runs the host's kind of backend, or fails to start on `fail_port`."""
    host, inside = workdir
    fail_port = e2e.free_tcp_port()
    backend_python = e2e.stand_in_backend_python(host, inside, backend.command, fail_port)
    first = _install_in_root(inside / "profile", inside / "home", backend_python)
    tree = _tree(host / "profile")
    second = _install_in_root(inside / "profile", inside / "home", backend_python)
    return {
        "host": host / "profile",
        "root": inside / "profile",
        "fail_port": fail_port,
        "first": first.stdout,
        "second": second.stdout,
        "tree": tree,
        "tree_again": _tree(host / "profile"),
    }


def _run_batch(workdir, profile_root: Path, cases: list[dict], tag: str) -> dict[str, dict]:
    host, inside = workdir
    out_host, out_root = host / f"out-{tag}", inside / f"out-{tag}"
    out_host.mkdir()
    job = {"out_dir": str(out_root), "result_path": str(out_root / "result.json"), "cases": cases}
    (out_host / "job.json").write_text(json.dumps(job))
    started = time.monotonic()
    completed = run_in_root(
        [
            "gimp-console-3.0",
            "-i",
            "-n",
            "--batch-interpreter=python-fu-eval",
            "-b",
            f"exec(open('{E2E_DIR / 'batch_fill.py'}').read()); hifill_e2e('{out_root / 'job.json'}')",
            "--quit",
        ],
        env={"HOME": str(inside / "home"), "GIMP3_DIRECTORY": str(profile_root)},
        check=False,
    )
    elapsed = time.monotonic() - started
    result_file = out_host / "result.json"
    assert result_file.exists(), f"GIMP wrote no result ({completed.returncode}):\n{completed.stderr[-4000:]}"
    results = {r["name"]: r for r in json.loads(result_file.read_text())}
    for result in results.values():
        result["out"] = out_host
        result["gimp_seconds"] = elapsed
        result["gimp_log"] = completed.stdout[-2000:] + completed.stderr[-4000:]
    return results


DTYPES = {"u8": np.uint8, "u16": np.uint16, "f32": np.float32}


def _dumps(result: dict, dtype: str = "u8") -> dict[str, np.ndarray]:
    width, height = result["canvas"]
    source = result["layers_before"][0]["size"]
    prefix = result["out"] / result["name"]
    sample = DTYPES[dtype]
    arrays = {
        "before": np.fromfile(f"{prefix}.composite-before.raw", sample).reshape(height, width, 4),
        "after": np.fromfile(f"{prefix}.composite-after.raw", sample).reshape(height, width, 4),
        "selection": np.fromfile(f"{prefix}.selection.raw", np.uint8).reshape(height, width),
        "source_before": np.fromfile(f"{prefix}.source-before.raw", sample).reshape(source[1], source[0], 4),
        "source_after": np.fromfile(f"{prefix}.source-after.raw", sample).reshape(source[1], source[0], 4),
    }
    return arrays


def _assert_ok(result: dict) -> None:
    assert "exception" not in result, result.get("exception")
    assert result.get("registered"), f"the procedure is not registered in GIMP:\n{result.get('gimp_log')}"
    assert result["status"] == "success", f"{result['message']}\n{result.get('gimp_log')}"


def _assert_fill(result: dict, backend: e2e.Backend, dtype: str = "u8") -> dict[str, np.ndarray]:
    """Outside the selection the composite is bit-exact; fully selected pixels changed, into a plausible
    fill (real backend) or the fake's constant."""
    data = _dumps(result, dtype)
    outside = data["selection"] == 0
    inside = data["selection"] == 255
    assert outside.any() and inside.any()
    np.testing.assert_array_equal(data["after"][outside], data["before"][outside])
    changed = np.any(data["after"][inside] != data["before"][inside], axis=-1)
    assert changed.mean() > 0.9, f"only {changed.mean():.0%} of the selected pixels changed"
    if backend.is_real:
        e2e.assert_plausible_fill(data["after"], inside, result["name"])
    else:  # the colour engine writes FILL_VALUE into every masked sample (float: through babl)
        from tests.fake_engines import FILL_VALUE

        value = FILL_VALUE[np.dtype(DTYPES[dtype])]
        np.testing.assert_allclose(
            data["after"][inside][:, :3], value, rtol=0, atol=1e-5 if dtype == "f32" else 0
        )
    return data


# ------------------------------------------------------------------------------------------------ tests


def test_install_in_root_is_idempotent(profile):
    plugin = profile["host"] / "plug-ins" / "hifill"
    assert (plugin / "hifill.py").stat().st_mode & 0o111, "hifill.py must be executable"
    assert {p.name for p in plugin.iterdir()} >= PLUGIN_FILES
    assert (plugin / "shared_protocol" / "client.py").is_file()
    assert (plugin / "shared_protocol" / "launcher.py").is_file()  # the launcher ships inside it
    assert not (plugin / "hifill_backend_launch.py").exists()
    assert not (plugin / "vendor").exists(), "Debian's python3-zmq/msgpack are there: nothing to vendor"
    assert "nothing to vendor" in profile["first"]
    assert profile["tree"] == profile["tree_again"]
    config = json.loads((plugin / "hifill-backend.json").read_text())
    assert config["command"][1:] == ["-m", "backend", "serve"]
    assert config["cwd"] == str(REPO)


CASES = [
    {"name": "u8_new_layer", "selection": ["rect", 50, 40, 30, 20]},
    {
        "name": "u8_in_place_offset_feather",
        "add_alpha": True,
        "layer_offset": [-20, 15],
        "selection": ["ellipse", 30, 30, 60, 50],
        "feather": 8,
        "arguments": {"output-mode": "in-place", "context-size": 24},
    },
    {
        "name": "u16_new_layer",
        "precision": "U16_NON_LINEAR",
        "dump_dtype": "u16",
        "selection": ["rect", 100, 20, 40, 30],
    },
    {
        "name": "float_linear_in_place",
        "precision": "FLOAT_LINEAR",
        "dump_dtype": "f32",
        "selection": ["rect", 10, 70, 50, 30],
        "arguments": {"output-mode": "in-place"},
    },
    {"name": "no_selection"},
    {"name": "grayscale", "grayscale": True, "selection": ["rect", 50, 40, 30, 20]},
    {"name": "selection_off_layer", "layer_offset": [100, 0], "selection": ["rect", 10, 10, 40, 40]},
    {"name": "autostart", "selection": ["rect", 60, 50, 20, 20]},
    {"name": "autostart_fails", "selection": ["rect", 60, 50, 20, 20]},
]


@pytest.fixture(scope="module")
def batch(workdir, profile, backend):
    host, inside = workdir
    e2e.write_png(host / "picture.png", e2e.gradient_picture(WIDTH, HEIGHT))
    autostart_endpoint = f"tcp://127.0.0.1:{e2e.free_tcp_port()}"
    cases = []
    for case in CASES:
        case = json.loads(json.dumps(case))
        case["image"] = str(inside / "picture.png")
        arguments = case.setdefault("arguments", {})
        arguments["endpoint"] = {
            "autostart": autostart_endpoint,
            "autostart_fails": f"tcp://127.0.0.1:{profile['fail_port']}",
        }.get(case["name"], backend.endpoint)
        cases.append(case)
    try:
        yield _run_batch(workdir, profile["root"], cases, "main")
    finally:
        e2e.stop_processes_serving(autostart_endpoint)  # the plug-in leaves the backend it started running


def test_new_layer_u8(batch, backend):
    result = batch["u8_new_layer"]
    _assert_ok(result)
    data = _assert_fill(result, backend)
    names = [layer["name"] for layer in result["layers_after"]]
    assert names == ["HiFill (Background)", "Background"], "a new layer directly above the source"
    new_layer = result["layers_after"][0]
    assert new_layer["offsets"] == [50, 40] and new_layer["size"] == [30, 20], (
        "the layer covers the selection"
    )
    np.testing.assert_array_equal(data["source_after"], data["source_before"])


def test_in_place_with_layer_offset_and_feather(batch, backend):
    result = batch["u8_in_place_offset_feather"]
    _assert_ok(result)
    data = _assert_fill(result, backend)
    assert [layer["name"] for layer in result["layers_after"]] == ["Background"], "in place: no new layer"
    # The layer sits at (-20, 15): its pixel (x, y) is canvas (x - 20, y + 15); outside the selection the
    # layer's own pixels are untouched, including the part hanging off the canvas.
    height, width = data["source_before"].shape[:2]
    selection_on_layer = np.zeros((height, width), np.uint8)
    canvas_h, canvas_w = data["selection"].shape
    ys, xs = np.mgrid[0:height, 0:width]
    canvas_x, canvas_y = xs - 20, ys + 15
    on_canvas = (canvas_x >= 0) & (canvas_x < canvas_w) & (canvas_y >= 0) & (canvas_y < canvas_h)
    selection_on_layer[on_canvas] = data["selection"][canvas_y[on_canvas], canvas_x[on_canvas]]
    untouched = selection_on_layer == 0
    np.testing.assert_array_equal(data["source_after"][untouched], data["source_before"][untouched])
    soft = (data["selection"] > 0) & (data["selection"] < 255)
    assert soft.sum() > 50, "the feathered selection has a soft edge"


def test_sixteen_bit_new_layer(batch, backend):
    result = batch["u16_new_layer"]
    _assert_ok(result)
    data = _assert_fill(result, backend, "u16")
    assert len(result["layers_after"]) == 2
    np.testing.assert_array_equal(data["source_after"], data["source_before"])


def test_float_linear_in_place(batch, backend):
    result = batch["float_linear_in_place"]
    _assert_ok(result)
    _assert_fill(result, backend, "f32")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_selection", "Nothing is selected"),
        ("grayscale", "not RGB"),
        ("selection_off_layer", "does not overlap the layer"),
    ],
)
def test_refusals_change_nothing(batch, name, expected):
    result = batch[name]
    assert "exception" not in result, result.get("exception")
    assert result["status"] in ("execution-error", "calling-error")
    assert expected in result["message"]
    assert result["layers_after"] == result["layers_before"]
    data = _dumps(result)
    np.testing.assert_array_equal(data["after"], data["before"])


def test_starts_the_installed_backend_when_none_answers(batch, backend):
    result = batch["autostart"]
    _assert_ok(result)
    _assert_fill(result, backend)


def test_clear_message_when_the_installed_backend_cannot_start(batch):
    result = batch["autostart_fails"]
    assert result["status"] == "execution-error"
    assert "backend_unavailable" in result["message"]
    assert "stopped while starting (exit code 3)" in result["message"]
    assert "simulated start failure" in result["message"]
    assert result["layers_after"] == result["layers_before"]


def _install_py_on_host(*arguments: str) -> subprocess.CompletedProcess:
    """`install.py gimp ARGUMENTS` run on the host with the venv's Python."""
    return subprocess.run(
        [str(VENV_PYTHON), str(REPO / "install.py"), "gimp", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_vendored_wheels_work_in_gimp(workdir, backend):
    """install.py run on the host with --vendor always: pyzmq/msgpack wheels for GIMP's Python 3.13."""
    host, inside = workdir
    installed = _install_py_on_host(
        "--profile", str(host / "vendored"), "--vendor", "always", "--python-version", "3.13"
    )
    assert installed.returncode == 0, installed.stderr
    vendor = inside / "vendored" / "plug-ins" / "hifill" / "vendor"
    probe = run_in_root(
        [
            "python3",
            "-c",
            f"import sys; sys.path.insert(0, '{vendor}'); import zmq, msgpack; "
            "print(zmq.__file__, msgpack.__file__, zmq.pyzmq_version())",
        ]
    )
    zmq_file, msgpack_file, version = probe.stdout.split()
    assert zmq_file.startswith(str(vendor)) and msgpack_file.startswith(str(vendor))
    assert int(version.split(".")[0]) >= 26
    e2e.write_png(host / "vendored-picture.png", e2e.gradient_picture(WIDTH, HEIGHT))
    case = {
        "name": "vendored",
        "image": str(inside / "vendored-picture.png"),
        "selection": ["rect", 40, 30, 30, 30],
        "arguments": {"endpoint": backend.endpoint},
    }
    result = _run_batch(workdir, inside / "vendored", [case], "vendored")["vendored"]
    _assert_ok(result)
    _assert_fill(result, backend)
    removed = _install_py_on_host("--profile", str(host / "vendored"), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (host / "vendored" / "plug-ins").exists(), "uninstall leaves no trace of the plug-in"


# ------------------------------------------------------------------------------------------------- GUI


class _Display:
    """Xvfb + xdotool inside the root."""

    def __init__(self, number: int) -> None:
        self.name = f":{number}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_in_root(list(args), env={"DISPLAY": self.name}, timeout=60, check=check)

    def windows(self) -> dict[str, str]:
        listed = self.run("xdotool", "search", "--onlyvisible", "--name", ".", check=False).stdout.split()
        return {w: self.run("xdotool", "getwindowname", w, check=False).stdout.strip() for w in listed}

    def find(self, needle: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for window, title in self.windows().items():
                if needle in title:
                    return window
            time.sleep(0.5)
        raise AssertionError(f"no window named like {needle!r}: {self.windows()}")

    def key(self, window: str, *keys: str) -> None:
        self.run("xdotool", "windowfocus", "--sync", window)
        self.run("xdotool", "key", *keys)

    def screenshot(self, path_in_root: Path) -> None:
        self.run("sh", "-c", f"xwd -root -display {self.name} | convert xwd:- png:{path_in_root}")


def _wait_for_step(out_host: Path, step: str, timeout_s: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in (step, "error"):
            marker = out_host / f"{name}.json"
            if marker.exists():
                data = json.loads(marker.read_text())
                assert name == step, f"GIMP session failed: {data}"
                return data
        time.sleep(0.2)
    raise AssertionError(f"GIMP did not reach step {step}")


def test_gui_one_undo_step_dialog_and_screenshots(workdir, profile, backend):
    host, inside = workdir
    out_host, out_root = host / "gui", inside / "gui"
    out_host.mkdir()
    target = os.environ.get("HIFILL_GIMP_SCREENSHOTS")
    if target:  # a real removal for the README
        import cv2

        photo = cv2.imread(str(SCREENSHOT_PHOTO), cv2.IMREAD_COLOR)
        assert photo is not None, f"{SCREENSHOT_PHOTO} is missing: python -m backend build-dataset"
        e2e.write_png(host / "scene.png", photo[..., ::-1])
        shape = cv2.imread(str(SCREENSHOT_MASK), cv2.IMREAD_GRAYSCALE)
        assert shape.shape == photo.shape[:2]
        opaque = np.zeros((*shape.shape, 4), np.uint8)
        opaque[..., 3] = np.where(shape > 127, 255, 0)
        assert cv2.imwrite(str(host / "selection.png"), opaque)
        selection = {"mask": str(inside / "selection.png")}
    else:
        e2e.write_png(host / "scene.png", _scene())
        selection = [222, 168, 84, 84]
    job = {
        "out_dir": str(out_root),
        "image": str(inside / "scene.png"),
        "selection": selection,
        "arguments": {"endpoint": backend.endpoint},
    }
    (out_host / "job.json").write_text(json.dumps(job))
    # The interactive dialog starts from the last values (GIMP keeps them per procedure in
    # plug-in-settings/GimpProcedureConfigRun-<name>.last); make them point at the test backend.
    settings = profile["host"] / "plug-in-settings"
    settings.mkdir(exist_ok=True)
    (settings / "GimpProcedureConfigRun-python-fu-hifill-inpaint-selection.last").write_text(
        f'(output-mode "new-layer")\n(context-size 0)\n(endpoint "{backend.endpoint}")\n'
    )
    (profile["host"] / "gimprc").write_text("(show-welcome-dialog no)\n")

    display = _Display(100 + os.getpid() % 800)
    root_environment = e2e.root_process_environment()
    xvfb = e2e.start_process(
        e2e.root_command(["Xvfb", display.name, "-screen", "0", "1280x800x24", "-nolisten", "tcp"]),
        host / "xvfb.log",
        root_environment,
    )
    gimp = None
    try:
        time.sleep(2)
        gimp = e2e.start_process(
            e2e.root_command(
                [
                    "gimp-3.0",
                    "-n",
                    "--batch-interpreter=python-fu-eval",
                    "-b",
                    f"exec(open('{E2E_DIR / 'gui_session.py'}').read()); "
                    f"hifill_gui('{out_root / 'job.json'}')",
                ],
                {
                    "HOME": str(inside / "home"),
                    "GIMP3_DIRECTORY": str(profile["root"]),
                    "DISPLAY": display.name,
                },
            ),
            host / "gimp-gui.log",
            root_environment,
        )

        filled = _wait_for_step(out_host, "filled")
        assert filled["status"] == "success", filled["message"]
        assert filled["after"]["layers"] == ["HiFill (Background)", "Background"]
        main_window = display.find(" – GIMP")  # the image window's title ends so; dialogs' do not
        display.run("xdotool", "windowsize", main_window, "1280", "800")
        display.key(main_window, "ctrl+z")
        time.sleep(1.5)
        (out_host / "filled.done").touch()
        undone = _wait_for_step(out_host, "undone")
        assert undone["layers"] == filled["before"]["layers"], (
            f"one Ctrl+Z removes the fill {display.windows()}"
        )
        assert undone["selection"] == filled["before"]["selection"], "…and nothing before it"

        (out_host / "undone.done").touch()
        dialog = display.find("HiFill Inpaint Selection")
        display.run("xdotool", "mousemove", "700", "42")  # no brush outline over the picture
        time.sleep(1.0)
        display.screenshot(out_root / "gimp-dialog.png")
        display.key(dialog, "Return")
        interactive = _wait_for_step(out_host, "interactive")
        assert interactive["status"] == "success", interactive["message"]
        assert interactive["after"]["layers"] == ["HiFill (Background)", "Background"]
        display.key(main_window, "shift+ctrl+j")  # View › Zoom › Fit Image in Window
        display.run("xdotool", "mousemove", "700", "42")  # empty tab bar: no brush outline, no tooltip
        time.sleep(2.0)
        display.screenshot(out_root / "gimp-result.png")
        if target:
            for name in ("gimp-dialog.png", "gimp-result.png"):
                shutil.copyfile(out_host / name, Path(target) / name)
    finally:
        for process in (gimp, xvfb):
            if process is not None:
                e2e.stop_process(process)

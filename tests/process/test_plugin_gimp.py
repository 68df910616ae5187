"""The GIMP plug-in's GIMP-free modules: GIMP's side of the region maths, formats, planning, the
procedure's arguments and the fill worker process (which finds or starts the backend with
shared_protocol.launcher, tested in tests/test_launcher.py). The request rectangle itself is
shared_protocol.regions (tests/test_regions.py).

Worker tests run real processes: the real server with the test engines of tests/fake_engines.py.
hifill.py's own glue runs against fakes of gi's Gimp and Gegl, with the real worker and server behind it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugin_gimp"))
sys.path.insert(0, str(REPO))

from hifill_gimp import formats, plan, procedure, region  # noqa: E402
from hifill_gimp.worker import FillJob, run_fill  # noqa: E402

from shared_protocol import DEFAULT_ENDPOINT, Client, ErrorKind, HiFillError  # noqa: E402
from shared_protocol.launcher import CONFIG_FILENAME  # noqa: E402
from shared_protocol.regions import Rect, request_rect  # noqa: E402
from shared_protocol.settings import FillSettings, OutputMode  # noqa: E402
from tests.backend_process import FAKE_SERVER, free_endpoint, start_fake_backend  # noqa: E402
from tests.e2e.e2e_common import stop_processes_serving  # noqa: E402
from tests.editor_fakes import run_without_pyzmq_and_msgpack  # noqa: E402

WORKER_PATHS = [str(REPO / "plugin_gimp"), str(REPO)]


# ----------------------------------------------------------------------------------------------- region


def test_selection_in_layer_subtracts_offsets_and_clips():
    # Layer 100x80 at image (30, -10); selection (20, 0)-(60, 40) in image coordinates.
    assert region.selection_in_layer((20, 0, 60, 40), (30, -10), (100, 80)) == Rect(0, 10, 30, 40)
    assert region.selection_in_layer((0, 0, 10, 10), (30, 30), (100, 80)).is_empty
    assert region.selection_in_layer((0, 0, 500, 500), (0, 0), (100, 80)) == Rect(0, 0, 100, 80)


def test_mask_hardening():
    soft = bytes([0, 1, 127, 128, 255, 0])
    assert region.harden_mask(soft) == bytes([0, 255, 255, 255, 255, 0])


def test_new_layer_placement_and_context_option():
    assert region.layer_to_image(Rect(15, 26, 7, 8), (-5, 100)) == Rect(10, 126, 7, 8)
    assert procedure.context_option(0) is None and procedure.context_option(64) == 64


def test_what_registers_the_procedure_needs_no_pyzmq_or_msgpack():
    """hifill.py imports only these at the top, so GIMP lists HiFill even without the packages."""
    code = (
        "from hifill_gimp import formats, procedure\n"
        "import shared_protocol.endpoints, shared_protocol.errors, shared_protocol.settings\n"
        "print(procedure.settings_from_arguments('in-place', 0, '', '').endpoint)\n"
    )
    assert run_without_pyzmq_and_msgpack(REPO / "plugin_gimp", code) == DEFAULT_ENDPOINT
    tree = ast.parse((REPO / "plugin_gimp" / "hifill.py").read_text())
    top_level = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert top_level == {
        "sys",
        "traceback",
        "pathlib",
        "gi",
        "gi.repository",
        "hifill_gimp.formats",
        "hifill_gimp.procedure",
        "shared_protocol.endpoints",
        "shared_protocol.errors",
        "shared_protocol.settings",
    }


# ---------------------------------------------------------------------------------------------- formats

PRECISIONS = [
    f"{c}-{t}"
    for c in ("u8", "u16", "u32", "half", "float", "double")
    for t in ("linear", "non-linear", "perceptual")
]


@pytest.mark.parametrize("nick", PRECISIONS)
@pytest.mark.parametrize("alpha", [False, True])
def test_every_gimp_precision_has_a_format(nick, alpha):
    chosen = formats.pixel_format_for(nick, alpha)
    component = nick.split("-")[0]
    expected_dtype = {"u8": "u8", "u16": "u16"}.get(component, "f32")
    assert chosen.dtype == expected_dtype
    assert chosen.channels == (4 if alpha else 3)
    assert chosen.babl_name == ("R'G'B'A " if alpha else "R'G'B' ") + {"u8": "u8", "u16": "u16"}.get(
        component, "float"
    )
    assert chosen.byte_count(3, 2) == 6 * chosen.channels * {"u8": 1, "u16": 2, "f32": 4}[expected_dtype]


def test_unknown_precision_is_refused():
    with pytest.raises(formats.UnsupportedPrecision):
        formats.pixel_format_for("u64-linear", False)


# ------------------------------------------------------------------------------------------------- plan


def _drawable(**changes) -> plan.DrawableInfo:
    values = dict(
        name="Photo",
        is_layer=True,
        is_group=False,
        is_rgb=True,
        has_alpha=False,
        precision_nick="u8-non-linear",
        offsets=(0, 0),
        size=(640, 480),
    )
    values.update(changes)
    return plan.DrawableInfo(**values)


NEW_LAYER, IN_PLACE = OutputMode.NEW_LAYER, OutputMode.IN_PLACE


@pytest.mark.parametrize(
    ("drawables", "mode", "message"),
    [
        ([], NEW_LAYER, "exactly one layer"),
        ([_drawable(), _drawable()], NEW_LAYER, "exactly one layer"),
        ([_drawable(is_group=True)], NEW_LAYER, "layer group"),
        ([_drawable(is_layer=False)], NEW_LAYER, "channel or layer mask"),
        ([_drawable(is_rgb=False)], NEW_LAYER, "not RGB"),
        ([_drawable(content_locked=True)], IN_PLACE, "locked"),
    ],
)
def test_check_drawables_refuses_with_a_reason(drawables, mode, message):
    with pytest.raises(procedure.FillRefused, match=message):
        plan.check_drawables(drawables, mode)


def test_locked_pixels_may_still_get_a_new_layer():
    assert plan.check_drawables([_drawable(content_locked=True)], NEW_LAYER).name == "Photo"


def test_the_procedures_arguments_become_the_shared_settings():
    """GIMP's choice names are OutputMode's values, so remembered arguments keep their meaning."""
    assert procedure.settings_from_arguments("in-place", 64, " tcp://127.0.0.1:5 ", " /keys ") == (
        FillSettings(IN_PLACE, 64, "tcp://127.0.0.1:5", "/keys")
    )
    assert procedure.settings_from_arguments("new-layer", 0, "  ", "") == FillSettings()
    with pytest.raises(procedure.FillRefused, match="Unknown output mode 'sideways'; use one of new-layer"):
        procedure.settings_from_arguments("sideways", 0, "", "")


def test_plan_fill_reads_the_layer_and_the_selection_over_the_same_pixels():
    drawable = _drawable(offsets=(100, 50), has_alpha=True, precision_nick="u16-linear")
    planned = plan.plan_fill(drawable, (True, 300, 250, 340, 270), FillSettings(context_px=8))
    assert planned.selection == Rect(200, 200, 40, 20)
    assert planned.request == request_rect(Rect(200, 200, 40, 20), (640, 480), 8) == Rect(0, 0, 520, 480)
    assert planned.mask_rect == planned.request.translated(100, 50)
    assert planned.pixel_format == formats.PixelFormat("R'G'B'A u16", "u16", 4)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (None, "Nothing is selected"),
        ((False, 0, 0, 0, 0), "Nothing is selected"),
        ((True, 700, 0, 720, 20), "does not overlap"),
    ],
)
def test_plan_fill_refusals(bounds, message):
    with pytest.raises(procedure.FillRefused, match=message):
        plan.plan_fill(_drawable(), bounds, FillSettings())


def test_check_result_rejects_answers_that_do_not_fit():
    planned = plan.plan_fill(
        _drawable(offsets=(0, 0)), (True, 310, 210, 320, 220), FillSettings(context_px=0)
    )
    assert planned.request == Rect(40, 0, 544, 480)  # 310 - (2 * 128 + 8) = 46, aligned down to 40
    assert plan.check_result(planned, 270, 210, 10, 10, 3, "u8", 300) == Rect(310, 210, 10, 10)
    with pytest.raises(ValueError, match="channels"):
        plan.check_result(planned, 0, 0, 10, 10, 4, "u8", 400)
    with pytest.raises(ValueError, match="bytes"):
        plan.check_result(planned, 0, 0, 10, 10, 3, "u8", 299)
    with pytest.raises(ValueError, match="outside"):
        plan.check_result(planned, 540, 0, 10, 10, 3, "u8", 300)


# ----------------------------------------------------------------------------------- real backend processes


# A real backend server whose engine is tests.fake_engines.ColourEngine plus the warnings given after
# the endpoint on its command line (what backend.inference sends after an out-of-memory fallback).
WARNING_BACKEND = textwrap.dedent("""
    import sys, threading
    from dataclasses import replace
    from backend.server import install_signal_handlers, run_server
    from tests.fake_engines import ColourEngine

    class WarningEngine(ColourEngine):
        def fill(self, *args, **kwargs):
            return replace(super().fill(*args, **kwargs), warnings=tuple(sys.argv[2:]))

    stop = threading.Event()
    install_signal_handlers(stop)
    run_server(WarningEngine(), sys.argv[1], stop_event=stop)
""")


def _warning_backend(log_path: Path, *warnings: str):
    """The WARNING_BACKEND server (a BackendProcess) on a free port, answering hello."""
    return start_fake_backend("", log_path, *warnings, command=[sys.executable, "-c", WARNING_BACKEND])


@pytest.fixture
def colour_backend(tmp_path):
    process = start_fake_backend("colour", tmp_path / "colour.log")
    yield process.endpoint
    process.stop()


def _picture(width: int, height: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_worker_round_trip_through_a_real_server(colour_backend):
    image = _picture(40, 30, 4)
    mask = np.zeros((30, 40), np.uint8)
    mask[10:20, 5:25] = 255
    progress: list[tuple[float, str]] = []
    outcome = run_fill(
        FillJob(colour_backend, 40, 30, 4, "u8", {"context_px": 4}),
        image.tobytes(),
        mask.tobytes(),
        WORKER_PATHS,
        on_progress=lambda f, m: progress.append((f, m)),
    )
    assert (outcome.x, outcome.y, outcome.width, outcome.height) == (5, 10, 20, 10)
    assert (outcome.channels, outcome.dtype) == (4, "u8")
    region_pixels = np.frombuffer(outcome.pixels, np.uint8).reshape(10, 20, 4)
    assert np.all(region_pixels == 200)  # the colour engine's fill value for u8
    assert progress, "backend progress reaches the plug-in"
    assert outcome.warnings == ()


OOM_WARNINGS = (
    "cuda:0 ran out of memory at working size 512; filled on cuda:0 at working size 384 instead.",
    "cuda:0 ran out of memory at working size 384; filled on the CPU at working size 512 instead.",
)


def test_worker_carries_the_backends_warnings_with_unchanged_pixels(tmp_path):
    process = _warning_backend(tmp_path / "log", *OOM_WARNINGS)
    endpoint = process.endpoint
    try:
        image = _picture(40, 30, 3)
        mask = np.zeros((30, 40), np.uint8)
        mask[10:20, 5:25] = 255
        outcome = run_fill(
            FillJob(endpoint, 40, 30, 3, "u8", {}), image.tobytes(), mask.tobytes(), WORKER_PATHS
        )
    finally:
        process.stop()
    assert outcome.warnings == OOM_WARNINGS
    assert (outcome.x, outcome.y, outcome.width, outcome.height) == (5, 10, 20, 10)
    assert np.all(np.frombuffer(outcome.pixels, np.uint8) == 200)


def test_worker_reports_backend_errors_with_their_kind(tmp_path):
    process = start_fake_backend("failing", tmp_path / "log")
    endpoint = process.endpoint
    try:
        image = _picture(6, 4, 3)  # width 6: the failing engine raises NO_WEIGHTS
        mask = np.full((4, 6), 255, np.uint8)
        with pytest.raises(HiFillError) as raised:
            run_fill(FillJob(endpoint, 6, 4, 3, "u8", {}), image.tobytes(), mask.tobytes(), WORKER_PATHS)
        assert raised.value.kind is ErrorKind.NO_WEIGHTS
    finally:
        process.stop()


def test_worker_without_backend_is_unavailable_quickly():
    endpoint = free_endpoint()
    started = time.monotonic()
    with pytest.raises(HiFillError) as raised:
        run_fill(
            FillJob(endpoint, 4, 4, 3, "u8", {}, timeout_s=30, connect_timeout_s=1.0),
            bytes(48),
            bytes([255]) * 16,
            WORKER_PATHS,
        )
    assert raised.value.kind is ErrorKind.BACKEND_UNAVAILABLE and "none is installed" in raised.value.message
    assert time.monotonic() - started < 15


def test_the_worker_starts_the_installed_backend_and_fills_with_the_same_client(tmp_path):
    """No backend answers: the worker child starts the one recorded in config_dir, reports the wait as
    progress, and fills through the Client that waited for it."""
    endpoint = free_endpoint()
    config = {
        "format": 1,
        "command": [*FAKE_SERVER, "--engine", "colour"],
        "cwd": str(REPO),
        "endpoint": endpoint,
    }
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(config))
    progress: list[tuple[float, str]] = []
    mask = np.zeros((30, 40), np.uint8)
    mask[10:20, 5:25] = 255
    try:
        outcome = run_fill(
            FillJob(endpoint, 40, 30, 3, "u8", {}, connect_timeout_s=0.5, config_dir=str(tmp_path)),
            _picture(40, 30, 3).tobytes(),
            mask.tobytes(),
            WORKER_PATHS,
            on_progress=lambda f, m: progress.append((f, m)),
        )
        assert (outcome.x, outcome.y, outcome.width, outcome.height) == (5, 10, 20, 10)
        assert progress[0] == (0.0, f"Starting the HiFill backend at {endpoint}…")
        with Client(endpoint, connect_timeout_s=1.0) as client:  # left running for the next fill
            assert client.hello()["model"] == "fake-colour"
    finally:
        stop_processes_serving(endpoint)


def test_killing_the_plugin_cancels_the_fill_on_the_backend(tmp_path):
    """GIMP's Cancel kills the plug-in process; the worker must then cancel the backend's job."""
    backend = start_fake_backend("slow", tmp_path / "slow.log", "--steps", "200", "--step-s", "0.05")  # 10 s
    endpoint = backend.endpoint
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path[:0] = {WORKER_PATHS!r}
        from hifill_gimp.worker import FillJob, run_fill
        run_fill(FillJob({endpoint!r}, 32, 32, 3, "u8", {{}}), bytes(32 * 32 * 3), bytes([255]) * 1024,
                 {WORKER_PATHS!r}, on_progress=lambda f, m: print("progress", f, flush=True))
    """)
    )
    plugin_process = subprocess.Popen([sys.executable, str(plugin)], stdout=subprocess.PIPE, text=True)
    client = Client(endpoint, timeout_s=5.0)
    try:
        assert plugin_process.stdout.readline().startswith("progress")
        assert client.status()["busy"]
        os.kill(plugin_process.pid, signal.SIGKILL)  # what GIMP does on Cancel
        plugin_process.wait()
        deadline = time.monotonic() + 4.0  # the fill alone would need ~10 s more
        while client.status()["busy"]:
            assert time.monotonic() < deadline, "the backend kept filling after the plug-in was killed"
            time.sleep(0.1)
    finally:
        client.close()
        plugin_process.kill()
        backend.stop()


# ------------------------------------------------------------------- GIMP glue (hifill.py) against fakes


def test_warnings_message():
    assert procedure.warnings_message(()) is None
    assert procedure.warnings_message(["  ", ""]) is None
    assert procedure.warnings_message(["GPU ran out of memory."]) == (
        "HiFill: the fill was applied, with a warning: GPU ran out of memory."
    )
    several = procedure.warnings_message(["First.", "Second."])
    assert several == "HiFill: the fill was applied, with warnings:\n• First.\n• Second."


class _FakeGimpLayer:
    """A GIMP 3 layer as hifill.py uses it: one RGB u8 buffer, merge_shadow copies the shadow's writes."""

    def __init__(self, pixels: np.ndarray, events: list) -> None:
        self.pixels = pixels
        self.events = events
        self.shadow_writes: list[tuple[object, str, bytes]] = []

    def get_name(self) -> str:
        return "Photo"

    def is_rgb(self) -> bool:
        return True

    def has_alpha(self) -> bool:
        return False

    def get_offsets(self) -> tuple[bool, int, int]:
        return True, 0, 0

    def get_width(self) -> int:
        return self.pixels.shape[1]

    def get_height(self) -> int:
        return self.pixels.shape[0]

    def get_lock_content(self) -> bool:
        return False

    def get_parent(self) -> None:
        return None

    def get_buffer(self) -> _FakeGeglBuffer:
        return _FakeGeglBuffer(self.pixels, "R'G'B' u8")

    def get_shadow_buffer(self) -> _FakeGeglBuffer:
        return _FakeGeglBuffer(None, "R'G'B' u8", self.shadow_writes)

    def merge_shadow(self, push_undo: bool) -> None:
        for rect, _babl, data in self.shadow_writes:
            block = np.frombuffer(data, np.uint8).reshape(rect.height, rect.width, 3)
            self.pixels[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width] = block
        self.events.append("merge_shadow")

    def update(self, x: int, y: int, width: int, height: int) -> None:
        pass


class _FakeGeglBuffer:
    def __init__(self, pixels: np.ndarray | None, babl: str, writes: list | None = None) -> None:
        self.pixels, self.babl, self.writes = pixels, babl, writes

    def get(self, rect, scale: float, babl: str, abyss: object) -> bytes:
        assert babl == self.babl and scale == 1.0
        out = np.zeros((rect.height, rect.width, *self.pixels.shape[2:]), np.uint8)
        height, width = self.pixels.shape[:2]
        x0, y0 = max(rect.x, 0), max(rect.y, 0)
        x1, y1 = min(rect.x + rect.width, width), min(rect.y + rect.height, height)
        out[y0 - rect.y : y1 - rect.y, x0 - rect.x : x1 - rect.x] = self.pixels[y0:y1, x0:x1]
        return out.tobytes()

    def set(self, rect, babl: str, data: bytes) -> None:
        self.writes.append((rect, babl, bytes(data)))

    def flush(self) -> None:
        pass


class _FakeGimpImage:
    def __init__(self, selection: np.ndarray, events: list) -> None:
        self.selection, self.events = selection, events

    def get_precision(self):
        return type("Precision", (), {"value_nick": "u8-non-linear"})()

    def get_selection(self):
        selection = self.selection
        return type("Channel", (), {"get_buffer": lambda _: _FakeGeglBuffer(selection, "Y u8")})()

    def undo_group_start(self) -> None:
        self.events.append("undo_group_start")

    def undo_group_end(self) -> None:
        self.events.append("undo_group_end")


def _load_gimp_glue(monkeypatch, events: list):
    """plugin_gimp/hifill.py imported with fakes of gi's GIMP, GEGL and GTK modules (GIMP not needed)."""

    class Rectangle:
        def __init__(self, x: int, y: int, width: int, height: int) -> None:
            self.x, self.y, self.width, self.height = x, y, width, height

        new = classmethod(lambda cls, x, y, w, h: cls(x, y, w, h))

    def bounds(image):
        rows, cols = np.nonzero(image.selection)
        return True, True, int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1

    gimp = types.SimpleNamespace(
        Layer=_FakeGimpLayer,
        LayerMask=type("LayerMask", (), {}),
        GroupLayer=type("GroupLayer", (), {}),
        PlugIn=type("PlugIn", (), {"__gtype__": None}),
        main=lambda gtype, argv: None,
        Selection=types.SimpleNamespace(bounds=bounds),
        progress_init=lambda text: None,
        progress_set_text=lambda text: None,
        progress_update=lambda fraction: None,
        displays_flush=lambda: events.append("displays_flush"),
        message=lambda text: events.append(("message", text)),
    )
    gegl = types.SimpleNamespace(Rectangle=Rectangle, AbyssPolicy=types.SimpleNamespace(NONE=0))
    gi = types.ModuleType("gi")
    gi.require_version = lambda name, version: None
    repository = types.ModuleType("gi.repository")
    for name, value in dict(Gimp=gimp, Gegl=gegl, GimpUi=object(), GLib=object(), GObject=object()).items():
        setattr(repository, name, value)
    gi.repository = repository
    monkeypatch.setitem(sys.modules, "gi", gi)
    monkeypatch.setitem(sys.modules, "gi.repository", repository)
    monkeypatch.setattr(sys, "path", list(sys.path))  # hifill.py adds its folder
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the worker child's shared_protocol (installed: beside it)
    spec = importlib.util.spec_from_file_location(
        "hifill_gimp_glue_under_test", REPO / "plugin_gimp" / "hifill.py"
    )
    glue = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(glue)
    return glue


@pytest.mark.parametrize("warnings", [(), OOM_WARNINGS[:1], OOM_WARNINGS])
def test_fill_shows_the_backends_warnings_after_the_fill_is_applied(monkeypatch, warnings, tmp_path):
    events: list = []
    glue = _load_gimp_glue(monkeypatch, events)
    original = _picture(40, 30, 3)
    selection = np.zeros((30, 40), np.uint8)
    selection[8:13, 10:16] = 255
    layer = _FakeGimpLayer(original.copy(), events)
    image = _FakeGimpImage(selection, events)
    process = _warning_backend(tmp_path / "log", *warnings)
    try:
        glue.fill(image, [layer], FillSettings(IN_PLACE, 4, process.endpoint))
    finally:
        process.stop()
    expected = original.copy()
    expected[8:13, 10:16] = 200  # the colour engine's fill; warnings change no pixel
    assert np.array_equal(layer.pixels, expected)
    messages = [event[1] for event in events if isinstance(event, tuple)]
    if not warnings:
        assert messages == []
        return
    assert messages == [procedure.warnings_message(warnings)]
    assert events[-4:] == ["merge_shadow", "undo_group_end", "displays_flush", ("message", messages[0])]
    assert all(warning in messages[0] for warning in warnings)

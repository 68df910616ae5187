"""Krita plug-in, what the user is told: the controller's messages reach the docker's message line and,
when no HiFill docker is on screen, the canvas; the backend's warnings follow "Filled …".

PyQt is not needed: the plug-in's one Qt module (hifill_krita.qt_compat) is replaced by a fake whose signals
call their slots directly, and `krita` by a fake of the few calls made. Documents are the fakes of
tests/editor_fakes.py; the client is a fake that fills like tests.fake_engines.ColourEngine.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from dataclasses import replace

import numpy as np
import pytest

import tests.editor_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)
from tests.editor_fakes import FakeDocument, FakeSelection, make_document

# isort: split
import hifill_krita
from hifill_krita.fill_job import SessionClient

from shared_protocol import InpaintResult

FILL_VALUE = 200
OOM_WARNINGS = (
    "cuda:0 ran out of memory at working size 512; filled on cuda:0 at working size 384 instead.",
    "cuda:0 ran out of memory at working size 384; filled on the CPU at working size 512 instead.",
)


# --------------------------------------------------------------------------------------- Qt and Krita fakes


class _BoundSignal:
    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def emit(self, *args) -> None:
        for slot in list(self.slots):
            slot(*args)

    __call__ = emit  # a signal connected to a signal


class _Signal:
    """pyqtSignal: one _BoundSignal per instance; emit calls the slots at once, on the emitting thread."""

    def __init__(self, *types: object) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None):
        if instance is None:
            return self
        return instance.__dict__.setdefault(f"_signal_{self.name}", _BoundSignal())


class _Widget:
    """Any Qt widget, layout or value: remembers text and style sheet, accepts every other call."""

    single_shots: list = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._text = ""
        self._style = ""

    def setText(self, text: str) -> None:
        self._text = text

    def text(self) -> str:
        return self._text

    def setStyleSheet(self, style: str) -> None:
        self._style = style

    def styleSheet(self) -> str:
        return self._style

    @staticmethod
    def singleShot(milliseconds: int, function) -> None:  # QTimer.singleShot: kept, not run
        _Widget.single_shots.append(function)

    def __call__(self, *args: object, **kwargs: object) -> _Widget:
        return _Widget()

    def __getattr__(self, name: str) -> _Widget:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Widget()


def _fake_qt_compat() -> types.ModuleType:
    module = types.ModuleType("hifill_krita.qt_compat")
    module.pyqtSignal = _Signal
    module.QObject = type("QObject", (), {"__init__": lambda self, *args: None})
    module.QtGui = _Widget()

    def widget_class(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Widget

    module.__getattr__ = widget_class  # QTimer, QLabel, TEXT_SELECTABLE, …
    return module


class _DockerRef:
    def __init__(self, name: str, visible: bool) -> None:
        self.name, self.visible = name, visible

    def objectName(self) -> str:
        return self.name

    def isVisible(self) -> bool:
        return self.visible


class _View:
    def __init__(self) -> None:
        self.floating: list[tuple[str, int]] = []

    def showFloatingMessage(self, text: str, icon: object, timeout_ms: int, priority: int) -> None:
        self.floating.append((text, timeout_ms))


class _Window:
    def __init__(self, docker_visible: bool) -> None:
        self.docker_visible = docker_visible
        self.view = _View()

    def dockers(self) -> list[_DockerRef]:
        return [_DockerRef("hifill_docker", self.docker_visible), _DockerRef("ToolBox", True)]

    def activeView(self) -> _View:
        return self.view


class _Krita:
    def __init__(self, document: FakeDocument, window: _Window) -> None:
        self.document, self.window = document, window

    def readSetting(self, group: str, name: str, default: str) -> str:
        return default

    def writeSetting(self, group: str, name: str, value: str) -> None:
        pass

    def activeDocument(self) -> FakeDocument:
        return self.document

    def documents(self) -> list[FakeDocument]:
        return [self.document]

    def activeWindow(self) -> _Window:
        return self.window


class _Client:
    """A backend that fills every masked pixel with FILL_VALUE and sends `warnings` with the result."""

    def __init__(self, endpoint: str, warnings: tuple[str, ...]) -> None:
        self.endpoint = endpoint
        self.warnings = warnings

    def hello(self) -> dict:
        return {"device": "cuda:0", "model": "fake"}

    def inpaint(self, image, width, height, channels, dtype, mask, options, on_progress, cancel_event):
        assert dtype == "u8"
        pixels = np.frombuffer(image, np.uint8).reshape(height, width, channels)
        selected = np.frombuffer(mask, np.uint8).reshape(height, width) > 0
        rows, cols = np.flatnonzero(selected.any(axis=1)), np.flatnonzero(selected.any(axis=0))
        y, x = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) + 1 - y, int(cols[-1]) + 1 - x
        region = pixels[y : y + h, x : x + w].copy()
        region[selected[y : y + h, x : x + w]] = FILL_VALUE
        on_progress(1.0, "done")
        return InpaintResult(x, y, w, h, channels, dtype, region.tobytes(), self.warnings)

    def close(self) -> None:
        pass


@pytest.fixture
def plugin(monkeypatch):
    """hifill_krita with the fake Qt and Krita: (controller module, docker module, install(krita))."""
    names = ("hifill_krita.qt_compat", "hifill_krita.controller", "hifill_krita.docker")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    package = hifill_krita.__dict__
    saved_attributes = {name: package.pop(name) for name in ("controller", "docker") if name in package}
    monkeypatch.setitem(sys.modules, "hifill_krita.qt_compat", _fake_qt_compat())
    krita = types.ModuleType("krita")
    krita.DockWidget = _Widget
    monkeypatch.setitem(sys.modules, "krita", krita)
    monkeypatch.setattr(hifill_krita, "_controller", None)
    _Widget.single_shots = []
    controller_module = importlib.import_module("hifill_krita.controller")
    docker_module = importlib.import_module("hifill_krita.docker")

    def install(app: _Krita) -> None:
        krita.Krita = types.SimpleNamespace(instance=lambda: app)

    yield types.SimpleNamespace(controller=controller_module, docker=docker_module, install=install)
    for name in names:
        sys.modules.pop(name, None)
    sys.modules.update(saved)
    for name in ("controller", "docker"):
        hifill_krita.__dict__.pop(name, None)
    hifill_krita.__dict__.update(saved_attributes)


def _fill(plugin, warnings: tuple[str, ...], docker_visible: bool):
    """One fill from the session's controller (as get_controller makes it) with a docker constructed."""
    document = make_document()
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    window = _Window(docker_visible)
    plugin.install(_Krita(document, window))
    controller = hifill_krita.get_controller()
    controller._clients = SessionClient(lambda endpoint, keys_folder: _Client(endpoint, warnings))
    docker = plugin.docker.HiFillDocker()
    messages: list[tuple[str, bool]] = []
    controller.message_changed.connect(lambda text, is_error: messages.append((text, is_error)))
    done = threading.Event()
    controller.busy_changed.connect(lambda busy: None if busy else done.set())
    controller.fill()
    assert done.wait(30), "the fill did not finish"
    return document, docker, window.view, messages


# -------------------------------------------------------------------------------------------------- tests


def test_with_warnings(plugin):
    level = plugin.controller.MessageLevel
    assert plugin.controller.with_warnings("Filled 6×5 px.", ()) == ("Filled 6×5 px.", level.INFO)
    assert plugin.controller.with_warnings("Filled 6×5 px.", [" ", ""]) == ("Filled 6×5 px.", level.INFO)
    assert plugin.controller.with_warnings("Filled 6×5 px.", ["GPU ran out of memory."]) == (
        "Filled 6×5 px — warning: GPU ran out of memory.",
        level.WARNING,
    )
    assert plugin.controller.with_warnings("Filled.", ["One.", "Two."]) == (
        "Filled — warnings: One. Two.",
        level.WARNING,
    )


@pytest.mark.parametrize("warnings", [(), OOM_WARNINGS[:1], OOM_WARNINGS])
@pytest.mark.parametrize("docker_visible", [True, False])
def test_the_backends_warnings_reach_the_docker_or_the_canvas(plugin, warnings, docker_visible):
    document, docker, view, messages = _fill(plugin, warnings, docker_visible)

    filled = "Filled 6×5 px into a new layer (undo removes it)"
    if warnings:
        label = "warning" if len(warnings) == 1 else "warnings"
        expected, style = f"{filled} — {label}: {' '.join(warnings)}", "color: #c08a00;"
    else:
        expected, style = f"{filled}.", ""
    assert messages[-1] == (expected, False)  # a warning is not an error: the fill stands
    assert (docker.message_label.text(), docker.message_label.styleSheet()) == (expected, style)
    if docker_visible:
        assert view.floating == []
    else:
        assert view.floating[-1] == (f"HiFill: {expected}", 6000 if warnings else 3000)
    if not warnings:  # nothing extra anywhere
        assert not any("warning" in text for text, _ in messages + view.floating)

    # Warnings change no pixel: the new layer holds exactly the fill.
    new_layer = document.layers()[1]
    for y in range(30):
        for x in range(40):
            selected = 10 <= x < 16 and 8 <= y < 13
            assert new_layer.pixelData(x, y, 1, 1) == (bytes([FILL_VALUE]) * 4 if selected else bytes(4))


def test_errors_stay_red_and_long_on_the_canvas(plugin):
    document = FakeDocument(40, 30)
    document.add_layer("Photo")  # no selection: the fill is refused before anything is sent
    window = _Window(docker_visible=False)
    plugin.install(_Krita(document, window))
    controller = hifill_krita.get_controller()
    docker = plugin.docker.HiFillDocker()
    controller.fill()
    assert docker.message_label.text().startswith("Select the area to fill")
    assert docker.message_label.styleSheet() == "color: #d04040;"
    assert window.view.floating == [(f"HiFill: {docker.message_label.text()}", 6000)]


def test_the_session_keeps_one_client_for_fills_and_probes_and_closes_it_at_quit(plugin):
    """Fills and status probes share the session's Client (and so its shared-memory segment); a new
    Backend setting replaces it; Krita closing closes it."""
    document = make_document()
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    plugin.install(_Krita(document, _Window(docker_visible=True)))
    controller = hifill_krita.get_controller()
    made: list[_Client] = []
    closed: list[_Client] = []

    class _Counted(_Client):
        def close(self) -> None:
            closed.append(self)

    def factory(endpoint: str, keys_folder: str) -> _Client:
        made.append(_Counted(endpoint, ()))
        return made[-1]

    controller._clients = SessionClient(factory)
    idle, probed = threading.Event(), threading.Event()
    controller.busy_changed.connect(lambda busy: None if busy else idle.set())
    controller.status_changed.connect(lambda status: probed.set())
    for _ in range(2):
        idle.clear()
        controller.fill()
        assert idle.wait(30), "the fill did not finish"
    probed.clear()
    controller.refresh_status()
    assert probed.wait(30) and controller.status.state.value == "connected"
    assert len(made) == 1 and closed == [] and len(document.layers()) == 3  # two fills, one Client

    probed.clear()
    controller.update_settings(replace(controller.settings, endpoint="tcp://127.0.0.1:9"))  # probes it
    assert probed.wait(30)
    assert [client.endpoint for client in made] == [made[0].endpoint, "tcp://127.0.0.1:9"]
    assert closed == [made[0]]
    controller.shutdown()
    assert closed == made

"""HiFill for Krita: a docker panel and an action that fill the selection from its surroundings.

Installed by `python install.py krita` into Krita's pykrita folder as hifill_krita.desktop +
hifill_krita/ (named apart from GIMP's hifill.py, so both plug-ins' modules can be imported together).
install.py puts shared_protocol (with the backend launcher), the backend's start command
(hifill-backend.json) and, when Krita's Python lacks them, pyzmq and msgpack into
hifill_krita/support/; this file makes them importable.
Outside Krita (unit tests) importing this package registers nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
SUPPORT_DIR = PLUGIN_DIR / "support"
VENDOR_DIR = SUPPORT_DIR / "vendor"
ACTION_ID = "hifill_fill"


def _add_support_paths() -> None:
    for folder in (VENDOR_DIR, SUPPORT_DIR):  # SUPPORT_DIR ends up first
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


_add_support_paths()

_controller = None


def get_controller():
    """The session's FillController, created on first use (inside Krita only)."""
    global _controller
    if _controller is None:
        from krita import Krita

        from shared_protocol.endpoints import DEFAULT_ENDPOINT
        from shared_protocol.launcher import BackendLauncher

        from .controller import FillController

        launcher = BackendLauncher.from_folder(SUPPORT_DIR)  # the config install.py wrote, if any
        config = launcher.config
        default_endpoint = config.endpoint if config is not None and config.endpoint else DEFAULT_ENDPOINT
        _controller = FillController(Krita.instance(), launcher, default_endpoint)
        _controller.notice_changed.connect(_show_in_view_without_docker)
    return _controller


def _show_in_view_without_docker(text: str, level: object) -> None:
    """When the fill came from the shortcut and no HiFill docker is on screen, say it on the canvas
    (errors and warnings longer than other messages). level: controller.MessageLevel."""
    from krita import Krita

    from .controller import MessageLevel
    from .docker import DOCKER_ID
    from .qt_compat import QtGui

    window = Krita.instance().activeWindow()
    if window is None or any(d.objectName() == DOCKER_ID and d.isVisible() for d in window.dockers()):
        return
    view = window.activeView()
    if view is not None:
        timeout_ms = 3000 if level is MessageLevel.INFO else 6000
        view.showFloatingMessage(f"HiFill: {text}", QtGui.QIcon(), timeout_ms, 1)


def _register() -> None:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

    from .docker import DOCKER_ID, HiFillDocker

    class HiFillExtension(Extension):
        """Owns the keyboard action (default shortcut in hifill_krita.action) and the shutdown hook."""

        def setup(self) -> None:
            notifier = Krita.instance().notifier()
            notifier.setActive(True)
            notifier.applicationClosing.connect(lambda: get_controller().shutdown())

        def createActions(self, window) -> None:
            action = window.createAction(ACTION_ID, "HiFill: Fill Selection", "tools/scripts")
            action.triggered.connect(lambda: get_controller().fill())

    app = Krita.instance()
    app.addExtension(HiFillExtension(app))
    app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, HiFillDocker))


if importlib.util.find_spec("krita") is not None:
    _register()

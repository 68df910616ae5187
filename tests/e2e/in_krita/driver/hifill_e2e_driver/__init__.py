"""Test-only Krita plug-in that drives the HiFill docker like a user would, from a job file.

Inert unless the environment variable HIFILL_KRITA_E2E_JOB names a JSON job file (and enabled only in
the test profile's kritarc). For every case of the job it opens the image, makes the paint layer
active, selects a rectangle, sets the docker's "Result" option, presses the docker's Fill button (or
triggers the hifill_fill action), waits for the fill, exports the flattened image, optionally takes
a screenshot and checks undo, then closes the image. Finally it writes a result JSON and quits Krita.
It exits the process with status 1 on any failure (Krita's own exit status says nothing).
"""

from __future__ import annotations

import json
import os
import time
import traceback

from krita import Extension, InfoObject, Krita, Selection

JOB_ENV = "HIFILL_KRITA_E2E_JOB"
POLL_MS = 100


def _qt():
    try:
        from PyQt5 import QtCore, QtWidgets
    except ImportError:  # Krita 6
        from PyQt6 import QtCore, QtWidgets
    return QtCore, QtWidgets


class Driver:
    def __init__(self, job_path: str) -> None:
        with open(job_path, encoding="utf-8") as handle:
            self.job = json.load(handle)
        self.result: dict = {"cases": [], "log": []}
        self.started = time.monotonic()
        self.window = None
        QtCore, _ = _qt()
        self.watchdog = QtCore.QTimer()
        self.watchdog.setSingleShot(True)
        self.watchdog.timeout.connect(lambda: self.fail(f"timed out after {self.job['timeout_s']} s"))
        self.watchdog.start(int(self.job["timeout_s"] * 1000))

    # --- plumbing -----------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.result["log"].append(f"{time.monotonic() - self.started:6.2f}s {text}")
        print(f"hifill_e2e_driver: {time.time():.3f} {text}", flush=True)  # krita.log, next to Krita's own

    def write_result(self) -> None:
        with open(self.job["result"], "w", encoding="utf-8") as handle:
            json.dump(self.result, handle, indent=1)

    def fail(self, message: str) -> None:
        self.result["error"] = message
        self.log("FAILED: " + message)
        try:  # what was on screen (a modal dialog, usually) helps more than any log
            _, QtWidgets = _qt()
            shown = [w for w in QtWidgets.QApplication.topLevelWidgets() if w.isVisible()]
            self.result["visible_windows"] = [f"{type(w).__name__}:{w.windowTitle()}" for w in shown]
            screen = QtWidgets.QApplication.primaryScreen()
            if self.job.get("failure_screenshot") and screen is not None:
                screen.grabWindow(0).save(self.job["failure_screenshot"])
        finally:
            self.write_result()
            os._exit(1)

    def later(self, delay_ms: int, step) -> None:
        QtCore, _ = _qt()

        def guarded() -> None:
            try:
                step()
            except Exception:
                self.fail(traceback.format_exc())

        QtCore.QTimer.singleShot(delay_ms, guarded)

    def wait_until(self, condition, then, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s

        def poll() -> None:
            if condition():
                then()
            elif time.monotonic() > deadline:
                self.fail(f"gave up waiting for {what}")
            else:
                self.later(POLL_MS, poll)

        self.later(POLL_MS, poll)

    # --- the run ------------------------------------------------------------------------------------
    def on_window(self, *args: object) -> None:
        self.log("window created")
        self.later(1000, self.setup_window)

    def setup_window(self) -> None:
        app = Krita.instance()
        self.window = app.activeWindow()
        if self.window is None:
            self.fail("no Krita window")
        width, height = self.job.get("window_size", [1600, 1000])
        self.window.qwindow().setGeometry(0, 0, width, height)
        self.docker = next((d for d in self.window.dockers() if d.objectName() == "hifill_docker"), None)
        if self.docker is None:
            names = sorted(d.objectName() for d in self.window.dockers())
            self.fail(f"HiFill docker not found among {names}")
        self.docker.show()
        self.docker.raise_()
        self.log("HiFill docker shown")
        settings = self.controller().settings  # as read from kritarc, before any case changes them
        self.result["settings_at_start"] = {"output_mode": settings.output_mode.value}
        self.cases = list(self.job["cases"])
        self.later(200, self.next_case)

    def widget(self, cls_name: str, name: str):
        _, QtWidgets = _qt()
        found = self.docker.findChild(getattr(QtWidgets, cls_name), name)
        if found is None:
            self.fail(f"docker widget {name} not found")
        return found

    def controller(self):
        import hifill_krita

        return hifill_krita.get_controller()

    def next_case(self) -> None:
        if not self.cases:
            self.finish()
            return
        self.case = self.cases.pop(0)
        self.case_result: dict = {"name": self.case["name"]}
        self.result["cases"].append(self.case_result)
        app = Krita.instance()
        app.setBatchmode(True)  # no import/export option dialogs
        self.log(f"{self.case['name']}: opening {self.case['image']}")
        doc = app.openDocument(self.case["image"])
        if doc is None:
            self.fail(f"could not open {self.case['image']}")
        doc.setBatchmode(True)
        self.window.addView(doc)
        self.doc = doc
        self.log(f"{self.case['name']}: opened {self.case['image']}")
        self.later(500, self.prepare_case)

    def layer_names(self) -> list[str]:
        return [f"{n.name()}:{n.type()}" for n in self.doc.topLevelNodes()]

    def prepare_case(self) -> None:
        doc = self.doc
        paint = [n for n in doc.topLevelNodes() if n.type() == "paintlayer"]
        if len(paint) != 1:
            self.fail(f"expected one paint layer, found {self.layer_names()}")
        self.source = paint[0]
        doc.setActiveNode(self.source)
        if self.case.get("convert_to"):  # e.g. RGBA F32: the float path, checked on raw pixels below
            model, depth, profile = self.case["convert_to"]
            if not doc.setColorSpace(model, depth, profile):
                self.fail(f"could not convert the image to {model} {depth}")
            doc.refreshProjection()
            doc.waitForDone()
            self.projection_before = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
        if self.case.get("selection_mask"):  # a shape around an object: raw u8 bytes of the image's size
            QtCore, _ = _qt()
            with open(self.case["selection_mask"], "rb") as handle:
                shape = handle.read()
            selection = Selection()
            selection.setPixelData(QtCore.QByteArray(shape), 0, 0, doc.width(), doc.height())
            doc.setSelection(selection)
            doc.waitForDone()
        elif self.case.get("selection"):  # None: leave the fresh image without a selection
            x, y, w, h = self.case["selection"]
            selection = Selection()
            selection.select(x, y, w, h, 255)
            doc.setSelection(selection)
            doc.waitForDone()
        self.case_result.update(
            color_model=self.source.colorModel(),
            color_depth=self.source.colorDepth(),
            layers_before=self.layer_names(),
        )
        if self.case.get("endpoint"):  # typed into the docker like a user would
            edit = self.widget("QLineEdit", "hifill_endpoint_edit")
            edit.setText(self.case["endpoint"])
            edit.editingFinished.emit()
            if self.controller().settings.endpoint != self.case["endpoint"]:
                self.fail("the Backend option did not reach the controller")
        self.states: list[str] = []
        self.controller().status_changed.connect(self.on_status)
        combo = self.widget("QComboBox", "hifill_output_combo")
        combo.setCurrentIndex(combo.findData(self.case["output_mode"]))
        if self.controller().settings.output_mode.value != self.case["output_mode"]:
            self.fail("the Result option did not reach the controller")
        self.messages: list[tuple[str, bool]] = []
        self.controller().message_changed.connect(self.on_message)
        self.log(f"{self.case['name']}: selection {self.case['selection']}, trigger {self.case['trigger']}")
        if self.case.get("hide_docker"):  # the shortcut with no panel on screen
            self.docker.hide()
        if self.case["trigger"] == "button":
            self.widget("QPushButton", "hifill_fill_button").click()
        else:
            action = Krita.instance().action("hifill_fill")
            if action is None:
                self.fail("action hifill_fill not registered")
            self.case_result["action_shortcut"] = action.shortcut().toString()
            action.trigger()
        self.fill_started = time.monotonic()
        if self.case.get("cancel_after_ms") is not None:  # the user changes their mind
            self.later(
                int(self.case["cancel_after_ms"]), self.widget("QPushButton", "hifill_cancel_button").click
            )
        idle = lambda: not self.controller().busy  # noqa: E731
        self.later(50, lambda: self.wait_until(idle, self.after_fill, "the fill"))

    def on_message(self, text: str, is_error: bool) -> None:
        self.messages.append((text, is_error))

    def on_status(self, status) -> None:
        if not self.states or self.states[-1] != status.state.value:
            self.states.append(status.state.value)

    def after_fill(self) -> None:
        self.controller().message_changed.disconnect(self.on_message)
        self.controller().status_changed.disconnect(self.on_status)
        doc = self.doc
        doc.waitForDone()
        self.case_result.update(
            fill_seconds=round(time.monotonic() - self.fill_started, 2),
            messages=self.messages,
            states=self.states,
            status=self.controller().status.describe(),
            layers_after=self.layer_names(),
            active_after=f"{doc.activeNode().name()}:{doc.activeNode().type()}" if doc.activeNode() else None,
            progress=self.widget("QProgressBar", "hifill_progress").value(),
            message_label=self.widget("QLabel", "hifill_message_label").text(),
            status_label=self.widget("QLabel", "hifill_status_label").text(),
        )
        errors = [text for text, is_error in self.messages if is_error]
        expected = self.case.get("expect_error")
        if self.case.get("expect_message") is not None:  # e.g. cancelled: no error, nothing changed
            if errors or not any(self.case["expect_message"] in text for text, _ in self.messages):
                self.fail(
                    f"expected a message containing {self.case['expect_message']!r}, got {self.messages}"
                )
            self.later(0, self.check_undo)
            return
        if expected is not None:  # a refusal: the message, and nothing else happened
            if not any(expected in text for text in errors):
                self.fail(f"expected an error containing {expected!r}, got {self.messages}")
            if self.case.get("screenshot"):
                self.later(1500, self.grab_screenshot)
            else:
                self.later(0, self.check_undo)
            return
        if errors:
            self.fail(f"the fill reported an error: {self.messages}")
        doc.refreshProjection()
        doc.waitForDone()
        if self.case.get("convert_to"):
            self.compare_projection()
        self.export(self.case["output"])
        if self.case.get("screenshot"):
            self.later(1500, self.screenshot)
        else:
            self.later(0, self.check_undo)

    def compare_projection(self) -> None:
        """Raw composite before/after, pixel by pixel: the selection changed, nothing else."""
        doc = self.doc
        after = bytes(doc.pixelData(0, 0, doc.width(), doc.height()))
        before = self.projection_before
        size = len(before) // (doc.width() * doc.height())
        x0, y0, w, h = self.case["selection"]
        outside_changed = inside_changed = 0
        for y in range(doc.height()):
            for x in range(doc.width()):
                offset = (y * doc.width() + x) * size
                changed = before[offset : offset + size] != after[offset : offset + size]
                if x0 <= x < x0 + w and y0 <= y < y0 + h:
                    inside_changed += changed
                else:
                    outside_changed += changed
        self.case_result.update(
            pixel_bytes=size, outside_changed=outside_changed, inside_changed=inside_changed / (w * h)
        )

    def export(self, path: str) -> None:
        self.doc.setBatchmode(True)
        if not self.doc.exportImage(path, InfoObject()):
            self.fail(f"export to {path} failed")
        self.doc.waitForDone()
        self.log(f"exported {path}")

    def screenshot(self) -> None:
        for docker in self.window.dockers():  # Krita restores its layout late: hide just before
            if docker.objectName() in self.job.get("hide_dockers", []):
                docker.hide()
        zoom = Krita.instance().action("zoom_to_fit")
        if zoom is not None:
            zoom.trigger()
        self.later(3000, self.grab_screenshot)  # after Krita's "Zoom: …" on-canvas message has faded

    def grab_screenshot(self) -> None:
        # The whole X screen (the window fills it): on-canvas messages are separate windows.
        _, QtWidgets = _qt()
        pixmap = QtWidgets.QApplication.primaryScreen().grabWindow(0)
        if not pixmap.save(self.case["screenshot"]):
            self.fail("screenshot failed")
        self.log(f"screenshot {self.case['screenshot']}")
        self.later(0, self.check_undo)

    def check_undo(self) -> None:
        if self.case.get("hide_docker"):
            self.docker.show()
        steps = int(self.case.get("undo_steps", 0))
        if steps:
            undo = Krita.instance().action("edit_undo")
            if undo is None:
                self.fail("no edit_undo action")
            for _ in range(steps):
                undo.trigger()
                self.doc.waitForDone()
            self.doc.refreshProjection()
            self.doc.waitForDone()
            self.case_result["layers_after_undo"] = self.layer_names()
            self.export(self.case["output_after_undo"])
        self.doc.setModified(False)
        self.log(f"{self.case['name']}: closing")
        self.doc.close()
        self.later(300, self.next_case)

    def finish(self) -> None:
        self.result["ok"] = True
        self.log("all cases done; quitting")
        self.write_result()
        self.later(200, lambda: Krita.instance().action("file_quit").trigger())


class DriverExtension(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:
        pass


_job = os.environ.get(JOB_ENV)
if _job:
    _driver = Driver(_job)
    _app = Krita.instance()
    _app.addExtension(DriverExtension(_app))
    _app.notifier().setActive(True)
    _app.notifier().windowCreated.connect(_driver.on_window)

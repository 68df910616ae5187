"""One controller per Krita session: runs fills (one at a time) and watches the backend.

Every docker (one per Krita window) and the keyboard action talk to the same controller, which holds
the session's one Client (fill_job.SessionClient: fills and status probes, replaced when the endpoint
or keys folder changes, closed by shutdown()). Krita is touched only on the UI thread; the worker
thread sees bytes and the shared_protocol client only.
"""

from __future__ import annotations

import enum
import sys
import threading
import traceback
from collections.abc import Sequence

from shared_protocol import ErrorKind, HiFillError, Limits
from shared_protocol.launcher import BackendLauncher
from shared_protocol.settings import FillSettings, OutputMode

from .backend_life import BackendState, BackendStatus, probe_status, status_of_error
from .document_io import FillInput, apply_result, read_fill_input
from .fill_job import SessionClient, run_fill
from .qt_compat import QObject, QTimer, pyqtSignal
from .settings import load_settings, save_settings


class MessageLevel(str, enum.Enum):
    """How the docker and the canvas present a message."""

    INFO = "info"
    WARNING = "warning"  # the fill was applied, but the backend had to say something (e.g. a fallback)
    ERROR = "error"


def with_warnings(text: str, warnings: Sequence[str]) -> tuple[str, MessageLevel]:
    """The message after an applied fill, followed by the backend's warnings (sentences) if any."""
    sentences = [warning.strip() for warning in warnings if warning.strip()]
    if not sentences:
        return text, MessageLevel.INFO
    label = "warning" if len(sentences) == 1 else "warnings"
    return f"{text.rstrip('.')} — {label}: {' '.join(sentences)}", MessageLevel.WARNING


class FillController(QObject):
    """Signals carry plain Python values; connect them to widgets on the UI thread."""

    status_changed = pyqtSignal(object)  # BackendStatus
    progress_changed = pyqtSignal(float, str)  # fraction in [0, 1], message
    busy_changed = pyqtSignal(bool)
    message_changed = pyqtSignal(str, bool)  # text, is_error (each message, also sent as notice_changed)
    notice_changed = pyqtSignal(str, object)  # text, MessageLevel: what the docker and the canvas show
    settings_changed = pyqtSignal(object)  # FillSettings

    # Worker thread -> UI thread (queued connections, because the controller lives on the UI thread).
    _worker_status = pyqtSignal(object)
    _worker_progress = pyqtSignal(float, str)
    _worker_finished = pyqtSignal(object, object)  # FillInput, InpaintResult | HiFillError
    _probe_finished = pyqtSignal(object)  # BackendStatus

    def __init__(
        self,
        krita: object,
        launcher: BackendLauncher,
        default_endpoint: str,
        clients: SessionClient | None = None,
    ) -> None:
        super().__init__()
        self._krita = krita
        self._launcher = launcher
        self._clients = clients if clients is not None else SessionClient()
        self.settings = load_settings(krita.readSetting, default_endpoint)
        self.status = BackendStatus(BackendState.NOT_RUNNING, "not checked yet")
        self._limits: Limits | None = None
        self._cancel: threading.Event | None = None
        self._probing = False
        self._worker_status.connect(self._on_status)
        self._worker_progress.connect(self.progress_changed)
        self._worker_finished.connect(self._on_finished)
        self._probe_finished.connect(self._on_probe_finished)

    # --- state -------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._cancel is not None

    def update_settings(self, settings: FillSettings) -> None:
        if settings == self.settings:
            return
        backend_changed = (settings.endpoint, settings.keys_folder) != (
            self.settings.endpoint,
            self.settings.keys_folder,
        )
        self.settings = settings
        save_settings(self._krita.writeSetting, settings)
        self.settings_changed.emit(settings)
        if backend_changed:
            self._limits = None
            self.refresh_status()

    # --- backend status ------------------------------------------------------------------------------
    def refresh_status(self) -> None:
        """Ask the backend for hello in the background (skipped while a fill or a probe runs)."""
        if self._probing or self.busy:
            return
        self._probing = True
        endpoint, keys_folder = self.settings.endpoint, self.settings.keys_folder

        def probe() -> None:
            try:
                client = self._clients.get(endpoint, keys_folder)
            except HiFillError as error:  # unusable keys folder
                self._probe_finished.emit(status_of_error(error))
                return
            self._probe_finished.emit(probe_status(client.hello))

        threading.Thread(target=probe, name="hifill-probe", daemon=True).start()

    def _on_probe_finished(self, status: BackendStatus) -> None:
        self._probing = False
        if not self.busy:
            self._on_status(status)

    def _on_status(self, status: BackendStatus) -> None:
        if status.state is BackendState.CONNECTED and isinstance(status.info.get("limits"), dict):
            try:
                self._limits = Limits.from_dict(status.info["limits"])
            except (TypeError, ValueError):
                self._limits = None
        self.status = status
        self.status_changed.emit(status)

    def _say(self, text: str, level: MessageLevel = MessageLevel.INFO) -> None:
        self.message_changed.emit(text, level is MessageLevel.ERROR)
        self.notice_changed.emit(text, level)

    # --- fill ----------------------------------------------------------------------------------------
    def fill(self) -> None:
        """Fill the active document's selection on its active layer (UI thread)."""
        if self.busy:
            self._say("A fill is already running; wait for it or cancel it.", MessageLevel.ERROR)
            return
        settings = self.settings
        max_pixels = self._limits.max_pixels if self._limits else Limits().max_pixels
        try:
            fill_input = read_fill_input(self._krita.activeDocument(), settings, max_pixels)
        except HiFillError as error:
            self._say(error.message, MessageLevel.ERROR)
            return
        cancel = threading.Event()
        self._cancel = cancel
        self.busy_changed.emit(True)
        window = fill_input.window
        self._say(
            f"Filling {fill_input.selection.width}×{fill_input.selection.height} px"
            f" (sending {window.width}×{window.height} px)…"
        )
        self.progress_changed.emit(0.0, "starting")
        thread = threading.Thread(
            target=self._work,
            args=(fill_input, settings.endpoint, settings.keys_folder, cancel),
            name="hifill-fill",
            daemon=True,
        )
        thread.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._say("Cancelling…")

    def _work(self, fill_input: FillInput, endpoint: str, keys_folder: str, cancel: threading.Event) -> None:
        try:
            result: object = run_fill(
                fill_input.request,
                self._clients.get(endpoint, keys_folder),
                self._launcher,
                cancel,
                on_status=self._worker_status.emit,
                on_progress=self._worker_progress.emit,
            )
        except HiFillError as error:
            result = error
        except Exception as error:  # a bug: report it in the panel, details in Krita's log
            traceback.print_exc(file=sys.stderr)
            result = HiFillError(
                ErrorKind.INTERNAL, f"HiFill failed unexpectedly ({type(error).__name__}: {error})."
            )
        self._worker_finished.emit(fill_input, result)

    def _on_finished(self, fill_input: FillInput, outcome: object) -> None:
        # Still busy while writing: Krita's waitForDone() runs the event loop, so a second Fill (or
        # anything watching `busy`) could otherwise run in the middle of the layer insertion.
        cancel = self._cancel
        try:
            if isinstance(outcome, HiFillError):
                raise outcome
            if cancel is not None and cancel.is_set():
                raise HiFillError(ErrorKind.CANCELLED, "Fill cancelled; nothing was changed.")
            if not self._document_is_open(fill_input):
                raise HiFillError(ErrorKind.CANCELLED, "The image was closed while HiFill was working.")
            applied = apply_result(fill_input, outcome, fill_input.output_mode)
            if applied.active is not None:
                # Krita activates an added layer from a queued signal: select ours after that.
                document, active = fill_input.document, applied.active
                QTimer.singleShot(0, lambda: document.setActiveNode(active))
        except HiFillError as error:
            if error.kind in (ErrorKind.BACKEND_UNAVAILABLE, ErrorKind.ACCESS_DENIED):
                self._on_status(status_of_error(error))
            self.progress_changed.emit(0.0, "")
            cancelled = error.kind is ErrorKind.CANCELLED
            self._say(error.message, MessageLevel.INFO if cancelled else MessageLevel.ERROR)
        except Exception as error:  # a bug while writing: say so in the panel, details in Krita's log
            traceback.print_exc(file=sys.stderr)
            self.progress_changed.emit(0.0, "")
            self._say(
                f"HiFill could not write the result ({type(error).__name__}: {error}); see Krita's log.",
                MessageLevel.ERROR,
            )
        else:
            self.progress_changed.emit(1.0, "done")
            if applied.layer is None:
                text = "Nothing to fill: the selection is empty."
            else:
                size = f"{applied.region.width}×{applied.region.height} px"
                new_layer = applied.mode is OutputMode.NEW_LAYER
                where = (
                    "into a new layer (undo removes it)"
                    if new_layer
                    else "in place (two undo steps revert it)"
                )
                text = f"Filled {size} {where}."
            # The backend's warnings (e.g. it ran out of GPU memory and used the CPU) follow the
            # message; the fill itself stands as written.
            self._say(*with_warnings(text, outcome.warnings))
        finally:
            self._cancel = None
            self.busy_changed.emit(False)

    def _document_is_open(self, fill_input: FillInput) -> bool:
        return any(document == fill_input.document for document in self._krita.documents())

    def shutdown(self) -> None:
        """Krita is closing: cancel a running fill, close the session's Client and stop a backend this
        session started."""
        if self._cancel is not None:
            self._cancel.set()
        self._clients.close()
        self._launcher.stop_started()

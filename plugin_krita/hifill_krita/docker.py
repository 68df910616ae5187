"""The "HiFill" docker panel: status, Fill / Cancel, progress, options. All logic is in the controller."""

from __future__ import annotations

from krita import DockWidget

from shared_protocol.settings import MAX_CONTEXT_PX, FillSettings, OutputMode

from .backend_life import BackendState, BackendStatus
from .controller import MessageLevel
from .qt_compat import (
    TEXT_SELECTABLE,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTimer,
    QVBoxLayout,
    QWidget,
)

DOCKER_ID = "hifill_docker"
STATUS_REFRESH_MS = 10_000
_STATE_COLOURS = {
    BackendState.CONNECTED: "#3a9a3a",
    BackendState.STARTING: "#c08a00",
    BackendState.NOT_RUNNING: "#b03030",
    BackendState.REFUSED: "#b03030",
}
_MESSAGE_STYLES = {MessageLevel.WARNING: "color: #c08a00;", MessageLevel.ERROR: "color: #d04040;"}


def _controller():
    from . import get_controller  # the one controller of this Krita session

    return get_controller()


class HiFillDocker(DockWidget):
    """One per Krita window; several dockers share the session's controller."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("HiFill")
        self.controller = _controller()
        root = QWidget(self)
        layout = QVBoxLayout(root)

        self.status_label = QLabel(root)
        self.status_label.setObjectName("hifill_status_label")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(TEXT_SELECTABLE)
        layout.addWidget(self.status_label)

        buttons = QHBoxLayout()
        self.fill_button = QPushButton("Fill selection", root)
        self.fill_button.setObjectName("hifill_fill_button")
        self.fill_button.setToolTip("Fill the selected area of the active paint layer from its surroundings")
        self.cancel_button = QPushButton("Cancel", root)
        self.cancel_button.setObjectName("hifill_cancel_button")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.fill_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.progress = QProgressBar(root)
        self.progress.setObjectName("hifill_progress")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        layout.addWidget(self.progress)

        self.message_label = QLabel(root)
        self.message_label.setObjectName("hifill_message_label")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(TEXT_SELECTABLE)
        layout.addWidget(self.message_label)

        options = QGroupBox("Options", root)
        form = QFormLayout(options)
        self.output_combo = QComboBox(options)
        self.output_combo.setObjectName("hifill_output_combo")
        self.output_combo.addItem("New layer above", OutputMode.NEW_LAYER.value)
        self.output_combo.addItem("In place (2 undo steps)", OutputMode.IN_PLACE.value)
        form.addRow("Result:", self.output_combo)
        self.context_spin = QSpinBox(options)
        self.context_spin.setObjectName("hifill_context_spin")
        self.context_spin.setRange(-1, MAX_CONTEXT_PX)
        self.context_spin.setSpecialValueText("Auto")  # shown for the minimum, -1
        self.context_spin.setSuffix(" px")
        self.context_spin.setSingleStep(32)
        self.context_spin.setToolTip("Pixels of surroundings sent on each side of the selection")
        form.addRow("Context:", self.context_spin)
        self.endpoint_edit = QLineEdit(options)
        self.endpoint_edit.setObjectName("hifill_endpoint_edit")
        self.endpoint_edit.setToolTip("ZeroMQ address of the backend, e.g. tcp://127.0.0.1:47631")
        form.addRow("Backend:", self.endpoint_edit)
        self.keys_edit = QLineEdit(options)
        self.keys_edit.setObjectName("hifill_keys_edit")
        self.keys_edit.setPlaceholderText("none (backend on this computer)")
        self.keys_edit.setToolTip(
            "For a backend on another machine: the keys folder made there with"
            " 'python -m backend keys client NAME' and copied to this computer"
        )
        form.addRow("Keys folder:", self.keys_edit)
        layout.addWidget(options)
        layout.addStretch(1)
        self.setWidget(root)

        self._show_settings(self.controller.settings)
        self._show_status(self.controller.status)
        self._show_busy(self.controller.busy)

        self.fill_button.clicked.connect(self.controller.fill)
        self.cancel_button.clicked.connect(self.controller.cancel)
        self.output_combo.currentIndexChanged.connect(self._store_settings)
        self.context_spin.valueChanged.connect(self._store_settings)
        self.endpoint_edit.editingFinished.connect(self._store_settings)
        self.keys_edit.editingFinished.connect(self._store_settings)
        self.controller.status_changed.connect(self._show_status)
        self.controller.progress_changed.connect(self._show_progress)
        self.controller.busy_changed.connect(self._show_busy)
        self.controller.notice_changed.connect(self._show_message)
        self.controller.settings_changed.connect(self._show_settings)

        self._timer = QTimer(self)
        self._timer.setInterval(STATUS_REFRESH_MS)
        self._timer.timeout.connect(self._refresh_if_visible)
        self._timer.start()
        QTimer.singleShot(0, self.controller.refresh_status)

    def canvasChanged(self, canvas: object) -> None:  # required by DockWidget
        pass

    # --- controller -> widgets ----------------------------------------------------------------------
    def _show_status(self, status: BackendStatus) -> None:
        colour = _STATE_COLOURS[status.state]
        self.status_label.setText(f"Backend: <b style='color:{colour}'>{status.state.value}</b>")
        detail = status.detail if status.state is not BackendState.NOT_RUNNING else ""
        if status.state is BackendState.CONNECTED:
            weights = str(status.info.get("weights") or "")
            precision = str(status.info.get("precision") or "")
            extra = ", ".join(part for part in (precision, weights.rsplit("/", 1)[-1]) if part)
            detail = f"{status.detail}" + (f" ({extra})" if extra else "")
        if detail:
            self.status_label.setText(self.status_label.text() + f"<br>{_escape(detail)}")
        self.status_label.setToolTip(status.detail)

    def _show_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(round(max(0.0, min(1.0, fraction)) * 1000))
        self.progress.setFormat(f"{message} %p%" if message else "")

    def _show_busy(self, busy: bool) -> None:
        self.fill_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _show_message(self, text: str, level: MessageLevel) -> None:
        self.message_label.setStyleSheet(_MESSAGE_STYLES.get(level, ""))
        self.message_label.setText(text)

    def _show_settings(self, settings: FillSettings) -> None:
        widgets = (self.output_combo, self.context_spin, self.endpoint_edit, self.keys_edit)
        for widget in widgets:
            widget.blockSignals(True)
        self.output_combo.setCurrentIndex(self.output_combo.findData(settings.output_mode.value))
        self.context_spin.setValue(-1 if settings.context_px is None else settings.context_px)
        self.endpoint_edit.setText(settings.endpoint)
        self.keys_edit.setText(settings.keys_folder)
        for widget in widgets:
            widget.blockSignals(False)

    # --- widgets -> controller ----------------------------------------------------------------------
    def _store_settings(self, *_: object) -> None:
        context = self.context_spin.value()
        endpoint = self.endpoint_edit.text().strip() or self.controller.settings.endpoint
        self.controller.update_settings(
            FillSettings(
                output_mode=OutputMode(self.output_combo.currentData()),
                context_px=None if context < 0 else context,
                endpoint=endpoint,
                keys_folder=self.keys_edit.text().strip(),
            )
        )

    def _refresh_if_visible(self) -> None:
        if self.isVisible():
            self.controller.refresh_status()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

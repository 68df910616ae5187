"""The Qt names the plug-in uses, from PyQt5 (Krita 5) or PyQt6 (Krita 6). Import Qt only from here."""

from __future__ import annotations

try:
    from PyQt5 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt5"
except ImportError:  # Krita 6
    from PyQt6 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt6"

pyqtSignal = QtCore.pyqtSignal
QObject = QtCore.QObject
QTimer = QtCore.QTimer

QComboBox = QtWidgets.QComboBox
QFormLayout = QtWidgets.QFormLayout
QGroupBox = QtWidgets.QGroupBox
QHBoxLayout = QtWidgets.QHBoxLayout
QLabel = QtWidgets.QLabel
QLineEdit = QtWidgets.QLineEdit
QProgressBar = QtWidgets.QProgressBar
QPushButton = QtWidgets.QPushButton
QSpinBox = QtWidgets.QSpinBox
QVBoxLayout = QtWidgets.QVBoxLayout
QWidget = QtWidgets.QWidget

# Scoped enum spelling: the only one PyQt6 accepts, and valid in PyQt5 >= 5.11.
TEXT_SELECTABLE = QtCore.Qt.TextInteractionFlag.TextSelectableByMouse

__all__ = [
    "QT_API",
    "TEXT_SELECTABLE",
    "QComboBox",
    "QFormLayout",
    "QGroupBox",
    "QHBoxLayout",
    "QLabel",
    "QLineEdit",
    "QObject",
    "QProgressBar",
    "QPushButton",
    "QSpinBox",
    "QTimer",
    "QVBoxLayout",
    "QWidget",
    "QtGui",
    "pyqtSignal",
]

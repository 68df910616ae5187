"""The Qt names the plug-in uses, from PyQt5 (Krita 5) or PyQt6 (Krita 6). Import Qt only from here."""

from __future__ import annotations

try:
    from PyQt5 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt5"
    QAction = QtWidgets.QAction
except ImportError:  # Krita 6
    from PyQt6 import QtCore, QtGui, QtWidgets

    QT_API = "PyQt6"
    QAction = QtGui.QAction

pyqtSignal = QtCore.pyqtSignal
QObject = QtCore.QObject
QTimer = QtCore.QTimer
QStandardPaths = QtCore.QStandardPaths
Qt = QtCore.Qt

QCheckBox = QtWidgets.QCheckBox
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

# Scoped enum spellings work in PyQt6 and in PyQt5 >= 5.11.
TEXT_SELECTABLE = Qt.TextInteractionFlag.TextSelectableByMouse
CACHE_LOCATION = QStandardPaths.StandardLocation.GenericCacheLocation

__all__ = [
    "CACHE_LOCATION",
    "QAction",
    "QCheckBox",
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
    "QStandardPaths",
    "QTimer",
    "QT_API",
    "QVBoxLayout",
    "QWidget",
    "Qt",
    "TEXT_SELECTABLE",
    "pyqtSignal",
]

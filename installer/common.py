"""Editor-neutral installation steps shared by installer/gimp.py and installer/krita.py.

Standard library only (install.py runs with whatever Python the user has). Beside this module:
installer/wheels.py (the editor's Python, pyzmq + msgpack wheels for it), installer/manifest.py
(Transaction, manifest, uninstall), installer/ini.py (kritarc edits). Here:

- `InstallOptions` / `resolve_editor_python`: the command line's choices, and the editor's Python.
- `run_for_output`, `windows_program_folders`, `roaming_appdata`, `macos_bundle_version`: what both
  editors' detection reads the same way; `install_each`, `uninstall_each`: the steps both editor
  modules take around their own install plan.
- `backend_config` / `add_support_modules`: record how to start the backend (`hifill-backend.json`
  next to the plug-in, read by shared_protocol.launcher) and ship `shared_protocol` with the plug-in.
"""

from __future__ import annotations

import json
import os
import platform
import plistlib
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.errors import InstallError, Log
from installer.manifest import Transaction, uninstall
from installer.wheels import PythonInfo, parse_python_version, probe_python
from shared_protocol.endpoints import DEFAULT_ENDPOINT  # standard library only, like this module
from shared_protocol.launcher import CONFIG_FILENAME

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- options shared by every editor module ---------------------------------------------------------------


@dataclass(frozen=True)
class InstallOptions:
    """Command-line choices passed to an editor module's install()/uninstall()/detect().

    profile: the editor's user folder to install into (GIMP: the folder holding plug-ins/, e.g.
    ~/.config/GIMP/3.0; Krita: the folder holding pykrita/ and whose kritarc to edit, as the editor
    module documents), None = find it. editor_python: the editor's Python to probe, None = find it.
    python_version: the editor's Python version when it cannot be run from here (then pyzmq/msgpack are
    assumed missing and vendored)."""

    dry_run: bool = False
    profile: Path | None = None
    backend_python: Path = field(default_factory=lambda: default_backend_python())
    vendor: str = "auto"
    editor_python: str | None = None
    python_version: str | None = None
    log: Log = print


def resolve_editor_python(options: InstallOptions, detected: Sequence[str] | None) -> PythonInfo:
    """The editor's Python: from --python-version, --editor-python, or the editor module's detection
    (`detected`, a command prefix); InstallError when none is known."""
    if options.python_version:
        return PythonInfo(
            version=parse_python_version(options.python_version),
            has_zmq=False,
            has_msgpack=False,
            description=f"Python {options.python_version} (given)",
        )
    command = [options.editor_python] if options.editor_python else detected
    if not command:
        raise InstallError(
            "Could not find the editor's Python; pass --editor-python PATH or --python-version X.Y."
        )
    return probe_python(command)


# --- finding editors, and the steps every editor module takes around its own plan ------------------------

Runner = Callable[[Sequence[str]], str | None]  # runs a command; its stdout, or None when it failed


def detection_inputs(
    env: Mapping[str, str] | None, system: str | None, home: Path | None
) -> tuple[Mapping[str, str], str, Path]:
    """What detection reads, with this computer's values for the ones not given (tests pass their own):
    the environment, platform.system() ("Linux", "Darwin", "Windows") and the home folder."""
    return (os.environ if env is None else env), (system or platform.system()), (home or Path.home())


def run_for_output(command: Sequence[str]) -> str | None:
    """stdout of `command`, or None when it cannot run or fails (detection never raises)."""
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def windows_program_folders(env: Mapping[str, str]) -> list[Path]:
    """Where Windows programs are installed: Program Files (both views) and the per-user Programs
    folder, each once, in that order."""
    local = env.get("LOCALAPPDATA")
    bases = [env.get("ProgramFiles"), env.get("ProgramW6432"), local and str(Path(local) / "Programs")]
    return [Path(base) for base in dict.fromkeys(b for b in bases if b)]


def roaming_appdata(env: Mapping[str, str], home: Path) -> Path:
    """%APPDATA% (…/AppData/Roaming), where GIMP and Krita keep their user folders on Windows."""
    return Path(env.get("APPDATA") or home / "AppData" / "Roaming")


def macos_bundle_version(app: Path) -> str | None:
    """CFBundleShortVersionString of a macOS application bundle, or None when it has no readable
    Info.plist."""
    try:
        with open(app / "Contents" / "Info.plist", "rb") as handle:
            info = plistlib.load(handle)
    except (OSError, plistlib.InvalidFileException):
        return None
    return str(info.get("CFBundleShortVersionString", ""))


@dataclass(frozen=True)
class InstallTarget:
    """One editor user folder to install the plug-in into, as an editor module describes it."""

    announcement: str  # logged first, e.g. "GIMP: GIMP 3.0 (/usr/bin/gimp-3.0) → …/plug-ins/hifill"
    manifest: Path
    plugin_folder: Path
    sandboxed: bool  # a Flatpak editor, which cannot start the backend itself
    plan: Callable[[Transaction], None]  # finds the editor's Python if needed, plans every write

    @classmethod
    def of(
        cls,
        editor_label: str,
        installation: Any,  # the editor module's installation found, or None for --profile alone
        where: str,
        manifest: Path,
        plugin_folder: Path,
        plan: Callable[[Transaction], None],
    ) -> InstallTarget:
        """The target for `installation` (its description and whether it can start the backend)."""
        described = installation.description if installation is not None else editor_label
        sandboxed = installation is not None and not installation.can_start_backend
        return cls(f"{editor_label}: {described} → {where}", manifest, plugin_folder, sandboxed, plan)


def install_each(
    editor: str,
    editor_label: str,
    targets: Sequence[InstallTarget],
    options: InstallOptions,
    not_found: str,
    closing_note: str = "",
) -> list[Path]:
    """Install into every target (InstallError `not_found` when there is none); returns the plug-in
    folders. Each target is one Transaction: planned, checked for foreign files, then written."""
    if not targets:
        raise InstallError(not_found)
    check_backend_python(options.backend_python, options.dry_run, options.log)
    installed = []
    for target in targets:
        options.log(target.announcement)
        tx = Transaction(editor, target.manifest, options.dry_run, options.log)
        target.plan(tx)
        tx.commit()
        if target.sandboxed:
            options.log(
                f"note: Flatpak {editor_label} cannot start programs outside its sandbox; start the "
                f"backend yourself before filling: {options.backend_python} -m backend serve"
            )
        if closing_note:
            options.log(closing_note)
        installed.append(target.plugin_folder)
    return installed


def uninstall_each(
    places: Iterable[tuple[Path, Path]], editor_label: str, options: InstallOptions
) -> list[Path]:
    """Uninstall every (manifest, plug-in folder) of `places` whose manifest exists; returns the plug-in
    folders handled, and says so when there was none."""
    removed = []
    for manifest, plugin_folder in places:
        if manifest.is_file():
            uninstall(manifest, options.dry_run, options.log)
            removed.append(plugin_folder)
    if not removed:
        options.log(f"{editor_label}: no HiFill plug-in installed by install.py was found")
    return removed


# --- what every plug-in ships -----------------------------------------------------------------------------


def default_backend_python(repo_root: Path = REPO_ROOT) -> Path:
    """This repository's virtual environment Python (.venv), where the backend's torch lives."""
    if os.name == "nt":
        return repo_root / ".venv" / "Scripts" / "python.exe"
    return repo_root / ".venv" / "bin" / "python"


def backend_config(
    backend_python: Path, repo_root: Path = REPO_ROOT, endpoint: str = DEFAULT_ENDPOINT
) -> dict[str, object]:
    """The JSON written next to a plug-in: how to start the backend. The launcher appends
    `--endpoint <endpoint the user chose>` to `command` and runs it in `cwd`."""
    return {
        "format": 1,
        "command": [str(backend_python), "-m", "backend", "serve"],
        "cwd": str(repo_root),
        "endpoint": endpoint,
    }


def check_backend_python(backend_python: Path, dry_run: bool, log: Log) -> None:
    """Warn (dry run) or fail when the backend's Python does not exist."""
    if Path(backend_python).exists():
        return
    message = (
        f"The backend Python {backend_python} does not exist; create the venv "
        f"(python -m venv .venv && .venv/bin/pip install -e .) or pass --backend-python."
    )
    if dry_run:
        log(f"warning: {message}")
    else:
        raise InstallError(message)


def add_support_modules(
    tx: Transaction, destination: Path, backend_python: Path, repo_root: Path = REPO_ROOT
) -> None:
    """Plan shared_protocol/ (protocol, client and the backend launcher, shared_protocol.launcher) and
    hifill-backend.json inside `destination`."""
    tx.add_tree(repo_root / "shared_protocol", destination / "shared_protocol")
    config = json.dumps(backend_config(backend_python, repo_root), indent=1) + "\n"
    tx.add_bytes(destination / CONFIG_FILENAME, config.encode("utf-8"))

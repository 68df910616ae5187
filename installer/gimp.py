"""Install the HiFill plug-in into GIMP 3.x (Linux native and Flatpak, macOS, Windows).

GIMP loads `<user dir>/plug-ins/<name>/<name>.py` (executable, folder name = file name) where the user
dir is per minor version: ~/.config/GIMP/3.0, ~/.config/GIMP/3.2, …; $GIMP3_DIRECTORY overrides it.
What lands in plug-ins/hifill/:

    hifill.py                 the GIMP glue (executable)
    hifill_gimp/              the plug-in's testable modules (region maths, formats, dialog-free logic)
    shared_protocol/          the wire protocol, the client and the backend launcher
    hifill-backend.json       how to start the backend (this checkout's .venv Python)
    vendor/                   pyzmq + msgpack wheels for GIMP's Python, only when it lacks them
    hifill-install-manifest.json
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from installer import common, wheels
from installer.common import InstallOptions, Runner, run_for_output
from installer.manifest import MANIFEST_FILENAME, Transaction
from installer.wheels import PythonInfo

EDITOR = "gimp"
PLUGIN_NAME = "hifill"  # GIMP wants plug-ins/<name>/<name>.py
FLATPAK_ID = "org.gimp.GIMP"
PLUGIN_SOURCE = common.REPO_ROOT / "plugin_gimp"
# Binary names by preference; the version is read from `--version`.
LINUX_BINARIES = ("gimp-console-3.2", "gimp-3.2", "gimp-console-3.0", "gimp-3.0", "gimp-console", "gimp")


@dataclass(frozen=True)
class GimpInstallation:
    """One GIMP 3 found on this computer."""

    kind: str  # "linux", "flatpak", "macos", "windows"
    version: tuple[int, int]  # (3, 0), (3, 2): names the user folder
    user_dir: Path  # e.g. ~/.config/GIMP/3.0 (plug-ins/ goes inside)
    python_command: tuple[str, ...] | None  # how to run GIMP's Python, None when unknown
    description: str

    @property
    def can_start_backend(self) -> bool:
        """A Flatpak GIMP cannot run programs outside its sandbox."""
        return self.kind != "flatpak"


def parse_gimp_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from `gimp --version` output ('GNU Image Manipulation Program version 3.0.4'),
    `flatpak info` output ('Version: 3.0.4') or a bare '3.2.0'; None if absent."""
    if not text:
        return None
    match = re.search(r"(?:version|Version:)\s*(\d+)\.(\d+)", text) or re.fullmatch(
        r"\s*(\d+)\.(\d+)\S*\s*", text
    )
    return (int(match.group(1)), int(match.group(2))) if match else None


def user_dir_for(root: Path, version: tuple[int, int]) -> Path:
    """GIMP's per-minor-version user folder below `root` (…/GIMP)."""
    return root / f"{version[0]}.{version[1]}"


def python_from_interp_files(folders: Sequence[Path]) -> str | None:
    """GIMP maps script extensions to interpreters in lib/gimp/3.0/interpreters/*.interp
    (`python3=/path`, `python=/path`); the first Python named there, if any."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for interp in sorted(folder.glob("*.interp")):
            for line in interp.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.strip().partition("=")
                if key in ("python3", "python") and value and not key.startswith("#"):
                    return value.strip()
    return None


def _installation(
    kind: str, version: tuple[int, int], root: Path, python: str | None, where: Path
) -> GimpInstallation:
    """A GIMP found at `where` whose user folders are below `root` (…/GIMP), run with `python`."""
    command = (python,) if python else None
    return GimpInstallation(
        kind, version, user_dir_for(root, version), command, f"GIMP {version[0]}.{version[1]} ({where})"
    )


def _interp_folders(prefix: Path) -> list[Path]:
    return [
        prefix / "lib" / "gimp" / "3.0" / "interpreters",
        *sorted(prefix.glob("lib/*/gimp/3.0/interpreters")),
    ]


def _linux_installations(env: Mapping[str, str], home: Path, run: Runner) -> list[GimpInstallation]:
    found: list[GimpInstallation] = []
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    for name in LINUX_BINARIES:
        executable = shutil.which(name, path=env.get("PATH"))
        version = parse_gimp_version(run([executable, "--version"])) if executable else None
        if executable and version and version[0] == 3:
            binary = Path(executable).resolve()
            prefix = binary.parent.parent
            python = python_from_interp_files(_interp_folders(prefix))
            if python is None:
                # Debian & co. run plug-ins through their `#!/usr/bin/env python3` line.
                system_python = prefix / "bin" / "python3"
                python = (
                    str(system_python)
                    if system_python.exists()
                    else shutil.which("python3", path=env.get("PATH"))
                )
            found.append(_installation("linux", version, config_home / "GIMP", python, binary))
            break
    flatpak = shutil.which("flatpak", path=env.get("PATH"))
    if flatpak:
        version = parse_gimp_version(run([flatpak, "info", FLATPAK_ID]))
        if version and version[0] == 3:
            root = home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP"
            found.append(
                GimpInstallation(
                    "flatpak",
                    version,
                    user_dir_for(root, version),
                    (flatpak, "run", "--command=python3", FLATPAK_ID),
                    f"GIMP {version[0]}.{version[1]} (Flatpak {FLATPAK_ID})",
                )
            )
    return found


def _macos_installations(home: Path, applications: Sequence[Path] | None = None) -> list[GimpInstallation]:
    found = []
    folders = applications or [Path("/Applications"), home / "Applications"]
    for app in sorted(p for folder in folders for p in folder.glob("GIMP*.app")):
        version = parse_gimp_version(common.macos_bundle_version(app))
        if not version or version[0] != 3:
            continue
        resources = app / "Contents" / "Resources"
        python = python_from_interp_files(_interp_folders(resources))
        if python is None:
            candidates = sorted((app / "Contents" / "MacOS").glob("python3*"))
            python = str(candidates[0]) if candidates else None
        found.append(
            _installation("macos", version, home / "Library" / "Application Support" / "GIMP", python, app)
        )
    return found


def _windows_installations(env: Mapping[str, str], home: Path) -> list[GimpInstallation]:
    found = []
    appdata = common.roaming_appdata(env, home)
    for base in common.windows_program_folders(env):
        for folder in sorted(base.glob("GIMP 3*")):
            versions = [
                parse_gimp_version(m.group(1))
                for exe in (folder / "bin").glob("gimp*-3.*.exe")
                if (m := re.search(r"-(3\.\d+)\.exe$", exe.name))
            ]
            versions = [v for v in versions if v]
            if not versions:
                continue
            version = max(versions)
            python = python_from_interp_files(_interp_folders(folder))
            if python is None and (folder / "bin" / "python.exe").exists():
                python = str(folder / "bin" / "python.exe")
            found.append(_installation("windows", version, appdata / "GIMP", python, folder))
    return found


def find_installations(
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    home: Path | None = None,
    run: Runner = run_for_output,
) -> list[GimpInstallation]:
    """Every GIMP 3 installation found for this user. $GIMP3_DIRECTORY replaces the user folder."""
    env, system, home = common.detection_inputs(env, system, home)
    if system == "Linux":
        found = _linux_installations(env, home, run)
    elif system == "Darwin":
        found = _macos_installations(home)
    elif system == "Windows":
        found = _windows_installations(env, home)
    else:
        found = []
    override = env.get("GIMP3_DIRECTORY")
    if override:
        path = Path(override) if Path(override).is_absolute() else home / override
        found = [
            GimpInstallation(i.kind, i.version, path, i.python_command, i.description) for i in found[:1]
        ]
    return found


def plugin_dir(user_dir: Path) -> Path:
    """Where the plug-in goes inside a GIMP user folder."""
    return Path(user_dir) / "plug-ins" / PLUGIN_NAME


def manifest_path(user_dir: Path) -> Path:
    return plugin_dir(user_dir) / MANIFEST_FILENAME


def plan(tx: Transaction, user_dir: Path, python: PythonInfo | None, options: InstallOptions) -> None:
    """Plan every file of the GIMP plug-in into `tx` (python None: vendoring decided elsewhere)."""
    target = plugin_dir(user_dir)
    tx.add_file(PLUGIN_SOURCE / "hifill.py", target / "hifill.py", executable=True)
    tx.add_tree(PLUGIN_SOURCE / "hifill_gimp", target / "hifill_gimp")
    common.add_support_modules(tx, target, options.backend_python)
    if python is not None:
        wheels.add_vendored_packages(tx, target / wheels.VENDOR_DIRNAME, python, options.vendor, options.log)


def _targets(options: InstallOptions) -> list[tuple[Path, GimpInstallation | None]]:
    if options.profile is not None:
        found = find_installations()
        return [(Path(options.profile), found[0] if found else None)]
    return [(i.user_dir, i) for i in find_installations()]


def detect(options: InstallOptions) -> bool:
    """True when a GIMP 3 (or --profile) is there to install into."""
    return bool(_targets(options))


def _editor_python(options: InstallOptions, installation: GimpInstallation | None) -> PythonInfo | None:
    """GIMP's Python as vendoring needs it (None with --vendor never)."""
    if options.vendor == "never":
        return None
    found = installation.python_command if installation is not None else None
    return common.resolve_editor_python(options, list(found) if found else None)


def install(options: InstallOptions) -> list[Path]:
    """Install into every GIMP 3 found (or into --profile); returns the plug-in folders."""
    targets = []
    for user_dir, installation in _targets(options):

        def plan_target(
            tx: Transaction, user_dir: Path = user_dir, found: GimpInstallation | None = installation
        ) -> None:
            plan(tx, user_dir, _editor_python(options, found), options)

        folder, manifest = plugin_dir(user_dir), manifest_path(user_dir)
        target = common.InstallTarget.of("GIMP", installation, str(folder), manifest, folder, plan_target)
        targets.append(target)
    return common.install_each(
        EDITOR,
        "GIMP",
        targets,
        options,
        not_found="No GIMP 3 found. Install GIMP 3, or pass --profile with GIMP's user folder "
        "(e.g. ~/.config/GIMP/3.0) and --python-version of GIMP's Python.",
    )


def _all_user_dirs(home: Path | None = None) -> list[Path]:
    home = home or Path.home()
    roots = [
        Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP",
        home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP",
        home / "Library" / "Application Support" / "GIMP",
        common.roaming_appdata(os.environ, home) / "GIMP",
    ]
    dirs = [d for root in roots if root.is_dir() for d in sorted(root.glob("3.*"))]
    if os.environ.get("GIMP3_DIRECTORY"):
        dirs.append(Path(os.environ["GIMP3_DIRECTORY"]))
    return dirs


def uninstall(options: InstallOptions) -> list[Path]:
    """Remove the plug-in from --profile, or from every GIMP 3 user folder that has it."""
    user_dirs = [Path(options.profile)] if options.profile is not None else _all_user_dirs()
    return common.uninstall_each([(manifest_path(d), plugin_dir(d)) for d in user_dirs], "GIMP", options)

"""Install the HiFill plug-in into Krita 5 (Linux native, AppImage and Flatpak, macOS, Windows).

Krita loads Python plug-ins from `<data dir>/pykrita/`: a `<name>.desktop` file
(ServiceTypes=Krita/PythonPlugin, X-KDE-Library=<name>) next to the package `<name>/`, and runs the
ones enabled in kritarc (`[python]`, `enable_<name>=true`). The data dir and kritarc per platform:

    Linux, AppImage  $XDG_DATA_HOME/krita (~/.local/share/krita)    $XDG_CONFIG_HOME/kritarc (~/.config)
    Flatpak          ~/.var/app/org.kde.krita/data/krita           ~/.var/app/org.kde.krita/config/kritarc
    macOS            ~/Library/Application Support/krita           ~/Library/Preferences/kritarc
    Windows          %APPDATA%\\krita                               %LOCALAPPDATA%\\kritarc

What lands in pykrita/ (enabled by `enable_hifill_krita=true`):

    hifill_krita.desktop                      the plug-in's registration
    hifill_krita/                             the plug-in (plugin_krita/hifill_krita: glue + testable
                                              modules, hifill_krita.action with the default shortcut)
    hifill_krita/support/shared_protocol/     the wire protocol, the client and the backend launcher
    hifill_krita/support/hifill-backend.json  how to start the backend
    hifill_krita/support/vendor/              pyzmq + msgpack for Krita's Python, only when it lacks them
    hifill_krita/hifill-install-manifest.json what install.py wrote (reinstall / --uninstall use it)

Earlier versions installed the package as pykrita/hifill/ (`enable_hifill`); installing removes what
that install wrote (by its manifest, restoring the kritarc key) and --uninstall removes either.

`--profile DIR` installs into DIR/pykrita (DIR is a Krita data dir such as ~/.local/share/krita) and
enables the plug-in in the kritarc that belongs to it: DIR/../../../config/kritarc for a Flatpak data
dir, otherwise the platform's usual kritarc. Krita's Python: the system python3.X that Krita links
(Linux packages), `flatpak run --command=python3` (Flatpak), the Python inside krita.app (macOS) or
Krita's folder (Windows); AppImages bundle Python 3.10 (Krita 5.2), which cannot be run from outside,
so pyzmq and msgpack are vendored for it. --editor-python / --python-version override all of this.
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
from installer.manifest import uninstall as uninstall_manifest
from installer.wheels import PythonInfo

EDITOR = "krita"
PACKAGE = "hifill_krita"  # the Python package Krita imports (X-KDE-Library of the .desktop file)
EARLIER_PACKAGE = "hifill"  # what install.py installed before; clashed with GIMP's hifill.py
FLATPAK_ID = "org.kde.krita"
PLUGIN_SOURCE = common.REPO_ROOT / "plugin_krita"
PACKAGE_SUFFIXES = (".py", ".action")
SUPPORT_DIRNAME = "support"
# Python bundled by Krita's own builds (AppImage, macOS, Windows) per Krita minor version.
BUNDLED_PYTHON = {(5, 0): (3, 8), (5, 1): (3, 10), (5, 2): (3, 10)}
APPIMAGE_FOLDERS = ("Applications", "Downloads", ".local/bin", "bin", "AppImages")


@dataclass(frozen=True)
class KritaInstallation:
    """One Krita found on this computer."""

    kind: str  # "linux", "appimage", "flatpak", "macos", "windows"
    data_dir: Path  # holds pykrita/
    kritarc: Path
    python_command: tuple[str, ...] | None  # how to run Krita's Python, None when it cannot be run
    python_version: tuple[int, int] | None  # known without running it (AppImage), else None
    description: str

    @property
    def pykrita(self) -> Path:
        return self.data_dir / "pykrita"

    @property
    def can_start_backend(self) -> bool:
        """A Flatpak Krita cannot run programs outside its sandbox."""
        return self.kind != "flatpak"


def parse_krita_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from 'krita 5.2.9', 'Version: 5.2.9', 'krita-5.2.9-x86_64.appimage' or '5.2.9'."""
    if not text:
        return None
    match = re.search(r"(?:krita[\s_-]+|Version:\s*|^\s*)(\d+)\.(\d+)", text, re.IGNORECASE)
    return (int(match.group(1)), int(match.group(2))) if match else None


def linked_python_version(library: Path) -> tuple[int, int] | None:
    """The libpython3.X a binary (e.g. Krita's kritapykrita plug-in) was linked against."""
    try:
        data = library.read_bytes()
    except OSError:
        return None
    match = re.search(rb"libpython3\.(\d+)", data) or re.search(rb"python3(\d+)\.dll", data, re.IGNORECASE)
    return (3, int(match.group(1))) if match else None


def _xdg_dirs(env: Mapping[str, str], home: Path) -> tuple[Path, Path]:
    data_home = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return data_home / "krita", config_home / "kritarc"


def _linux_native(env: Mapping[str, str], home: Path, run: Runner) -> KritaInstallation | None:
    executable = shutil.which("krita", path=env.get("PATH"))
    if not executable:
        return None
    binary = Path(executable).resolve()
    prefix = binary.parent.parent
    version = None
    version_tool = shutil.which("krita_version", path=env.get("PATH"))
    if version_tool:
        version = parse_krita_version(run([version_tool]))
    if binary.suffix.lower() == ".appimage" or binary.name.lower().startswith("krita-"):
        return _appimage(binary, env, home)
    python = None
    for library in sorted(prefix.glob("lib*/**/kritaplugins/kritapykrita.so")):
        linked = linked_python_version(library)
        if linked is not None:
            candidate = prefix / "bin" / f"python{linked[0]}.{linked[1]}"
            python = str(candidate) if candidate.exists() else None
            break
    data_dir, kritarc = _xdg_dirs(env, home)
    label = f"Krita {version[0]}.{version[1]}" if version else "Krita"
    return KritaInstallation(
        "linux", data_dir, kritarc, (python,) if python else None, None, f"{label} ({binary})"
    )


def _appimage(path: Path, env: Mapping[str, str], home: Path) -> KritaInstallation:
    version = parse_krita_version(path.name)
    data_dir, kritarc = _xdg_dirs(env, home)
    python = BUNDLED_PYTHON.get(version) if version else None
    return KritaInstallation(
        "appimage", data_dir, kritarc, None, python or BUNDLED_PYTHON[(5, 2)], f"Krita AppImage ({path})"
    )


def _linux_installations(env: Mapping[str, str], home: Path, run: Runner) -> list[KritaInstallation]:
    found: list[KritaInstallation] = []
    native = _linux_native(env, home, run)
    if native is not None:
        found.append(native)
    else:
        images = sorted(
            (p for folder in APPIMAGE_FOLDERS for p in (home / folder).glob("[kK]rita*.[aA]pp[iI]mage")),
            key=lambda p: parse_krita_version(p.name) or (0, 0),
        )
        if images:
            found.append(_appimage(images[-1], env, home))
    flatpak = shutil.which("flatpak", path=env.get("PATH"))
    if flatpak and run([flatpak, "info", FLATPAK_ID]) is not None:
        sandbox = home / ".var" / "app" / FLATPAK_ID
        found.append(
            KritaInstallation(
                "flatpak",
                sandbox / "data" / "krita",
                sandbox / "config" / "kritarc",
                (flatpak, "run", "--command=python3", FLATPAK_ID),
                None,
                f"Krita (Flatpak {FLATPAK_ID})",
            )
        )
    return found


def _macos_installations(home: Path, applications: Sequence[Path] | None = None) -> list[KritaInstallation]:
    folders = applications or [Path("/Applications"), home / "Applications"]
    for app in sorted(p for folder in folders for p in folder.glob("[kK]rita*.app")):
        bundle_version = common.macos_bundle_version(app)
        if bundle_version is None:
            continue
        version = parse_krita_version(bundle_version)
        pythons = sorted(app.glob("Contents/Frameworks/Python.framework/Versions/3.*/bin/python3"))
        return [
            KritaInstallation(
                "macos",
                home / "Library" / "Application Support" / "krita",
                home / "Library" / "Preferences" / "kritarc",
                (str(pythons[-1]),) if pythons else None,
                None if pythons else BUNDLED_PYTHON.get(version or (5, 2), (3, 10)),
                f"Krita {'.'.join(map(str, version)) if version else ''} ({app})".replace("  ", " "),
            )
        ]
    return []


def _windows_installations(env: Mapping[str, str], home: Path) -> list[KritaInstallation]:
    appdata = common.roaming_appdata(env, home)
    local = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    for base in common.windows_program_folders(env):
        for folder in sorted(base.glob("Krita*")):
            if not (folder / "bin" / "krita.exe").exists():
                continue
            candidates = (folder / "python" / "python.exe", folder / "bin" / "python.exe")
            pythons = [p for p in candidates if p.exists()]
            dlls = sorted(folder.glob("**/python3*.dll"))
            version = next((v for d in dlls if (v := linked_python_version_from_name(d.name))), None)
            return [
                KritaInstallation(
                    "windows",
                    appdata / "krita",
                    local / "kritarc",
                    (str(pythons[0]),) if pythons else None,
                    None if pythons else (version or BUNDLED_PYTHON[(5, 2)]),
                    f"Krita ({folder})",
                )
            ]
    return []


def linked_python_version_from_name(name: str) -> tuple[int, int] | None:
    """python310.dll -> (3, 10)."""
    match = re.fullmatch(r"python3(\d+)\.dll", name, re.IGNORECASE)
    return (3, int(match.group(1))) if match else None


def find_installations(
    env: Mapping[str, str] | None = None,
    system: str | None = None,
    home: Path | None = None,
    run: Runner = run_for_output,
) -> list[KritaInstallation]:
    """Every Krita installation found for this user."""
    env, system, home = common.detection_inputs(env, system, home)
    if system == "Linux":
        return _linux_installations(env, home, run)
    if system == "Darwin":
        return _macos_installations(home)
    if system == "Windows":
        return _windows_installations(env, home)
    return []


def kritarc_for_profile(
    data_dir: Path, env: Mapping[str, str] | None = None, system: str | None = None, home: Path | None = None
) -> Path:
    """The kritarc that belongs to a Krita data dir given with --profile (see the module docstring)."""
    env, system, home = common.detection_inputs(env, system, home)
    data_dir = Path(data_dir)
    if data_dir.parent.name == "data" and data_dir.parent.parent.name == FLATPAK_ID:
        return data_dir.parent.parent / "config" / "kritarc"
    if system == "Darwin":
        return home / "Library" / "Preferences" / "kritarc"
    if system == "Windows":
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "kritarc"
    return _xdg_dirs(env, home)[1]


def package_dir(data_dir: Path, package: str = PACKAGE) -> Path:
    return Path(data_dir) / "pykrita" / package


def manifest_path(data_dir: Path, package: str = PACKAGE) -> Path:
    return package_dir(data_dir, package) / MANIFEST_FILENAME


def plan(
    tx: Transaction, data_dir: Path, kritarc: Path, python: PythonInfo | None, options: InstallOptions
) -> None:
    """Plan every file of the Krita plug-in and the kritarc switch into `tx`."""
    pykrita = Path(data_dir) / "pykrita"
    target = package_dir(data_dir)
    tx.add_file(PLUGIN_SOURCE / f"{PACKAGE}.desktop", pykrita / f"{PACKAGE}.desktop")
    tx.add_tree(PLUGIN_SOURCE / PACKAGE, target, suffixes=PACKAGE_SUFFIXES)
    support = target / SUPPORT_DIRNAME
    common.add_support_modules(tx, support, options.backend_python)
    if python is not None:
        wheels.add_vendored_packages(tx, support / wheels.VENDOR_DIRNAME, python, options.vendor, options.log)
    tx.set_ini_value(kritarc, "python", f"enable_{PACKAGE}", "true")


def remove_earlier_install(data_dir: Path, options: InstallOptions) -> None:
    """Remove what an earlier install.py wrote as pykrita/hifill/ (its manifest lists it; the kritarc
    key enable_hifill is restored), so that Krita does not load the plug-in twice."""
    earlier = manifest_path(data_dir, EARLIER_PACKAGE)
    if earlier.is_file():
        options.log(f"the plug-in is now pykrita/{PACKAGE}; removing the earlier pykrita/{EARLIER_PACKAGE}")
        uninstall_manifest(earlier, options.dry_run, options.log)


def _targets(options: InstallOptions) -> list[tuple[Path, Path, KritaInstallation | None]]:
    found = find_installations()
    if options.profile is not None:
        return [(Path(options.profile), kritarc_for_profile(options.profile), found[0] if found else None)]
    return [(i.data_dir, i.kritarc, i) for i in found]


def detect(options: InstallOptions) -> bool:
    """True when a Krita (or --profile) is there to install into."""
    return bool(_targets(options))


def _editor_python(options: InstallOptions, installation: KritaInstallation | None) -> PythonInfo | None:
    if options.vendor == "never":
        return None
    if (
        not options.python_version
        and not options.editor_python
        and installation is not None
        and installation.python_command is None
        and installation.python_version is not None
    ):
        version = installation.python_version
        options.log(
            f"Krita's bundled Python cannot be run from here; assuming Python {version[0]}."
            f"{version[1]} (pass --python-version if it differs)"
        )
        return PythonInfo(
            version=version,
            has_zmq=False,
            has_msgpack=False,
            description=f"bundled Python {version[0]}.{version[1]}",
        )
    detected = list(installation.python_command) if installation and installation.python_command else None
    return common.resolve_editor_python(options, detected)


def install(options: InstallOptions) -> list[Path]:
    """Install into every Krita found (or into --profile); returns the plug-in folders."""
    targets = []
    for data_dir, kritarc, installation in _targets(options):

        def plan_target(
            tx: Transaction,
            data_dir: Path = data_dir,
            kritarc: Path = kritarc,
            found: KritaInstallation | None = installation,
        ) -> None:
            python = _editor_python(options, found)  # first: it may fail, and nothing is removed then
            remove_earlier_install(data_dir, options)
            plan(tx, data_dir, kritarc, python, options)

        folder, manifest = package_dir(data_dir), manifest_path(data_dir)
        where = f"{folder} (enabled in {kritarc})"
        targets.append(common.InstallTarget.of("Krita", installation, where, manifest, folder, plan_target))
    return common.install_each(
        EDITOR,
        "Krita",
        targets,
        options,
        not_found="No Krita found. Install Krita 5, or pass --profile with Krita's data folder "
        "(e.g. ~/.local/share/krita) and --python-version of Krita's Python.",
        closing_note="Restart Krita; the panel is under Settings › Dockers › HiFill.",
    )


def _all_data_dirs(home: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    home = home or Path.home()
    candidates = [
        _xdg_dirs(env, home)[0],
        home / ".var" / "app" / FLATPAK_ID / "data" / "krita",
        home / "Library" / "Application Support" / "krita",
        common.roaming_appdata(env, home) / "krita",
    ]
    return list(dict.fromkeys(candidates))


def uninstall(options: InstallOptions) -> list[Path]:
    """Remove the plug-in from --profile, or from every Krita data dir that has it (kritarc restored)."""
    data_dirs = [Path(options.profile)] if options.profile is not None else _all_data_dirs()
    places = [(manifest_path(d, p), package_dir(d, p)) for d in data_dirs for p in (PACKAGE, EARLIER_PACKAGE)]
    return common.uninstall_each(places, "Krita", options)

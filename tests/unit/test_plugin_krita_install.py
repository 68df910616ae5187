"""install.py krita: folders per platform, kritarc editing, idempotence, foreign files, uninstall.

Installs run install.py as a real process into temporary profiles (HOME / XDG variables point there).
"""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from installer import krita  # noqa: E402
from installer.common import InstallOptions  # noqa: E402
from installer.ini import ini_get  # noqa: E402
from installer.manifest import MANIFEST_FILENAME, Transaction  # noqa: E402

KRITARC = "[General]\nShowSplash=false\n\n[python]\nenable_batch_exporter=true\n\n[theme]\nTheme=Krita dark\n"


def run_install(home: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    command = [
        sys.executable,
        str(REPO / "install.py"),
        "krita",
        "--profile",
        str(home / "data" / "krita"),
        "--editor-python",
        sys.executable,
        "--backend-python",
        sys.executable,
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text(KRITARC)
    other = tmp_path / "data" / "krita" / "pykrita" / "other_plugin"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("# someone else's plug-in\n")
    return tmp_path


def test_install_is_complete_idempotent_and_uninstall_leaves_no_trace(home: Path) -> None:
    before = tree(home)
    pykrita = home / "data" / "krita" / "pykrita"
    first = run_install(home)
    assert first.returncode == 0, first.stderr
    package = pykrita / "hifill_krita"
    desktop = (pykrita / "hifill_krita.desktop").read_text()
    assert desktop == (REPO / "plugin_krita" / "hifill_krita.desktop").read_text()
    assert "X-KDE-Library=hifill_krita\n" in desktop
    for name in ("__init__.py", "docker.py", "pixels.py", "hifill_krita.action"):
        assert (package / name).is_file(), name
    support = package / "support"
    shipped = ("__init__.py", "client.py", "launcher.py", "regions.py", "settings.py")
    for name in shipped:
        assert (support / "shared_protocol" / name).is_file(), name
    assert not (support / "hifill_backend_launch.py").exists()  # the launcher ships in shared_protocol
    assert not (support / "vendor").exists()  # this Python has pyzmq and msgpack
    config = json.loads((support / "hifill-backend.json").read_text())
    assert config["command"] == [sys.executable, "-m", "backend", "serve"] and config["cwd"] == str(REPO)
    kritarc = (home / "config" / "kritarc").read_text()
    assert ini_get(kritarc, "python", "enable_hifill_krita") == "true"
    assert kritarc.replace("enable_hifill_krita=true\n", "") == KRITARC  # everything else kept byte for byte

    installed = tree(home)
    second = run_install(home)
    assert second.returncode == 0, second.stderr
    assert tree(home) == installed

    removed = run_install(home, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert tree(home) == before
    assert not package.exists() and (pykrita / "other_plugin").is_dir()


def _earlier_install(home: Path) -> None:
    """What install.py wrote before the package was renamed: pykrita/hifill.desktop, pykrita/hifill/
    (with hifill_backend_launch.py) and enable_hifill=true, listed in pykrita/hifill's manifest."""
    pykrita = home / "data" / "krita" / "pykrita"
    tx = Transaction("krita", pykrita / "hifill" / MANIFEST_FILENAME, log=lambda message: None)
    tx.add_bytes(pykrita / "hifill.desktop", b"[Desktop Entry]\nX-KDE-Library=hifill\n")
    tx.add_bytes(pykrita / "hifill" / "__init__.py", b"# the plug-in as it was\n")
    tx.add_bytes(pykrita / "hifill" / "support" / "hifill_backend_launch.py", b"# the launcher as it was\n")
    tx.set_ini_value(home / "config" / "kritarc", "python", "enable_hifill", "true")
    tx.commit()


def test_installing_replaces_an_install_of_the_earlier_package_name(home: Path) -> None:
    before = tree(home)
    _earlier_install(home)
    pykrita = home / "data" / "krita" / "pykrita"
    assert "enable_hifill=true" in (home / "config" / "kritarc").read_text()
    dry = run_install(home, "--dry-run")
    assert dry.returncode == 0 and "removing the earlier pykrita/hifill" in dry.stdout
    assert (pykrita / "hifill" / "__init__.py").is_file()  # a dry run removes nothing
    installed = run_install(home)
    assert installed.returncode == 0, installed.stderr
    assert not (pykrita / "hifill").exists() and not (pykrita / "hifill.desktop").exists()
    kritarc = (home / "config" / "kritarc").read_text()
    assert ini_get(kritarc, "python", "enable_hifill") is None  # restored: absent, as before
    assert ini_get(kritarc, "python", "enable_hifill_krita") == "true"
    assert (pykrita / "hifill_krita" / "__init__.py").is_file()
    removed = run_install(home, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert tree(home) == before


def test_uninstall_also_removes_an_install_of_the_earlier_package_name(home: Path) -> None:
    before = tree(home)
    _earlier_install(home)
    removed = run_install(home, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert tree(home) == before


def test_dry_run_changes_nothing(home: Path) -> None:
    before = tree(home)
    dry = run_install(home, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would write" in dry.stdout and "would set enable_hifill_krita=true" in dry.stdout
    assert tree(home) == before


def test_foreign_files_are_never_overwritten(home: Path) -> None:
    pykrita = home / "data" / "krita" / "pykrita"
    (pykrita / "hifill_krita.desktop").write_text("[Desktop Entry]\nName=Someone else's hifill\n")
    before = tree(home)
    refused = run_install(home)
    assert refused.returncode == 1
    assert "Refusing to overwrite" in refused.stderr and "hifill_krita.desktop" in refused.stderr
    assert tree(home) == before


def test_a_file_changed_after_install_is_kept(home: Path) -> None:
    assert run_install(home).returncode == 0
    edited = home / "data" / "krita" / "pykrita" / "hifill_krita" / "pixels.py"
    edited.write_text(edited.read_text() + "# local change\n")
    assert run_install(home).returncode == 1  # not ours any more: not replaced
    removed = run_install(home, "--uninstall")
    assert removed.returncode == 0 and "kept" in removed.stdout and edited.exists()


def test_version_and_python_detection_helpers(tmp_path: Path) -> None:
    assert krita.parse_krita_version("krita 5.2.9") == (5, 2)
    assert krita.parse_krita_version("Version: 5.1.5") == (5, 1)
    assert krita.parse_krita_version("krita-5.2.6-x86_64.appimage") == (5, 2)
    assert krita.parse_krita_version("no version") is None
    library = tmp_path / "kritapykrita.so"
    library.write_bytes(b"\x7fELF...libpython3.13.so.1.0\x00...")
    assert krita.linked_python_version(library) == (3, 13)
    assert krita.linked_python_version_from_name("python310.dll") == (3, 10)


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def test_linux_native_krita_uses_the_python_it_links(tmp_path: Path) -> None:
    prefix = tmp_path / "usr"
    _executable(prefix / "bin" / "krita", "#!/bin/sh\n")
    _executable(prefix / "bin" / "krita_version", "#!/bin/sh\necho 'krita 5.2.9'\n")
    _executable(prefix / "bin" / "python3.13", "#!/bin/sh\n")
    plugin = prefix / "lib" / "x86_64-linux-gnu" / "kritaplugins" / "kritapykrita.so"
    plugin.parent.mkdir(parents=True)
    plugin.write_bytes(b"...libpython3.13.so.1.0...")
    env = {"PATH": str(prefix / "bin"), "XDG_DATA_HOME": str(tmp_path / "xdg-data")}
    (found,) = krita.find_installations(env, "Linux", tmp_path / "home")
    assert found.kind == "linux" and found.description.startswith("Krita 5.2")
    assert found.python_command == (str(prefix / "bin" / "python3.13"),)
    assert found.pykrita == tmp_path / "xdg-data" / "krita" / "pykrita"
    assert found.kritarc == tmp_path / "home" / ".config" / "kritarc"


def test_linux_appimage_and_flatpak(tmp_path: Path) -> None:
    home = tmp_path / "home"
    image = home / "Applications" / "krita-5.2.9-x86_64.appimage"
    _executable(image, "")
    _executable(tmp_path / "bin" / "flatpak", "#!/bin/sh\n[ \"$1\" = info ] && echo 'Version: 5.2.9'\n")
    found = krita.find_installations({"PATH": str(tmp_path / "bin")}, "Linux", home)
    appimage, flatpak = found
    assert appimage.kind == "appimage" and appimage.python_command is None
    assert appimage.python_version == (3, 10) and appimage.pykrita == home / ".local/share/krita/pykrita"
    assert flatpak.kind == "flatpak" and not flatpak.can_start_backend
    assert flatpak.pykrita == home / ".var/app/org.kde.krita/data/krita/pykrita"
    assert flatpak.kritarc == home / ".var/app/org.kde.krita/config/kritarc"
    assert flatpak.python_command[-2:] == ("--command=python3", "org.kde.krita")
    assert krita.kritarc_for_profile(flatpak.data_dir, {}, "Linux", home) == flatpak.kritarc
    logged: list[str] = []
    info = krita._editor_python(InstallOptions(log=logged.append), appimage)
    assert info.version == (3, 10) and info.needs_vendoring and "assuming Python 3.10" in logged[0]


def test_macos_and_windows_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = tmp_path / "Applications" / "krita.app"
    (app / "Contents").mkdir(parents=True)
    (app / "Contents" / "Info.plist").write_bytes(plistlib.dumps({"CFBundleShortVersionString": "5.2.9"}))
    python = app / "Contents/Frameworks/Python.framework/Versions/3.10/bin/python3"
    _executable(python, "")
    (mac,) = krita._macos_installations(home, [tmp_path / "Applications"])
    assert mac.pykrita == home / "Library/Application Support/krita/pykrita"
    assert mac.kritarc == home / "Library/Preferences/kritarc" and mac.python_command == (str(python),)

    program_files = tmp_path / "Program Files"
    _executable(program_files / "Krita (x64)" / "bin" / "krita.exe", "")
    (program_files / "Krita (x64)" / "bin" / "python310.dll").write_bytes(b"")
    env = {
        "ProgramFiles": str(program_files),
        "APPDATA": str(tmp_path / "Roaming"),
        "LOCALAPPDATA": str(tmp_path / "Local"),
    }
    (windows,) = krita._windows_installations(env, home)
    assert windows.pykrita == tmp_path / "Roaming" / "krita" / "pykrita"
    assert windows.kritarc == tmp_path / "Local" / "kritarc"
    assert windows.python_command is None and windows.python_version == (3, 10)

"""install.py and installer/: manifested installs, foreign files, dry runs, INI edits, wheels, GIMP
detection on Linux / Flatpak / macOS / Windows layouts, and install.py itself on a fresh profile."""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.editor_fakes import run_without_pyzmq_and_msgpack

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import install  # noqa: E402
from installer import common, gimp, ini, wheels  # noqa: E402
from installer.errors import InstallError  # noqa: E402
from installer.manifest import MANIFEST_FILENAME, Transaction, uninstall  # noqa: E402
from shared_protocol import launcher  # noqa: E402
from shared_protocol.endpoints import DEFAULT_ENDPOINT  # noqa: E402


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below `folder` with its content (None for folders)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _transaction(target: Path, files: dict[str, bytes], dry_run: bool = False, log=None) -> Transaction:
    tx = Transaction("gimp", target / MANIFEST_FILENAME, dry_run=dry_run, log=log or (lambda m: None))
    for name, data in files.items():
        tx.add_bytes(target / name, data, executable=name.endswith(".py"))
    return tx


# -------------------------------------------------------------------------------------------- INI files


def test_ini_set_edits_only_its_line():
    text = "[General]\nx=1\n\n[python]\nenable_other=true\n\n[Zeta]\ny=2\n"
    updated = ini.ini_set(text, "python", "enable_hifill", "true")
    assert updated == "[General]\nx=1\n\n[python]\nenable_other=true\nenable_hifill=true\n\n[Zeta]\ny=2\n"
    assert ini.ini_get(updated, "python", "enable_hifill") == "true"
    assert ini.ini_set(updated, "python", "enable_hifill", "false").count("enable_hifill=false") == 1
    assert ini.ini_set(updated, "python", "enable_hifill", None) == text
    assert ini.ini_set("", "python", "k", "v") == "[python]\nk=v\n"
    assert ini.ini_set("a=1", "python", "k", "v") == "a=1\n\n[python]\nk=v\n"
    assert ini.ini_set("[python]\r\nz=1\r\n", "python", "k", "v") == "[python]\r\nz=1\r\nk=v\r\n"


def test_ini_remove_section_if_empty():
    assert ini.ini_remove_section_if_empty("[a]\nx=1\n\n[python]\n", "python") == "[a]\nx=1\n"
    assert ini.ini_remove_section_if_empty("[python]\nk=v\n", "python") == "[python]\nk=v\n"


# ---------------------------------------------------------------------------------------- transactions


def test_install_writes_files_and_a_manifest_and_reinstall_changes_nothing(tmp_path):
    target = tmp_path / "profile" / "plug-ins" / "hifill"
    manifest = _transaction(target, {"hifill.py": b"#!x\n", "pkg/mod.py": b"m", "data.json": b"{}"}).commit()
    assert (target / "hifill.py").stat().st_mode & 0o777 == 0o755
    assert (target / "data.json").stat().st_mode & 0o777 == 0o644
    assert set(manifest.files) == {str(target / n) for n in ("hifill.py", "pkg/mod.py", "data.json")}
    assert set(manifest.dirs) == {
        str(tmp_path / "profile"),
        str(tmp_path / "profile" / "plug-ins"),
        str(target),
        str(target / "pkg"),
    }
    before = _snapshot(tmp_path)
    _transaction(target, {"hifill.py": b"#!x\n", "pkg/mod.py": b"m", "data.json": b"{}"}).commit()
    assert _snapshot(tmp_path) == before


def test_uninstall_removes_exactly_what_was_installed(tmp_path):
    (tmp_path / "plug-ins").mkdir()
    (tmp_path / "plug-ins" / "other").mkdir()
    (tmp_path / "plug-ins" / "other" / "other.py").write_text("someone else's")
    before = _snapshot(tmp_path)
    target = tmp_path / "plug-ins" / "hifill"
    _transaction(target, {"hifill.py": b"#!x\n", "pkg/mod.py": b"m"}).commit()
    (target / "pkg" / "__pycache__").mkdir()  # what the editor's Python leaves behind
    (target / "pkg" / "__pycache__" / "mod.cpython-313.pyc").write_bytes(b"\0")
    assert uninstall(target / MANIFEST_FILENAME, log=lambda m: None)
    assert _snapshot(tmp_path) == before
    assert not uninstall(target / MANIFEST_FILENAME, log=lambda m: None)


def test_foreign_files_are_never_overwritten(tmp_path):
    target = tmp_path / "hifill"
    target.mkdir()
    (target / "hifill.py").write_text("a user's own plug-in")
    with pytest.raises(InstallError, match="not created by install.py"):
        _transaction(target, {"hifill.py": b"ours"}).commit()
    assert (target / "hifill.py").read_text() == "a user's own plug-in"
    assert not (target / MANIFEST_FILENAME).exists()


def test_changed_files_count_as_foreign_and_survive_uninstall(tmp_path):
    target = tmp_path / "hifill"
    _transaction(target, {"hifill.py": b"ours", "keep.py": b"k"}).commit()
    (target / "hifill.py").write_text("edited by the user")
    with pytest.raises(InstallError, match="did not install"):
        _transaction(target, {"hifill.py": b"ours v2", "keep.py": b"k"}).commit()
    assert (target / "hifill.py").read_text() == "edited by the user"
    messages: list[str] = []
    uninstall(target / MANIFEST_FILENAME, log=messages.append)
    assert (target / "hifill.py").read_text() == "edited by the user"
    assert not (target / "keep.py").exists()
    assert any("kept" in m and "hifill.py" in m for m in messages)


def test_files_no_longer_shipped_are_removed_on_reinstall(tmp_path):
    target = tmp_path / "hifill"
    _transaction(target, {"a.py": b"a", "old/b.py": b"b"}).commit()
    manifest = _transaction(target, {"a.py": b"a2"}).commit()
    assert not (target / "old").exists()
    assert (target / "a.py").read_bytes() == b"a2"
    assert list(manifest.files) == [str(target / "a.py")]


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path):
    messages: list[str] = []
    target = tmp_path / "hifill"
    _transaction(target, {"hifill.py": b"x"}, dry_run=True, log=messages.append).commit()
    assert list(tmp_path.iterdir()) == []
    assert any(m.startswith("would write") and "hifill.py" in m for m in messages)
    _transaction(target, {"hifill.py": b"x"}).commit()
    before = _snapshot(tmp_path)
    uninstall(target / MANIFEST_FILENAME, dry_run=True, log=messages.append)
    assert _snapshot(tmp_path) == before


def test_ini_values_are_restored_on_uninstall(tmp_path):
    kritarc = tmp_path / "kritarc"
    kritarc.write_text("[General]\nx=1\n\n[python]\nenable_hifill=false\n")
    original = kritarc.read_text()
    target = tmp_path / "pykrita" / "hifill"
    tx = _transaction(target, {"__init__.py": b""})
    tx.set_ini_value(kritarc, "python", "enable_hifill", "true")
    tx.commit()
    assert ini.ini_get(kritarc.read_text(), "python", "enable_hifill") == "true"
    uninstall(target / MANIFEST_FILENAME, log=lambda m: None)
    assert kritarc.read_text() == original
    fresh = tmp_path / "fresh-kritarc"
    tx = _transaction(target, {"__init__.py": b""})
    tx.set_ini_value(fresh, "python", "enable_hifill", "true")
    tx.commit()
    uninstall(target / MANIFEST_FILENAME, log=lambda m: None)
    assert not fresh.exists(), "a kritarc created only for the plug-in goes away again"


# -------------------------------------------------------------------------------------- Python, wheels


def test_probe_python_reports_version_and_packages():
    info = wheels.probe_python([sys.executable])
    assert info.version == sys.version_info[:2]
    assert info.has_zmq and info.has_msgpack and not info.needs_vendoring
    with pytest.raises(InstallError):
        wheels.probe_python(["/nonexistent/python3"])


@pytest.mark.parametrize(
    ("platform_name", "glibc", "expected"),
    [
        (
            "linux-x86_64",
            (2, 41),
            ["manylinux_2_41_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64"],
        ),
        ("linux-aarch64", (2, 17), ["manylinux_2_17_aarch64"]),
        ("macosx-11.0-arm64", None, ["macosx_11_0_arm64", "macosx_11_0_universal2"]),
        ("macosx-10.13-x86_64", None, ["macosx_11_0_x86_64", "macosx_11_0_universal2", "macosx_10_9_x86_64"]),
        ("win-amd64", None, ["win_amd64"]),
    ],
)
def test_wheel_platforms(platform_name, glibc, expected):
    assert wheels.wheel_platforms(platform_name, glibc) == expected


def test_wheel_platforms_refuse_the_unknown():
    with pytest.raises(InstallError):
        wheels.wheel_platforms("linux-x86_64", None)
    with pytest.raises(InstallError):
        wheels.wheel_platforms("sunos-5.11", None)


def test_unpacking_a_wheel(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/__init__.py", "x = 1\n")
        archive.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
        archive.writestr("demo-1.0.data/purelib/extra.py", "y = 2\n")
        archive.writestr("demo-1.0.data/scripts/tool", "#!/bin/sh\n")
    out = tmp_path / "out"
    wheels._unpack_wheel(wheel, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "demo-1.0.dist-info/METADATA",
        "demo/__init__.py",
        "extra.py",
    ]
    evil = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.py", "")
    with pytest.raises(InstallError):
        wheels._unpack_wheel(evil, tmp_path / "out2")


def test_the_config_written_is_the_one_the_launcher_reads(tmp_path):
    config = common.backend_config(Path("/venv/bin/python"), Path("/repo"))
    (tmp_path / launcher.CONFIG_FILENAME).write_text(json.dumps(config))
    loaded = launcher.load_config(tmp_path)
    assert loaded.command == ("/venv/bin/python", "-m", "backend", "serve") and loaded.cwd == "/repo"
    assert loaded.endpoint == DEFAULT_ENDPOINT


def test_install_py_and_the_installer_need_no_pyzmq_or_msgpack():
    """install.py runs with whatever Python the user has; it reads shared_protocol's endpoint and
    launcher config name, which must not pull in pyzmq or msgpack."""
    code = "import install, installer.gimp, installer.krita\nprint(install.EDITORS)\n"
    assert run_without_pyzmq_and_msgpack(REPO, code) == "('gimp', 'krita')"


# ----------------------------------------------------------------------------------------- GIMP finding


def test_parse_gimp_version():
    assert gimp.parse_gimp_version("GNU Image Manipulation Program version 3.0.4\n") == (3, 0)
    assert gimp.parse_gimp_version("Ref: app/org.gimp.GIMP\n      Version: 3.2.1\n") == (3, 2)
    assert gimp.parse_gimp_version("3.2.0") == (3, 2)
    assert gimp.parse_gimp_version("") is None and gimp.parse_gimp_version("nothing") is None


def test_python_from_interp_files(tmp_path):
    folder = tmp_path / "lib" / "gimp" / "3.0" / "interpreters"
    folder.mkdir(parents=True)
    (folder / "default.interp").write_text("# comment\n#python=/no\n")
    (folder / "pygimp.interp").write_text("python=C:\\GIMP\\bin\\python.exe\n:Python:E::py::python:\n")
    assert gimp.python_from_interp_files([folder]) == "C:\\GIMP\\bin\\python.exe"
    assert gimp.python_from_interp_files([tmp_path / "missing"]) is None


def _fake_program(folder: Path, name: str, output: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    program.chmod(0o755)


def test_find_native_and_flatpak_gimp_on_linux(tmp_path):
    prefix = tmp_path / "usr"
    _fake_program(prefix / "bin", "gimp-console-3.2", "GNU Image Manipulation Program version 3.2.0")
    _fake_program(prefix / "bin", "python3", "")
    _fake_program(tmp_path / "flatpak-bin", "flatpak", "Ref: app/org.gimp.GIMP/x86_64/stable\nVersion: 3.0.6")
    home = tmp_path / "home"
    env = {"PATH": f"{prefix / 'bin'}:{tmp_path / 'flatpak-bin'}", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    found = gimp.find_installations(env=env, system="Linux", home=home)
    assert [(i.kind, i.version) for i in found] == [("linux", (3, 2)), ("flatpak", (3, 0))]
    assert found[0].user_dir == tmp_path / "cfg" / "GIMP" / "3.2"
    assert found[0].python_command == (str(prefix / "bin" / "python3"),)
    assert found[1].user_dir == home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    assert found[1].python_command[-2:] == ("--command=python3", "org.gimp.GIMP")
    assert not found[1].can_start_backend
    override = gimp.find_installations(env=dict(env, GIMP3_DIRECTORY="gimp-test"), system="Linux", home=home)
    assert [i.user_dir for i in override] == [home / "gimp-test"]


def test_gimp_2_is_not_gimp_3(tmp_path):
    _fake_program(tmp_path / "bin", "gimp", "GNU Image Manipulation Program version 2.10.34")
    assert gimp.find_installations(env={"PATH": str(tmp_path / "bin")}, system="Linux", home=tmp_path) == []


def test_find_gimp_on_windows(tmp_path):
    program = tmp_path / "Programs" / "GIMP 3" / "bin"
    program.mkdir(parents=True)
    (program / "gimp-3.2.exe").write_bytes(b"")
    (program / "gimp-console-3.2.exe").write_bytes(b"")
    (program / "python.exe").write_bytes(b"")
    env = {"LOCALAPPDATA": str(tmp_path), "APPDATA": str(tmp_path / "Roaming")}
    found = gimp.find_installations(env=env, system="Windows", home=tmp_path)
    assert [(i.kind, i.version, i.user_dir) for i in found] == [
        ("windows", (3, 2), tmp_path / "Roaming" / "GIMP" / "3.2")
    ]
    assert found[0].python_command == (str(program / "python.exe"),)


def test_find_gimp_on_macos(tmp_path):
    app = tmp_path / "Applications" / "GIMP.app" / "Contents"
    (app / "MacOS").mkdir(parents=True)
    (app / "MacOS" / "python3.12").write_bytes(b"")
    with open(app / "Info.plist", "wb") as handle:
        plistlib.dump({"CFBundleShortVersionString": "3.0.4"}, handle)
    found = gimp.find_installations(env={}, system="Darwin", home=tmp_path)
    assert [(i.kind, i.version) for i in found] == [("macos", (3, 0))]
    assert found[0].user_dir == tmp_path / "Library" / "Application Support" / "GIMP" / "3.0"
    assert found[0].python_command == (str(app / "MacOS" / "python3.12"),)


# ------------------------------------------------------------------------------------- install.py itself


def _install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "install.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _gimp_args(profile: Path) -> list[str]:
    """install.py gimp into `profile`, for Python 3.13 without vendoring, with this Python as backend's."""
    return ["gimp", "--profile", str(profile), "--python-version", "3.13", "--vendor", "never"] + [
        "--backend-python",
        sys.executable,
    ]


def test_install_py_gimp_into_a_profile_idempotent_dry_run_and_uninstall(tmp_path):
    profile = tmp_path / "GIMP" / "3.0"
    profile.mkdir(parents=True)
    (profile / "gimprc").write_text("(user settings)\n")
    before = _snapshot(tmp_path)
    common_args = _gimp_args(profile)

    dry = _install(*common_args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would write" in dry.stdout and "dry run: nothing was changed" in dry.stdout
    assert _snapshot(tmp_path) == before

    first = _install(*common_args)
    assert first.returncode == 0, first.stderr
    plugin = profile / "plug-ins" / "hifill"
    assert os.access(plugin / "hifill.py", os.X_OK)
    shipped = {str(p.relative_to(plugin)) for p in plugin.rglob("*.py")}
    assert {
        "hifill.py",
        "hifill_gimp/plan.py",
        "hifill_gimp/procedure.py",
        "hifill_gimp/worker.py",
        "shared_protocol/client.py",
        "shared_protocol/launcher.py",
        "shared_protocol/regions.py",
        "shared_protocol/settings.py",
    } <= shipped
    assert "hifill_backend_launch.py" not in shipped  # the launcher ships inside shared_protocol
    config = json.loads((plugin / "hifill-backend.json").read_text())
    assert config["command"] == [sys.executable, "-m", "backend", "serve"] and config["cwd"] == str(REPO)
    installed = _snapshot(tmp_path)

    again = _install(*common_args)
    assert again.returncode == 0, again.stderr
    assert _snapshot(tmp_path) == installed

    removed = _install("gimp", "--profile", str(profile), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert _snapshot(tmp_path) == before


def test_install_py_refuses_a_foreign_plugin_folder(tmp_path):
    plugin = tmp_path / "plug-ins" / "hifill"
    plugin.mkdir(parents=True)
    (plugin / "hifill.py").write_text("another HiFill")
    result = _install(*_gimp_args(tmp_path))
    assert result.returncode == 1
    assert "not created by install.py" in result.stderr
    assert (plugin / "hifill.py").read_text() == "another HiFill"


def test_install_py_argument_errors(tmp_path):
    assert _install("all", "--profile", str(tmp_path)).returncode == 2
    missing = _install(
        "gimp",
        "--profile",
        str(tmp_path),
        "--python-version",
        "3.13",
        "--backend-python",
        str(tmp_path / "no-python"),
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_editor_module_is_reported():
    with pytest.raises(InstallError, match="no installer for paintshop"):
        install.load_editor_module("paintshop")

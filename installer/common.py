"""Editor-neutral installation machinery shared by installer/gimp.py and installer/krita.py.

Standard library only (install.py runs with whatever Python the user has). The pieces:

- `probe_python` / `PythonInfo`: which Python an editor runs plug-ins with, and whether it already
  has pyzmq and msgpack.
- `vendor_wheels`: download binary wheels of pyzmq + msgpack matching that Python
  (`pip download --only-binary=:all: --python-version X.Y --platform ...`) and unpack them into a
  staging folder, to be installed into the plug-in's `vendor/` folder.
- `Transaction`: plans file writes and INI edits, refuses to touch files it did not install, writes a
  manifest (`hifill-install-manifest.json`) listing exactly what it created, and honours dry-run.
  `uninstall` removes exactly what a manifest lists (plus Python's own `__pycache__` inside folders
  the install created) and restores INI values.
- `run_for_output`, `windows_program_folders`, `roaming_appdata`, `macos_bundle_version`: what both
  editors' detection reads the same way; `install_each`, `uninstall_each`: the steps both editor
  modules take around their own install plan.
- `backend_config` / `add_support_modules`: record how to start the backend
  (`hifill-backend.json` next to the plug-in) and ship `shared_protocol` plus the backend launcher
  (`hifill_backend_launch.py`) with the plug-in.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import plistlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "hifill"
MANIFEST_FILENAME = "hifill-install-manifest.json"
# The backend config is read by installer/backend_launch.py (shipped as hifill_backend_launch.py).
CONFIG_FILENAME = "hifill-backend.json"
LAUNCHER_MODULE = "hifill_backend_launch"
VENDOR_DIRNAME = "vendor"
VENDOR_PACKAGES: tuple[str, ...] = ("pyzmq", "msgpack")
# Same value as shared_protocol.DEFAULT_ENDPOINT (checked by tests/test_install.py); duplicated because
# install.py must run without pyzmq/msgpack installed.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:47631"
MANIFEST_FORMAT = 1

Log = Callable[[str], None]


class InstallError(Exception):
    """An installation problem described in a sentence for the user; install.py prints it and exits 1."""


# --- the editor's Python -------------------------------------------------------------------------------

_PROBE_SCRIPT = (
    "import json, platform, sys, sysconfig\n"
    "def has(name):\n"
    "    try:\n"
    "        __import__(name)\n"
    "        return True\n"
    "    except Exception:\n"
    "        return False\n"
    "print(json.dumps({'version': list(sys.version_info[:2]), 'platform': sysconfig.get_platform(),\n"
    "    'libc': list(platform.libc_ver()), 'executable': sys.executable,\n"
    "    'zmq': has('zmq'), 'msgpack': has('msgpack')}))\n"
)


@dataclass(frozen=True)
class PythonInfo:
    """What install.py knows about the Python an editor runs plug-ins with."""

    version: tuple[int, int]
    has_zmq: bool
    has_msgpack: bool
    # sysconfig.get_platform() of that Python ("linux-x86_64", "macosx-11.0-arm64", "win-amd64"), or
    # None when only the version is known (then wheels are chosen for the machine running install.py).
    platform: str | None = None
    glibc: tuple[int, int] | None = None
    description: str = ""

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def needs_vendoring(self) -> bool:
        return not (self.has_zmq and self.has_msgpack)


def probe_python(command: Sequence[str], timeout_s: float = 60.0) -> PythonInfo:
    """Run `command -c <probe>` (e.g. ["/usr/bin/python3"] or a `flatpak run --command=python3 ...`
    prefix) and report its version, platform and whether pyzmq and msgpack import."""
    try:
        completed = subprocess.run(
            [*command, "-c", _PROBE_SCRIPT], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InstallError(f"Could not run the editor's Python ({' '.join(command)}): {error}.") from error
    if completed.returncode != 0:
        raise InstallError(
            f"The editor's Python ({' '.join(command)}) failed: {completed.stderr.strip()[-400:]}"
        )
    try:
        data = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as error:
        raise InstallError(f"Unexpected answer from the editor's Python ({' '.join(command)}).") from error
    libc_name, libc_version = data["libc"]
    glibc = _parse_version(libc_version) if libc_name == "glibc" else None
    return PythonInfo(
        version=(int(data["version"][0]), int(data["version"][1])),
        has_zmq=bool(data["zmq"]),
        has_msgpack=bool(data["msgpack"]),
        platform=str(data["platform"]),
        glibc=glibc,
        description=" ".join(command),
    )


def _parse_version(text: str) -> tuple[int, int] | None:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def parse_python_version(text: str) -> tuple[int, int]:
    """'3.13' -> (3, 13); raises InstallError for anything else."""
    version = _parse_version(text.strip())
    if version is None or version[0] != 3 or "." not in text:
        raise InstallError(f"'{text}' is not a Python version like 3.13.")
    return version


def wheel_platforms(python_platform: str | None = None, glibc: tuple[int, int] | None = None) -> list[str]:
    """pip `--platform` tags for a Python whose sysconfig platform is `python_platform` (default: the
    machine running install.py). pip also accepts older manylinux/macOS tags for the ones given.
    Linux deliberately avoids a lone `manylinux2014` tag: it makes pip pick an old pyzmq."""
    if python_platform is None:
        python_platform = _this_platform()
        if glibc is None and sys.platform.startswith("linux"):
            libc_name, libc_version = platform.libc_ver()
            glibc = _parse_version(libc_version) if libc_name == "glibc" else None
    if python_platform.startswith("linux-"):
        machine = python_platform.split("-", 1)[1]
        if glibc is None:
            raise InstallError(
                "The editor's Python does not use glibc (musl?); install pyzmq and msgpack for it by hand."
            )
        tags = [f"manylinux_{glibc[0]}_{glibc[1]}_{machine}"] if glibc >= (2, 28) else []
        tags += [f"manylinux_2_28_{machine}"] if glibc >= (2, 28) else []
        tags += [f"manylinux_2_17_{machine}"] if glibc >= (2, 17) else []
        return list(dict.fromkeys(tags))
    if python_platform.startswith("macosx-"):
        _, release, machine = python_platform.split("-", 2)
        major = int(release.split(".")[0])
        machines = ["arm64", "universal2"] if machine in ("arm64", "universal2") else ["x86_64", "universal2"]
        tags = [f"macosx_{max(major, 11)}_0_{m}" for m in machines]
        if machine == "x86_64":
            tags.append("macosx_10_9_x86_64")
        return tags
    if python_platform in ("win-amd64", "win-arm64", "win32"):
        return [{"win-amd64": "win_amd64", "win-arm64": "win_arm64", "win32": "win32"}[python_platform]]
    raise InstallError(f"No pyzmq/msgpack wheels are known for platform '{python_platform}'.")


def _this_platform() -> str:
    import sysconfig

    return sysconfig.get_platform()


def vendor_wheels(
    staging: Path,
    python: PythonInfo,
    packages: Sequence[str] = VENDOR_PACKAGES,
    pip_command: Sequence[str] | None = None,
) -> list[str]:
    """Download binary wheels of `packages` for `python` and unpack them into `staging` (empty folder).
    Returns the wheel file names. Raises InstallError with pip's complaint when no wheel fits."""
    pip = list(pip_command) if pip_command else [sys.executable, "-m", "pip"]
    platforms = wheel_platforms(python.platform, python.glibc)
    with tempfile.TemporaryDirectory(prefix="hifill-wheels-") as download_dir:
        command = [
            *pip,
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python.version_text,
            "--implementation",
            "cp",
            "--dest",
            download_dir,
        ]
        for tag in platforms:
            command += ["--platform", tag]
        command += list(packages)
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise InstallError(
                f"Could not download {', '.join(packages)} for Python {python.version_text} "
                f"({', '.join(platforms)}): {completed.stderr.strip()[-600:]}"
            )
        wheels = sorted(Path(download_dir).glob("*.whl"))
        found = {wheel.name.split("-")[0].lower().replace("_", "-") for wheel in wheels}
        missing = [name for name in packages if name.lower() not in found]
        if missing:
            raise InstallError(f"pip did not deliver wheels for {', '.join(missing)}.")
        for wheel in wheels:
            _unpack_wheel(wheel, staging)
        return [wheel.name for wheel in wheels]


def _unpack_wheel(wheel: Path, target: Path) -> None:
    """Unpack a wheel the way an installer would for pure/platlib content (no scripts, no data)."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            parts = Path(name).parts
            if member.is_dir() or not parts:
                continue
            if parts[0].endswith(".data"):
                # purelib/platlib payloads go to the top; scripts/headers/data are not needed in an editor.
                if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
                    parts = parts[2:]
                else:
                    continue
            if ".." in parts or Path(name).is_absolute():
                raise InstallError(f"Refusing a wheel entry outside its folder: {name} in {wheel.name}.")
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)


# --- INI files (kritarc and friends), edited line by line so nothing else in them changes -------------


def ini_get(text: str, section: str, key: str) -> str | None:
    """Value of `key` in `[section]` of INI `text`, or None."""
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
        elif current == section and "=" in stripped and stripped.split("=", 1)[0].strip() == key:
            return stripped.split("=", 1)[1].strip()
    return None


def ini_has_section(text: str, section: str) -> bool:
    """True when INI `text` has a `[section]` header."""
    return any(line.strip() == f"[{section}]" for line in text.splitlines())


def ini_remove_section_if_empty(text: str, section: str) -> str:
    """`text` without `[section]` when that section holds no key (blank lines around it go too)."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.strip() != f"[{section}]":
            continue
        end = index + 1
        while end < len(lines) and not lines[end].strip():
            end += 1
        if end < len(lines) and not lines[end].strip().startswith("["):
            return text  # the section still holds keys (or comments)
        start = index
        while start > 0 and not lines[start - 1].strip():
            start -= 1
        return "".join(lines[:start] + lines[end:])
    return text


def ini_set(text: str, section: str, key: str, value: str | None) -> str:
    """`text` with `key=value` in `[section]` (added if missing); value None removes the key.
    Every other line is kept byte for byte."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    section_start = None
    section_end = len(lines)
    key_index = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section_start is not None and section_end == len(lines):
                section_end = index
            if stripped[1:-1] == section and section_start is None:
                section_start = index
        elif (
            section_start is not None
            and section_end == len(lines)
            and "=" in stripped
            and stripped.split("=", 1)[0].strip() == key
        ):
            key_index = index
    if value is None:
        if key_index is not None:
            del lines[key_index]
        return "".join(lines)
    entry = f"{key}={value}{newline}"
    if key_index is not None:
        lines[key_index] = entry
    elif section_start is not None:
        insert_at = section_end
        while insert_at > section_start + 1 and not lines[insert_at - 1].strip():
            insert_at -= 1
        lines.insert(insert_at, entry)
    else:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        if lines and lines[-1].strip():
            lines.append(newline)
        lines += [f"[{section}]{newline}", entry]
    return "".join(lines)


# --- manifest-backed transactions ------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Manifest:
    """What one install created. Paths are absolute. A file maps to the hashes it may have (one after a
    finished install; old and new while an install is in progress, so a crash never orphans files)."""

    editor: str
    files: dict[str, list[str]] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    # INI edits: {"path", "section", "key", "value", "previous" (None: the key was absent),
    # "added_section", "created_file"}.
    ini: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_FORMAT:
                raise InstallError(f"{path} has an unknown format; remove the plug-in by hand.")
            return cls(
                editor=data["editor"],
                files={k: list(v) for k, v in data["files"].items()},
                dirs=list(data["dirs"]),
                ini=list(data.get("ini", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InstallError(f"{path} is damaged ({error}); remove the plug-in by hand.") from error

    def dump(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": MANIFEST_FORMAT,
                    "editor": self.editor,
                    "files": self.files,
                    "dirs": self.dirs,
                    "ini": self.ini,
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        ).encode("utf-8")


def _write_atomic(path: Path, data: bytes, executable: bool) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
        os.chmod(temporary, 0o755 if executable else 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class Transaction:
    """Collects the files and INI edits of one install, checks them, then applies them.

    Rules: a destination that exists and is not in the previous manifest with an unchanged hash is
    foreign and stops the whole install before anything is written. Files of the previous install that
    the new one no longer ships are removed. Folders are created as needed and recorded when created.
    The manifest itself lives at `manifest_path` (inside the plug-in's own folder).
    """

    def __init__(self, editor: str, manifest_path: Path, dry_run: bool = False, log: Log = print) -> None:
        self.editor = editor
        self.manifest_path = Path(manifest_path)
        self.dry_run = dry_run
        self.log = log
        self._files: dict[Path, tuple[bytes, bool]] = {}
        self._ini: list[tuple[Path, str, str, str]] = []

    # planning
    def add_bytes(self, destination: Path, data: bytes, executable: bool = False) -> None:
        destination = Path(os.path.abspath(destination))
        if destination == Path(os.path.abspath(self.manifest_path)):
            raise InstallError(f"{destination} is reserved for the install manifest.")
        self._files[destination] = (data, executable)

    def add_file(self, source: Path, destination: Path, executable: bool = False) -> None:
        self.add_bytes(destination, Path(source).read_bytes(), executable)

    def add_tree(self, source: Path, destination: Path, suffixes: Iterable[str] | None = (".py",)) -> None:
        """Every file below `source` (only those ending in `suffixes`, None = all), skipping caches."""
        wanted = tuple(suffixes) if suffixes is not None else None
        for path in sorted(Path(source).rglob("*")):
            relative = path.relative_to(source)
            if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            if wanted is not None and not path.name.endswith(wanted):
                continue
            self.add_file(path, Path(destination) / relative)

    def set_ini_value(self, path: Path, section: str, key: str, value: str) -> None:
        self._ini.append((Path(os.path.abspath(path)), section, key, value))

    @property
    def planned_files(self) -> list[Path]:
        return sorted(self._files)

    # applying
    def commit(self) -> Manifest:
        """Check for foreign files, then write everything (or only log it in dry-run)."""
        previous = Manifest.load(self.manifest_path)
        if previous is not None and previous.editor != self.editor:
            raise InstallError(f"{self.manifest_path} belongs to a {previous.editor} install.")
        if (
            previous is None
            and self.manifest_path.parent.exists()
            and any(self.manifest_path.parent.iterdir())
        ):
            raise InstallError(
                f"{self.manifest_path.parent} exists and was not created by install.py; move it away first."
            )
        owned = previous.files if previous else {}
        conflicts = [str(path) for path in self._files if not _is_ours_or_absent(path, owned)]
        if conflicts:
            raise InstallError(
                "Refusing to overwrite files that install.py did not install: " + ", ".join(sorted(conflicts))
            )
        created_dirs = list(previous.dirs) if previous else []
        needed_dirs = sorted(
            {parent for path in self._files for parent in _missing_parents(path)}
            | set(_missing_parents(self.manifest_path)),
            key=lambda p: len(p.parts),
        )
        for directory in needed_dirs:
            if directory.exists() and not directory.is_dir():
                raise InstallError(f"{directory} is a file where install.py needs a folder.")
        stale = [Path(p) for p in owned if Path(p) not in self._files]
        new_hashes = {str(path): hashlib.sha256(data).hexdigest() for path, (data, _) in self._files.items()}
        ini_records = self._plan_ini(previous)

        if self.dry_run:
            for directory in needed_dirs:
                self.log(f"would create folder {directory}")
            for path in self.planned_files:
                state = "replace" if path.exists() else "write"
                self.log(f"would {state} {path}" + (" (executable)" if self._files[path][1] else ""))
            for path in stale:
                self.log(f"would remove {path} (no longer shipped)")
            for record in ini_records:
                self.log(
                    f"would set {record['key']}={record['value']} in [{record['section']}] of "
                    f"{record['path']}"
                )
            self.log(f"would write {self.manifest_path}")
            return Manifest(self.editor, {k: [v] for k, v in new_hashes.items()}, created_dirs, ini_records)

        for directory in needed_dirs:
            directory.mkdir()
            created_dirs.append(str(directory))
        # In-progress manifest: old and new hashes, so a crash leaves every written file listed.
        pending = {k: list(v) for k, v in owned.items()}
        for key, digest in new_hashes.items():
            pending[key] = sorted(set(pending.get(key, [])) | {digest})
        _write_atomic(
            self.manifest_path, Manifest(self.editor, pending, created_dirs, ini_records).dump(), False
        )
        for path in self.planned_files:
            data, executable = self._files[path]
            _write_atomic(path, data, executable)
            self.log(f"wrote {path}")
        for path in stale:
            if path.exists():
                path.unlink()
                self.log(f"removed {path} (no longer shipped)")
        for record in ini_records:
            _apply_ini(Path(str(record["path"])), str(record["section"]), str(record["key"]), record["value"])
            self.log(f"set {record['key']}={record['value']} in {record['path']}")
        _remove_empty_created_dirs(created_dirs, keep={self.manifest_path.parent}, log=self.log)
        created_dirs = [d for d in created_dirs if Path(d).exists()]
        final = Manifest(self.editor, {k: [v] for k, v in new_hashes.items()}, created_dirs, ini_records)
        _write_atomic(self.manifest_path, final.dump(), False)
        return final

    def _plan_ini(self, previous: Manifest | None) -> list[dict]:
        earlier = {(r["path"], r["section"], r["key"]): r for r in (previous.ini if previous else [])}
        records = []
        for path, section, key, value in self._ini:
            known = earlier.get((str(path), section, key))
            if known is not None:
                record = dict(known, value=value)
            else:
                text = path.read_text(encoding="utf-8") if path.is_file() else None
                record = {
                    "path": str(path),
                    "section": section,
                    "key": key,
                    "value": value,
                    "previous": ini_get(text, section, key) if text is not None else None,
                    # So that uninstall also removes a section header / file that only the install added.
                    "added_section": text is None or not ini_has_section(text, section),
                    "created_file": text is None,
                }
            records.append(record)
        return records


def _is_ours_or_absent(path: Path, owned: dict[str, list[str]]) -> bool:
    if not path.exists() and not path.is_symlink():
        return True
    hashes = owned.get(str(path))
    return bool(hashes) and path.is_file() and not path.is_symlink() and sha256_of(path) in hashes


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    for parent in Path(path).parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _apply_ini(path: Path, section: str, key: str, value: str | None) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    updated = ini_set(text, section, key, value)
    if updated != text:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        if updated.strip() or path.is_file():
            path.write_text(updated, encoding="utf-8")


def _remove_empty_created_dirs(created: Iterable[str], keep: set[Path], log: Log) -> None:
    for directory in sorted((Path(d) for d in created), key=lambda p: len(p.parts), reverse=True):
        if directory in keep or not directory.is_dir():
            continue
        pycache = directory / "__pycache__"
        if pycache.is_dir() and all(p.suffix == ".pyc" for p in pycache.iterdir()):
            shutil.rmtree(pycache)
        if not any(directory.iterdir()):
            directory.rmdir()


def uninstall(manifest_path: Path, dry_run: bool = False, log: Log = print) -> bool:
    """Remove exactly what the manifest at `manifest_path` lists; restore INI values it changed.
    Files changed since install are kept (and named). Returns False when there was nothing installed."""
    manifest = Manifest.load(Path(manifest_path))
    if manifest is None:
        log(f"nothing to uninstall ({manifest_path} not found)")
        return False
    verb = "would remove" if dry_run else "removed"
    for name, hashes in sorted(manifest.files.items()):
        path = Path(name)
        if not path.exists():
            continue
        if not path.is_file() or sha256_of(path) not in hashes:
            log(f"kept {path}: it changed after install.py wrote it")
            continue
        if not dry_run:
            path.unlink()
        log(f"{verb} {path}")
    for record in manifest.ini:
        path = Path(str(record["path"]))
        section, key = str(record["section"]), str(record["key"])
        if not path.is_file() or ini_get(path.read_text(encoding="utf-8"), section, key) != record["value"]:
            log(f"kept {key} in {path}: it changed after install.py set it")
            continue
        log(f"{'would restore' if dry_run else 'restored'} {key} in {path}")
        if dry_run:
            continue
        text = ini_set(path.read_text(encoding="utf-8"), section, key, record["previous"])
        if record.get("added_section"):
            text = ini_remove_section_if_empty(text, section)
        if record.get("created_file") and not text.strip():
            path.unlink()
        else:
            path.write_text(text, encoding="utf-8")
    if dry_run:
        log(f"would remove {manifest_path} and the folders install.py created")
        return True
    Path(manifest_path).unlink()
    for directory in sorted((Path(d) for d in manifest.dirs), key=lambda p: len(p.parts), reverse=True):
        if not directory.is_dir():
            continue
        for pycache in directory.rglob("__pycache__"):
            if pycache.is_dir() and all(p.suffix == ".pyc" for p in pycache.iterdir()):
                shutil.rmtree(pycache)
        if any(directory.iterdir()):
            log(f"kept {directory}: it holds files install.py did not create")
        else:
            directory.rmdir()
            log(f"removed folder {directory}")
    return True


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
    """Plan shared_protocol/, hifill_backend_launch.py and hifill-backend.json inside `destination`."""
    tx.add_tree(repo_root / "shared_protocol", destination / "shared_protocol")
    tx.add_file(repo_root / "installer" / "backend_launch.py", destination / f"{LAUNCHER_MODULE}.py")
    config = json.dumps(backend_config(backend_python, repo_root), indent=1) + "\n"
    tx.add_bytes(destination / CONFIG_FILENAME, config.encode("utf-8"))


def add_vendored_packages(
    tx: Transaction,
    destination: Path,
    python: PythonInfo,
    mode: str,
    log: Log,
    pip_command: Sequence[str] | None = None,
) -> None:
    """Plan pyzmq + msgpack wheels for `python` under `destination` (the plug-in's vendor/ folder).
    mode: "auto" (only when the editor's Python lacks them), "always" or "never"."""
    if mode not in ("auto", "always", "never"):
        raise InstallError(f"Unknown vendoring mode '{mode}' (auto, always, never).")
    if mode == "never" or (mode == "auto" and not python.needs_vendoring):
        log(
            f"editor Python {python.version_text} has pyzmq and msgpack; nothing to vendor"
            if mode == "auto"
            else "not vendoring pyzmq/msgpack (--vendor never)"
        )
        return
    if tx.dry_run:
        log(
            f"would download {', '.join(VENDOR_PACKAGES)} wheels for Python {python.version_text} "
            f"({', '.join(wheel_platforms(python.platform, python.glibc))}) into {destination}"
        )
        return
    with tempfile.TemporaryDirectory(prefix="hifill-vendor-") as staging:
        names = vendor_wheels(Path(staging), python, pip_command=pip_command)
        log(f"vendoring {', '.join(names)}")
        tx.add_tree(Path(staging), destination, suffixes=None)

"""Manifest-backed installs: a Transaction plans file writes and INI edits, refuses to touch files it
did not install, writes a manifest (hifill-install-manifest.json) listing exactly what it created, and
honours dry-run; `uninstall` removes exactly what a manifest lists (plus Python's own __pycache__
inside folders the install created) and restores the INI values it changed.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from installer.errors import InstallError, Log
from installer.ini import apply_ini, ini_get, ini_has_section, ini_remove_section_if_empty, ini_set

MANIFEST_FILENAME = "hifill-install-manifest.json"
MANIFEST_FORMAT = 1


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
            apply_ini(Path(str(record["path"])), str(record["section"]), str(record["key"]), record["value"])
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

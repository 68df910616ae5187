"""Files the build writes: tab-separated tables (provenance, duplicates) and photos, replaced atomically
and only when their bytes change."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path


def write_tsv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, object]]) -> None:
    """Write rows as a tab-separated table with a header line, replacing the file atomically."""
    columns = tuple(columns)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row[column] for column in columns})
    os.replace(partial, path)


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a table written by ``write_tsv`` (empty when the file does not exist)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` unless the file already holds exactly it; True when something was written."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("." + path.name + ".partial")  # invisible to *.jpg / *.png scans
    partial.write_bytes(data)
    os.replace(partial, path)
    return True

"""The licence of each photo: from a Debian package's machine-readable copyright file (DEP-5) or a
wheel's METADATA."""

from __future__ import annotations

import functools
import re
from pathlib import Path


def parse_dep5(text: str) -> list[tuple[tuple[str, ...], str]] | None:
    """(file patterns, licence short name) per ``Files:`` stanza of a machine-readable copyright file.

    Returns None when the file is not in the Debian copyright format 1.0.
    """
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    field = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, field = {}, ""
        elif line[0] in " \t":
            if field:
                current[field] += "\n" + line.strip()
        elif ":" in line:
            field, value = line.split(":", 1)
            field = field.strip().lower()
            current[field] = value.strip()
    if current:
        paragraphs.append(current)
    if not paragraphs or "format" not in paragraphs[0]:
        return None
    stanzas = []
    for paragraph in paragraphs:
        if "files" in paragraph and "license" in paragraph:
            licence = paragraph["license"].split("\n", 1)[0].strip()
            stanzas.append((tuple(paragraph["files"].split()), licence))
    return stanzas


@functools.cache
def _dep5_pattern(pattern: str) -> re.Pattern[str]:
    """A DEP-5 file pattern as a regex: ``*`` matches anything (also ``/``), ``?`` one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def _pattern_strength(pattern: str, tails: list[str]) -> int | None:
    """How specifically a DEP-5 pattern names a file (None: not at all).

    Copyright files name paths in the upstream source tree while installed files live elsewhere
    (``data/themes/x/bg.jpg`` is installed as ``usr/share/sddm/themes/x/bg.jpg``), so the pattern
    and the path are compared by their trailing parts. The strength is the number of pattern parts
    that are not bare wildcards; dropping leading pattern parts must leave at least one such part.
    """
    parts = pattern.split("/")
    for skipped in range(len(parts)):
        kept = parts[skipped:]
        strength = sum(1 for part in kept if part.strip("*?"))
        if skipped and not strength:
            return None
        regex = _dep5_pattern("/".join(kept))
        if any(regex.fullmatch(tail) for tail in tails):
            return strength
    return None


def licence_for_path(stanzas: list[tuple[tuple[str, ...], str]], path: str) -> str | None:
    """Licence of the stanza that names the file most specifically (the last one among equals).

    ``path`` is the installed path; see ``_pattern_strength`` for how it is compared with the
    upstream paths of the copyright file.
    """
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    best: tuple[int, str] | None = None
    for patterns, licence in stanzas:
        strengths = [s for s in (_pattern_strength(p, tails) for p in patterns) if s is not None]
        if strengths and (best is None or max(strengths) >= best[0]):
            best = (max(strengths), licence)
    return best[1] if best else None


@functools.lru_cache(maxsize=64)
def _copyright_stanzas(copyright_file: Path) -> list[tuple[tuple[str, ...], str]] | None:
    return parse_dep5(copyright_file.read_text(encoding="utf-8", errors="replace"))


def debian_licence(unpacked: Path, package: str, path: str) -> str:
    """Licence of a file of a Debian package, from the package's own copyright file."""
    copyright_file = unpacked / "usr/share/doc" / package / "copyright"
    where = f"usr/share/doc/{package}/copyright"
    if not copyright_file.is_file():
        return "unknown (the package has no copyright file of its own)"
    stanzas = _copyright_stanzas(copyright_file)
    if stanzas is None:
        return f"see {where}"
    return licence_for_path(stanzas, path) or f"unknown (no stanza of {where} matches)"


def wheel_licence(unpacked: Path) -> str:
    """Licence declared in a wheel's METADATA (License-Expression, License or a classifier)."""
    for metadata in sorted(unpacked.glob("*.dist-info/METADATA")):
        fields: dict[str, str] = {}
        classifiers: list[str] = []
        for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            key, _, value = line.partition(":")
            if key == "Classifier" and value.strip().startswith("License ::"):
                classifiers.append(value.strip().split("::")[-1].strip())
            elif key in ("License-Expression", "License") and key not in fields:
                fields[key] = value.strip()
        for key in ("License-Expression", "License"):
            if fields.get(key):
                return fields[key]
        if classifiers:
            return classifiers[0]
    return "unknown (no licence in the wheel's METADATA)"

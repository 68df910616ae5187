"""INI files (kritarc and friends), edited line by line so that nothing else in them changes.

Standard library only.
"""

from __future__ import annotations

from pathlib import Path


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


def apply_ini(path: Path, section: str, key: str, value: str | None) -> None:
    """Set (value None: remove) `key` in `[section]` of the INI file at `path`, creating the file and
    its folder when needed; an unchanged file is not rewritten."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    updated = ini_set(text, section, key, value)
    if updated != text:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        if updated.strip() or path.is_file():
            path.write_text(updated, encoding="utf-8")

"""Pictures inside container files: whole JPEG streams in a blob (Enlightenment ``.edj``) and the files
of a Qt binary resource bundle (``.rcc``)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from lab.dataset.errors import DatasetBuildError

JPEG_SOI = b"\xff\xd8\xff"


def jpeg_stream_end(blob: bytes, start: int) -> int | None:
    """End offset (after EOI) of the JPEG stream starting at ``start``, or None if it is not whole.

    Walks the marker segments by their lengths and skips entropy-coded data (where 0xFF is followed
    by a stuffed 0x00 or a restart marker), so JPEG markers inside the payload do not end it early.
    """
    if blob[start : start + 3] != JPEG_SOI:
        return None
    pos = start + 2
    size = len(blob)
    while pos + 2 <= size:
        if blob[pos] != 0xFF:
            return None
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            return None
        (length,) = struct.unpack_from(">H", blob, pos + 2)
        if length < 2:
            return None
        pos += 2 + length
        if marker != 0xDA:  # not start-of-scan: the next marker follows directly
            continue
        # Entropy-coded data runs to the next 0xFF that starts a real marker.
        while True:
            pos = blob.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                return None
            following = blob[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
            elif following == 0xFF:
                pos += 1
            else:
                break
    return None


def find_jpeg_streams(blob: bytes) -> list[tuple[int, int]]:
    """(start, end) of every whole JPEG stream in a blob, outermost only (no embedded thumbnails)."""
    streams: list[tuple[int, int]] = []
    pos = blob.find(JPEG_SOI)
    while pos >= 0:
        end = jpeg_stream_end(blob, pos)
        if end is None:
            pos = blob.find(JPEG_SOI, pos + 1)
        else:
            streams.append((pos, end))
            pos = blob.find(JPEG_SOI, end)
    return streams


def largest_jpeg_stream(blob: bytes) -> tuple[int, bytes]:
    """The JPEG stream with the most pixels that decodes completely, with its offset in the blob.

    Enlightenment ``.edj`` wallpapers hold the same picture at several sizes as plain JPEG streams.
    """
    candidates: list[tuple[int, int, int]] = []
    for start, end in find_jpeg_streams(blob):
        try:
            with Image.open(io.BytesIO(blob[start:end])) as img:
                candidates.append((img.width * img.height, start, end))
        except (OSError, SyntaxError, ValueError):
            continue
    for _, start, end in sorted(candidates, reverse=True):
        data = blob[start:end]
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except (OSError, SyntaxError, ValueError):
            continue
        return start, data
    raise DatasetBuildError("no complete JPEG picture was found in the Enlightenment background file")


_RCC_DIRECTORY = 0x02
_RCC_ZLIB = 0x01
_RCC_ZSTD = 0x04


def read_rcc(blob: bytes) -> dict[str, bytes]:
    """All files of a Qt binary resource bundle (``.rcc``), by path, decompressed.

    Layout (big-endian): ``qres``, format version, offsets of the node tree, the data and the names
    (and, from version 3, global flags). Tree nodes are fixed-size records: name offset, flags, then
    either child count + index of the first child (directories) or locale + data offset (files);
    version >= 2 appends a 64-bit modification time. Names are UTF-16 with a length and a hash;
    file data is a 32-bit size and the bytes (zlib data carries its own 32-bit plain size first).
    """
    if len(blob) < 20 or blob[:4] != b"qres":
        raise DatasetBuildError("not a Qt resource bundle (the file does not start with 'qres')")
    version, tree_offset, data_offset, names_offset = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise DatasetBuildError(f"unsupported Qt resource bundle version {version}")
    node_size = 14 if version == 1 else 22

    def name_of(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names_offset + offset)
        start = names_offset + offset + 6  # length (2 bytes) + hash (4 bytes)
        return blob[start : start + 2 * length].decode("utf-16-be")

    def data_of(offset: int, flags: int, path: str) -> bytes:
        (size,) = struct.unpack_from(">I", blob, data_offset + offset)
        payload = blob[data_offset + offset + 4 : data_offset + offset + 4 + size]
        if flags & _RCC_ZSTD:
            raise DatasetBuildError(f"{path} is zstd-compressed inside the Qt resource bundle")
        if flags & _RCC_ZLIB:
            return zlib.decompress(payload[4:])
        return payload

    files: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, path of its parent)
    visited = 0
    while pending:
        index, parent = pending.pop()
        visited += 1
        if visited > len(blob) // node_size + 1:
            raise DatasetBuildError("the Qt resource bundle's tree is malformed (it loops)")
        base = tree_offset + index * node_size
        name_offset, flags = struct.unpack_from(">IH", blob, base)
        path = f"{parent}/{name_of(name_offset)}".lstrip("/") if index else ""
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, base + 6)
            pending.extend((first + i, path) for i in range(count))
        else:
            (offset,) = struct.unpack_from(">I", blob, base + 10)
            files[path] = data_of(offset, flags, path)
    return files

"""A TensorFlow tensor bundle (checkpoint), read with the standard library and numpy only.

A bundle is ``PREFIX.index`` plus ``PREFIX.data-00000-of-00001``:

* The ``.index`` file is a LevelDB-style sorted table (SSTable): data blocks of prefix-compressed
  key/value entries with restart points, an index block of block handles (varint offset + size), a
  metaindex block and a 48-byte footer ending in the table magic number. Every block carries a
  one-byte compression type and a masked CRC-32C, which we check.
* Keys are variable names; values are ``BundleEntryProto`` messages (dtype, shape, shard, offset,
  size, masked CRC-32C of the tensor bytes), decoded from the protobuf wire format by hand. The empty
  key holds the ``BundleHeaderProto`` (number of shards, endianness, version).
* Tensor bytes sit in the data shard at the entry's offset, little-endian, in TensorFlow layout.

Errors reach the user as CheckpointError sentences naming the file and what to do.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared_protocol import ErrorKind, HiFillError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC-32C (4 bytes)
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1

# TensorFlow DataType enum values (types.proto) that a checkpoint of this model can hold.
TF_DTYPES: dict[int, tuple[str, np.dtype]] = {
    1: ("float32", np.dtype("<f4")),
    2: ("float64", np.dtype("<f8")),
    3: ("int32", np.dtype("<i4")),
    9: ("int64", np.dtype("<i8")),
    19: ("float16", np.dtype("<f2")),
}
DT_FLOAT = 1


class CheckpointError(HiFillError):
    """The checkpoint cannot be read or does not fit our generator; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.NO_WEIGHTS, message)


# ---------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), as LevelDB tables and tensor bundles use it, with TensorFlow's masking
# ---------------------------------------------------------------------------------------------


def _make_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.uint32)
_NUMPY_CRC_FROM = 65536  # bytes; below this a plain loop is fast enough


def _crc_register(register: int, data: bytes | memoryview) -> int:
    """Advance the raw (unconditioned) CRC-32C register over ``data``, one byte at a time."""
    table = _CRC_TABLE
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _apply_operator(columns: np.ndarray, registers: np.ndarray) -> np.ndarray:
    """A 32x32 GF(2) matrix (given by its columns) applied to every register of an array."""
    out = np.zeros_like(registers)
    for bit in range(32):
        out ^= ((registers >> np.uint32(bit)) & np.uint32(1)) * columns[bit]
    return out


@functools.lru_cache(maxsize=256)
def _zeros_operator(length: int) -> np.ndarray:
    """Columns of the GF(2) matrix that advances a raw register over ``length`` zero bytes."""
    basis = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    one_byte = _CRC_TABLE_NP[basis & 0xFF] ^ (basis >> np.uint32(8))
    result, power = basis, one_byte
    while length:  # square-and-multiply over compositions of the one-byte operator
        if length & 1:
            result = _apply_operator(power, result)
        power = _apply_operator(power, power)
        length >>= 1
    result.setflags(write=False)
    return result


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data``. Large inputs run as interleaved lanes in numpy, then are combined pairwise.

    The raw register update is linear over GF(2), so the register after A||B equals the register after
    A advanced over |B| zero bytes, xor the register of B started from zero.
    """
    data = memoryview(data).cast("B")
    size = len(data)
    if size < _NUMPY_CRC_FROM:
        return _crc_register(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    lanes = 1 << max(8, (size.bit_length() - 1) // 2)  # a power of two near sqrt(size)
    lane_length = size // lanes
    matrix = np.frombuffer(data, np.uint8, count=lanes * lane_length).reshape(lanes, lane_length)
    registers = np.zeros(lanes, dtype=np.uint32)
    registers[0] = 0xFFFFFFFF
    for column in np.ascontiguousarray(matrix.T):
        registers = _CRC_TABLE_NP[(registers ^ column) & 0xFF] ^ (registers >> np.uint32(8))
    length = lane_length
    while len(registers) > 1:  # lane pairs (A, B) -> A advanced over |B| zeros, xor B
        registers = _apply_operator(_zeros_operator(length), registers[0::2]) ^ registers[1::2]
        length *= 2
    register = _crc_register(int(registers[0]), data[lanes * lane_length :])
    return register ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow/LevelDB CRC masking: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Varints and the protobuf wire format
# ---------------------------------------------------------------------------------------------


class _FormatError(Exception):
    """Malformed bytes; turned into a CheckpointError naming the file by the caller."""


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _FormatError("a varint runs past the end of its data")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _FormatError("a varint is longer than 10 bytes")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; values are ints or bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _FormatError("a fixed64 field runs past the end of its message")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise _FormatError("a length-delimited field runs past the end of its message")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _FormatError("a fixed32 field runs past the end of its message")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise _FormatError(f"unsupported protobuf wire type {wire} in field {number}")
        if number == 0:
            raise _FormatError("protobuf field number 0")
        yield number, wire, value


def _expect(wire: int, wanted: int, what: str) -> None:
    if wire != wanted:
        raise _FormatError(f"{what} has wire type {wire}, expected {wanted}")


# ---------------------------------------------------------------------------------------------
# Tensor bundle messages
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleHeader:
    """BundleHeaderProto: stored under the empty key of the index."""

    num_shards: int = 1
    endianness: int = 0  # 0 = little, 1 = big
    producer: int = 0
    min_consumer: int = 0

    @classmethod
    def parse(cls, buf: bytes) -> BundleHeader:
        values = {"num_shards": 0, "endianness": 0, "producer": 0, "min_consumer": 0}
        for number, wire, value in _proto_fields(buf):
            if number == 1:
                _expect(wire, 0, "num_shards")
                values["num_shards"] = _signed64(value)
            elif number == 2:
                _expect(wire, 0, "endianness")
                values["endianness"] = value
            elif number == 3:
                _expect(wire, 2, "version")
                for vnum, vwire, vvalue in _proto_fields(value):
                    if vnum == 1 and vwire == 0:
                        values["producer"] = _signed64(vvalue)
                    elif vnum == 2 and vwire == 0:
                        values["min_consumer"] = _signed64(vvalue)
        return cls(**values)


# BundleEntryProto fields that are plain int64 varints: field number -> name
_ENTRY_INT64_FIELDS = {3: "shard_id", 4: "offset", 5: "size"}


@dataclass(frozen=True)
class BundleEntry:
    """BundleEntryProto: where one variable's bytes are and what they are."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None  # masked, as stored; None if absent
    sliced: bool = False  # a partitioned variable (TensorSliceProto entries): not supported here

    @classmethod
    def parse(cls, name: str, buf: bytes) -> BundleEntry:
        values: dict = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
        sliced = False
        for number, wire, value in _proto_fields(buf):
            if number == 1:
                _expect(wire, 0, "dtype")
                values["dtype"] = value
            elif number == 2:
                _expect(wire, 2, "shape")
                values["shape"] = _parse_shape(value)
            elif number in _ENTRY_INT64_FIELDS:
                field_name = _ENTRY_INT64_FIELDS[number]
                _expect(wire, 0, field_name)
                values[field_name] = _signed64(value)
            elif number == 6:
                _expect(wire, 5, "crc32c")
                values["crc32c"] = value
            elif number == 7:
                sliced = True
        return cls(name=name, sliced=sliced, **values)

    @property
    def dtype_name(self) -> str:
        return TF_DTYPES[self.dtype][0] if self.dtype in TF_DTYPES else f"dtype#{self.dtype}"

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, wire, value in _proto_fields(buf):
        if number == 2:
            _expect(wire, 2, "shape dim")
            size = 0
            for dnum, dwire, dvalue in _proto_fields(value):
                if dnum == 1:
                    _expect(dwire, 0, "dim size")
                    size = _signed64(dvalue)
            dims.append(size)
        elif number == 3 and value:
            raise _FormatError("a variable has an unknown rank")
    return tuple(dims)


# ---------------------------------------------------------------------------------------------
# The sorted table (.index)
# ---------------------------------------------------------------------------------------------


def _read_handle(buf: bytes | memoryview, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int], what: str) -> memoryview:
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise _FormatError(f"the {what} block ({size} bytes at {offset}) lies beyond the end of the file")
    compression = data[end]
    stored = int.from_bytes(data[end + 1 : end + BLOCK_TRAILER_SIZE], "little")
    actual = mask_crc(crc32c(memoryview(data)[offset : end + 1]))
    if stored != actual:
        raise _FormatError(f"the {what} block at byte {offset} fails its checksum (the file is damaged)")
    if compression == SNAPPY_COMPRESSION:
        raise _FormatError(
            f"the {what} block is Snappy-compressed; this importer reads uncompressed indexes only "
            "(TensorFlow writes checkpoint indexes uncompressed)"
        )
    if compression != NO_COMPRESSION:
        raise _FormatError(f"the {what} block uses unknown compression type {compression}")
    return memoryview(data)[offset:end]


def _block_entries(block: memoryview, what: str) -> Iterator[tuple[bytes, memoryview]]:
    """Key/value pairs of one block: prefix-compressed keys, restart points at the end."""
    if len(block) < 4:
        raise _FormatError(f"the {what} block is too short to hold its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    restart_start = len(block) - 4 - 4 * restarts
    if restarts < 1 or restart_start < 0:
        raise _FormatError(f"the {what} block has an impossible restart count ({restarts})")
    restart_points = {
        int.from_bytes(block[restart_start + 4 * i : restart_start + 4 * i + 4], "little")
        for i in range(restarts)
    }
    full_key_at = set()
    pos, key = 0, b""
    while pos < restart_start:
        start = pos
        shared, pos = _read_varint(block, pos)
        unshared, pos = _read_varint(block, pos)
        value_length, pos = _read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_length > restart_start:
            raise _FormatError(f"an entry of the {what} block at byte {start} is corrupt")
        if shared == 0:
            full_key_at.add(start)
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length
    if restart_start and not restart_points <= full_key_at:
        raise _FormatError(f"the {what} block's restart points do not start entries")


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of a LevelDB-style table file, in order (checksums verified)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"Cannot read the checkpoint index {path}: {exc.strerror or exc}.") from exc
    try:
        return _parse_table(data)
    except _FormatError as exc:
        raise CheckpointError(
            f"{path} is not a readable TensorFlow checkpoint index: {exc}. "
            "Download the .index file again (it is a binary file; fetch it raw, not as a web page)."
        ) from exc


def _parse_table(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < FOOTER_SIZE:
        raise _FormatError(f"it is {len(data)} bytes long, shorter than a table footer ({FOOTER_SIZE} bytes)")
    footer = memoryview(data)[-FOOTER_SIZE:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != TABLE_MAGIC:
        raise _FormatError(f"its last 8 bytes are not the table magic number (found {magic:#018x})")
    _metaindex, pos = _read_handle(footer, 0)
    index_handle, _ = _read_handle(footer, pos)
    index = _read_block(data, index_handle, "index")
    pairs: list[tuple[bytes, bytes]] = []
    for separator, handle_bytes in _block_entries(index, "index"):
        handle, used = _read_handle(handle_bytes, 0)
        if used != len(handle_bytes):
            raise _FormatError("an index entry is not a block handle")
        block = _read_block(data, handle, "data")
        for key, value in _block_entries(block, "data"):
            if pairs and key <= pairs[-1][0]:
                raise _FormatError("its keys are not in increasing order")
            if key > separator:
                raise _FormatError("a data block holds keys beyond its index separator")
            pairs.append((key, bytes(value)))
    return pairs


# ---------------------------------------------------------------------------------------------
# Bundle reader
# ---------------------------------------------------------------------------------------------


def resolve_prefix(path: Path) -> Path:
    """The bundle prefix for PATH: the prefix, its .index file, or a folder with a 'checkpoint' file."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            match = re.search(
                r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text("utf-8"), re.M
            )
            if not match:
                raise CheckpointError(f"{state} does not name a checkpoint (no model_checkpoint_path line).")
            named = Path(_unescape_text_proto(match.group(1)))
            candidates = [named if named.is_absolute() else path / named, path / named.name]
            for prefix in candidates:
                if index_path(prefix).is_file():
                    return prefix
            raise CheckpointError(
                f"{state} names the checkpoint '{named}', but {index_path(candidates[-1])} does not exist."
            )
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        found = ", ".join(p.name for p in indexes) or "none"
        raise CheckpointError(
            f"{path} holds no 'checkpoint' file and not exactly one .index file (found: {found}); "
            "pass the checkpoint prefix or its .index file instead."
        )
    if path.suffix == ".index":
        if not path.is_file():
            raise CheckpointError(f"The checkpoint index {path} does not exist.")
        return path.with_suffix("")
    if index_path(path).is_file():
        return path
    if re.search(r"\.data-\d{5}-of-\d{5}$", path.name):
        return resolve_prefix(path.with_name(path.name.rsplit(".data-", 1)[0]))
    raise CheckpointError(
        f"No TensorFlow checkpoint at {path}: expected {path.name}.index (and its .data shard), "
        "an .index file, or a folder holding a 'checkpoint' file."
    )


def _unescape_text_proto(text: str) -> str:
    """A C-escaped text-format string (\\", \\n, octal and hex bytes) as text; non-UTF-8 bytes survive."""
    named = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v"}

    def replace(match: re.Match) -> bytes:
        octal, hexadecimal, char = match.groups()
        if octal:
            return bytes([int(octal, 8) & 0xFF])
        if hexadecimal:
            return bytes([int(hexadecimal, 16)])
        return named.get(char.decode("latin-1"), char)

    raw = re.sub(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", replace, text.encode("utf-8"), flags=re.S)
    return raw.decode("utf-8", "surrogateescape")


def index_path(prefix: Path) -> Path:
    """The index file of a bundle, PREFIX.index."""
    return prefix.with_name(prefix.name + ".index")


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """The data file of one shard, e.g. PREFIX.data-00000-of-00001."""
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


class TensorBundle:
    """A checkpoint's index in memory and on-demand reads of its tensors (numpy, TensorFlow layout)."""

    def __init__(self, path: Path) -> None:
        self.prefix = resolve_prefix(Path(path))
        self.index_path = index_path(self.prefix)
        pairs = read_table(self.index_path)
        if not pairs or pairs[0][0] != b"":
            raise CheckpointError(
                f"{self.index_path} is a table but not a tensor bundle index (it has no bundle header)."
            )
        try:
            self.header = BundleHeader.parse(pairs[0][1])
            self.entries: dict[str, BundleEntry] = {}
            for key, value in pairs[1:]:
                name = key.decode("utf-8")
                self.entries[name] = BundleEntry.parse(name, value)
        except (_FormatError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{self.index_path} holds a malformed bundle entry: {exc}.") from exc
        if self.header.endianness not in (0, 1):
            raise CheckpointError(
                f"{self.index_path} declares an unknown byte order ({self.header.endianness})."
            )

    def data_path(self, entry: BundleEntry) -> Path:
        return shard_path(self.prefix, entry.shard_id, self.header.num_shards)

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """One variable as a numpy array in TensorFlow layout; checks size and (if verify) CRC-32C."""
        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointError(
                f"The variable {name} is partitioned into slices, which this importer cannot read."
            )
        if entry.dtype not in TF_DTYPES:
            raise CheckpointError(
                f"The variable {name} has TensorFlow dtype {entry.dtype}, which this importer cannot read."
            )
        dtype = TF_DTYPES[entry.dtype][1]
        if self.header.endianness == 1:
            dtype = dtype.newbyteorder(">")
        if entry.size != entry.elements * dtype.itemsize:
            raise CheckpointError(
                f"The index says {name} is {entry.size} bytes, but a {entry.dtype_name} tensor of shape "
                f"{list(entry.shape)} is {entry.elements * dtype.itemsize} bytes; the index is damaged."
            )
        raw = self._read_bytes(entry)
        if verify and entry.crc32c is not None and mask_crc(crc32c(raw)) != entry.crc32c:
            raise CheckpointError(
                f"The bytes of {name} in {self.data_path(entry)} fail their CRC-32C check; the data file is "
                "damaged or belongs to another checkpoint. Download it again."
            )
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("<")).reshape(entry.shape)

    def _read_bytes(self, entry: BundleEntry) -> bytes:
        path = self.data_path(entry)
        try:
            with path.open("rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size)
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"The checkpoint's data file {path} is missing; it must sit next to {self.index_path.name} "
                f"(the official checkpoint ships both files)."
            ) from exc
        except OSError as exc:
            raise CheckpointError(
                f"Cannot read the checkpoint data file {path}: {exc.strerror or exc}."
            ) from exc
        if len(raw) != entry.size:
            raise CheckpointError(
                f"The checkpoint data file {path} is truncated: {entry.name} needs bytes {entry.offset} to "
                f"{entry.offset + entry.size}, the file ends earlier. Download it again."
            )
        return raw

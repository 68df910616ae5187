"""`python -m backend import-official`: the official HiFill Places2 TF checkpoint, read without TensorFlow.

The checkpoint (github.com/duxingren14/Hifill-tensorflow, model_logs/places2) is a TensorFlow *tensor
bundle*: ``PREFIX.index`` plus ``PREFIX.data-00000-of-00001``. This module reads both with the standard
library and numpy only:

* The ``.index`` file is a LevelDB-style sorted table (SSTable): data blocks of prefix-compressed
  key/value entries with restart points, an index block of block handles (varint offset + size), a
  metaindex block and a 48-byte footer ending in the table magic number. Every block carries a
  one-byte compression type and a masked CRC-32C, which we check.
* Keys are variable names; values are ``BundleEntryProto`` messages (dtype, shape, shard, offset,
  size, masked CRC-32C of the tensor bytes), decoded from the protobuf wire format by hand. The empty
  key holds the ``BundleHeaderProto`` (number of shards, endianness, version).
* Tensor bytes sit in the data shard at the entry's offset, little-endian, in TensorFlow layout.

Generator variables map onto ``backend.network.Generator`` through ``official_parameter_map``
(convolutions transposed from TF ``[kh, kw, cin, cout]`` to torch ``[cout, cin, kh, kw]``);
optimizer slots, the global step and the discriminator are reported and skipped.
``write_bundle`` writes a bundle in the same format; it exists for the tests.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.network import Discriminator, Generator, official_parameter_map
from backend.weights import WEIGHTS_DIR, ModelConfig, save_generator
from shared_protocol import ErrorKind, HiFillError

DEFAULT_OUTPUT = WEIGHTS_DIR / "hifill-places2-official.safetensors"
OFFICIAL_SOURCE = "github.com/duxingren14/Hifill-tensorflow, model_logs/places2"

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

OPTIMIZER_SLOT = re.compile(r"/(Adam|RMSProp|Momentum|Adagrad|ExponentialMovingAverage)(_\d+)?$")
OPTIMIZER_GLOBAL = re.compile(r"(^|/)(beta[12]_power|global_step)(_\d+)?$")


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


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # protobuf int32/int64: two's complement in ten bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


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


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


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

    def encode(self) -> bytes:
        out = b""
        if self.num_shards:
            out += _key(1, 0) + _varint(self.num_shards)
        if self.endianness:
            out += _key(2, 0) + _varint(self.endianness)
        version = b""
        if self.producer:
            version += _key(1, 0) + _varint(self.producer)
        if self.min_consumer:
            version += _key(2, 0) + _varint(self.min_consumer)
        return out + _length_delimited(3, version)


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
            elif number == 3:
                _expect(wire, 0, "shard_id")
                values["shard_id"] = _signed64(value)
            elif number == 4:
                _expect(wire, 0, "offset")
                values["offset"] = _signed64(value)
            elif number == 5:
                _expect(wire, 0, "size")
                values["size"] = _signed64(value)
            elif number == 6:
                _expect(wire, 5, "crc32c")
                values["crc32c"] = value
            elif number == 7:
                sliced = True
        return cls(name=name, sliced=sliced, **values)

    def encode(self) -> bytes:
        """Wire bytes in field order, default values omitted (as TensorFlow's proto3 writer does)."""
        dims = b"".join(_length_delimited(2, _key(1, 0) + _varint(d) if d else b"") for d in self.shape)
        out = _key(1, 0) + _varint(self.dtype) if self.dtype else b""
        out += _length_delimited(2, dims)
        for number, value in ((3, self.shard_id), (4, self.offset), (5, self.size)):
            if value:
                out += _key(number, 0) + _varint(value)
        if self.crc32c is not None:
            out += _key(6, 5) + struct.pack("<I", self.crc32c)
        return out

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
                if _index_path(prefix).is_file():
                    return prefix
            raise CheckpointError(
                f"{state} names the checkpoint '{named}', but {_index_path(candidates[-1])} does not exist."
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
    if _index_path(path).is_file():
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


def _index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """The data file of one shard, e.g. PREFIX.data-00000-of-00001."""
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


class TensorBundle:
    """A checkpoint's index in memory and on-demand reads of its tensors (numpy, TensorFlow layout)."""

    def __init__(self, path: Path) -> None:
        self.prefix = resolve_prefix(Path(path))
        self.index_path = _index_path(self.prefix)
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


# ---------------------------------------------------------------------------------------------
# Mapping onto our networks
# ---------------------------------------------------------------------------------------------


def variable_kind(name: str) -> str:
    """'generator', 'discriminator', 'optimizer' (slots, beta powers, global step) or 'other'."""
    if OPTIMIZER_SLOT.search(name) or OPTIMIZER_GLOBAL.search(name):
        return "optimizer"
    if name.startswith("generator/"):
        return "generator"
    if name.startswith("discriminator/"):
        return "discriminator"
    return "other"


def tf_to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """conv [kh, kw, cin, cout] -> [cout, cin, kh, kw]; dense [in, out] -> [out, in]; vectors unchanged."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def tf_to_torch(array: np.ndarray) -> np.ndarray:
    """The array in torch layout (see tf_to_torch_shape), contiguous."""
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def torch_to_tf(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of tf_to_torch: a torch parameter in TensorFlow layout (float32 numpy)."""
    array = tensor.detach().cpu().float().numpy()
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def discriminator_parameter_map(discriminator: Discriminator) -> dict[str, str]:
    """Official discriminator variable name -> our state_dict key."""
    mapping = {}
    for i in range(len(discriminator.convs)):
        mapping[f"discriminator/conv{i + 1}/w"] = f"convs.{i}.weight"
        mapping[f"discriminator/conv{i + 1}/biases"] = f"convs.{i}.bias"
    mapping["discriminator/linear/kernel"] = "linear.weight"
    mapping["discriminator/linear/bias"] = "linear.bias"
    return mapping


@dataclass
class ImportPlan:
    """How the checkpoint's variables line up with one of our networks."""

    mapping: dict[str, str]  # official name -> our state_dict key, for every variable we load
    skipped: dict[str, list[str]] = field(default_factory=dict)  # kind -> names not loaded
    parameters: int = 0


def plan_import(
    entries: Mapping[str, BundleEntry], module: torch.nn.Module, mapping: Mapping[str, str], scope: str
) -> ImportPlan:
    """Check that every variable under ``scope`` has exactly one counterpart of the same shape, and back.

    Raises CheckpointError naming missing, unexpected and mis-shaped variables.
    """
    ours = module.state_dict()
    skipped: dict[str, list[str]] = {}
    selected = {}
    for name, entry in entries.items():
        kind = variable_kind(name)
        if kind == scope:
            selected[name] = entry
        else:
            skipped.setdefault(kind, []).append(name)
    targets = list(mapping.values())
    if len(set(targets)) != len(targets) or set(targets) != set(ours):
        raise CheckpointError(f"Internal error: the {scope} name map does not cover our network one to one.")
    missing = sorted(set(mapping) - set(selected))
    unexpected = sorted(set(selected) - set(mapping))
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} {scope} variable(s) are missing from the checkpoint ({_few(missing)})"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} {scope} variable(s) have no counterpart in our network ({_few(unexpected)})"
        )
    for name in sorted(set(mapping) & set(selected)):
        entry, key = selected[name], mapping[name]
        wanted = tuple(ours[key].shape)
        if tf_to_torch_shape(entry.shape) != wanted:
            problems.append(
                f"{name} has shape {list(entry.shape)} but our {key} needs "
                f"{list(_torch_to_tf_shape(wanted))} in TensorFlow layout"
            )
        elif entry.dtype != DT_FLOAT:
            problems.append(f"{name} is {entry.dtype_name}, expected float32")
    if problems:
        raise CheckpointError(
            "This checkpoint does not fit the HiFill generator of this backend: "
            + "; ".join(problems[:6])
            + ("" if len(problems) <= 6 else f"; and {len(problems) - 6} more problem(s)")
            + ". Use the official Places2 checkpoint (model_logs/places2) of Hifill-tensorflow."
        )
    parameters = sum(selected[name].elements for name in mapping)
    return ImportPlan(mapping=dict(mapping), skipped=skipped, parameters=parameters)


def _torch_to_tf_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        return (shape[2], shape[3], shape[1], shape[0])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def _few(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _load(bundle: TensorBundle, module: torch.nn.Module, plan: ImportPlan, verify: bool) -> None:
    state = {}
    for name, key in plan.mapping.items():
        state[key] = torch.from_numpy(tf_to_torch(bundle.read(name, verify=verify)).astype(np.float32))
    module.load_state_dict(state, strict=True)
    module.eval()


def import_generator(path: Path, verify: bool = True) -> tuple[Generator, ImportPlan, TensorBundle]:
    """Read the checkpoint at PATH (prefix, .index or folder) into a float32 Generator."""
    bundle = TensorBundle(path)
    generator = Generator()
    plan = plan_import(bundle.entries, generator, official_parameter_map(generator), "generator")
    _load(bundle, generator, plan, verify)
    return generator, plan, bundle


def import_discriminator(path: Path, image_size: int = 512, verify: bool = True) -> Discriminator:
    """The official critic as our Discriminator (its linear layer fixes the image size: 512 for Places2)."""
    bundle = TensorBundle(path)
    discriminator = Discriminator(image_size)
    plan = plan_import(
        bundle.entries, discriminator, discriminator_parameter_map(discriminator), "discriminator"
    )
    _load(bundle, discriminator, plan, verify)
    return discriminator


def global_step(bundle: TensorBundle) -> int | None:
    """The checkpoint's training step, if it stores a readable scalar global_step."""
    entry = bundle.entries.get("global_step")
    if entry is None or entry.shape != () or entry.dtype not in (3, 9):
        return None
    try:
        return int(bundle.read("global_step"))
    except CheckpointError:
        return None


# ---------------------------------------------------------------------------------------------
# Writer (for tests: bundles in the same format, written from our networks or any arrays)
# ---------------------------------------------------------------------------------------------


class _BlockBuilder:
    """Entries with prefix-compressed keys and a restart point every ``restart_interval`` entries."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count and self.count % self.restart_interval == 0:
            self.restarts.append(len(self.buffer))
        elif self.count:
            limit = min(len(self.last_key), len(key))
            while shared < limit and self.last_key[shared] == key[shared]:
                shared += 1
        self.buffer += (
            _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        )
        self.last_key = key
        self.count += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        tail = b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack("<I", len(self.restarts))
        return bytes(self.buffer) + tail


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (LevelDB's bytewise rule)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key k >= key (LevelDB's bytewise rule)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _block_with_trailer(contents: bytes, compression: int) -> bytes:
    kind = bytes([compression])
    return contents + kind + struct.pack("<I", mask_crc(crc32c(contents + kind)))


def write_table(
    path: Path,
    pairs: list[tuple[bytes, bytes]],
    block_size: int = 256 * 1024,
    restart_interval: int = 16,
    compression: int = NO_COMPRESSION,
) -> None:
    """A LevelDB-style table of sorted pairs, laid out as TensorFlow's table builder does.

    ``compression`` only labels the data blocks (nothing is compressed): tests use it to fake Snappy.
    """
    out = bytearray()
    index = _BlockBuilder(1)
    block = _BlockBuilder(restart_interval)
    pending_handle = b""  # handle of the last flushed block, indexed once the next key is known
    block_last = b""

    for key, value in pairs:
        if pending_handle:
            index.add(_shortest_separator(block_last, key), pending_handle)
            pending_handle = b""
        block.add(key, value)
        if block.size_estimate() >= block_size:
            contents = block.finish()
            pending_handle = _varint(len(out)) + _varint(len(contents))
            out += _block_with_trailer(contents, compression)
            block_last = block.last_key
            block = _BlockBuilder(restart_interval)
    if block.count:
        contents = block.finish()
        pending_handle = _varint(len(out)) + _varint(len(contents))
        out += _block_with_trailer(contents, compression)
        block_last = block.last_key
    if pending_handle:
        index.add(_short_successor(block_last), pending_handle)
    metaindex = _BlockBuilder(restart_interval).finish()
    metaindex_handle = _varint(len(out)) + _varint(len(metaindex))
    out += _block_with_trailer(metaindex, NO_COMPRESSION)
    index_contents = index.finish()
    index_handle = _varint(len(out)) + _varint(len(index_contents))
    out += _block_with_trailer(index_contents, NO_COMPRESSION)
    out += (metaindex_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    Path(path).write_bytes(bytes(out))


def write_bundle(
    prefix: Path, tensors: Mapping[str, np.ndarray], checksums: bool = True, **table_options
) -> None:
    """Write PREFIX.index and PREFIX.data-00000-of-00001 holding ``tensors`` (TensorFlow layout, as given).

    ``checksums=False`` leaves the optional CRC-32C field out of the entries (faster; nothing verified).
    """
    prefix = Path(prefix)
    dtype_enum = {np.dtype(np_dtype).newbyteorder("="): num for num, (_, np_dtype) in TF_DTYPES.items()}
    data = bytearray()
    pairs = [(b"", BundleHeader(num_shards=1, producer=1).encode())]
    for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
        array = np.asarray(tensors[name])
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        entry = BundleEntry(
            name=name,
            dtype=dtype_enum[array.dtype.newbyteorder("=")],
            shape=tuple(array.shape),
            offset=len(data),
            size=len(raw),
            crc32c=mask_crc(crc32c(raw)) if checksums else None,
        )
        data += raw
        pairs.append((name.encode("utf-8"), entry.encode()))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shard_path(prefix, 0, 1).write_bytes(bytes(data))
    write_table(_index_path(prefix), pairs, **table_options)


def network_tensors(module: torch.nn.Module, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Our parameters under their official names in TensorFlow layout (for write_bundle)."""
    state = module.state_dict()
    return {official: torch_to_tf(state[key]) for official, key in mapping.items()}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend import-official",
        description="Convert the official HiFill Places2 TensorFlow checkpoint (no TensorFlow needed) into "
        "this backend's safetensors weights.",
    )
    parser.add_argument(
        "path",
        type=Path,
        help="checkpoint prefix (e.g. model_logs/places2/0), its .index file, or its folder",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}"
    )
    parser.add_argument(
        "--fp32", action="store_true", help="store float32 tensors (default: float16, half the size)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--no-verify", action="store_true", help="skip the CRC-32C check of the tensor bytes")
    parser.add_argument(
        "--list",
        action="store_true",
        help="only list the checkpoint's variables and their mapping (needs the .index only)",
    )
    return parser


def list_variables(bundle: TensorBundle) -> list[str]:
    """One line per variable: name, dtype, TF shape, and our parameter (or why it is skipped)."""
    generator_map = official_parameter_map(Generator())
    discriminator_map = discriminator_parameter_map(Discriminator(512))
    lines = []
    for name, entry in bundle.entries.items():
        kind = variable_kind(name)
        target = generator_map.get(name) or discriminator_map.get(name)
        if kind == "generator":
            where = f"-> {target}" if target else "(no counterpart in our generator)"
        else:
            where = f"({kind}, not imported)"
        lines.append(f"{name}  {entry.dtype_name}  {list(entry.shape)}  {where}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m backend import-official`; returns the process exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.list:
            bundle = TensorBundle(args.path)
            print("\n".join(list_variables(bundle)))
            plan = plan_import(bundle.entries, Generator(), official_parameter_map(Generator()), "generator")
            print(
                f"{len(plan.mapping)} generator tensors ({plan.parameters:,} parameters) "
                "map onto our generator."
            )
            return 0
        output = Path(args.output)
        if output.exists() and not args.force:
            raise CheckpointError(
                f"{output} already exists; pass --force to overwrite it or -o to write elsewhere."
            )
        generator, plan, bundle = import_generator(args.path, verify=not args.no_verify)
        step = global_step(bundle)
        skipped = {kind: len(names) for kind, names in sorted(plan.skipped.items())}
        config = ModelConfig(
            source="official-import",
            train_resolution=512,
            working_size=512,  # the paper's inference size for its 512-trained generator
            steps=step or 0,
            notes=(
                f"Official HiFill Places2 checkpoint ({OFFICIAL_SOURCE}), converted from "
                f"{bundle.index_path.name} without TensorFlow: {len(plan.mapping)} generator tensors, "
                f"{plan.parameters:,} parameters; stored as {'float32' if args.fp32 else 'float16'}."
            ),
            extra={
                "checkpoint": bundle.prefix.name,
                "tensors": len(plan.mapping),
                "parameters": plan.parameters,
                "skipped": skipped,
                "crc32c_verified": not args.no_verify,
                "tf_producer": bundle.header.producer,
            },
        )
        save_generator(output, generator, config, half=not args.fp32)
    except HiFillError as exc:
        print(f"error ({exc.kind.value}): {exc.message}", file=sys.stderr)
        return 1
    print(f"read {bundle.index_path} (+ {shard_path(bundle.prefix, 0, bundle.header.num_shards).name})")
    print(
        f"mapped {len(plan.mapping)} generator tensors ({plan.parameters:,} parameters)"
        + (", CRC-32C verified" if not args.no_verify else ", CRC-32C not checked")
    )
    for kind, names in sorted(plan.skipped.items()):
        print(f"skipped {len(names)} {kind} variable(s): {_few(sorted(names), 3)}")
    print(f"wrote {output} ({'float32' if args.fp32 else 'float16'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tensor bundles written for the tests, in the format lab.official.tf_bundle reads.

The inverse of the reader: protobuf encoding of bundle headers and entries, LevelDB-style tables laid
out as TensorFlow's table builder does, and whole bundles from arrays or from our networks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lab.official.tf_bundle import (
    FOOTER_SIZE,
    NO_COMPRESSION,
    TABLE_MAGIC,
    TF_DTYPES,
    BundleEntry,
    BundleHeader,
    crc32c,
    index_path,
    mask_crc,
    shard_path,
)

# ---------------------------------------------------------------------------------------------
# Protobuf wire format
# ---------------------------------------------------------------------------------------------


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


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def encode_header(header: BundleHeader) -> bytes:
    """BundleHeaderProto wire bytes, default values omitted."""
    out = b""
    if header.num_shards:
        out += _key(1, 0) + _varint(header.num_shards)
    if header.endianness:
        out += _key(2, 0) + _varint(header.endianness)
    version = b""
    if header.producer:
        version += _key(1, 0) + _varint(header.producer)
    if header.min_consumer:
        version += _key(2, 0) + _varint(header.min_consumer)
    return out + _length_delimited(3, version)


def encode_entry(entry: BundleEntry) -> bytes:
    """BundleEntryProto wire bytes in field order, defaults omitted (as TensorFlow's proto3 writer does)."""
    dims = b"".join(_length_delimited(2, _key(1, 0) + _varint(d) if d else b"") for d in entry.shape)
    out = _key(1, 0) + _varint(entry.dtype) if entry.dtype else b""
    out += _length_delimited(2, dims)
    for number, value in ((3, entry.shard_id), (4, entry.offset), (5, entry.size)):
        if value:
            out += _key(number, 0) + _varint(value)
    if entry.crc32c is not None:
        out += _key(6, 5) + struct.pack("<I", entry.crc32c)
    return out


# ---------------------------------------------------------------------------------------------
# Tables and bundles
# ---------------------------------------------------------------------------------------------


class BlockBuilder:
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
    index = BlockBuilder(1)
    block = BlockBuilder(restart_interval)
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
            block = BlockBuilder(restart_interval)
    if block.count:
        contents = block.finish()
        pending_handle = _varint(len(out)) + _varint(len(contents))
        out += _block_with_trailer(contents, compression)
        block_last = block.last_key
    if pending_handle:
        index.add(_short_successor(block_last), pending_handle)
    metaindex = BlockBuilder(restart_interval).finish()
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
    pairs = [(b"", encode_header(BundleHeader(num_shards=1, producer=1)))]
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
        pairs.append((name.encode("utf-8"), encode_entry(entry)))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shard_path(prefix, 0, 1).write_bytes(bytes(data))
    write_table(index_path(prefix), pairs, **table_options)


def torch_to_tf(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of lab.official.convert.tf_to_torch: a torch parameter in TensorFlow layout (float32 numpy)."""
    array = tensor.detach().cpu().float().numpy()
    if array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array)


def network_tensors(module: torch.nn.Module, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Our parameters under their official names in TensorFlow layout (for write_bundle)."""
    state = module.state_dict()
    return {official: torch_to_tf(state[key]) for official, key in mapping.items()}

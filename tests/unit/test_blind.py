"""Blind comparison kit: anonymous sheets, the key, hole marking, and the tally of judges' rank files."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend import cli
from lab import evaluate as ev
from lab.evaluation import blind, tally
from tests.unit.test_evaluate import write_photos

METHODS = ["hifill", "telea", "ns", "mean"]


def png_chunk_types(path: Path) -> list[str]:
    """The chunk types of a PNG file, in order."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        types.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    return types


def sample_cases(count: int, size: int = 128) -> list[ev.Case]:
    rng = np.random.default_rng(7)
    photos = [
        ev.Photo(f"photo{i}", rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)) for i in range(count)
    ]
    return [ev.make_case(photo, ev.SizeSpec(str(size), "square", size), seed=0) for photo in photos]


def fake_outputs(case: ev.Case) -> dict[str, np.ndarray]:
    """Every method paints its hole a different flat grey, so each panel can be told apart."""
    return {
        name: ev.paste_back(np.full_like(case.image, 40 * (index + 1)), case.image, case.mask)
        for index, name in enumerate(METHODS)
    }


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    writer = blind.BlindKit(tmp_path / "kit", METHODS, seed=3, tile=128)
    for case in sample_cases(6):
        writer.add(case, fake_outputs(case))
    writer.finish()
    return tmp_path / "kit"


# --------------------------------------------------------------------------------------------------
# Sheets and key
# --------------------------------------------------------------------------------------------------


def test_sheets_hold_no_method_name(kit: Path) -> None:
    sheets = sorted((kit / "sheets").iterdir())
    assert [path.name for path in sheets] == [f"case-{index:03d}.png" for index in range(1, 7)]
    for path in sheets:
        assert png_chunk_types(path) == ["IHDR"] + ["IDAT"] * (len(png_chunk_types(path)) - 2) + ["IEND"]
        with Image.open(path) as image:
            assert image.info == {} and image.text == {}
    guide = (kit / "judges.md").read_text(encoding="utf-8")
    for name in METHODS + ["Telea", "Navier", "HiFill"]:
        assert not re.search(rf"\b{name}\b", guide, re.IGNORECASE), name
    assert "case-006: " in guide and "A > B > C > D" in guide and "ties are not allowed" in guide


def test_key_maps_every_label_of_every_sheet_to_a_method_once(kit: Path) -> None:
    key = json.loads((kit / "key.json").read_text(encoding="utf-8"))
    assert list(key) == [f"case-{index:03d}" for index in range(1, 7)]
    cases = sample_cases(6)
    for entry, case in zip(key.values(), cases, strict=True):
        assert list(entry["labels"]) == ["A", "B", "C", "D"]
        assert sorted(entry["labels"].values()) == sorted(METHODS)
        assert entry["photo"] == case.photo and entry["size"] == "128"
        assert entry["hole_fraction"] == pytest.approx(case.hole_fraction, abs=1e-4)


def test_each_label_shows_its_method(kit: Path) -> None:
    """The panel labelled X holds the output of the method the key names for X (flat grey per method)."""
    key = json.loads((kit / "key.json").read_text(encoding="utf-8"))
    case = sample_cases(1)[0]
    zoom = blind.zoom_on_hole(case.mask, 128, 256)
    outputs = fake_outputs(case)
    labels = key["case-001"]["labels"]
    sheet = blind.render_sheet(
        "case-001", case.image, case.mask, {k: outputs[m] for k, m in labels.items()}, zoom
    )
    with Image.open(kit / "sheets" / "case-001.png") as written:
        assert np.array_equal(np.asarray(written), np.asarray(sheet))
    swapped = dict(labels, A=labels["B"], B=labels["A"])
    other = blind.render_sheet(
        "case-001", case.image, case.mask, {k: outputs[m] for k, m in swapped.items()}, zoom
    )
    assert not np.array_equal(np.asarray(other), np.asarray(sheet))


def test_order_differs_across_sheets_and_is_reproducible(tmp_path: Path) -> None:
    names = [blind.sheet_name(index) for index in range(1, 21)]
    orders = [tuple(blind.shuffled_labels(METHODS, 0, name).values()) for name in names]
    assert len(set(orders)) > 1
    assert orders == [tuple(blind.shuffled_labels(METHODS, 0, name).values()) for name in names]
    assert orders != [tuple(blind.shuffled_labels(METHODS, 1, name).values()) for name in names]
    runs = []
    for run in ("one", "two"):
        writer = blind.BlindKit(tmp_path / run, METHODS, seed=11, tile=96)
        for case in sample_cases(3, size=96):
            writer.add(case, fake_outputs(case))
        writer.finish()
        runs.append(tmp_path / run)
    assert (runs[0] / "key.json").read_text() == (runs[1] / "key.json").read_text()
    for index in range(1, 4):
        name = f"case-{index:03d}.png"
        assert (runs[0] / "sheets" / name).read_bytes() == (runs[1] / "sheets" / name).read_bytes()


def test_hole_marking_is_where_the_mask_is() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[20:30, 30:50] = 255
    marked = blind.mark_hole(image, mask, outline=2)
    hole = mask > 0
    assert (marked[hole] == blind.HOLE_TINT).all()
    ring = np.zeros_like(hole)
    ring[18:32, 28:52] = True
    ring &= ~hole
    assert (marked[ring] == blind.HOLE_OUTLINE).all()
    np.testing.assert_array_equal(marked[~ring & ~hole], image[~ring & ~hole])
    # enlarged in the zoom panel: each source pixel becomes a k x k block, the hole stays where it was
    zoom = blind.zoom_on_hole(mask, tile=128, max_tile=256)
    factor = int(zoom.scale)
    assert factor >= 2 and zoom.scale == factor
    panel = blind.marked_zoom_panel(image, mask, zoom)
    rows = zoom.top + np.arange(panel.shape[0]) // factor
    cols = zoom.left + np.arange(panel.shape[1]) // factor
    source_hole = hole[np.ix_(rows, cols)]
    assert (panel[source_hole] == blind.HOLE_TINT).all()
    assert not (panel[~source_hole] == blind.HOLE_TINT).all(axis=-1).any()


@pytest.mark.parametrize(
    ("shape", "box", "scale"),
    [
        ((512, 512), (200, 230, 300, 340), 4.0),  # small hole: enlarged by a whole factor, more context
        ((512, 512), (100, 400, 50, 300), 1.0),  # medium: 1:1
        ((1080, 1920), (100, 1000, 100, 1700), 896 / 1920),  # large: scaled down to the largest tile
        ((64, 64), (10, 20, 10, 20), 4.0),  # the image is smaller than a tile
    ],
)
def test_zoom_holds_the_whole_hole_inside_the_image(
    shape: tuple[int, int], box: tuple[int, int, int, int], scale: float
) -> None:
    mask = np.zeros(shape, np.uint8)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 255
    zoom = blind.zoom_on_hole(mask)
    assert zoom.scale == pytest.approx(scale)
    assert 0 <= zoom.top <= top and bottom <= zoom.top + zoom.height <= shape[0]
    assert 0 <= zoom.left <= left and right <= zoom.left + zoom.width <= shape[1]
    assert max(zoom.panel_size) <= blind.MAX_TILE


def test_a_folder_with_an_earlier_kit_is_refused(kit: Path) -> None:
    with pytest.raises(ev.EvaluationError, match="already holds a blind kit"):
        blind.BlindKit(kit, METHODS, seed=3)


# --------------------------------------------------------------------------------------------------
# Tally
# --------------------------------------------------------------------------------------------------

KEY = {
    "case-001": {
        "photo": "p1",
        "size": "512",
        "hole_fraction": 0.1,
        "labels": {"A": "ours", "B": "x", "C": "y"},
    },
    "case-002": {
        "photo": "p2",
        "size": "512",
        "hole_fraction": 0.2,
        "labels": {"A": "y", "B": "ours", "C": "x"},
    },
}


def write_key(folder: Path) -> Path:
    path = folder / "key.json"
    path.write_text(json.dumps(KEY), encoding="utf-8")
    return path


def test_tally_matches_hand_computed_ranks_and_preferences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = write_key(tmp_path)
    # judge one: case-001 ours > x > y, case-002 x > ours > y; judge two: x > ours > y, ours > y > x
    (tmp_path / "one.txt").write_text("# judge one\ncase-001: A > B > C\n\nCASE-002:c>b>a   # unsure\n")
    (tmp_path / "two.txt").write_text("  case-001 : b > a > c\ncase-002: B > A > C\n")
    out = tmp_path / "tally.md"
    argv = ["--key", str(key), str(tmp_path / "one.txt"), str(tmp_path / "two.txt"), "--ours", "ours"]
    assert tally.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text(encoding="utf-8")
    # ranks: ours 1, 2, 2, 1; x 2, 1, 1, 3; y 3, 3, 3, 2
    assert "| ours (ours) | 4 | 1.50 | 2 of 4 (50 %) |" in printed
    assert "| x | 4 | 1.75 | 2 of 4 (50 %) |" in printed
    assert "| y | 4 | 2.75 | 0 of 4 (0 %) |" in printed
    assert printed.index("| ours (ours)") < printed.index("| x |") < printed.index("| y |")  # best first
    # ours above x on (one, 001) and (two, 002); above y everywhere
    assert "| x | 2 of 4 | 50 % | 15–85 % |" in printed
    assert "| y | 4 of 4 | 100 % | 51–100 % |" in printed
    # Kendall tau: case-001 1/3, case-002 -1/3 -> mean 0; per judge the same single pair each
    assert "mean Kendall tau 0.00 over 2 pairs" in printed and "alike" in printed
    assert "| one | 2 | 0.00 | 1.50 | 1 of 2 (50 %) | 3 of 4 (75 %) |" in printed
    assert "| two | 2 | 0.00 | 1.50 | 1 of 2 (50 %) | 3 of 4 (75 %) |" in printed


def test_statistics_by_hand() -> None:
    assert tally.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert tally.wilson_interval(4, 4) == pytest.approx((0.5101, 1.0), abs=1e-4)
    assert tally.wilson_interval(36, 105) == pytest.approx((0.2591, 0.4377), abs=1e-4)  # = scipy.stats
    assert tally.kendall_tau("abcd", "abcd") == 1.0 and tally.kendall_tau("abcd", "dcba") == -1.0
    assert tally.kendall_tau("abc", "bac") == pytest.approx(1 / 3)


def test_ours_defaults_to_hifill_when_present_and_must_be_in_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = write_key(tmp_path)
    (tmp_path / "j.txt").write_text("case-001: A > B > C\n")
    assert tally.main(["--key", str(key), str(tmp_path / "j.txt")]) == 0
    printed = capsys.readouterr().out
    assert "(ours)" not in printed and "against each other method" not in printed
    assert "needs at least two judges" in printed
    assert tally.main(["--key", str(key), str(tmp_path / "j.txt"), "--ours", "hifill"]) == 2
    assert "--ours hifill is not a method of the key (ours, x, y)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("case-001: A > B > C\ncase-002 A > B > C\n", 2, "expected a line like"),
        ("\n# fine\ncase-009: A > B > C\n", 3, "sheet case-009 is not in the key"),
        ("case-001: A > B > D\n", 1, "case-001 has no result D (its results are A, B, C)"),
        ("case-001: A > B > A\n", 1, "ranks A more than once"),
        ("case-001: A > C\n", 1, "leaves out B"),
        ("case-001: A > B = C\n", 1, "is not a single letter"),
        ("case-001: A, B, C\n", 1, "is not a single letter"),
        ("case-002: A > B > C\ncase-002: C > B > A\n", 2, "ranked again (first on line 1)"),
    ],
)
def test_malformed_rank_files_name_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, message: str
) -> None:
    key = write_key(tmp_path)
    rank_file = tmp_path / "judge.txt"
    rank_file.write_text(text, encoding="utf-8")
    with pytest.raises(ev.EvaluationError, match=re.escape(f"{rank_file}, line {line}: ")) as raised:
        tally.read_rank_files([rank_file], tally.load_key(key))
    assert message in str(raised.value)
    assert tally.main(["--key", str(key), str(rank_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tally: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("key_text", "message"),
    [(None, "Cannot read the key"), ("{not json", "not valid JSON"), ('{"case-001": {}}', "has no labels")],
)
def test_bad_keys_and_empty_rank_files_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key_text: str | None, message: str
) -> None:
    key = tmp_path / "key.json"
    if key_text is not None:
        key.write_text(key_text)
    (tmp_path / "j.txt").write_text("case-001: A > B > C\n")
    assert tally.main(["--key", str(key), str(tmp_path / "j.txt")]) == 2
    assert message in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\ncase-001:\n")
    with pytest.raises(ev.EvaluationError, match="empty.txt ranks no sheet"):
        tally.read_rank_files([empty], tally.load_key(write_key(tmp_path)))


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------


def test_evaluate_blind_then_tally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_photos(tmp_path / "photos", [(300, 220), (180, 260)])
    kit = tmp_path / "kit"
    argv = ["--photos", str(tmp_path / "photos"), "--methods", "telea,ns,mean", "--seed", "5"]
    argv += ["--sizes", "96", "--no-progress", "--out", str(tmp_path / "out"), "--blind", str(kit)]
    assert ev.main(argv) == 0
    assert f"{kit / 'key.json'}" in capsys.readouterr().out
    assert (tmp_path / "out" / "results.md").is_file()
    assert sorted(path.name for path in (kit / "sheets").iterdir()) == ["case-001.png", "case-002.png"]
    key = json.loads((kit / "key.json").read_text(encoding="utf-8"))
    assert [entry["photo"] for entry in key.values()] == ["photo0", "photo1"]
    for entry in key.values():
        assert sorted(entry["labels"].values()) == ["mean", "ns", "telea"]
    for name in ("case-001", "case-002"):
        with Image.open(kit / "sheets" / f"{name}.png") as sheet:
            assert sheet.info == {}
    # judge one: telea > ns > mean everywhere; judge two: ns > telea > mean
    for judge, order in (("one", ["telea", "ns", "mean"]), ("two", ["ns", "telea", "mean"])):
        lines = []
        for sheet, entry in key.items():
            letter_of = {method: letter for letter, method in entry["labels"].items()}
            lines.append(f"{sheet}: " + " > ".join(letter_of[method] for method in order))
        (tmp_path / f"{judge}.txt").write_text("\n".join(lines) + "\n")
    argv = ["tally", "--key", str(kit / "key.json"), str(tmp_path / "one.txt"), str(tmp_path / "two.txt")]
    assert cli.main([*argv, "--ours", "telea", "--out", str(tmp_path / "tally.md")]) == 0
    printed = capsys.readouterr().out
    assert "| telea (ours) | 4 | 1.50 | 2 of 4 (50 %) |" in printed
    assert "| ns | 2 of 4 | 50 % |" in printed and "| mean | 4 of 4 | 100 % |" in printed
    assert "mean Kendall tau 0.33 over 2 pairs" in printed and "67 % of the pairs" in printed
    # a second run into the same kit folder is refused, before any work
    again = ["--photos", str(tmp_path / "photos"), "--methods", "telea", "--sizes", "96", "--no-progress"]
    assert ev.main([*again, "--out", str(tmp_path / "out2"), "--blind", str(kit)]) == 2
    assert "already holds a blind kit" in capsys.readouterr().err

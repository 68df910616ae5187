"""Tally of a blind comparison: judges' rank files + the kit's key.json -> a markdown table.

`python -m backend tally --key DIR/key.json RANKFILE [RANKFILE ...] [--ours hifill] [--out FILE.md]`

A rank file has one line per sheet, best first: `case-007: C > A > B > D` (blank lines, `#` comments,
spaces and letter case do not matter; `case-007:` with nothing after it is a sheet not judged). The
table gives every method's mean rank (1 = best) and how often it came first; ours' preference rate
against each other method (the share of judgements where ours ranked above it) with a 95 % Wilson
interval; each judge's figures; and how much the judges agree (Kendall tau, agreeing pairs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.evaluation.errors import EvaluationError

DEFAULT_OURS = "hifill"
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
_LINE = re.compile(r"^([A-Za-z0-9_.-]+)\s*:(.*)$")
_LETTER = re.compile(r"^[A-Za-z]$")


@dataclass(frozen=True)
class Ranking:
    """One judge's order of one sheet's methods, best first."""

    judge: str
    sheet: str
    order: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Reading the key and the rank files
# --------------------------------------------------------------------------------------------------


def load_key(path: Path) -> dict[str, dict[str, str]]:
    """Sheet -> {label: method} from a blind kit's key.json."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise EvaluationError(f"Cannot read the key {path}: {error.strerror or error}.") from error
    except json.JSONDecodeError as error:
        raise EvaluationError(f"The key {path} is not valid JSON (line {error.lineno}).") from error
    key = {}
    for sheet, entry in data.items() if isinstance(data, dict) else ():
        labels = entry.get("labels") if isinstance(entry, dict) else None
        if not isinstance(labels, dict) or not labels:
            raise EvaluationError(
                f"The key {path} has no labels for sheet {sheet}; is it a blind kit's key.json?"
            )
        key[sheet.lower()] = {str(label).upper(): str(method) for label, method in labels.items()}
    if not key:
        raise EvaluationError(f"The key {path} lists no sheets; is it a blind kit's key.json?")
    return key


def parse_rank_text(text: str, source: str, key: dict[str, dict[str, str]], judge: str) -> list[Ranking]:
    """The rankings of one rank file's text; errors name `source` and the line."""
    rankings, seen = [], {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}, line {number}"
        match = _LINE.match(line)
        if not match:
            raise EvaluationError(f"{where}: expected a line like `case-007: C > A > B`, got {line!r}.")
        sheet, ranked = match.group(1).lower(), match.group(2).strip()
        if sheet not in key:
            raise EvaluationError(f"{where}: sheet {sheet} is not in the key; check its name.")
        if sheet in seen:
            raise EvaluationError(f"{where}: sheet {sheet} is ranked again (first on line {seen[sheet]}).")
        seen[sheet] = number
        if not ranked:
            continue  # left empty: not judged
        letters = [part.strip().upper() for part in ranked.split(">")]
        labels = key[sheet]
        on_sheet = ", ".join(sorted(labels))
        for letter in letters:
            if not _LETTER.match(letter):
                raise EvaluationError(
                    f"{where}: {letter or 'an empty place'!s} is not a single letter; write the letters "
                    "best first, separated by `>` (no ties)."
                )
            if letter not in labels:
                raise EvaluationError(
                    f"{where}: {sheet} has no result {letter} (its results are {on_sheet})."
                )
        repeated = sorted({letter for letter in letters if letters.count(letter) > 1})
        if repeated:
            raise EvaluationError(f"{where}: {sheet} ranks {', '.join(repeated)} more than once.")
        missing = sorted(set(labels) - set(letters))
        if missing:
            raise EvaluationError(
                f"{where}: {sheet} leaves out {', '.join(missing)}; rank every result of the sheet "
                f"({on_sheet})."
            )
        rankings.append(Ranking(judge, sheet, tuple(labels[letter] for letter in letters)))
    if not rankings:
        raise EvaluationError(f"{source} ranks no sheet; write lines like `case-007: C > A > B`.")
    return rankings


def read_rank_files(paths: Sequence[Path], key: dict[str, dict[str, str]]) -> list[Ranking]:
    """Rankings of every file; a judge is named by the file's stem (its path where stems repeat)."""
    stems = [Path(path).stem for path in paths]
    rankings = []
    for path, stem in zip(paths, stems, strict=True):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise EvaluationError(f"Cannot read the rank file {path}: {error.strerror or error}.") from error
        except UnicodeDecodeError as error:
            raise EvaluationError(f"The rank file {path} is not UTF-8 text.") from error
        judge = stem if stems.count(stem) == 1 else str(path)
        rankings += parse_rank_text(text, str(path), key, judge)
    return rankings


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ranks(rankings: Sequence[Ranking]) -> dict[str, tuple[float, int, int]]:
    """Method -> (mean rank with 1 = best, times ranked, times first)."""
    places: dict[str, list[int]] = {}
    for ranking in rankings:
        for place, method in enumerate(ranking.order, start=1):
            places.setdefault(method, []).append(place)
    return {
        method: (sum(values) / len(values), len(values), values.count(1)) for method, values in places.items()
    }


def preference(rankings: Sequence[Ranking], ours: str, other: str) -> tuple[int, int]:
    """(judgements where ours ranked above other, judgements holding both)."""
    wins = trials = 0
    for ranking in rankings:
        if ours in ranking.order and other in ranking.order:
            trials += 1
            wins += ranking.order.index(ours) < ranking.order.index(other)
    return wins, trials


def kendall_tau(first: Sequence[str], second: Sequence[str]) -> float:
    """Kendall's tau of two orders of the same items (1 = same, -1 = reversed); nan below two items."""
    position = {item: index for index, item in enumerate(second)}
    pairs = list(itertools.combinations(first, 2))
    if not pairs:
        return math.nan
    concordant = sum(position[a] < position[b] for a, b in pairs)
    return (2 * concordant - len(pairs)) / len(pairs)


def agreement(rankings: Sequence[Ranking]) -> tuple[float, int]:
    """Mean Kendall tau over every pair of judges on every sheet both ranked, and how many such pairs."""
    by_sheet: dict[str, list[Ranking]] = {}
    for ranking in rankings:
        by_sheet.setdefault(ranking.sheet, []).append(ranking)
    taus = [
        kendall_tau(a.order, b.order)
        for of_sheet in by_sheet.values()
        for a, b in itertools.combinations(of_sheet, 2)
        if len(a.order) > 1
    ]
    return (sum(taus) / len(taus) if taus else math.nan), len(taus)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / whole:.0f} %)" if whole else "–"


def tally_markdown(rankings: Sequence[Ranking], ours: str | None = None) -> str:
    """The markdown report of all rankings; ours (if given) gets preference rates and judge rows."""
    judges = list(dict.fromkeys(ranking.judge for ranking in rankings))
    sheets = {ranking.sheet for ranking in rankings}
    ranks = mean_ranks(rankings)
    lines = [
        f"# Blind ranking: {len(judges)} judge{'s' * (len(judges) != 1)}, {len(sheets)} sheets, "
        f"{len(rankings)} rankings",
        "",
        "| method | rankings | mean rank ↓ (1 = best) | ranked first |",
        "|---|---:|---:|---:|",
    ]
    for method, (mean, count, firsts) in sorted(ranks.items(), key=lambda item: item[1][0]):
        title = f"{method} (ours)" if method == ours else method
        lines.append(f"| {title} | {count} | {mean:.2f} | {_share(firsts, count)} |")
    if ours is not None:
        lines += ["", f"## {ours} against each other method", ""]
        lines += [
            "| against | judgements with ours above | share | 95 % Wilson interval |",
            "|---|---:|---:|---:|",
        ]
        for other in sorted(ranks, key=lambda method: ranks[method][0]):
            if other == ours:
                continue
            wins, trials = preference(rankings, ours, other)
            low, high = wilson_interval(wins, trials)
            share = f"{100 * wins / trials:.0f} %" if trials else "–"
            lines.append(f"| {other} | {wins} of {trials} | {share} | {100 * low:.0f}–{100 * high:.0f} % |")
    lines += ["", "## Judges", ""]
    header = "| judge | sheets | mean Kendall tau with the others |"
    if ours is not None:
        header += f" mean rank of {ours} | {ours} first | {ours} above another |"
    lines += [header, "|---|" + "---:|" * (header.count("|") - 2)]
    for judge in judges:
        own = [ranking for ranking in rankings if ranking.judge == judge]
        pair_taus = [
            kendall_tau(a.order, b.order)
            for a in own
            for b in rankings
            if b.judge != judge and b.sheet == a.sheet and len(a.order) > 1
        ]
        tau = f"{sum(pair_taus) / len(pair_taus):.2f}" if pair_taus else "–"
        cells = [judge, str(len(own)), tau]
        if ours is not None:
            mine = mean_ranks(own).get(ours)
            wins = sum(preference(own, ours, other)[0] for other in ranks if other != ours)
            trials = sum(preference(own, ours, other)[1] for other in ranks if other != ours)
            cells += [f"{mine[0]:.2f}" if mine else "–", _share(mine[2], mine[1]) if mine else "–"]
            cells.append(_share(wins, trials))
        lines.append("| " + " | ".join(cells) + " |")
    tau, pairs = agreement(rankings)
    lines.append("")
    if pairs:
        lines.append(
            f"Agreement between judges: mean Kendall tau {tau:.2f} over {pairs} pairs of judges on a "
            "shared sheet (1 = the same order, 0 = unrelated, −1 = reversed); they order "
            f"{100 * (tau + 1) / 2:.0f} % of the pairs of methods alike."
        )
    else:
        lines.append("Agreement between judges: needs at least two judges ranking the same sheet.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend tally",
        description="Tally judges' rank files of a blind comparison kit (evaluate --blind DIR).",
    )
    parser.add_argument("rank_files", type=Path, nargs="+", metavar="RANKFILE", help="one judge's rankings")
    parser.add_argument("--key", type=Path, required=True, help="the kit's key.json")
    parser.add_argument(
        "--ours",
        default=None,
        help=f"the method whose preference rates to report (default: {DEFAULT_OURS} if present)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m backend tally`; returns the process exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        key = load_key(args.key)
        methods = {method for labels in key.values() for method in labels.values()}
        ours = args.ours
        if ours is not None and ours not in methods:
            raise EvaluationError(f"--ours {ours} is not a method of the key ({', '.join(sorted(methods))}).")
        if ours is None and DEFAULT_OURS in methods:
            ours = DEFAULT_OURS
        markdown = tally_markdown(read_rank_files(args.rank_files, key), ours)
        if args.out is not None:
            try:
                args.out.write_text(markdown, encoding="utf-8")
            except OSError as error:
                raise EvaluationError(f"Cannot write {args.out}: {error.strerror or error}.") from error
    except EvaluationError as error:
        print(f"tally: {error}", file=sys.stderr)
        return 2
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

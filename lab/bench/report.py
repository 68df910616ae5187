"""The bench report: targets, markdown tables, the scaling plot and the machine's description."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.bench.cases import MB, METHOD_TITLES, NAMED_SIZES, OPENCV_RADIUS, OURS, PEERS, REPO

# ------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A goal of issue 6: measured <= limit."""

    name: str
    limit: float
    unit: str  # "s", "MB", "x"


def target_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue-6 target with what was measured: status 'pass', 'miss' or 'not measured'."""

    def ours(width: int, height: int, hole: float) -> dict[str, Any] | None:
        for item in report["results"]:
            if (item["method"], item["width"], item["height"]) == (OURS, width, height) and item[
                "case"
            ].endswith(f" {hole:g}%"):
                return item
        return None

    def median(item: dict[str, Any] | None) -> float | None:
        return None if item is None else item.get("median_s")

    def peak_mb(item: dict[str, Any] | None) -> float | None:
        return None if item is None or item.get("peak_rss_bytes") is None else item["peak_rss_bytes"] / MB

    transport = report.get("transport") or {}
    eight_k_transport = (transport.get("width"), transport.get("height")) == NAMED_SIZES["8k"]
    cold = report.get("cold_start") or {}
    rows = [
        (Target("512x512 fill, 10% hole", 0.35, "s"), median(ours(512, 512, 10))),
        (Target("4K fill, 10% hole", 1.5, "s"), median(ours(3840, 2160, 10))),
        (Target("8K fill, 25% hole", 4.0, "s"), median(ours(7680, 4320, 25))),
        (Target("8K fill, 25% hole: backend peak RSS", 2000.0, "MB"), peak_mb(ours(7680, 4320, 25))),
        (
            Target("8K RGBA u8 transport round trip / memcpy", 3.0, "x"),
            transport.get("ratio_to_memcpy") if eight_k_transport else None,
        ),
        (Target("cold start (spawn -> first result)", 5.0, "s"), cold.get("spawn_to_first_result_s")),
    ]
    table = []
    for target, measured in rows:
        entry = {"target": target.name, "limit": target.limit, "unit": target.unit, "measured": measured}
        if measured is None:
            entry.update(status="not measured", margin="")
        elif measured <= target.limit:
            entry.update(status="pass", margin=f"{_fmt_value(target.limit - measured, target.unit)} to spare")
        else:
            over = measured - target.limit
            entry.update(
                status="miss",
                margin=f"over by {_fmt_value(over, target.unit)} (+{100 * over / target.limit:.0f}%)",
            )
        table.append(entry)
    return table


# ------------------------------------------------------------------------------------------- reporting


def _fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return _fmt_s(value)
    if unit == "MB":
        return _fmt_mb(round(value * MB))
    return _fmt_ratio(value)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 0.1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 10:
        return f"{seconds:.3f} s" if seconds < 1 else f"{seconds:.2f} s"
    return f"{seconds:.1f} s"


def _fmt_ratio(ratio: float) -> str:
    """2 significant digits below 10 (0.014x, 0.36x, 2.3x), whole numbers above."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _fmt_mb(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / MB:,.0f} MB" if value >= 10 * MB else f"{value / MB:.2g} MB"


def _time_cell(item: dict[str, Any]) -> str:
    if item.get("skipped"):
        return f"skipped ({item['skipped']})"
    if item.get("capped"):
        return f"> {item['cap_s']:g} s (cap)"
    if item.get("error"):
        return f"error: {item['error'][:60]}"
    return _fmt_s(item.get("median_s"))


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as markdown (also what the CLI prints)."""
    machine, backend = report["machine"], report["backend"]
    lines = [
        "# HiFill benchmark",
        "",
        f"- date: {report['created']}; commit {report['commit']}; command: `{report['command']}`",
        f"- machine: {machine['cpu']}, {machine['cpus']} logical CPUs, {machine['ram_gb']:.0f} GB RAM, "
        f"{machine['os']}; Python {machine['python']}, torch {machine['torch']}; "
        f"load average (1 min) at start {machine['load_at_start']}, "
        f"at the end {report.get('load_at_end', '?')}",
        f"- backend: {backend.get('model', '?')}, device {backend.get('device', '?')}, precision "
        f"{backend.get('precision', '?')}, weights `{backend.get('weights', '?')}`"
        + (" (**untrained: plumbing only**)" if backend.get("untrained") else ""),
        f"- paused during the run: {report['settings']['paused'] or 'nothing'}",
        f"- image: {report['settings']['image']} resized to each size; one blob-shaped hole per case; "
        f"our backend gets the whole image as RGB u8 over `{report['settings']['endpoint_kind']}` ZeroMQ; "
        f"median of {report['settings']['repeats']} warm runs",
        "",
        "## Our backend (warm, end to end through ZeroMQ)",
        "",
        "| Case | Pixels | Hole | Runs | Median | Min – max | Backend CPU / fill | Backend peak RSS "
        "| RSS after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in report["results"]:
        if item["method"] != OURS:
            continue
        times = item["times_s"]
        spread = f"{_fmt_s(min(times))} – {_fmt_s(max(times))}" if times else "–"
        lines.append(
            f"| {item['case']} | {item['pixels'] / 1e6:.2f} MP | {item['hole_percent']:.1f}% "
            f"| {item['runs']} | {_time_cell(item)} | {spread} | {_fmt_s(item['median_cpu_s'])} "
            f"| {_fmt_mb(item['peak_rss_bytes'])} "
            f"| {_fmt_mb(item['rss_after_bytes'])} |"
        )
    scope = {item["check"].get("peak_scope") for item in report["results"] if item["method"] == OURS}
    lines += [
        "",
        "Peak RSS is VmHWM of the backend process, "
        + (
            "reset before each case (/proc/PID/clear_refs), so each row is that case's own peak."
            if scope == {"case"}
            else "cumulative since the backend started (the kernel refused a reset), so a row also "
            "covers every earlier case."
        )
        + " Backend CPU / fill is the user + system CPU time the backend process spent per fill (its "
        "threads can use several cores at once); unlike wall time it barely depends on other load.",
        "",
    ]
    cold = report.get("cold_start")
    if cold:
        lines += [
            f"Cold start: spawn -> hello {_fmt_s(cold['spawn_to_hello_s'])}, spawn -> first result "
            f"{_fmt_s(cold['spawn_to_first_result_s'])} ({cold['first_case']}).",
            "",
        ]
    transport = report.get("transport")
    if transport:
        used = transport.get("transport_used", "frames")
        frames = transport.get("frames")
        rows = [
            f"| round trip through the backend, {used.replace('_', ' ')} (empty mask, 0x0 reply; "
            "what a plug-in's session gets after its first fill) "
            f"| {_fmt_s(transport['round_trip_median_s'])} "
            f"| {transport['round_trip_gb_per_s']:.2f} GB/s | {_fmt_ratio(transport['ratio_to_memcpy'])} |",
        ]
        if "first_round_trip_s" in transport:
            rows.append(
                f"| the session's first round trip (its segment is made or grown: pages allocated) "
                f"| {_fmt_s(transport['first_round_trip_s'])} | | |"
            )
        if frames:
            rows.append(
                "| round trip through the backend, frames (Client(shared_memory=False)) "
                f"| {_fmt_s(frames['round_trip_median_s'])} | {frames['round_trip_gb_per_s']:.2f} GB/s "
                f"| {_fmt_ratio(frames['ratio_to_memcpy'])} |"
            )
        lines += [
            "## Transport",
            "",
            f"{transport['width']}x{transport['height']} {transport['format']}, "
            f"{_fmt_mb(transport['bytes'])} per request:",
            "",
            "| Measure | Median | Throughput | / memcpy |",
            "|---|---:|---:|---:|",
            *rows,
            f"| numpy copy of the same bytes (preallocated) | {_fmt_s(transport['memcpy_median_s'])} "
            f"| {transport['memcpy_gb_per_s']:.2f} GB/s | 1x |",
            f"| numpy copy with allocation | {_fmt_s(transport['copy_with_allocation_median_s'])} | | |",
            "",
            f"Round trip / memcpy: **{_fmt_ratio(transport['ratio_to_memcpy'])}** "
            f"through {used.replace('_', ' ')} "
            "(the round trip also covers the client's and backend's request checks and the backend's scan "
            "of the empty mask; through shared memory it includes the one copy into the segment).",
            "",
        ]
    if report["settings"]["compare"]:
        lines += _compare_tables(report)
    lines += _gpu_lines(report.get("gpu"))
    lines += [
        "## Targets (issue 6)",
        "",
        "| Target | Limit | Measured | Result |",
        "|---|---:|---:|---|",
    ]
    for row in report["targets"]:
        measured = "–" if row["measured"] is None else _fmt_value(row["measured"], row["unit"])
        result = row["status"] + (f", {row['margin']}" if row["margin"] else "")
        lines.append(
            f"| {row['target']} | ≤ {_fmt_value(row['limit'], row['unit'])} | {measured} | {result} |"
        )
    return "\n".join(lines) + "\n"


def _compare_tables(report: dict[str, Any]) -> list[str]:
    methods = [OURS, *report["settings"]["peers"]]
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for item in report["results"]:
        by_case.setdefault(item["case"], {})[item["method"]] = item
    titles = " | ".join(METHOD_TITLES[m] for m in methods)
    rule = "|".join(["---"] + ["---:"] * len(methods))
    lines = [
        "## Compared with other methods (same images, same holes, same run)",
        "",
        "Median time; in brackets the method's time divided by ours (above 1: ours is faster).",
        "",
        f"| Case | {titles} |",
        f"|{rule}|",
    ]
    for case, items in by_case.items():
        ours = items.get(OURS, {}).get("median_s")
        cells = []
        for method in methods:
            item = items.get(method)
            if item is None:
                cells.append("–")
                continue
            cell = _time_cell(item)
            value = item.get("median_s")
            if item.get("capped") and ours:
                cell += f" (> {_fmt_ratio(item['cap_s'] / ours)})"
            elif method != OURS and value is not None and ours:
                cell += f" ({_fmt_ratio(value / ours)})"
            cells.append(cell)
        lines.append(f"| {case} | {' | '.join(cells)} |")
    lines += [
        "",
        "Peak RSS of each method (its own process: ours is the backend, the others a child process that "
        "loads the image and runs the method; a run stopped at the cap shows the peak so far):",
        "",
        f"| Case | {titles} |",
        f"|{rule}|",
    ]
    for case, items in by_case.items():
        cells = [_fmt_mb(items[m]["peak_rss_bytes"]) if m in items else "–" for m in methods]
        lines.append(f"| {case} | {' | '.join(cells)} |")
    cap = report["settings"]["cap_s"]
    lines += [
        "",
        f"OpenCV: cv2.inpaint radius {OPENCV_RADIUS}; PatchMatch: patchmatch-cython "
        f"{report['settings']['patchmatch_version'] or '(not installed)'} `inpaint_pyramid`, defaults. "
        f"Time cap per run: {cap:g} s; a method past the cap is not run on larger cases.",
        "",
    ]
    return lines


def plot_scaling(report: dict[str, Any], path: Path) -> None:
    """Log-log plot of median fill time against pixels, one line per method and hole share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {OURS: "tab:blue", "telea": "tab:orange", "ns": "tab:green", "patchmatch": "tab:red"}
    styles = {5.0: ":", 10.0: "-", 25.0: "--"}
    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    series: dict[tuple[str, float], list[tuple[int, float, bool]]] = {}
    for item in report["results"]:
        target_hole = float(item["case"].rsplit(" ", 1)[1].rstrip("%"))
        if item.get("skipped") or item.get("error"):
            continue
        value = item["cap_s"] if item.get("capped") else item.get("median_s")
        if value is not None:
            series.setdefault((item["method"], target_hole), []).append(
                (item["pixels"], value, item["capped"])
            )
    order = [OURS, *PEERS]
    ranked = sorted(
        series.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 99, kv[0][1])
    )
    for (method, hole), points in ranked:
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        axes.plot(
            xs,
            ys,
            styles.get(hole, "-"),
            color=colours.get(method, "gray"),
            marker="o",
            markersize=4,
            label=f"{METHOD_TITLES.get(method, method)}, {hole:g}% hole",
        )
        capped = [(x, y) for x, y, is_capped in points if is_capped]
        if capped:
            axes.plot(
                *zip(*capped, strict=True),
                "^",
                color=colours.get(method, "gray"),
                markersize=9,
                markerfacecolor="none",
            )
    for row in report["targets"]:
        pixels = {"512x512": 512 * 512, "4K": 3840 * 2160, "8K": 7680 * 4320}.get(row["target"].split()[0])
        if row["unit"] == "s" and pixels:
            axes.plot([pixels], [row["limit"]], marker="_", color="black", markersize=16, mew=2)
    axes.plot(
        [], [], marker="_", color="black", linestyle="none", markersize=12, mew=2, label="issue 6 target"
    )
    if any(item.get("capped") for item in report["results"]):
        axes.plot(
            [], [], "^", color="gray", markerfacecolor="none", linestyle="none", label="stopped at the cap"
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("image pixels")
    axes.set_ylabel("median fill time [s]")
    machine = report["machine"]
    axes.set_title(f"Fill time vs image size — {machine['cpu']}, {machine['cpus']} CPUs", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        match = re.search(r"MemTotal:\s+(\d+) kB", handle.read())
        ram = int(match.group(1)) * 1024 if match else 0
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cpu": cpu,
        "cpus": os.cpu_count() or 0,
        "ram_gb": ram / 1e9,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch_version,
        "load_at_start": round(load, 2),
    }


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def describe_image(path: Path | None) -> str:
    if path is None or not path.is_file():
        return "procedural texture"
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_lines(gpu: dict[str, Any] | None) -> list[str]:
    if gpu is None:
        return []
    if "skipped" in gpu:
        return ["## GPU", "", f"GPU section skipped: {gpu['skipped']}.", ""]
    lines = [
        "## GPU (in-process engine, no ZeroMQ)",
        "",
        f"{gpu['device_name']}, CUDA {gpu['cuda']}; median of warm fills, device synchronised.",
        "",
        "| Case | fp16 | fp32 | fp32 / fp16 |",
        "|---|---:|---:|---:|",
    ]
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for row in gpu["results"]:
        by_case.setdefault(row["case"], {})[row["precision"]] = row

    def cell(row: dict[str, Any] | None) -> str:
        if row is None:
            return "–"
        return row["error"] if row["error"] else _fmt_s(row["median_s"])

    for case, rows in by_case.items():
        fp16, fp32 = rows.get("fp16"), rows.get("fp32")
        ratio = (
            _fmt_ratio(fp32["median_s"] / fp16["median_s"])
            if fp16 and fp32 and fp16["median_s"] and fp32["median_s"]
            else "–"
        )
        lines.append(f"| {case} | {cell(fp16)} | {cell(fp32)} | {ratio} |")
    return [*lines, ""]

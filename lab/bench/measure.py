"""What the bench reads off processes: peak and current RSS, CPU time, pausing a process tree."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lab.bench.cases import BenchError
from shared_protocol import InpaintResult

# ------------------------------------------------------------------------------------------- measurement


@dataclass
class Measurement:
    """One method on one case. times_s are the completed runs; capped: a run passed cap_s and was stopped."""

    method: str
    case: str
    width: int
    height: int
    hole_percent: float  # actual share of hole pixels, in %
    times_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # CPU time (user + system) of the method's process
    capped: bool = False
    cap_s: float | None = None
    skipped: str | None = None  # why the case was not run
    error: str | None = None
    peak_rss_bytes: int | None = None
    rss_after_bytes: int | None = None
    rss_before_bytes: int | None = None
    check: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float | None:
        return float(np.median(self.times_s)) if self.times_s and not self.capped else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["median_s"] = self.median_s
        data["median_cpu_s"] = float(np.median(self.cpu_s)) if self.cpu_s else None
        data["runs"] = len(self.times_s)
        data["pixels"] = self.width * self.height
        return data


def process_memory(pid: int | str) -> dict[str, int]:
    """VmHWM/VmRSS (and friends) of a process in bytes, from /proc/PID/status; {} if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(kb) * 1024 for key, kb in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.MULTILINE)}


def process_cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU time of a process so far, from /proc/PID/stat; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int | str) -> bool:
    """Reset VmHWM of a process to its current RSS (Linux >= 4.0). False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def check_fill(image: np.ndarray, mask: np.ndarray, region: np.ndarray, x: int, y: int) -> dict[str, Any]:
    """Sanity of one result: it covers the hole, changes it, and leaves every other pixel bit-exact."""
    height, width = region.shape[:2]
    original = image[y : y + height, x : x + width]
    hole = mask[y : y + height, x : x + width] > 0
    changed = np.any(region != original, axis=2)
    hole_pixels = int(np.count_nonzero(hole))
    return {
        "covers_hole": hole_pixels == int(np.count_nonzero(mask)),
        "hole_changed_fraction": float(np.count_nonzero(changed & hole)) / max(hole_pixels, 1),
        "outside_bit_exact": not bool(np.any(changed & ~hole)),
        "region": [x, y, width, height],
    }


def region_of(result: InpaintResult) -> np.ndarray:
    return np.frombuffer(result.pixels, dtype=np.uint8).reshape(result.height, result.width, result.channels)


# ------------------------------------------------------------------------------------------- pausing


def _process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/PID/task/*/children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in children.read_text().split())
    return found


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('T' stopped, 'R' running, 'S' sleeping...); '' if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _wait_until_stopped(pid: int, timeout_s: float = 5.0) -> None:
    """SIGSTOP is delivered asynchronously: wait until the process really is stopped (or gone)."""
    deadline = time.monotonic() + timeout_s
    while process_state(pid) not in ("T", "t", "", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[list[int]]:
    """SIGSTOP a process (and its children) for the duration; SIGCONT them in any case afterwards.

    SIGTERM and SIGHUP are turned into SystemExit meanwhile, so the resume runs on those too (SIGKILL
    cannot be caught: then resume by hand with `kill -CONT PID`).
    """
    if pid is None:
        yield []
        return
    if pid in (os.getpid(), os.getppid()) or pid <= 1:
        raise BenchError(f"Refusing to pause process {pid} (it is this bench, its parent or init).")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise BenchError(f"No process {pid} to pause.") from None

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    stopped: list[int] = []
    try:
        for member in _process_tree(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGSTOP)
                stopped.append(member)
        for member in stopped:
            _wait_until_stopped(member)
        yield stopped
    finally:
        for member in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGCONT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

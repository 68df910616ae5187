"""`python -m backend bench`: fill latency, memory and transport of the real backend, as a plug-in sees them.

What is measured, and how:

- **Our backend** runs as a real process (`python -m backend serve` on a free loopback port) and is
  driven over ZeroMQ by `shared_protocol.Client`, exactly as the GIMP and Krita plug-ins drive it. The
  whole image and mask are sent (a plug-in may send less: the selection's box plus context).
- **Cold start**: spawn -> first `hello` answer, and spawn -> first fill result (a fill of at most
  512x512, see cold_start_case).
- **Fill time**: wall time of `Client.inpaint` (local checks, send, queue, CRA fill, reply, decode);
  median of N warm runs per case.
- **Memory**: VmHWM (peak resident set) of the backend process from /proc. Before each case the peak is
  reset through /proc/PID/clear_refs, so each case reports its own peak; where the kernel refuses the
  reset the peaks are cumulative and the report says so. VmRSS after the case is reported as well.
- **Transport**: an 8K RGBA u8 image with an empty mask: the backend receives and checks the whole
  request, scans the mask and answers with a 0x0 region. Compared with a plain numpy copy of the same
  bytes (image + mask) into already-allocated memory.
- **--compare**: OpenCV Telea and Navier-Stokes (`cv2.inpaint`, radius 3) and PatchMatch
  (`patchmatch_cython.inpaint_pyramid`) on the same images and holes, each method and case in a child
  process of its own, so its peak RSS is its own. A per-run time cap stops methods that would take far
  too long; they are reported as '> cap', and larger cases of a capped method are skipped.
- **GPU**: when torch sees CUDA, the same cases through the in-process engine in fp16 and fp32 (device
  name, median times); otherwise the report says the section was skipped and why.

Cases are an upscaled photo (samples/otters.jpg; a procedural texture if it is missing) with one
blob-shaped hole (a union of ellipses) scaled to the requested share of the image.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from tqdm import tqdm

from shared_protocol import Client, ErrorKind, HiFillError, InpaintResult

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = REPO / "samples" / "otters.jpg"
DEFAULT_OUT = REPO / "runs" / "bench"

NAMED_SIZES = {"512": (512, 512), "2k": (2048, 1080), "4k": (3840, 2160), "8k": (7680, 4320)}
DEFAULT_SIZES = ("512", "2k", "4k", "8k")
DEFAULT_HOLE_PERCENT = {"8k": 25.0}  # every other size: 10 %
COMPARE_HOLES = (5.0, 10.0, 25.0)

OURS = "hifill"
PEERS = ("telea", "ns", "patchmatch")
METHOD_TITLES = {
    OURS: "HiFill (ours, via ZeroMQ)",
    "telea": "OpenCV Telea",
    "ns": "OpenCV Navier-Stokes",
    "patchmatch": "PatchMatch",
}
OPENCV_RADIUS = 3
MB = 1_000_000

_SERVE_CODE = "import sys; from backend.server import main; sys.exit(main(sys.argv[1:]))"
_PEER_CHILD_CODE = (
    "import sys; from lab.bench.run import peer_child_main; sys.exit(peer_child_main(sys.argv[1:]))"
)


class BenchError(Exception):
    """The bench cannot go on (a sentence for the person running it)."""


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One image size with one hole share."""

    size: str  # "512x512", "2K", "4K", "8K" or "WxH"
    width: int
    height: int
    hole_percent: float  # requested share of hole pixels

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def key(self) -> str:
        return f"{self.size} {self.hole_percent:g}%"


def parse_size(text: str) -> tuple[str, int, int]:
    """'512', '2k', '4k', '8k', 'N' (N x N) or 'WxH' -> (label, width, height)."""
    name = text.strip().lower()
    if name in NAMED_SIZES:
        width, height = NAMED_SIZES[name]
        return (f"{width}x{height}" if name == "512" else name.upper()), width, height
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", name)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use 512, 2k, 4k, 8k, N or WxH.")
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"Size {width}x{height} is too small; use at least 32x32.")
    return f"{width}x{height}", width, height


def build_cases(sizes: Sequence[str], holes: Sequence[float] | None, compare: bool) -> list[Case]:
    """Cases in order of pixels, then hole share. holes=None: 5/10/25 % with --compare, else per size."""
    cases = []
    for text in sizes:
        label, width, height = parse_size(text)
        if holes:
            percents = list(holes)
        elif compare:
            percents = list(COMPARE_HOLES)
        else:
            percents = [DEFAULT_HOLE_PERCENT.get(text.strip().lower(), 10.0)]
        cases.extend(Case(label, width, height, percent) for percent in percents)
    unique = {case.key: case for case in cases}
    return sorted(unique.values(), key=lambda case: (case.pixels, case.hole_percent))


def natural_image(width: int, height: int, source: Path | None = DEFAULT_IMAGE) -> np.ndarray:
    """(height, width, 3) uint8: the source photo centre-cropped to the aspect ratio and resized.

    Without a readable source photo, a smooth multi-scale colour texture stands in.
    """
    if source is not None and Path(source).is_file():
        with Image.open(source) as opened:
            photo = ImageOps.exif_transpose(opened).convert("RGB")
        photo = ImageOps.fit(photo, (width, height), Image.Resampling.BICUBIC)
    else:
        photo = Image.fromarray(procedural_texture(min(width, 1024), min(height, 1024)))
        photo = photo.resize((width, height), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(photo, dtype=np.uint8))


def procedural_texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour texture (octaves of upsampled noise), (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width, 3), dtype=np.float32)
    for octave in range(6):
        cells = 2 ** (octave + 2)
        noise = rng.integers(0, 256, (cells, max(2, cells * width // max(height, 1)), 3), dtype=np.uint8)
        layer = Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)
        total += np.asarray(layer, dtype=np.float32) * 0.6**octave
    total -= total.min()
    total *= 255.0 / max(float(total.max()), 1e-6)
    return total.astype(np.uint8)


@dataclass(frozen=True)
class _Ellipse:
    dx: float  # centre offset from the blob's centre, in blob units
    dy: float
    rx: float
    ry: float
    angle: float


def blob_mask(width: int, height: int, hole_percent: float, seed: int = 0) -> np.ndarray:
    """One connected blob-shaped hole (a union of rotated ellipses) covering about hole_percent %.

    (height, width) uint8, 255 = hole. The blob is star-shaped around its centre (every ellipse holds
    the centre), so its area grows with its scale; the scale is found by bisection on a small render.
    """
    if not 0.0 < hole_percent < 100.0:
        raise ValueError(f"hole share must lie between 0 and 100 %, got {hole_percent}")
    rng = np.random.default_rng(seed)
    centre = (width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6))
    ellipses = [
        _Ellipse(
            dx=rng.uniform(-0.35, 0.35),
            dy=rng.uniform(-0.35, 0.35),
            rx=rng.uniform(0.55, 1.0),
            ry=rng.uniform(0.55, 1.0),
            angle=rng.uniform(0.0, math.pi),
        )
        for _ in range(5)
    ]
    target = hole_percent / 100.0
    shrink = min(1.0, 512.0 / max(width, height))
    small = (max(8, round(width * shrink)), max(8, round(height * shrink)))
    low, high = 0.0, 2.0 * max(width, height)
    for _ in range(40):
        scale = (low + high) / 2
        share = _render_blob(small, centre, ellipses, scale, shrink).mean() / 255.0
        low, high = (scale, high) if share < target else (low, scale)
    return _render_blob((width, height), centre, ellipses, (low + high) / 2, 1.0)


def _render_blob(
    size: tuple[int, int],
    centre: tuple[float, float],
    ellipses: Sequence[_Ellipse],
    scale: float,
    zoom: float,
) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    angles = np.linspace(0.0, 2.0 * math.pi, 96, endpoint=False)
    for e in ellipses:
        cx = (centre[0] + e.dx * scale) * zoom
        cy = (centre[1] + e.dy * scale) * zoom
        x = e.rx * scale * zoom * np.cos(angles)
        y = e.ry * scale * zoom * np.sin(angles)
        cos, sin = math.cos(e.angle), math.sin(e.angle)
        points = list(zip((cx + x * cos - y * sin).tolist(), (cy + x * sin + y * cos).tolist(), strict=True))
        draw.polygon(points, fill=255)
    return np.asarray(canvas, dtype=np.uint8)


class CaseData:
    """Images (one per size) and masks (one per case), made once and reused by every method."""

    def __init__(self, source: Path | None, seed: int = 0) -> None:
        self.source = source
        self.seed = seed
        self._images: dict[tuple[int, int], np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}

    def image(self, width: int, height: int) -> np.ndarray:
        if (width, height) not in self._images:
            self._images[(width, height)] = natural_image(width, height, self.source)
        return self._images[(width, height)]

    def mask(self, case: Case) -> np.ndarray:
        if case.key not in self._masks:
            self._masks[case.key] = blob_mask(case.width, case.height, case.hole_percent, self.seed)
        return self._masks[case.key]

    def hole_share(self, case: Case) -> float:
        return float(np.count_nonzero(self.mask(case))) / case.pixels


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


# ----------------------------------------------------------------------------------------- our backend


def free_tcp_endpoint() -> str:
    """A loopback endpoint on a port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def serve_command(
    endpoint: str,
    weights: Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    allow_untrained: bool = False,
    working_size: int | None = None,
) -> list[str]:
    """The command line that starts the backend as a user would (`python -m backend serve ...`)."""
    options = ["--endpoint", endpoint, "--device", device]
    if weights is not None:
        options += ["--weights", str(weights)]
    if precision != "auto":
        options += ["--precision", precision]
    if allow_untrained:
        options.append("--allow-untrained")
    if working_size is not None:
        options += ["--working-size", str(working_size)]
    if (REPO / "backend" / "__main__.py").is_file():
        return [sys.executable, "-m", "backend", "serve", *options]
    return [sys.executable, "-c", _SERVE_CODE, *options]


class BackendProcess:
    """A backend process started for the bench, with its log in a file and its memory from /proc."""

    def __init__(self, command: list[str], endpoint: str, log_path: Path) -> None:
        self.command = command
        self.endpoint = endpoint
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.spawned_at = 0.0

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        with open(self.log_path, "w") as log:
            self.spawned_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_for_hello(self, client: Client, timeout_s: float) -> dict[str, Any]:
        """Ask hello until the backend answers; BenchError if it exits or stays silent."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return client.hello()
            except HiFillError as error:
                if error.kind != ErrorKind.BACKEND_UNAVAILABLE:
                    raise BenchError(f"The backend answered hello with an error: {error.message}") from None
            if self.process.poll() is not None:
                raise BenchError(
                    f"The backend exited with code {self.process.returncode} before answering.\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise BenchError(f"The backend did not answer within {timeout_s:g} s.\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory(self) -> dict[str, int]:
        return process_memory(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "backend log (last lines):\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def run_ours(
    client: Client,
    backend: BackendProcess,
    case: Case,
    data: CaseData,
    repeats: int,
    on_run: Callable[[], None],
) -> Measurement:
    """Warm fills of one case through the backend; memory peak of this case alone where possible."""
    image, mask = data.image(case.width, case.height), data.mask(case)
    result = Measurement(OURS, case.key, case.width, case.height, 100.0 * data.hole_share(case))
    result.rss_before_bytes = backend.memory().get("VmRSS")
    resettable = reset_peak_rss(backend.pid)
    result.check["peak_scope"] = "case" if resettable else "cumulative since start"
    for run in range(repeats):
        cpu_before = process_cpu_seconds(backend.pid)
        start = time.perf_counter()
        try:
            filled = client.inpaint(image, case.width, case.height, 3, "u8", mask)
        except HiFillError as error:
            if not backend.alive():
                raise BenchError(
                    f"The backend died during {case.key}: {error.message}\n{backend.log_tail()}"
                ) from None
            result.error = f"{error.kind.value}: {error.message}"
            break
        result.times_s.append(time.perf_counter() - start)
        cpu_after = process_cpu_seconds(backend.pid)
        if cpu_before is not None and cpu_after is not None:
            result.cpu_s.append(cpu_after - cpu_before)
        if run == 0:
            result.check.update(check_fill(image, mask, region_of(filled), filled.x, filled.y))
        del filled
        on_run()
    memory = backend.memory()
    result.peak_rss_bytes, result.rss_after_bytes = memory.get("VmHWM"), memory.get("VmRSS")
    return result


def measure_transport(
    client: Client,
    backend: BackendProcess,
    width: int,
    height: int,
    data: CaseData,
    repeats: int,
    on_run: Callable[[], None],
) -> dict[str, Any]:
    """Round trip of an RGBA u8 request with an empty mask versus a numpy copy of the same bytes.

    Measured twice: with `client` as a plug-in gets it (shared memory when the backend is on this
    machine; "transport_used" says what it used, and the top-level numbers and the target are its),
    and with a second Client that sends frames ("frames"), so both paths stay visible. The first
    shared-memory round trip of this size also creates (or grows) the Client's segment and allocates
    its pages (what a plug-in that makes a Client per fill pays every time); it is reported on its
    own ("first_round_trip_s") and is part of the median.
    """
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = data.image(width, height)
    rgba[..., 3] = 255
    mask = np.zeros((height, width), dtype=np.uint8)
    reset_peak_rss(backend.pid)

    def round_trips(sender: Client) -> list[float]:
        trips = []
        for _ in range(repeats):
            start = time.perf_counter()
            answer = sender.inpaint(rgba, width, height, 4, "u8", mask)
            trips.append(time.perf_counter() - start)
            if answer.width or answer.height:
                raise BenchError(f"An empty mask came back as a {answer.width}x{answer.height} region.")
            on_run()
        return trips

    trips = round_trips(client)
    used = client.last_transport or "frames"
    with Client(
        client.endpoint,
        timeout_s=client.timeout_s,
        connect_timeout_s=client.connect_timeout_s,
        inactivity_timeout_s=client.inactivity_timeout_s,
        shared_memory=False,
    ) as frames_client:
        frame_trips = round_trips(frames_client)
    memory = backend.memory()
    image_copy, mask_copy = np.empty_like(rgba), np.empty_like(mask)
    image_copy.fill(0)  # pages touched: the copies below measure bandwidth, not page faults
    mask_copy.fill(0)
    copies, fresh_copies = [], []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        np.copyto(image_copy, rgba)
        np.copyto(mask_copy, mask)
        copies.append(time.perf_counter() - start)
        start = time.perf_counter()
        fresh = (rgba.copy(), mask.copy())
        fresh_copies.append(time.perf_counter() - start)
        del fresh
    payload = rgba.nbytes + mask.nbytes
    trip, copy = float(np.median(trips)), float(np.median(copies))
    frame_trip = float(np.median(frame_trips))
    return {
        "width": width,
        "height": height,
        "format": "RGBA u8 + L u8 mask (empty)",
        "bytes": payload,
        "transport_used": used,
        "round_trip_s": trips,
        "round_trip_median_s": trip,
        "first_round_trip_s": trips[0],
        "frames": {
            "round_trip_s": frame_trips,
            "round_trip_median_s": frame_trip,
            "ratio_to_memcpy": frame_trip / copy,
            "round_trip_gb_per_s": payload / frame_trip / 1e9,
        },
        "memcpy_s": copies,
        "memcpy_median_s": copy,
        "copy_with_allocation_median_s": float(np.median(fresh_copies)),
        "ratio_to_memcpy": trip / copy,
        "round_trip_gb_per_s": payload / trip / 1e9,
        "memcpy_gb_per_s": payload / copy / 1e9,
        "backend_peak_rss_bytes": memory.get("VmHWM"),
    }


# ---------------------------------------------------------------------------------------------- peers


def peer_available(method: str) -> str | None:
    """None if the peer method can run here, else why not."""
    module = {"telea": "cv2", "ns": "cv2", "patchmatch": "patchmatch_cython"}[method]
    if importlib.util.find_spec(module) is None:
        package = {"cv2": "opencv-python-headless", "patchmatch_cython": "patchmatch-cython"}[module]
        return f"not installed (pip install {package})"
    return None


def peer_function(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The peer's fill: (image (H,W,3) u8, mask (H,W) u8 255=hole) -> full filled image."""
    if method in ("telea", "ns"):
        import cv2

        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        return lambda image, mask: cv2.inpaint(image, mask, OPENCV_RADIUS, flag)
    if method == "patchmatch":
        from patchmatch_cython import inpaint_pyramid

        return lambda image, mask: inpaint_pyramid(image, mask, seed=0)
    raise ValueError(f"unknown method {method!r}")


def peer_child_main(argv: list[str]) -> int:
    """Child process: METHOD IMAGE.npy MASK.npy REPEATS CAP_S. Prints one JSON line per event.

    Events: ready (after loading), run (seconds, memory). Runs stop early when the next one would
    likely pass the cap (the parent stops a run that does).
    """
    method, image_path, mask_path, repeats, cap_s = argv
    fill = peer_function(method)
    image, mask = np.load(image_path), np.load(mask_path)
    memory = process_memory("self")
    _emit({"event": "ready", "rss": memory.get("VmRSS"), "hwm": memory.get("VmHWM")})
    spent = 0.0
    for run in range(int(repeats)):
        start, cpu_start = time.perf_counter(), time.process_time()
        output = fill(image, mask)
        seconds = time.perf_counter() - start
        spent += seconds
        message: dict[str, Any] = {"event": "run", "seconds": seconds, "cpu": time.process_time() - cpu_start}
        if run == 0:
            message["check"] = check_fill(image, mask, np.asarray(output), 0, 0)
        memory = process_memory("self")
        message.update(rss=memory.get("VmRSS"), hwm=memory.get("VmHWM"))
        _emit(message)
        del output
        if spent + seconds > float(cap_s):
            break
    return 0


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def run_peer(
    method: str,
    case: Case,
    hole_percent: float,
    image_path: Path,
    mask_path: Path,
    repeats: int,
    cap_s: float,
    on_run: Callable[[], None] = lambda: None,
) -> Measurement:
    """One peer method on one case in a child process; runs longer than cap_s are stopped."""
    result = Measurement(method, case.key, case.width, case.height, hole_percent, cap_s=cap_s)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", _PEER_CHILD_CODE, method, str(image_path), str(mask_path)]
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            [*command, str(repeats), str(cap_s)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(child.stdout, lines), daemon=True)
        reader.start()
        try:
            ready = lines.get(timeout=300)
            if ready is None:
                child.wait(10)
                errors.seek(0)
                tail = errors.read().strip().splitlines()[-3:]
                result.error = f"the child process failed: {' '.join(tail) or child.returncode}"
                return result
            result.rss_before_bytes = json.loads(ready).get("rss")
            while True:
                try:
                    line = lines.get(timeout=cap_s)
                except queue.Empty:
                    result.capped = True
                    break
                if line is None:
                    break
                message = json.loads(line)
                result.times_s.append(message["seconds"])
                result.cpu_s.append(message["cpu"])
                result.peak_rss_bytes, result.rss_after_bytes = message.get("hwm"), message.get("rss")
                result.check.update(message.get("check", {}))
                on_run()
        finally:
            if child.poll() is None and result.capped:
                memory = process_memory(child.pid)
                result.peak_rss_bytes = memory.get("VmHWM", result.peak_rss_bytes)
            if child.poll() is None:
                child.kill()
            child.wait(10)
            reader.join(5)
        if child.returncode not in (0, -signal.SIGKILL) and not result.times_s and not result.capped:
            errors.seek(0)
            result.error = f"the child process failed: {errors.read().strip()[-300:]}"
    return result


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        if line.startswith("{"):
            lines.put(line)
    lines.put(None)


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
            "what a plug-in gets) "
            f"| {_fmt_s(transport['round_trip_median_s'])} "
            f"| {transport['round_trip_gb_per_s']:.2f} GB/s | {_fmt_ratio(transport['ratio_to_memcpy'])} |",
        ]
        if "first_round_trip_s" in transport:
            rows.append(
                f"| the first of those round trips (a new segment: its pages are allocated) "
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


def _commit() -> str:
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


def _describe_image(path: Path | None) -> str:
    if path is None or not path.is_file():
        return "procedural texture"
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ GPU


def gpu_skip_reason() -> str | None:
    """Why the GPU section cannot run here, or None when CUDA is usable."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    return "no CUDA device is visible to torch"


def run_gpu_section(settings: BenchSettings, data: CaseData) -> dict[str, Any]:
    """fp16 vs fp32 fill times of the in-process engine on CUDA for the same cases (no ZeroMQ).

    Each precision gets its own engine; every case is filled once untimed (cudnn picks its kernels
    for the window's shape), then ``repeats`` timed fills with the device synchronised around each.
    Without CUDA: {"skipped": reason}.
    """
    reason = gpu_skip_reason()
    if reason:
        return {"skipped": reason}
    import torch

    from backend.inference import TorchInpaintEngine

    section: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name(0),
        "cuda": torch.version.cuda,
        "results": [],
    }
    for precision in ("fp16", "fp32"):
        engine = TorchInpaintEngine.load(
            settings.weights, device="cuda", precision=precision, allow_untrained=settings.allow_untrained
        )
        for case in settings.cases:
            image, mask = data.image(case.width, case.height), data.mask(case)
            row: dict[str, Any] = {"case": case.key, "precision": precision, "times_s": [], "error": None}
            try:
                engine.fill(image, mask)
                for _ in range(settings.repeats):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    engine.fill(image, mask)
                    torch.cuda.synchronize()
                    row["times_s"].append(time.perf_counter() - start)
            except HiFillError as error:
                row["error"] = f"{error.kind.value}: {error.message}"
            row["median_s"] = float(np.median(row["times_s"])) if row["times_s"] else None
            section["results"].append(row)
        del engine
        torch.cuda.empty_cache()
    return section


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


# ------------------------------------------------------------------------------------------------ run


@dataclass
class BenchSettings:
    cases: list[Case]
    repeats: int = 3
    compare: bool = False
    peers: tuple[str, ...] = PEERS
    cap_s: float = 120.0
    transport: tuple[str, int, int] | None = ("8K", 7680, 4320)
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    allow_untrained: bool = False
    working_size: int | None = None
    image: Path | None = DEFAULT_IMAGE
    out: Path = DEFAULT_OUT
    progress: bool = True
    paused: str = ""
    command: str = "python -m backend bench"


def cold_start_case(cases: Sequence[Case]) -> Case:
    """The fill that ends the cold start: the smallest case if it is at most 512x512, else 512x512 10%.

    A fixed small fill keeps cold starts of different runs comparable (a first 8K fill would mostly
    measure the fill).
    """
    smallest = min(cases, key=lambda case: (case.pixels, case.hole_percent))
    return smallest if smallest.pixels <= 512 * 512 else Case("512x512", 512, 512, 10.0)


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure everything, return the report (as plain data, also what bench.json holds)."""
    settings.out.mkdir(parents=True, exist_ok=True)
    data = CaseData(settings.image)
    transport_runs = 2 * settings.repeats if settings.transport else 0  # shared memory, then frames
    total = len(settings.cases) * settings.repeats * (1 + (len(settings.peers) if settings.compare else 0))
    report: dict[str, Any] = {
        "schema": 1,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
        "command": settings.command,
        "machine": machine_description(),
        "settings": {
            "repeats": settings.repeats,
            "compare": settings.compare,
            "peers": list(settings.peers) if settings.compare else [],
            "cap_s": settings.cap_s,
            "image": _describe_image(settings.image),
            "paused": settings.paused,
            "endpoint_kind": "tcp loopback",
            "patchmatch_version": _package_version("patchmatch-cython"),
            "opencv_version": _package_version("opencv-python-headless"),
        },
        "cases": [],
        "results": [],
    }
    with tqdm(
        total=total + transport_runs,
        desc="bench",
        unit="run",
        disable=not settings.progress,
        dynamic_ncols=True,
    ) as bar:

        def tick() -> None:
            bar.update()

        endpoint = free_tcp_endpoint()
        command = serve_command(
            endpoint,
            settings.weights,
            settings.device,
            settings.precision,
            settings.allow_untrained,
            settings.working_size,
        )
        backend = BackendProcess(command, endpoint, settings.out / "backend.log")
        client = Client(endpoint, timeout_s=1800.0, connect_timeout_s=0.5, inactivity_timeout_s=60.0)
        try:
            first = cold_start_case(settings.cases)
            bar.set_postfix_str("backend cold start")
            data.image(first.width, first.height)  # image and mask are made before the clock starts
            data.mask(first)
            backend.start()
            report["backend"] = backend.wait_for_hello(client, timeout_s=600.0)
            hello_s = time.perf_counter() - backend.spawned_at
            client.inpaint(
                data.image(first.width, first.height), first.width, first.height, 3, "u8", data.mask(first)
            )
            report["cold_start"] = {
                "spawn_to_hello_s": hello_s,
                "spawn_to_first_result_s": time.perf_counter() - backend.spawned_at,
                "first_case": first.key,
                "peak_rss_bytes": backend.memory().get("VmHWM"),
                "backend_pid": backend.pid,
            }
            for case in settings.cases:
                bar.set_postfix_str(f"{METHOD_TITLES[OURS]}: {case.key}")
                report["cases"].append({**asdict(case), "key": case.key, "hole_share": data.hole_share(case)})
                report["results"].append(
                    run_ours(client, backend, case, data, settings.repeats, tick).to_dict()
                )
            if settings.transport:
                label, width, height = settings.transport
                bar.set_postfix_str(f"transport {label}")
                report["transport"] = measure_transport(
                    client, backend, width, height, data, settings.repeats, tick
                )
        finally:
            client.close()
            backend.stop()
        if settings.compare:
            report["results"] += _run_peers(settings, data, bar)
    report["gpu"] = run_gpu_section(settings, data)
    report["targets"] = target_table(report)
    report["load_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return report


def _run_peers(settings: BenchSettings, data: CaseData, bar: tqdm) -> list[dict[str, Any]]:
    results = []
    capped_at: dict[str, list[Case]] = {method: [] for method in settings.peers}
    with tempfile.TemporaryDirectory(prefix="hifill-bench-") as scratch:
        for case in settings.cases:
            image_path = Path(scratch) / f"image-{case.width}x{case.height}.npy"
            if not image_path.exists():
                np.save(image_path, data.image(case.width, case.height))
            mask_path = Path(scratch) / "mask.npy"
            np.save(mask_path, data.mask(case))
            hole = 100.0 * data.hole_share(case)
            for method in settings.peers:
                bar.set_postfix_str(f"{METHOD_TITLES[method]}: {case.key}")
                before = bar.n
                missing = peer_available(method)
                smaller = [
                    done
                    for done in capped_at[method]
                    if done.pixels <= case.pixels and done.hole_percent <= case.hole_percent
                ]
                if missing or smaller:
                    result = Measurement(
                        method, case.key, case.width, case.height, hole, cap_s=settings.cap_s
                    )
                    if missing:
                        result.error = missing
                    else:
                        result.skipped = f"> cap at {smaller[0].key}"
                else:
                    result = run_peer(
                        method,
                        case,
                        hole,
                        image_path,
                        mask_path,
                        settings.repeats,
                        settings.cap_s,
                        bar.update,
                    )
                    if result.capped:
                        capped_at[method].append(case)
                bar.update(settings.repeats - (bar.n - before))
                results.append(result.to_dict())
    return results


# ------------------------------------------------------------------------------------------------ CLI


def _holes(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of percentages such as 5,10,25.") from None
    if not values or any(not 0 < value < 100 for value in values):
        raise argparse.ArgumentTypeError("Hole shares are percentages between 0 and 100, e.g. 5,10,25.")
    return values


def _sizes(text: str) -> list[str]:
    sizes = [part.strip() for part in text.split(",") if part.strip()]
    for size in sizes:
        parse_size(size)
    if not sizes:
        raise argparse.ArgumentTypeError("Give at least one size, e.g. 512,2k,4k,8k.")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend bench",
        description="Measure fill time, memory and transport of the HiFill backend through ZeroMQ "
        "(and, with --compare, of OpenCV and PatchMatch on the same cases).",
    )
    parser.add_argument("--compare", action="store_true", help="also run OpenCV Telea/NS and PatchMatch")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated sizes: 512, 2k (2048x1080), 4k (3840x2160), 8k (7680x4320), N or WxH",
    )
    parser.add_argument(
        "--holes",
        type=_holes,
        default=None,
        help="hole shares in %% for every size (default: 10, 25 at 8K; with --compare 5,10,25)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="scaling plot (default OUT/bench-scaling.png)"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="weights for the backend (default: shipped)"
    )
    parser.add_argument("--device", default="auto", help="backend device: auto, cpu, cuda")
    parser.add_argument("--precision", default="auto", help="backend precision: auto, fp32, bf16, fp16")
    parser.add_argument(
        "--working-size",
        type=int,
        default=None,
        help="generator input side per context window, a multiple of 16 (default: the weights' own)",
    )
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="let the backend use untrained weights (plumbing tests)",
    )
    parser.add_argument(
        "--transport",
        default="8k",
        help="size of the RGBA u8 transport measure (default 8k; 'none' skips it)",
    )
    parser.add_argument("--cap", type=float, default=120.0, help="time cap per run of a compared method, s")
    parser.add_argument(
        "--methods",
        default=",".join(PEERS),
        help=f"compared methods for --compare (default {','.join(PEERS)})",
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo the cases are made from")
    parser.add_argument(
        "--pause-pid",
        type=int,
        default=None,
        help="SIGSTOP this process (e.g. a training run) during the bench and SIGCONT it afterwards",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m backend bench [--compare] [--sizes ...] [--holes ...] [--repeats N] [--out DIR]`.

    Prints the markdown table and writes OUT/bench.md, OUT/bench.json and the scaling plot. Returns 0,
    or 1 when the bench cannot run (the reason on stderr), 2 for bad arguments.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.cap > 0:
        parser.error("--cap must be positive")
    peers = tuple(name.strip() for name in args.methods.split(",") if name.strip())
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    transport = None
    if args.transport.lower() != "none":
        try:
            transport = parse_size(args.transport)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    settings = BenchSettings(
        cases=build_cases(args.sizes, args.holes, args.compare),
        repeats=args.repeats,
        compare=args.compare,
        peers=peers,
        cap_s=args.cap,
        transport=transport,
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        allow_untrained=args.allow_untrained,
        working_size=args.working_size,
        image=args.image,
        out=args.out,
        progress=not args.no_progress,
        command="python -m backend bench " + " ".join(argv),
    )
    try:
        with paused(args.pause_pid) as stopped:
            if stopped:
                settings.paused = f"process {args.pause_pid}" + (
                    f" and {len(stopped) - 1} child process(es)" if len(stopped) > 1 else ""
                )
            report = run_bench(settings)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    markdown = render_markdown(report)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.md").write_text(markdown, encoding="utf-8")
    (settings.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_scaling(report, args.plot or settings.out / "bench-scaling.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

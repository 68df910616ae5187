"""Our backend as a real process driven over ZeroMQ, as a plug-in drives it; the transport case; GPU."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lab.bench.cases import OURS, REPO, SERVE_CODE, BenchError, BenchSettings, Case, CaseData
from lab.bench.measure import (
    Measurement,
    check_fill,
    process_cpu_seconds,
    process_memory,
    region_of,
    reset_peak_rss,
)
from shared_protocol import Client, HiFillError
from shared_protocol.launcher import BackendProcess as LaunchedBackend

# ----------------------------------------------------------------------------------------- our backend


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
    return [sys.executable, "-c", SERVE_CODE, *options]


class BackendProcess(LaunchedBackend):
    """The launcher's backend process (shared_protocol.launcher), started from this checkout, with
    what the bench reads off it."""

    def __init__(self, command: list[str], endpoint: str, log_path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        super().__init__(command, endpoint, log_path, cwd=REPO, env=env)

    def wait_until_ready(self, client: Client, timeout_s: float) -> dict[str, Any]:
        """The hello reply, asked through the bench's own client; BenchError if it never comes."""
        try:
            return self.wait_for_hello(timeout_s, probe=client.hello)
        except HiFillError as error:
            raise BenchError(error.message) from None

    def memory(self) -> dict[str, int]:
        return process_memory(self.pid)


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
            if not backend.alive:
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

    Measured as a plug-in's session sees it: one Client kept across fills (the plug-ins keep theirs
    for the editor session), so the first round trip of this size creates (or grows) the Client's
    shared-memory segment and allocates its pages; it is reported on its own ("first_round_trip_s")
    and the median is over the `repeats` round trips after it. "transport_used" says what the client
    used (shared memory when the backend is on this machine); the top-level numbers and the target are
    its. A second Client that sends frames ("frames") is measured the same way, so both paths stay
    visible.
    """
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = data.image(width, height)
    rgba[..., 3] = 255
    mask = np.zeros((height, width), dtype=np.uint8)
    reset_peak_rss(backend.pid)

    def round_trips(sender: Client) -> list[float]:
        """First the session's setup trip, then `repeats` warm ones."""
        trips = []
        for _ in range(repeats + 1):
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
    trip, copy = float(np.median(trips[1:])), float(np.median(copies))
    frame_trip = float(np.median(frame_trips[1:]))
    return {
        "width": width,
        "height": height,
        "format": "RGBA u8 + L u8 mask (empty)",
        "bytes": payload,
        "transport_used": used,
        "round_trip_s": trips[1:],
        "round_trip_median_s": trip,
        "first_round_trip_s": trips[0],
        "frames": {
            "round_trip_s": frame_trips[1:],
            "first_round_trip_s": frame_trips[0],
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

"""Peers (OpenCV Telea / Navier-Stokes, PatchMatch), each case in a child process of its own."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lab.bench.cases import OPENCV_RADIUS, PEER_CHILD_CODE, REPO, Case
from lab.bench.measure import Measurement, check_fill, process_memory

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
        from lab.peer_fills import patchmatch_fill

        return patchmatch_fill
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
    command = [sys.executable, "-c", PEER_CHILD_CODE, method, str(image_path), str(mask_path)]
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

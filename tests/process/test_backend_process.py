"""The real backend (`python -m backend serve`, real generator) as a process, driven by the real Client."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from shared_protocol import Client, ErrorKind, HiFillError
from tests.backend_process import peak_rss_mb


def test_small_hole_in_8k_is_filled_with_bounded_memory(backends):
    started = backends.start(threads=2)
    process, endpoint = started.process, started.endpoint
    h, w = 4320, 7680
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[2000:2200, 3000:3200] = 255
    with Client(endpoint, timeout_s=300) as client:
        info = client.hello()
        assert info["device"] == "cpu"
        result = client.inpaint(image.tobytes(), w, h, 3, "u8", mask.tobytes())
    assert (result.x, result.y, result.width, result.height) == (3000, 2000, 200, 200)
    region = np.frombuffer(result.pixels, np.uint8).reshape(200, 200, 3)
    assert not np.array_equal(region, image[2000:2200, 3000:3200])
    peak = peak_rss_mb(process.pid)
    assert peak < 1024, f"backend peak RSS {peak:.0f} MB"  # the image alone is 100 MB; window-bounded


def test_bad_input_gets_an_error_and_the_backend_keeps_serving(backends):
    endpoint = backends.start(threads=2).endpoint
    with Client(endpoint, timeout_s=120) as client:
        with pytest.raises(HiFillError) as err:
            client.inpaint(b"\0" * 10, 4, 4, 3, "u8", b"\0" * 16)  # wrong byte count
        assert err.value.kind is ErrorKind.BAD_REQUEST
        image = np.full((64, 64, 3), 120, np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[20:40, 20:40] = 255
        result = client.inpaint(image.tobytes(), 64, 64, 3, "u8", mask.tobytes())
        assert (result.width, result.height) == (20, 20)


def test_killing_the_backend_mid_fill_gives_a_clear_error_within_the_timeout(backends):
    started = backends.start(threads=2)
    process, endpoint = started.process, started.endpoint
    h, w = 2160, 3840
    image = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[200:1900, 300:3500] = 255  # a big fill: still running when the backend dies
    killed = threading.Event()

    def kill_once_running(fraction: float, message: str) -> None:  # the fill has started: kill now
        if not killed.is_set():
            killed.set()
            process.kill()

    started = time.monotonic()
    with Client(endpoint, timeout_s=60) as client, pytest.raises(HiFillError) as err:
        client.inpaint(image.tobytes(), w, h, 3, "u8", mask.tobytes(), on_progress=kill_once_running)
    assert killed.is_set()
    assert err.value.kind is ErrorKind.BACKEND_UNAVAILABLE
    assert "backend" in err.value.message.lower()
    assert time.monotonic() - started < 30

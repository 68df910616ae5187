"""One Client per editor session (Krita keeps one for fills and status probes; a GIMP run uses one
for hello and fill): the Client must survive the backend going away and coming back on the same
endpoint, and keep its shared-memory segment from fill to fill. Real backend processes
(`python -m backend serve`, untrained weights) started by tests/backend_process.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

from shared_protocol import Client, ErrorKind, HiFillError
from shared_protocol.client import SHARED_MEMORY

SIZE = 96
OPTIONS = ("--working-size", "128")


def _fill(client: Client, image: np.ndarray, mask: np.ndarray):
    return client.inpaint(image, SIZE, SIZE, 3, "u8", mask)


def test_the_same_client_fills_again_after_the_backend_restarts(backends) -> None:
    image = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[30:60, 40:70] = 255
    started = backends.start(*OPTIONS)
    first, endpoint = started.process, started.endpoint
    with Client(endpoint, timeout_s=300, connect_timeout_s=2.0) as client:
        before = _fill(client, image, mask)
        assert (before.x, before.y, before.width, before.height) == (40, 30, 30, 30)
        assert client.last_transport == SHARED_MEMORY
        segment = client._segment
        again = _fill(client, image, mask)  # the session's segment is reused, not made anew
        assert client._segment is segment and again.pixels == before.pixels

        first.kill()  # the backend crashes (or the user quits it)
        started = time.monotonic()
        with pytest.raises(HiFillError) as caught:
            _fill(client, image, mask)
        assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE and time.monotonic() - started < 10

        backends.start(*OPTIONS, endpoint=endpoint)
        after = _fill(client, image, mask)  # the SAME Client object, through a new connection
        assert (after.x, after.y, after.width, after.height) == (before.x, before.y, 30, 30)
        assert after.pixels == before.pixels  # the same weights give the same fill
        assert client.last_transport == SHARED_MEMORY and client._segment is segment
        assert client.hello()["device"] == "cpu"


def test_a_restart_between_fills_is_not_noticed(backends) -> None:
    """The backend restarts while the Client is idle: the next fill simply goes to the new one."""
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:20, 10:20] = 255
    started = backends.start(*OPTIONS)
    first, endpoint = started.process, started.endpoint
    with Client(endpoint, timeout_s=300, connect_timeout_s=5.0) as client:
        assert (_fill(client, image, mask).width, client.last_transport) == (10, SHARED_MEMORY)
        first.stop()  # a clean stop this time (SIGTERM)
        backends.start(*OPTIONS, endpoint=endpoint)
        result = _fill(client, image, mask)
        assert (result.x, result.y, result.width, result.height) == (10, 10, 10, 10)
        assert client.last_transport == SHARED_MEMORY

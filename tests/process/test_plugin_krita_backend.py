"""Krita plug-in, backend side: the panel's states while the installed backend starts (real processes),
the session's one Client, the whole fill path through a real server (tests.fake_engines, ColourEngine)
and the panel's stored settings. The launcher itself is tested in tests/test_launcher.py."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import tests.editor_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)
from tests.editor_fakes import REPO, FakeDocument, FakeSelection

# isort: split
from hifill_krita.backend_life import BackendState, ensure_backend, probe_status
from hifill_krita.document_io import apply_result, read_fill_input
from hifill_krita.fill_job import SessionClient, make_client, run_fill
from hifill_krita.settings import load_settings, save_settings

from shared_protocol import DEFAULT_ENDPOINT, ErrorKind, HiFillError
from shared_protocol.launcher import BackendConfig, BackendLauncher
from shared_protocol.settings import FillSettings, OutputMode
from tests.backend_process import FAKE_SERVER, free_endpoint, start_fake_backend


@pytest.fixture()
def session():
    clients = SessionClient()
    yield clients
    clients.close()


def test_the_panel_says_starting_then_connected_and_the_backend_stops_with_krita(session, tmp_path) -> None:
    endpoint = free_endpoint()
    config = BackendConfig((*FAKE_SERVER, "--engine", "colour"), str(REPO), DEFAULT_ENDPOINT)
    launcher = BackendLauncher(config, tmp_path / "backend.log")
    client = session.get(endpoint)
    states: list[BackendState] = []
    try:
        info = ensure_backend(launcher, client, lambda status: states.append(status.state), lambda: False)
        assert info["model"] == "fake-colour"
        assert states[0] is BackendState.STARTING and states[-1] is BackendState.CONNECTED
        process = launcher.process_for(endpoint)
        assert process is not None and process.alive
        launcher.stop_started()  # what shutdown() does when Krita closes
        assert not process.alive
        assert probe_status(client.hello).state is BackendState.NOT_RUNNING
    finally:
        launcher.stop_started()


def test_a_refused_client_starts_nothing_and_shows_refused(tmp_path) -> None:
    def refusing() -> dict:
        raise HiFillError(ErrorKind.ACCESS_DENIED, "The backend refused this client's key.")

    assert probe_status(refusing).state is BackendState.REFUSED
    launcher = BackendLauncher(BackendConfig((sys.executable, "-c", "pass"), str(REPO), ""), tmp_path / "l")
    endpoint = free_endpoint()
    with pytest.raises(HiFillError) as caught:
        launcher.ensure_running(endpoint, refusing)
    assert caught.value.kind is ErrorKind.ACCESS_DENIED and launcher.process_for(endpoint) is None


class _Recorder:
    """A Client factory that records what it made and what was closed."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []
        self.closed: list[tuple[str, str]] = []

    def __call__(self, endpoint: str, keys_folder: str):
        if keys_folder == "bad":
            raise HiFillError(ErrorKind.ACCESS_DENIED, "The keys folder bad does not exist.")
        self.made.append((endpoint, keys_folder))
        recorder = self

        class _Made:
            def close(self) -> None:
                recorder.closed.append((endpoint, keys_folder))

        return _Made()


def test_the_session_keeps_one_client_until_endpoint_or_keys_change() -> None:
    recorder = _Recorder()
    clients = SessionClient(recorder)
    first = clients.get("tcp://127.0.0.1:1")
    assert clients.get("tcp://127.0.0.1:1") is first and recorder.made == [("tcp://127.0.0.1:1", "")]
    second = clients.get("tcp://127.0.0.1:2")
    assert second is not first and recorder.closed == [("tcp://127.0.0.1:1", "")]
    third = clients.get("tcp://127.0.0.1:2", "/keys")
    assert third is not second and recorder.closed[-1] == ("tcp://127.0.0.1:2", "")
    with pytest.raises(HiFillError, match="does not exist"):
        clients.get("tcp://127.0.0.1:2", "bad")
    assert clients.get("tcp://127.0.0.1:2", "/keys") is third  # a failed replacement keeps the current one
    clients.close()
    assert recorder.closed[-1] == ("tcp://127.0.0.1:2", "/keys")
    assert clients.get("tcp://127.0.0.1:2", "/keys") is not third  # a new one after close
    assert len(recorder.made) == 4


@pytest.fixture()
def colour_server(tmp_path):
    process = start_fake_backend("slow", tmp_path / "slow.log", "--steps", "10", "--step-s", "0.05")
    yield process.endpoint
    process.stop()


@pytest.mark.parametrize("depth", ["U8", "U16"])
def test_fill_through_a_real_server_writes_the_new_layer(colour_server, session, depth, tmp_path) -> None:
    from tests.editor_fakes import make_document

    document: FakeDocument = make_document(depth)
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    settings = FillSettings(OutputMode.NEW_LAYER, None, colour_server)
    fill = read_fill_input(document, settings, None)
    progress: list[float] = []
    launcher = BackendLauncher(None, tmp_path / "log")
    result = run_fill(
        fill.request,
        session.get(colour_server),
        launcher,
        threading.Event(),
        lambda s: None,
        lambda fraction, message: progress.append(fraction),
    )
    apply_result(fill, result, OutputMode.NEW_LAYER)
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress) and len(progress) >= 3
    new = document.layers()[1]
    value = 200 if depth == "U8" else 51400  # tests.fake_engines.FILL_VALUE, in every channel
    width = 1 if depth == "U8" else 2
    for y in range(30):
        for x in range(40):
            pixel = new.pixelData(x, y, 1, 1)
            selected = 10 <= x < 16 and 8 <= y < 13
            assert pixel == (value.to_bytes(width, sys.byteorder) * 4 if selected else bytes(4 * width))


def test_cancel_stops_a_running_fill_and_the_session_client_fills_again(colour_server, tmp_path) -> None:
    from tests.editor_fakes import make_document

    document = make_document()
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    fill = read_fill_input(document, FillSettings(OutputMode.NEW_LAYER, None, colour_server), None)
    cancel = threading.Event()

    def on_progress(fraction: float, message: str) -> None:
        if fraction >= 0.2:
            cancel.set()

    client = make_client(colour_server)
    launcher = BackendLauncher(None, tmp_path / "log")
    try:
        started = time.monotonic()
        with pytest.raises(HiFillError) as caught:
            run_fill(fill.request, client, launcher, cancel, lambda s: None, on_progress)
        assert caught.value.kind is ErrorKind.CANCELLED and time.monotonic() - started < 5
        again = threading.Event()
        result = run_fill(fill.request, client, launcher, again, lambda s: None, lambda f, m: None)
        assert (result.width, result.height) == (6, 5)
    finally:
        client.close()


def test_settings_round_trip_old_spelling_and_bad_values() -> None:
    store: dict[tuple[str, str], str] = {}

    def read(group: str, name: str, default: str) -> str:
        return store.get((group, name), default)

    def write(group: str, name: str, value: str) -> None:
        store[(group, name)] = value

    assert load_settings(read) == FillSettings(OutputMode.NEW_LAYER, None, DEFAULT_ENDPOINT)
    chosen = FillSettings(OutputMode.IN_PLACE, 256, "tcp://127.0.0.1:5000")
    save_settings(write, chosen)
    assert store[("hifill", "context_px")] == "256" and store[("hifill", "output_mode")] == "in-place"
    assert load_settings(read) == chosen
    store[("hifill", "output_mode")] = "in_place"  # what the plug-in stored before the shared names
    assert load_settings(read).output_mode is OutputMode.IN_PLACE
    store.update(
        {
            ("hifill", "output_mode"): "sideways",
            ("hifill", "context_px"): "lots",
            ("hifill", "endpoint"): "  ",
        }
    )
    assert load_settings(read, "tcp://127.0.0.1:9") == FillSettings(
        OutputMode.NEW_LAYER, None, "tcp://127.0.0.1:9"
    )

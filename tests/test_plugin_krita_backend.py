"""Krita plug-in, backend side: starting the installed backend (real processes), the whole fill path
through a real server (tests.fake_engines, ColourEngine) and the panel's stored settings."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import test_plugin_krita_fakes  # noqa: F401  (first: puts plugin_krita/ and the repo on sys.path)
from test_plugin_krita_fakes import REPO, FakeDocument, FakeSelection

# isort: split
import hifill_backend_launch as launch
from hifill.backend_life import BackendLauncher, BackendState, load_launch_config, probe_status
from hifill.document_io import apply_result, read_fill_input
from hifill.fill_job import FillSettings, OutputMode, run_fill
from hifill.settings import load_settings, save_settings

from shared_protocol import DEFAULT_ENDPOINT, Client, ErrorKind, HiFillError

FAKE_SERVER = (sys.executable, "-m", "tests.fake_engines", "--engine")


def free_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def hello_of(endpoint: str):
    client = Client(endpoint, timeout_s=5.0, connect_timeout_s=0.5)

    def hello() -> dict:
        return client.hello()

    hello.client = client  # type: ignore[attr-defined]
    return hello


class CountingStart:
    """launch.start_backend, counting calls."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, config, endpoint, log_path):
        self.argvs.append(launch.launch_command(config, endpoint))
        return launch.start_backend(config, endpoint, log_path)


@pytest.fixture()
def launcher_factory(tmp_path):
    made: list[BackendLauncher] = []

    def make(command: tuple[str, ...] | None, **kwargs) -> BackendLauncher:
        config = launch.BackendConfig(command, str(REPO), DEFAULT_ENDPOINT) if command else None
        launcher = BackendLauncher(config, tmp_path / "backend.log", start=CountingStart(), **kwargs)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.stop_started_process()


def test_starts_the_installed_backend_once_and_waits_for_hello(launcher_factory) -> None:
    endpoint = free_endpoint()
    launcher = launcher_factory((*FAKE_SERVER, "colour"))
    hello = hello_of(endpoint)
    states: list[BackendState] = []
    try:
        info = launcher.ensure_running(
            endpoint, hello, timeout_s=60, on_status=lambda s: states.append(s.state)
        )
        assert info["model"] == "fake-colour"
        assert states[0] is BackendState.STARTING and states[-1] is BackendState.CONNECTED
        assert launcher._start.argvs == [[*FAKE_SERVER, "colour", "--endpoint", endpoint]]
        again = launcher.ensure_running(endpoint, hello)  # answers now: nothing new is started
        assert again["model"] == "fake-colour" and len(launcher._start.argvs) == 1
        process = launcher.process
        launcher.stop_started_process()
        assert process.poll() is not None
        assert probe_status(hello).state is BackendState.NOT_RUNNING
    finally:
        hello.client.close()


def test_a_backend_that_dies_while_starting_is_reported_with_its_output(launcher_factory, tmp_path) -> None:
    (tmp_path / "backend.log").write_text("an old failure of another editor's backend\n" * 50)  # shared log
    script = "import sys; print('cannot load weights: demo'); sys.exit(3)"
    launcher = launcher_factory((sys.executable, "-c", script))
    hello = hello_of(free_endpoint())
    with pytest.raises(HiFillError) as caught:
        launcher.ensure_running(free_endpoint(), hello, timeout_s=30)
    hello.client.close()
    assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE
    assert "exit code 3" in caught.value.message and "cannot load weights: demo" in caught.value.message
    assert "old failure" not in caught.value.message


def test_a_silent_backend_times_out_and_is_not_started_twice(launcher_factory) -> None:
    launcher = launcher_factory((sys.executable, "-c", "import time; time.sleep(60)"))
    endpoint = free_endpoint()
    hello = hello_of(endpoint)
    started = time.monotonic()
    with pytest.raises(HiFillError, match="did not answer .* within 2 s"):
        launcher.ensure_running(endpoint, hello, timeout_s=2)
    assert time.monotonic() - started < 10
    process = launcher.process
    assert process is not None and process.poll() is None  # still loading, left running
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(HiFillError) as caught:
        launcher.ensure_running(endpoint, hello, timeout_s=30, is_cancelled=cancel.is_set)
    hello.client.close()
    assert caught.value.kind is ErrorKind.CANCELLED
    assert len(launcher._start.argvs) == 1 and launcher.process is process


def test_nothing_is_started_for_a_remote_endpoint_or_without_an_install(launcher_factory, tmp_path) -> None:
    remote = launcher_factory((sys.executable, "-c", "pass"))
    with pytest.raises(HiFillError, match="Start it on that machine"):
        remote.ensure_running(
            "tcp://192.0.2.1:47631",
            lambda: (_ for _ in ()).throw(HiFillError(ErrorKind.BACKEND_UNAVAILABLE, "no")),
        )
    assert remote._start.argvs == []
    config, problem = load_launch_config(tmp_path)
    assert config is None and "install.py krita" in problem
    (tmp_path / "hifill-backend.json").write_text("{not json")
    config, problem = load_launch_config(tmp_path)
    assert config is None and "damaged" in problem
    missing = BackendLauncher(None, tmp_path / "log", config_problem=problem, start=CountingStart())
    hello = hello_of(free_endpoint())
    with pytest.raises(HiFillError, match="damaged"):
        missing.ensure_running(free_endpoint(), hello)
    hello.client.close()


@pytest.fixture()
def colour_server():
    endpoint = free_endpoint()
    process = subprocess.Popen(
        [*FAKE_SERVER, "slow", "--steps", "10", "--step-s", "0.05", "--endpoint", endpoint], cwd=REPO
    )
    client = Client(endpoint, timeout_s=5.0, connect_timeout_s=0.5)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.hello()
            break
        except HiFillError:
            assert process.poll() is None and time.monotonic() < deadline, "fake backend did not start"
            time.sleep(0.2)
    client.close()
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize("depth", ["U8", "U16"])
def test_fill_through_a_real_server_writes_the_new_layer(colour_server, depth, tmp_path) -> None:
    from test_plugin_krita_document_io import make_document

    document: FakeDocument = make_document(depth)
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    settings = FillSettings(OutputMode.NEW_LAYER, None, colour_server)
    fill = read_fill_input(document, settings, None)
    progress: list[float] = []
    launcher = BackendLauncher(None, tmp_path / "log")
    result = run_fill(
        fill.request,
        colour_server,
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


def test_cancel_stops_a_running_fill(colour_server, tmp_path) -> None:
    from test_plugin_krita_document_io import make_document

    document = make_document()
    document.set_selection(FakeSelection(40, 30).select_rect(10, 8, 6, 5))
    fill = read_fill_input(document, FillSettings(OutputMode.NEW_LAYER, None, colour_server), None)
    cancel = threading.Event()

    def on_progress(fraction: float, message: str) -> None:
        if fraction >= 0.2:
            cancel.set()

    started = time.monotonic()
    with pytest.raises(HiFillError) as caught:
        run_fill(
            fill.request,
            colour_server,
            BackendLauncher(None, tmp_path / "log"),
            cancel,
            lambda s: None,
            on_progress,
        )
    assert caught.value.kind is ErrorKind.CANCELLED and time.monotonic() - started < 5


def test_settings_round_trip_and_bad_values_fall_back() -> None:
    store: dict[tuple[str, str], str] = {}

    def read(group: str, name: str, default: str) -> str:
        return store.get((group, name), default)

    def write(group: str, name: str, value: str) -> None:
        store[(group, name)] = value

    assert load_settings(read) == FillSettings(OutputMode.NEW_LAYER, None, DEFAULT_ENDPOINT)
    chosen = FillSettings(OutputMode.IN_PLACE, 256, "tcp://127.0.0.1:5000")
    save_settings(write, chosen)
    assert store[("hifill", "context_px")] == "256" and load_settings(read) == chosen
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

"""shared_protocol.launcher, the one backend launcher of both plug-ins, the bench and the tests: its
config file, BackendProcess (start, wait for hello, early exit, silence, cancel, stop) and
BackendLauncher / ensure_backend (what a plug-in does when nothing answers). Real processes throughout:
the real server with tests.fake_engines, and small Python scripts that misbehave on purpose."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from shared_protocol import Client, ErrorKind, HiFillError
from shared_protocol.launcher import (
    CONFIG_FILENAME,
    BackendConfig,
    BackendLauncher,
    BackendProcess,
    ensure_backend,
    launch_command,
    load_config,
    start_backend,
)
from tests.backend_process import FAKE_SERVER, REPO, free_endpoint, start_fake_backend
from tests.e2e.e2e_common import stop_processes_serving

COLOUR = (*FAKE_SERVER, "--engine", "colour")
SILENT = (sys.executable, "-c", "import time; time.sleep(60)")


def _config(*command: str) -> BackendConfig:
    return BackendConfig(command=command, cwd=str(REPO), endpoint="tcp://127.0.0.1:47631")


class CountingStart:
    """start_backend, recording each start."""

    def __init__(self) -> None:
        self.started: list[BackendProcess] = []

    def __call__(self, config: BackendConfig, endpoint: str, log_path: Path) -> BackendProcess:
        self.started.append(start_backend(config, endpoint, log_path))
        return self.started[-1]

    def stop_all(self) -> None:
        for process in self.started:
            process.stop(5.0)


@pytest.fixture()
def counting():
    start = CountingStart()
    yield start
    start.stop_all()


# ------------------------------------------------------------------------------------------ the config


def test_load_config_and_launch_command(tmp_path):
    assert load_config(tmp_path) is None
    written = {
        "format": 1,
        "command": ["/venv/python", "-m", "backend", "serve"],
        "cwd": "/r",
        "endpoint": "E",
    }
    (tmp_path / CONFIG_FILENAME).write_text(json.dumps(written))
    config = load_config(tmp_path)
    assert config == BackendConfig(("/venv/python", "-m", "backend", "serve"), "/r", "E")
    assert launch_command(config, "tcp://127.0.0.1:5") == [*config.command, "--endpoint", "tcp://127.0.0.1:5"]
    for damaged in ("{not json", json.dumps({**written, "command": []}), json.dumps({"cwd": "/r"})):
        (tmp_path / CONFIG_FILENAME).write_text(damaged)
        with pytest.raises(HiFillError, match="damaged.*run install.py again") as caught:
            load_config(tmp_path)
        assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE


# -------------------------------------------------------------------------------------- BackendProcess


def test_a_backend_process_answers_hello_and_stops_cleanly(tmp_path):
    endpoint = free_endpoint()
    process = BackendProcess([*COLOUR, "--endpoint", endpoint], endpoint, tmp_path / "log", cwd=REPO)
    assert not process.alive and process.poll() is None
    process.start()
    try:
        waits: list[float] = []
        hello = process.wait_for_hello(60, on_wait=waits.append)  # its own short-lived Client
        assert hello["model"] == "fake-colour" and process.alive and process.pid > 0
        assert process.spawned_at > 0 and all(w >= 0 for w in waits)
        with Client(endpoint, connect_timeout_s=1.0) as client:  # a caller's probe works the same
            assert process.wait_for_hello(5, probe=client.hello)["model"] == "fake-colour"
    finally:
        assert process.stop() == 0  # SIGTERM: the server's clean stop
    assert not process.alive and process.stop() == 0  # stopping twice is harmless
    assert "listening on" in process.output()


def test_an_early_exit_is_reported_with_this_starts_output_only(tmp_path):
    log = tmp_path / "shared.log"
    log.write_text("an old failure of another editor's backend\n" * 200)  # the log is shared
    code = "import sys; print('loading'); print('No weights were found at W.', file=sys.stderr); sys.exit(3)"
    process = BackendProcess([sys.executable, "-c", code], free_endpoint(), log).start()
    with pytest.raises(HiFillError) as caught:
        process.wait_for_hello(30)
    message = caught.value.message
    assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE
    assert "stopped while starting (exit code 3)" in message
    assert "loading | No weights were found at W." in message and "old failure" not in message
    assert str(log) in message and log.read_text().startswith("an old failure")


def test_a_silent_process_times_out_and_cancel_is_honoured(tmp_path):
    endpoint = free_endpoint()
    with BackendProcess(SILENT, endpoint, tmp_path / "log").start() as process:
        started = time.monotonic()
        with pytest.raises(HiFillError, match=f"did not answer at {endpoint} within 2 s"):
            process.wait_for_hello(2)
        assert time.monotonic() - started < 10 and process.alive
        calls: list[float] = []
        with pytest.raises(HiFillError) as caught:
            process.wait_for_hello(30, is_cancelled=lambda: bool(calls), on_wait=calls.append)
        assert caught.value.kind is ErrorKind.CANCELLED and len(calls) == 1
    assert not process.alive  # the with block stopped it


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = BackendProcess([sys.executable, "-c", code], free_endpoint(), tmp_path / "log").start()
    deadline = time.monotonic() + 30
    while "ignoring SIGTERM" not in process.output():
        assert time.monotonic() < deadline and process.alive
        time.sleep(0.05)
    started = time.monotonic()
    assert process.stop(grace_s=1.0) == -signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < 10


def test_a_command_that_cannot_start_is_a_sentence(tmp_path):
    process = BackendProcess(["/nonexistent/python", "-m", "backend"], free_endpoint(), tmp_path / "log")
    with pytest.raises(
        HiFillError, match=r"Could not start the HiFill backend \(/nonexistent/python\)"
    ) as caught:
        process.start()
    assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE and process.poll() is None


# -------------------------------------------------------------------------- what a plug-in does with it


def test_the_installed_backend_starts_detached_with_a_clean_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", "/the/editors/own/path")
    code = (
        "import os, sys; print('sid', os.getsid(0) == os.getpid(), os.environ.get('PYTHONPATH')); sys.exit(5)"
    )
    launcher = BackendLauncher(_config(sys.executable, "-c", code), tmp_path / "log")
    with Client(free_endpoint(), connect_timeout_s=0.3) as client, pytest.raises(HiFillError) as caught:
        launcher.ensure_running(client.endpoint, client.hello, timeout_s=30)
    assert "exit code 5" in caught.value.message
    assert "sid True None" in caught.value.message  # its own session; the editor's PYTHONPATH is gone
    assert launcher.process_for(client.endpoint) is None  # an exited process is forgotten


def test_the_launcher_starts_one_process_per_endpoint_and_waits_for_it(counting, tmp_path):
    launcher = BackendLauncher(_config(*SILENT), tmp_path / "log", start=counting)
    endpoint = free_endpoint()
    statuses: list[str] = []
    with Client(endpoint, connect_timeout_s=0.3) as client:
        with pytest.raises(HiFillError, match="did not answer .* within 1 s"):
            launcher.ensure_running(endpoint, client.hello, timeout_s=1, on_status=statuses.append)
        assert statuses[0] == f"Starting the HiFill backend at {endpoint}…"
        assert statuses[-1].startswith("Waiting for the HiFill backend to load")
        loading = launcher.process_for(endpoint)
        assert loading is not None and loading.alive  # still loading: left running
        with pytest.raises(HiFillError) as caught:  # a second fill waits for it, and is cancelled
            launcher.ensure_running(endpoint, client.hello, timeout_s=30, is_cancelled=lambda: True)
        assert caught.value.kind is ErrorKind.CANCELLED
        assert counting.started == [loading] and launcher.process_for(endpoint) is loading
    launcher.stop_started()
    assert not loading.alive and launcher.process_for(endpoint) is None


def test_ensure_backend_starts_the_installed_backend_and_leaves_it_running(tmp_path):
    endpoint = free_endpoint()
    statuses: list[str] = []
    try:
        with Client(endpoint, connect_timeout_s=0.5) as client:
            hello = ensure_backend(
                client.hello,
                _config(*COLOUR),
                endpoint,
                timeout_s=60,
                on_status=statuses.append,
                log_path=tmp_path / "log",
            )
            assert hello["model"] == "fake-colour" and endpoint in statuses[0]
        with Client(endpoint, connect_timeout_s=1.0) as client:  # the one-shot launcher is gone, not it
            assert client.hello()["model"] == "fake-colour"
    finally:
        stop_processes_serving(endpoint)


def test_ensure_backend_starts_nothing_when_one_answers(tmp_path):
    running = start_fake_backend("colour", tmp_path / "log")
    try:  # the recorded command does not even exist
        with Client(running.endpoint, connect_timeout_s=1.0) as client:
            hello = ensure_backend(client.hello, _config("/nonexistent/python"), running.endpoint)
        assert hello["model"] == "fake-colour"
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("config", "endpoint", "message"),
    [
        (None, "local", "none is installed for this plug-in"),
        (
            _config(sys.executable, "-c", "pass"),
            "tcp://192.0.2.1:47631",
            "only be started here for an endpoint",
        ),
    ],
)
def test_nothing_is_started_without_an_install_or_for_another_machine(counting, config, endpoint, message):
    endpoint = free_endpoint() if endpoint == "local" else endpoint
    launcher = BackendLauncher(config, start=counting)
    with (
        Client(endpoint, connect_timeout_s=0.3) as client,
        pytest.raises(HiFillError, match=message) as caught,
    ):
        launcher.ensure_running(endpoint, client.hello, timeout_s=5)
    assert caught.value.kind is ErrorKind.BACKEND_UNAVAILABLE and counting.started == []


def test_a_damaged_config_is_reported_when_a_start_is_needed(counting, tmp_path):
    (tmp_path / CONFIG_FILENAME).write_text("{not json")
    launcher = BackendLauncher.from_folder(tmp_path, start=counting)  # no error yet: maybe one answers
    assert launcher.config is None and "damaged" in launcher.config_problem
    endpoint = free_endpoint()
    with Client(endpoint, connect_timeout_s=0.3) as client, pytest.raises(HiFillError, match="damaged"):
        launcher.ensure_running(endpoint, client.hello)
    assert counting.started == []

"""Fixtures shared by the unit, process and e2e tests: weights, a free endpoint, real backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared_protocol.curve import CurveKeys
from shared_protocol.endpoints import free_loopback_endpoint
from shared_protocol.launcher import BackendProcess
from tests.backend_process import start_backend, start_fake_backend, stop_backend


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file with the untrained (random) generator, for tests of the plumbing
    (the backend serves it only with --allow-untrained)."""
    from backend.weights import write_untrained_weights  # pulls in torch: only for tests that use it

    return write_untrained_weights(tmp_path_factory.mktemp("weights") / "untrained.safetensors")


@pytest.fixture
def free_endpoint() -> str:
    """A loopback tcp:// endpoint on a port that was free a moment ago."""
    return free_loopback_endpoint()


@dataclass
class RunningBackend:
    """A real `python -m backend serve` process that answered hello."""

    process: BackendProcess
    endpoint: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class BackendFactory:
    """Starts real backends (`start`: the server on the untrained weights; `fake`: the server with an
    engine of tests/fake_engines.py) with their logs in `folder`; `stop_all` stops every one."""

    weights: Path
    folder: Path
    started: list[BackendProcess] = field(default_factory=list)

    def _log(self, name: str) -> Path:
        return self.folder / f"{name}-{len(self.started)}.log"

    def start(
        self, *options: str, threads: int = 1, curve: CurveKeys | None = None, endpoint: str | None = None
    ) -> RunningBackend:
        log_path = self._log("backend")
        process, endpoint = start_backend(
            self.weights, log_path, *options, threads=threads, curve=curve, endpoint=endpoint
        )
        self.started.append(process)
        return RunningBackend(process, endpoint, log_path)

    def fake(self, engine: str, *arguments: str, endpoint: str | None = None) -> RunningBackend:
        log_path = self._log(engine)
        process = start_fake_backend(engine, log_path, *arguments, endpoint=endpoint)
        self.started.append(process)
        return RunningBackend(process, process.endpoint, log_path)

    def stop_all(self) -> None:
        for process in self.started:
            stop_backend(process)


@pytest.fixture
def backends(untrained_weights: Path, tmp_path: Path) -> Iterator[BackendFactory]:
    """Real backends for one test, all stopped after it."""
    factory = BackendFactory(untrained_weights, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def backend(untrained_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """One real backend (untrained weights, one thread) shared by a test module."""
    factory = BackendFactory(untrained_weights, tmp_path_factory.mktemp("backend"))
    yield factory.start()
    factory.stop_all()

"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file with the untrained (random) generator, for tests of the plumbing
    (the backend serves it only with --allow-untrained)."""
    from backend.weights import write_untrained_weights  # pulls in torch: only for tests that use it

    return write_untrained_weights(tmp_path_factory.mktemp("weights") / "untrained.safetensors")

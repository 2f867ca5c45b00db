"""Test-wide fixtures: an isolated environment, and no network for unit tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import settings

# CI runs the property tests with a fixed seed: a failure there is reproducible, and a rare
# example found locally becomes a fixed test case instead of a flaky CI run.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LAPOR_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith("LAPOR_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _no_network_in_unit_tests(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests fail on any attempt to open a network connection."""
    if "/tests/unit/" not in str(request.node.path):
        yield
        return
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: object) -> None:
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)  # type: ignore[arg-type]
        raise RuntimeError(f"unit test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield

"""Unit tests need no service: a test that asks for one, or opens a connection, fails at once.

The shared fixtures of tests/conftest.py that reach Redis, a database, worker processes or a model server are
refused here by name, and `socket.connect` refuses every address, so a unit test cannot lean on a service by
accident (run them with nothing listening: `python -m pytest tests/unit -q`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

# Fixtures of tests/conftest.py (and tests/support) that need a running service or start processes.
SERVICE_FIXTURES = frozenset({
    "redis", "database", "database_url", "worker_env", "start_worker", "worker", "hub", "tiny_model",
    "tiny_chat_model", "tiny_gemma_model", "tiny_mistral_model",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a unit test that asks for a service fixture."""
    for item in items:
        wanted = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if wanted and "tests/unit/" in str(item.path).replace("\\", "/"):
            raise pytest.UsageError(f"{item.nodeid} is a unit test and asks for {sorted(wanted)}: "
                                    "move it to the scenario tests.")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse every outgoing connection while a unit test runs."""

    def refuse(self: socket.socket, address: object) -> None:
        raise RuntimeError(f"a unit test connected to {address!r}: unit tests use no services")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield

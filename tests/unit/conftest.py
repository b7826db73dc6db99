"""The fixtures of the conformance suites: a test module with a BACKENDS dict (a name
and a `backends.Backend` class each) runs each test that takes `backend` or `store`
once per backend, with the name as its id (`[sqlite]`, `[postgres]`, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends import Backend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends is not None and "backend" in metafunc.fixturenames:  # also for `store`
        metafunc.parametrize("backend", sorted(backends), indirect=True)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend[Any]]:
    """The module's BACKENDS[name], its data dropped after the test."""
    made: Backend[Any] = request.module.BACKENDS[request.param](tmp_path)
    try:
        yield made
    finally:
        await made.drop()


@pytest.fixture
async def store(backend: Backend[Any]) -> AsyncIterator[Any]:
    """The backend opened, closed after the test."""
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()

"""Fixtures of the end-to-end tests: one headless Chromium per module, a fresh page
per test (it fails the test on an uncaught page error), a bloomr server per module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chromium import browser_context  # noqa: E402

from server import Server, running_server  # noqa: E402


@pytest.fixture(scope="module")
def context() -> Iterator[Any]:
    with browser_context() as ctx:
        yield ctx


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def bloomr() -> Iterator[Server]:
    """Webhooks to loopback allowed: the tests' receivers listen there."""
    with running_server("--webhook-allow-private") as srv:
        yield srv

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import Server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """One real `bloomr serve` shared by the tests that need only default settings
    (each test makes its own streams and tokens, so they never see each other)."""
    with running_server() as srv:
        yield srv

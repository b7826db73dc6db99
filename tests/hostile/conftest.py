"""One `bloomr serve` with short bounds, shared by the hostile-input suite (each test
makes its own streams and tokens; what a case does to the server is checked by
`raw.assert_serves` at its end)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from raw import SHORT_ENV  # noqa: E402

from server import Server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def hostile() -> Iterator[Server]:
    with running_server(env=SHORT_ENV) as server:
        yield server

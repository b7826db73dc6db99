"""One `bloomr serve` with short bounds, shared by the hostile-input suite (each test
makes its own streams and tokens; what a case does to the server is checked by
`raw.assert_serves` at its end)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import Server, running_server  # noqa: E402

BACKLOG = 4 * 1024 * 1024
SHORT_ENV = {
    "BLOOMR_REQUEST_TIMEOUT": "1.5",
    "BLOOMR_CONNECT_TIMEOUT": "1.5",
    "BLOOMR_STALL_TIMEOUT": "1.5",
    "BLOOMR_BACKLOG_BYTES": str(BACKLOG),
    "BLOOMR_AUTH_FAILURES": "0",  # the cases send bad secrets by the hundred
    "BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1",
}


@pytest.fixture(scope="session")
def hostile() -> Iterator[Server]:
    with running_server(env=SHORT_ENV) as server:
        yield server

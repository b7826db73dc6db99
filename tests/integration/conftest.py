"""Fixtures shared by the integration test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from httpkit import Api, open_client

from server import Server


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    """One HTTP client on the shared server, with the calls a user makes."""
    async with open_client(server) as client:
        yield Api(server, client)

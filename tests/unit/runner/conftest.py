"""Fixtures for the runner tests: supervisors that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from runner_helpers import Collector, Factory

from bloomr.runner import ScriptSpec, Supervisor


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
async def supervise(collector: Collector) -> AsyncIterator[Factory]:
    """supervise(command, **spec_and_supervisor_kwargs) -> a Supervisor publishing to
    `collector`, closed at the end of the test whatever happens."""
    made: list[Supervisor] = []

    def make(command: list[str], publish: Any = None, **kwargs: Any) -> Supervisor:
        spec_keys = {"cwd", "env", "restart"}
        spec = ScriptSpec(command, **{k: v for k, v in kwargs.items() if k in spec_keys})
        options = {k: v for k, v in kwargs.items() if k not in spec_keys}
        options.setdefault("grace_seconds", 2.0)
        sup = Supervisor("TestStream", spec, publish or collector, **options)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        await sup.close()

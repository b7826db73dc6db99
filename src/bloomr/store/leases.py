"""In-memory LeaseStore and ScriptStatusStore, for one process. The embedded mode keeps
its leases in `bloomr.leases.LocalLeaseKeeper` (nothing to expire on one node) and its
reports in `LocalScriptStatus`; `LocalLeases` keeps the full LeaseStore semantics
(another owner's unexpired lease wins, expiry) for tests of code written against it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..runner.spec import ScriptReport


class LocalLeases:
    """Implements LeaseStore in memory, on this process's monotonic clock (the only
    clock there is for a single node, and one that wall-clock jumps do not move)."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[str, float]] = {}  # key -> (owner, expiry)

    def _holder(self, key: str, now: float) -> str | None:
        lease = self._leases.get(key)
        return lease[0] if lease is not None and lease[1] > now else None

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        # no await in here: on one event loop the check and the write are atomic
        now = time.monotonic()
        if self._holder(key, now) not in (None, owner):
            return False
        self._leases[key] = (owner, now + ttl_s)
        return True

    async def release(self, key: str, owner: str) -> None:
        lease = self._leases.get(key)
        if lease is not None and lease[0] == owner:
            del self._leases[key]

    async def holders(self, prefix: str) -> dict[str, str]:
        now = time.monotonic()
        return {
            key: owner
            for key, (owner, expiry) in self._leases.items()
            if key.startswith(prefix) and expiry > now
        }


class LocalScriptStatus:
    """Implements ScriptStatusStore in memory: on one node the reports never leave it."""

    def __init__(self) -> None:
        self._reports: dict[str, ScriptReport] = {}

    async def save_script_status(self, stream_id: str, report: ScriptReport) -> None:
        self._reports[stream_id] = report  # frozen: safe to share

    async def script_statuses(self, stream_ids: Sequence[str]) -> dict[str, ScriptReport]:
        return {i: self._reports[i] for i in stream_ids if i in self._reports}

    async def delete_script_status(self, stream_id: str) -> None:
        self._reports.pop(stream_id, None)

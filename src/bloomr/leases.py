"""The lease keeper: the leases this node takes, kept for as long as it may hold them.

A lease names work that one node at a time does (`script:<stream id>`: run that
stream's script; `webhooks:delivery`: deliver the webhooks). A part that wants the work
`take`s the lease and is then its *holder* until it `release`s it or the keeper tells
it, through the `on_lost` callback it gave, that the lease is lost. Scripts and webhook
delivery use the same keeper and the same rule; what differs between one node and many
is the implementation:

- `LocalLeaseKeeper` (embedded mode): one node, so a lease is held from `take` to
  `release` and is never lost; nothing to renew.
- `RenewingLeaseKeeper` (cluster): leases in a shared `LeaseStore` with a ttl, renewed
  every ttl/5. A lease that the store gives to another owner, or that could not be
  renewed for more than ttl/2, is given up and its holder told at once, while the store
  still holds it for this node: the holder stops the work before any other node may
  take it (it is given the time left, ttl/2 less a margin of ttl/10).

Timeline of a node cut off from the store (ttl 10 s): renewals at 0, 2, 4 s fail; at
5 s the keeper gives the leases up and the holders stop their work, within the 4 s
they are given (a script gets SIGTERM, SIGKILL after its grace or those 4 s, whichever
is shorter); at 10 s the store lets another node take them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .store.base import LeaseStore
from .tasks import cancel

log = logging.getLogger("bloomr.leases")

# told the key of a lease no longer held, and the seconds left to stop its work before
# another node may take the lease (with a margin)
OnLost = Callable[[str, float], Awaitable[None]]


class LeaseKeeper(Protocol):
    """Leases that this node holds. "Held" means: between a `take` that answered True
    and either `release` or the call of its `on_lost`, no other node holds the lease."""

    @property
    def node(self) -> str | None:
        """This node's name as reports show it (None: a lone node, nothing to tell)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop keeping: release every lease still held (their holders have stopped)."""
        ...

    async def take(self, key: str, on_lost: OnLost) -> bool:
        """Hold `key` if no other node does. True: held (already held included, keeping
        the first `on_lost`). `on_lost` runs on a task of its own when the lease is
        lost, before another node may take it; it should stop the work within the
        seconds it is given."""
        ...

    def holds(self, key: str) -> bool: ...

    async def release(self, key: str) -> None:
        """Give the lease up now (another node may take it at once); `on_lost` is not
        called. A key not held is ignored."""
        ...

    async def taken(self, prefix: str) -> set[str]:
        """The keys starting with `prefix` that some node (this one included) holds."""
        ...


class LocalLeaseKeeper:
    """Implements LeaseKeeper for a single node: nothing expires, nothing is lost."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @property
    def node(self) -> str | None:
        return None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._held.clear()

    async def take(self, key: str, on_lost: OnLost) -> bool:
        self._held.add(key)
        return True

    def holds(self, key: str) -> bool:
        return key in self._held

    async def release(self, key: str) -> None:
        self._held.discard(key)

    async def taken(self, prefix: str) -> set[str]:
        return {key for key in self._held if key.startswith(prefix)}


@dataclass(slots=True)
class _Held:
    on_lost: OnLost
    renewed_at: float  # monotonic, when the last successful acquire was sent


class RenewingLeaseKeeper:
    """Implements LeaseKeeper over a shared LeaseStore (see the module's docstring).

    Times are taken on this node's monotonic clock *before* each acquire is sent: the
    store's expiry (now + ttl on its clock) is at least that late, so giving up at
    ttl/2 after it leaves this node at least ttl/2 before another may take over."""

    def __init__(self, store: LeaseStore, node: str, ttl: float) -> None:
        self._store = store
        self._node = node
        self.ttl = ttl
        self._held: dict[str, _Held] = {}
        self._task: asyncio.Task[None] | None = None
        self._telling: set[asyncio.Task[None]] = set()

    @property
    def node(self) -> str | None:
        return self._node

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="bloomr-leases")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        for key in list(self._held):
            with contextlib.suppress(Exception):  # unreleased, it expires after the ttl
                await self.release(key)

    async def take(self, key: str, on_lost: OnLost) -> bool:
        if key in self._held:
            return True
        sent = time.monotonic()
        if not await self._store.acquire(key, self._node, self.ttl):
            return False
        self._held[key] = _Held(on_lost, sent)
        return True

    def holds(self, key: str) -> bool:
        return key in self._held

    async def release(self, key: str) -> None:
        if self._held.pop(key, None) is not None:
            await self._store.release(key, self._node)

    async def taken(self, prefix: str) -> set[str]:
        return set(await self._store.holders(prefix))

    # -- renewing -----------------------------------------------------------------------

    async def _keep(self) -> None:
        every = self.ttl / 5
        while True:
            await asyncio.sleep(min(every, max(0.0, self._give_up_at() - time.monotonic())))
            # bounded: a store that hangs must not keep the give-up below from its time
            budget = max(0.01, min(every, self._give_up_at() - time.monotonic()))
            try:
                async with asyncio.timeout(budget):
                    await self._renew()
            except Exception as exc:  # TimeoutError included
                log.warning("renewing leases failed (%s): trying again", exc or type(exc).__name__)
            self._give_up_late()

    def _give_up_at(self) -> float:
        oldest = min((h.renewed_at for h in self._held.values()), default=time.monotonic())
        return oldest + self.ttl / 2

    async def _renew(self) -> None:
        for key in list(self._held):
            sent = time.monotonic()
            held = await self._store.acquire(key, self._node, self.ttl)
            lease = self._held.get(key)
            if lease is None:  # released meanwhile
                continue
            if held:
                lease.renewed_at = sent
            else:
                log.warning("lease %s now belongs to another node", key)
                self._lose(key)

    def _give_up_late(self) -> None:
        now = time.monotonic()
        for key, lease in list(self._held.items()):
            late = now - lease.renewed_at
            if late > self.ttl / 2:
                log.error("lease %s not renewed for %.1f s: giving it up", key, late)
                self._lose(key)

    def _lose(self, key: str) -> None:
        """Forget the lease and tell its holder, on a task of its own: a holder stopping
        its work (a script's grace period) must not delay the renewal of the others."""
        lease = self._held.pop(key)
        # the store's expiry is at least a ttl after renewed_at; a tenth of it is kept
        # for the other node's clock and this node's stopping being late
        left = max(0.0, lease.renewed_at + self.ttl * 0.9 - time.monotonic())
        task = asyncio.create_task(_tell(lease.on_lost, key, left), name=f"bloomr-lost:{key}")
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)


async def _tell(on_lost: OnLost, key: str, left: float) -> None:
    try:
        await on_lost(key, left)
    except Exception:
        log.exception("stopping the work of lost lease %s failed", key)

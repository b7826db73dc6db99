"""The storage, broker, control channel and lease keeper a node runs on, picked by
mode: embedded (SQLite for metadata and history with the embedded broker, local control,
a local lease keeper, script reports in memory) or cluster (PostgreSQL for metadata,
webhooks, leases and script reports; the Redis broker and control channel). Brokers
are picked by name (`broker.BROKERS`); cluster drivers are imported only when used."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .broker import Broker, broker_class
from .config import Settings
from .control import ControlChannel
from .leases import LeaseKeeper
from .presence import LocalPresence, Presence
from .store.base import MetadataStore, ScriptStatusStore, WebhookStore

Step = Callable[[], Awaitable[None]]
_CONNECT_TIMEOUT = 10.0


class Unreachable(Exception):
    """A backend could not be reached at start: one line for the operator."""

    def __init__(self, what: str, url: str, reason: BaseException) -> None:
        text = str(reason).strip() or type(reason).__name__
        super().__init__(f"cannot reach {what} at {redact(url)}: {text}")


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Backends:
    meta: MetadataStore
    broker: Broker
    control: ControlChannel
    webhooks: WebhookStore
    leases: LeaseKeeper
    script_status: ScriptStatusStore
    presence: Presence = field(default_factory=LocalPresence)  # occupancy elsewhere
    # (what, url, open): opened in order at start
    opens: list[tuple[str, str, Step]] = field(default_factory=list)
    closes: list[Step] = field(default_factory=list)  # in order at stop
    probes: dict[str, Step] = field(default_factory=dict)  # /healthz: name -> check
    # cluster: store a generated admin key's hash unless one is stored; returns the one kept
    claim_admin_hash: Callable[[str], Awaitable[str]] | None = None

    async def open(self) -> None:
        for what, url, step in self.opens:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await step()
            except Exception as exc:
                await self.close()
                raise Unreachable(what, url, exc) from exc

    async def close(self) -> None:
        for step in self.closes:
            await step()


def embedded(settings: Settings) -> Backends:
    from .control.local import LocalControl
    from .leases import LocalLeaseKeeper
    from .store.leases import LocalScriptStatus
    from .store.sqlite import SQLiteStore
    from .store.sqlite_webhooks import SQLiteWebhookStore

    store = SQLiteStore(settings.database_path)
    webhooks = SQLiteWebhookStore(store)
    where = str(settings.database_path)
    return Backends(
        meta=store,
        broker=broker_class("sqlite")(store),
        control=LocalControl(),
        webhooks=webhooks,
        leases=LocalLeaseKeeper(),
        script_status=LocalScriptStatus(),
        opens=[("SQLite", where, store.open), ("SQLite", where, webhooks.open)],
        closes=[store.close],
        probes={"sqlite": store.check_writable},
    )


def cluster(settings: Settings) -> Backends:
    from .control.redis import RedisControl
    from .leases import RenewingLeaseKeeper
    from .presence import RedisPresence
    from .store.postgres import PostgresStore

    assert settings.redis_url is not None and settings.database_url is not None
    name = settings.cluster_name
    pg = PostgresStore(settings.database_url, name)
    broker = broker_class("redis")(settings.redis_url, name)
    history = broker.history

    async def ping_redis() -> None:
        await history.client.ping()

    async def probe_redis() -> None:  # a write: a Redis refusing them (OOM, MISCONF) fails
        await history.client.set(f"{name}:health:{settings.node_id}", b"1", px=60_000)

    return Backends(
        meta=pg,
        broker=broker,
        control=RedisControl(settings.redis_url, name),
        webhooks=pg,
        leases=RenewingLeaseKeeper(pg, settings.node_id, settings.lease_ttl),
        script_status=pg,
        # a node's subscribers stop counting once it missed renewals for a lease's ttl
        presence=RedisPresence(
            lambda: history.client, name, settings.node_id, ttl=settings.lease_ttl
        ),
        opens=[
            ("PostgreSQL", settings.database_url, pg.open),
            ("Redis", settings.redis_url, history.open),
            ("Redis", settings.redis_url, ping_redis),
        ],
        closes=[history.close, pg.close],
        probes={"postgresql": pg.check_writable, "redis": probe_redis},
        claim_admin_hash=pg.claim_admin_key_hash,
    )


def for_settings(settings: Settings) -> Backends:
    return cluster(settings) if settings.cluster else embedded(settings)

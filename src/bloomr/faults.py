"""The one place that tells a backend failure from a bug.

A backend that is down, frozen, full or read-only is not bloomr's fault and not the
client's: it is answered `unavailable` (HTTP 503 with `Retry-After`, a socket's `error`),
and bloomr recovers by itself when the backend is back. Anything else a store raises is
a bug and stays `internal`. Stores translate at their edge with `guarded` (every public
coroutine of the class) or `as_error` (a result slot), so nothing above them ever sees a
driver's exception."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import BloomrError

log = logging.getLogger("bloomr.faults")

RETRY_AFTER_SECONDS = 1  # what a 503 tells a client to wait before trying again
# How long a call to Redis or PostgreSQL may take: a frozen backend must be answered
# (503) well within the 5 s a connecting socket may wait for its answer.
BACKEND_TIMEOUT = 3.0
# How long an HTTP publish may take before it is answered `unavailable` (waiting behind a
# call to a frozen store, or while the webhook outboxes push back)
PUBLISH_ANSWER_WITHIN = 4.5

# SQLite's primary result codes that mean "the storage", not "the statement": busy,
# locked, out of memory, read-only, I/O error, can't open, disk full
_SQLITE_STORAGE = frozenset({5, 6, 7, 8, 10, 14, 13})
SQLITE_FULL = 13
# PostgreSQL SQLSTATE classes: connection exception, insufficient resources (disk full),
# operator intervention (shutdown, cannot connect now, statement timeout), system error
_PG_CLASSES = ("08", "53", "57", "58")
# Redis error replies that mean the server cannot take writes now
_REDIS_REPLIES = ("OOM", "MISCONF", "LOADING", "READONLY", "BUSY", "MASTERDOWN", "TRYAGAIN")


def is_backend_failure(exc: BaseException) -> bool:
    """Whether `exc` says a backend cannot serve now (rather than a bug)."""
    if isinstance(exc, BloomrError):
        return exc.code == "unavailable"
    if isinstance(exc, OSError | TimeoutError):  # refused, reset, ENOSPC, timed out
        return True
    if isinstance(exc, sqlite3.Error):
        return sqlite_code(exc) in _SQLITE_STORAGE
    module = type(exc).__module__
    if module.startswith("redis"):
        return _redis_failure(exc)
    if module.startswith("asyncpg"):
        return _pg_failure(exc)
    return False


def sqlite_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code (the extended one's low byte); -1 when unknown."""
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def _redis_failure(exc: BaseException) -> bool:
    from redis import exceptions

    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError):
        return True
    return isinstance(exc, exceptions.ResponseError) and str(exc).startswith(_REDIS_REPLIES)


def _pg_failure(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, asyncpg.InterfaceError):  # connection closed, pool closing
        return True
    state = str(getattr(exc, "sqlstate", "") or "")
    return state.startswith(_PG_CLASSES)


def as_error(exc: BaseException, what: str) -> BloomrError:
    """The BloomrError for a store's failure while doing `what` (logged with the
    driver's own words: its real error must reach the operator)."""
    if isinstance(exc, BloomrError):
        return exc
    detail = str(exc).strip() or type(exc).__name__
    if is_backend_failure(exc):
        log.warning("%s failed: backend unavailable: %s", what, detail)
        return unavailable(f"{what} failed: {detail}")
    log.error("%s failed", what, exc_info=exc)
    return BloomrError("internal", f"{what} failed")


def retry_after(status: int) -> list[tuple[bytes, bytes]]:
    """The `Retry-After` header of a 503 (raw, for ASGI and protocol writers; nothing for
    another status): the backend is expected back by itself."""
    return [(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)] if status == 503 else []


def unavailable(message: str) -> BloomrError:
    return BloomrError("unavailable", message)


T = TypeVar("T")


async def in_time(work: Awaitable[T], seconds: float, what: str) -> T:
    """`work`'s answer, or `unavailable` after `seconds`. The work goes on regardless
    (its caller may go too): its outcome is unknown to whoever got the 503, as a 5xx to a
    publish says (retried with its Idempotency-Key, a publish is stored once)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.add_done_callback(_retrieve)  # its failure, if any, is nobody's to raise
        raise unavailable(f"{what} got no answer within {seconds:g} s") from None


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


C = TypeVar("C", bound=type)
_NOT_GUARDED = frozenset(
    {"open", "close", "start", "stop"}
)  # their failures say "cannot start" instead


def guarded(cls: C) -> C:
    """Make every public coroutine method of `cls` (inherited ones included) raise
    `unavailable` for a backend failure instead of the driver's exception."""
    for name in dir(cls):
        if name.startswith("_") or name in _NOT_GUARDED:
            continue
        method = getattr(cls, name)
        if inspect.iscoroutinefunction(method) and not getattr(method, "_guarded", False):
            setattr(cls, name, _guard(method, f"{cls.__name__}.{name}"))
    return cls


def _guard(
    method: Callable[..., Coroutine[Any, Any, Any]], what: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except BloomrError:
            raise
        except Exception as exc:
            if not is_backend_failure(exc):
                raise
            raise as_error(exc, what) from exc

    call._guarded = True  # type: ignore[attr-defined]
    return call

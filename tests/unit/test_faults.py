"""Telling a backend's failure from a bug (faults.py), the disk reserve, and tokens
honoured from the cache through a token store's outage."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from redis import exceptions as redis_errors

from bloomr.auth import Authenticator
from bloomr.errors import BloomrError
from bloomr.faults import as_error, guarded, in_time, is_backend_failure
from bloomr.model import Token, hash_secret
from bloomr.store.reserve import DiskReserve


def sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite_error(13, "database or disk is full"),
        sqlite_error(8 | (1 << 8), "attempt to write a readonly database"),
        redis_errors.ConnectionError("Connection refused"),
        redis_errors.TimeoutError("Timeout reading from socket"),
        redis_errors.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        BloomrError("unavailable", "down"),
    ],
)
def test_backend_failures_are_unavailable(exc: BaseException) -> None:
    assert is_backend_failure(exc)
    assert as_error(exc, "reading").code == "unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("bug"),
        sqlite_error(1, "no such table: nope"),
        redis_errors.ResponseError("ERR Error running script"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
    ],
)
def test_bugs_stay_internal(exc: BaseException) -> None:
    assert not is_backend_failure(exc)
    assert as_error(exc, "reading").code == "internal"


@guarded
class _Store:
    async def read(self, exc: BaseException | None) -> str:
        if exc is not None:
            raise exc
        return "ok"

    async def open(self) -> None:
        raise ConnectionRefusedError(111, "refused")


async def test_guarded_methods_raise_unavailable_and_keep_bugs() -> None:
    store = _Store()
    assert await store.read(None) == "ok"
    with pytest.raises(BloomrError) as caught:
        await store.read(ConnectionRefusedError(111, "refused"))
    assert caught.value.code == "unavailable"
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    with pytest.raises(KeyError):
        await store.read(KeyError("bug"))
    with pytest.raises(ConnectionRefusedError):  # open says "cannot start" its own way
        await store.open()


def test_the_reserve_is_given_up_and_made_again(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "disk.reserve", size=64 * 1024)
    assert reserve.restore(force=True)
    assert (tmp_path / "disk.reserve").stat().st_size == 64 * 1024
    reserve.release("database or disk is full")
    assert reserve.full and not (tmp_path / "disk.reserve").exists()
    assert not reserve.restore()  # not again within a second
    assert reserve.restore(force=True)  # this disk has room
    assert not reserve.full and (tmp_path / "disk.reserve").exists()


TOKEN = Token(
    id="tok_1",
    name="t",
    secret_hash=hash_secret("bt_secret"),
    streams=["*"],
    scopes=["subscribe"],
    created_at="2026-01-01T00:00:00.000Z",
)


class _Lookup:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self, secret_hash: str) -> Token | None:
        self.calls += 1
        if self.down:
            raise BloomrError("unavailable", "token store down")
        return TOKEN if secret_hash == TOKEN.secret_hash else None


async def test_a_seen_token_is_honoured_through_an_outage_for_a_while() -> None:
    lookup, revoked = _Lookup(), set[str]()
    auth = Authenticator(lookup, hash_secret("admin"), revoked)
    auth.CACHE_SECONDS = 0.01
    auth.STALE_SECONDS = 0.3
    assert (await auth.identify("bt_secret")).token_id == "tok_1"
    lookup.down = True
    await asyncio.sleep(0.02)  # past freshness: asked again, and the store is down
    assert (await auth.identify("bt_secret")).token_id == "tok_1"
    assert lookup.calls == 2
    with pytest.raises(BloomrError) as never_seen:
        await auth.identify("bt_other")
    assert never_seen.value.code == "unavailable"  # not "unauthorized": nobody knows
    revoked.add("tok_1")
    with pytest.raises(BloomrError) as revoked_wins:
        await auth.identify("bt_secret")
    assert revoked_wins.value.code == "unauthorized"
    revoked.clear()
    await asyncio.sleep(0.35)  # past the staleness allowed
    with pytest.raises(BloomrError) as too_stale:
        await auth.identify("bt_secret")
    assert too_stale.value.code == "unavailable"


async def test_in_time_answers_unavailable_and_lets_the_work_finish() -> None:
    done = asyncio.Event()

    async def slow() -> str:
        await asyncio.sleep(0.1)
        done.set()
        return "stored"

    assert await in_time(asyncio.sleep(0, "quick"), 1, "the publish") == "quick"
    with pytest.raises(BloomrError) as caught:
        await in_time(slow(), 0.01, "the publish")
    assert caught.value.code == "unavailable"
    await asyncio.wait_for(done.wait(), 1)  # not cancelled: its outcome was unknown

"""An embedded node on a 16 MiB tmpfs filled for real (SPEC §3 "Availability and
limits"): publishes answer 503 `unavailable` with Retry-After, /healthz 503 naming
SQLite, the log shows SQLite's own error; tightening retention and deleting a stream
still work, so bloomr frees the space itself and recovers; a live subscriber gets every
acknowledged message."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from faultkit import small_tmpfs

from server import Server, running_server
from sioclient import Recorder, connect_and_wait

pytestmark = pytest.mark.timeout(90)

_BIG = "x" * (128 * 1024)


async def _fill(srv: Server, http: httpx.AsyncClient, stream_id: str) -> httpx.Response:
    """Publish big batches until the disk refuses one; that answer."""
    for _ in range(1000):
        r = await http.post(
            f"/api/streams/{stream_id}/messages", json=[{"data": _BIG}] * 4, headers=srv.admin
        )
        if r.status_code != 201:
            return r
    raise AssertionError("the disk never filled")


async def _publish(srv: Server, http: httpx.AsyncClient, stream_id: str, n: int) -> httpx.Response:
    return await http.post(
        f"/api/streams/{stream_id}/messages", json={"data": {"n": n}}, headers=srv.admin
    )


async def _until_healthy(http: httpx.AsyncClient, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (r := await http.get("/healthz")).status_code != 200:
        assert time.monotonic() < deadline, f"never healthy again: {r.text}"
        await asyncio.sleep(0.1)


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable"
    assert int(r.headers["retry-after"]) >= 1


def _ids(client: Recorder) -> list[str]:
    return [m["id"] for m in client.messages]


async def test_a_full_disk_is_503_and_bloomr_frees_space_itself() -> None:
    with (
        small_tmpfs("16m") as tmpfs,
        running_server(data_dir=tmpfs / "data", env={"BLOOMR_TRIM_INTERVAL": "0.3"}) as srv,
    ):
        async with srv.client() as http:
            watched, token = await srv.stream_and_token(http)
            filler = (await srv.create_stream(http))["id"]
            url = srv.socket_url(stream=watched, token=token, includeMetadata="true")
            sub = await connect_and_wait(url)
            acked: list[str] = []
            try:
                for round_ in ("retention", "delete"):
                    r = await _publish(srv, http, watched, len(acked))
                    assert r.status_code == 201, r.text
                    acked += r.json()["ids"]

                    _assert_unavailable(await _fill(srv, http, filler))
                    _assert_unavailable(await _publish(srv, http, watched, -1))
                    health = await http.get("/healthz")
                    assert health.status_code == 503, health.text
                    assert health.json()["status"] == "unavailable"
                    assert "full" in health.json()["sqlite"], health.json()

                    if round_ == "retention":  # the trimmer makes room
                        r = await http.patch(
                            f"/api/streams/{filler}",
                            json={"retention": {"max_messages": 1}},
                            headers=srv.admin,
                        )
                        assert r.status_code == 200, r.text
                    else:  # deleting the stream makes room
                        r = await http.delete(f"/api/streams/{filler}", headers=srv.admin)
                        assert r.status_code == 204, r.text
                    await _until_healthy(http)
                    for n in range(20):
                        r = await _publish(srv, http, watched, n)
                        assert r.status_code == 201, r.text
                        acked += r.json()["ids"]

                await sub.wait_until(lambda: len(sub.messages) >= len(acked), timeout=10)
                assert _ids(sub) == acked  # every acknowledged message, once, in order
                assert sub.errors == [] and not sub.disconnected
            finally:
                await sub.close()
        log = "".join(srv.output)
        assert "database or disk is full" in log  # SQLite's own words reach the log
        assert "cannot rollback" not in log

"""CORS (SPEC §3), the dashboard's files at `/` (SPEC §8), occupancy (SPEC §7) and the
streams' activity fields, against a real `bloomr serve` over plain HTTP. The browser
side of all this is in tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httpkit import assert_error, bearer, wait_until

from server import Server, running_server
from sioclient import connected

PAGE = "http://page.example"
OTHER = "http://other.example"


@pytest.fixture(scope="module")
def cors_server() -> Iterator[Server]:
    with running_server("--cors-origin", PAGE, "--cors-origin", "http://two.example") as srv:
        yield srv


@pytest.fixture(scope="module")
def any_origin_server() -> Iterator[Server]:
    with running_server(env={"BLOOMR_CORS_ORIGINS": "*"}) as srv:
        yield srv


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }


@pytest.mark.parametrize("path", ["messages", "events"])
async def test_client_endpoints_answer_any_origin_preflight(server: Server, path: str) -> None:
    stream_id, _ = await server.stream_and_token()
    async with server.client() as c:
        r = await c.options(f"/api/streams/{stream_id}/{path}", headers=preflight(OTHER))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key", "last-event-id"):
        assert header in allowed
    assert "access-control-allow-credentials" not in r.headers  # no cookies, ever


async def test_publish_poll_and_errors_carry_cors_headers(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    headers = {**bearer(token), "Origin": OTHER}
    async with server.client() as c:
        # the same client twice: the second request may take the publish fast path
        for _ in range(2):
            r = await c.post(
                f"/api/streams/{stream_id}/messages", json={"data": 1}, headers=headers
            )
            assert r.status_code == 201, r.text
            assert r.headers["access-control-allow-origin"] == "*"
            assert r.headers["access-control-expose-headers"] == "Retry-After"
        r = await c.get(f"/api/streams/{stream_id}/messages", headers=headers)
        assert r.status_code == 200 and len(r.json()["messages"]) == 2
        assert r.headers["access-control-allow-origin"] == "*"
        r = await c.post(f"/api/streams/{stream_id}/messages", json={"data": 1},
                         headers={"Origin": OTHER, **bearer("wrong")})  # fmt: skip
        assert_error(r, 401, "unauthorized")
        assert r.headers["access-control-allow-origin"] == "*"


async def test_admin_api_refuses_other_origins_by_default(server: Server) -> None:
    async with server.client() as c:
        r = await c.get("/api/streams", headers={**server.admin, "Origin": OTHER})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
        r = await c.options("/api/streams", headers=preflight(OTHER))
        assert "access-control-allow-origin" not in r.headers


async def test_admin_api_answers_the_configured_origins(cors_server: Server) -> None:
    async with cors_server.client() as c:
        r = await c.options("/api/tokens", headers=preflight(PAGE, "DELETE"))
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == PAGE
        assert "Origin" in r.headers["vary"]
        assert "DELETE" in r.headers["access-control-allow-methods"]
        r = await c.get("/api/streams", headers={**cors_server.admin, "Origin": PAGE})
        assert r.headers["access-control-allow-origin"] == PAGE
        r = await c.get("/api/streams", headers={**cors_server.admin, "Origin": OTHER})
        assert "access-control-allow-origin" not in r.headers


async def test_admin_api_any_origin_from_the_environment(any_origin_server: Server) -> None:
    async with any_origin_server.client() as c:
        r = await c.get("/api/streams", headers={**any_origin_server.admin, "Origin": OTHER})
    assert r.headers["access-control-allow-origin"] == "*"


async def test_dashboard_for_browsers_only(server: Server) -> None:
    async with server.client() as c:
        page = await c.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/dashboard/js/main.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for accept in ("*/*", "application/json"):
            r = await c.get("/", headers={"Accept": accept})
            assert_error(r, 404, "not_found")
        js = await c.get("/dashboard/vendor/socket.io.esm.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        again = await c.get(
            "/dashboard/vendor/socket.io.esm.min.js", headers={"If-None-Match": js.headers["etag"]}
        )
        assert again.status_code == 304
        assert_error(await c.get("/dashboard/../pyproject.toml"), 404, "not_found")
        assert_error(await c.get("/dashboard/nope.js"), 404, "not_found")


async def test_occupancy_counts_live_subscribers_by_channel(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    path = f"/api/streams/{stream_id}/occupancy"
    async with server.client() as c:
        assert (await c.get(path, headers=server.admin)).json() == {"total": 0, "channels": {}}
        assert_error(await c.get(path, headers=bearer(token)), 403, "forbidden")
        assert_error(await c.get("/api/streams/nope/occupancy", headers=server.admin), 404,
                     "not_found")  # fmt: skip
        async with (
            connected(server.socket_url(stream=stream_id, token=token)),
            connected(server.socket_url(stream=stream_id, token=token)),
            connected(server.socket_url(stream=stream_id, token=token, channel="errors")),
        ):
            r = await c.get(path, headers=server.admin)
            assert r.json() == {"total": 3, "channels": {"": 2, "errors": 1}}

        async def empty() -> bool:
            r = await c.get(path, headers=server.admin)
            return bool(r.json()["total"] == 0)

        await wait_until(empty)


async def test_streams_show_their_activity(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    async with server.client() as c:
        r = await c.get(f"/api/streams/{stream_id}", headers=server.admin)
        assert r.json()["activity"] == {"rate": 0.0, "last": None}
        ids = await server.publish(stream_id, [{"data": "a"}, {"channel": "c", "data": [1]}], token)
        r = await c.get(f"/api/streams/{stream_id}", headers=server.admin)
        activity = r.json()["activity"]
        assert activity["rate"] > 0
        assert activity["last"]["id"] == ids[-1]
        assert activity["last"]["channel"] == "c"
        assert activity["last"]["preview"] == "[1]"
        listed = (await c.get("/api/streams", headers=server.admin)).json()["streams"]
        assert next(s for s in listed if s["id"] == stream_id)["activity"] == activity

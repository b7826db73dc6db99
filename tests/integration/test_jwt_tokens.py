"""Tokens minted by applications (SPEC §7) against a real `bloomr serve`: HS256 by
BLOOMR_JWT_SECRET, RS256 by a key file, a JWKS URL (a small HTTP server here) rotated by
kid; channel-scoped stored tokens and JWTs; JWT revocation ending live sessions within
1 s and surviving a restart; refusals over Socket.IO (python-socketio and Node's
socket.io-client), HTTP polling and server-sent events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_cluster import cluster_args, forget_cluster

from server import Server, running_server
from sioclient import NodeProcess, connect_and_wait, ensure_node_modules, node_available, refused

pytestmark = pytest.mark.timeout(90)

SECRET = "a-jwt-secret-of-at-least-32-bytes!!"
FILE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS_KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "abc"}


class Jwks:
    """A JWKS URL served from a thread; `publish` changes the keys it lists."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.requests = 0
        jwks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                jwks.requests += 1
                body = orjson.dumps(jwks.doc)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, *kids: str) -> None:
        keys = []
        for kid in kids:
            public = jwt.algorithms.RSAAlgorithm.to_jwk(JWKS_KEYS[kid].public_key(), as_dict=True)
            keys.append({**public, "kid": kid, "use": "sig", "alg": "RS256"})
        self.doc = {"keys": keys}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def claims(stream_id: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    doc: dict[str, Any] = {"exp": now + 300, "iat": now, "sub": "alice", "streams": [stream_id]}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def hs256(stream_id: str, **extra: Any) -> str:
    return jwt.encode(claims(stream_id, **extra), SECRET, algorithm="HS256")


def rs256(stream_id: str, kid: str | None = None, **extra: Any) -> str:
    key = FILE_KEY if kid is None else JWKS_KEYS[kid]
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims(stream_id, **extra), key, algorithm="RS256", headers=headers)


@contextlib.contextmanager
def jwt_server(tmp: Path, data_dir: Path | None = None) -> Iterator[tuple[Server, Jwks]]:
    key_file = tmp / "public.pem"
    key_file.write_bytes(
        FILE_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    jwks = Jwks()
    jwks.publish("a")
    args = ("--jwt-public-key", str(key_file), "--jwt-jwks-url", jwks.url)
    try:
        # the refusal cases fail by the dozen from one address: no failure throttle
        env = {"BLOOMR_JWT_SECRET": SECRET, "BLOOMR_AUTH_FAILURES": "0"}
        with running_server(*args, env=env, data_dir=data_dir) as srv:
            yield srv, jwks
    finally:
        jwks.close()


@pytest.fixture(scope="module")
def minting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Jwks]]:
    with jwt_server(tmp_path_factory.mktemp("jwt")) as running:
        yield running


@pytest.fixture
def srv(minting: tuple[Server, Jwks]) -> Server:
    return minting[0]


@contextlib.asynccontextmanager
async def live(srv: Server, stream_id: str, token: str, **query: Any) -> AsyncIterator[Any]:
    client = await connect_and_wait(srv.socket_url(stream=stream_id, token=token, **query))
    try:
        assert client.count("replay_end") == 1, client.summary()
        yield client
    finally:
        await client.close()


async def get(srv: Server, path: str, token: str, **params: Any) -> httpx.Response:
    async with srv.client() as c:
        return await c.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


# -- accepted where a token is ---------------------------------------------------------


async def test_hs256_jwt_subscribes_by_query_and_auth_and_polls(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    token = hs256(stream_id)
    async with live(srv, stream_id, token) as by_query:
        url = srv.socket_url(stream=stream_id)
        by_auth = await connect_and_wait(url, auth={"stream": stream_id, "token": token})
        try:
            await srv.publish(stream_id, {"data": "hello"})
            assert await by_query.wait_messages(1) == ["hello"]
            assert await by_auth.wait_messages(1) == ["hello"]
        finally:
            await by_auth.close()
    r = await get(srv, f"/api/streams/{stream_id}/messages", token)
    assert r.status_code == 200 and [m["data"] for m in r.json()["messages"]] == ["hello"]
    async with srv.client() as c:  # ?token= too
        r = await c.get(f"/api/streams/{stream_id}/messages", params={"token": token})
    assert r.status_code == 200


async def test_a_jwt_with_publish_scope_publishes(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    token = hs256(stream_id, scopes=["publish"])
    for _ in range(3):  # the same JWT again: verified once, then from the cache
        assert len(await srv.publish(stream_id, {"data": 1}, secret=token)) == 1
    r = await get(srv, f"/api/streams/{stream_id}/messages", token)
    assert r.status_code == 403  # publish only: no subscribe scope


async def test_rs256_key_file(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    async with live(srv, stream_id, rs256(stream_id)) as client:
        await srv.publish(stream_id, {"data": "signed by a key file"})
        assert await client.wait_messages(1) == ["signed by a key file"]


async def test_jwks_keys_rotate_by_kid(minting: tuple[Server, Jwks]) -> None:
    srv, jwks = minting
    stream_id = (await srv.create_stream())["id"]
    jwks.publish("a")
    async with live(srv, stream_id, rs256(stream_id, kid="a")):
        pass
    jwks.publish("b")  # rotated: b is new, a retired
    before = jwks.requests
    async with live(srv, stream_id, rs256(stream_id, kid="b")) as client:
        await srv.publish(stream_id, {"data": "b"})
        assert await client.wait_messages(1) == ["b"]
    assert jwks.requests == before + 1  # the unknown kid fetched the JWKS again, once
    error = await refused(srv.socket_url(stream=stream_id, token=rs256(stream_id, kid="c")))
    assert error["code"] == "unauthorized"
    # a flood of unknown kids costs the JWKS server at most a request a second
    started, before = time.monotonic(), jwks.requests
    unknown = rs256(stream_id, kid="c")
    async with srv.client() as c:
        answers = await asyncio.gather(
            *(
                c.get(f"/api/streams/{stream_id}/messages", params={"token": unknown})
                for _ in range(5)
            )
        )
    assert {r.status_code for r in answers} == {401}
    assert jwks.requests - before <= 1 + (time.monotonic() - started)
    # a token signed by a key the JWKS does not list any more (fetched again for b): refused
    with_a = rs256(stream_id, kid="a")
    assert (await get(srv, f"/api/streams/{stream_id}/messages", with_a)).status_code == 401


@pytest.mark.node
async def test_node_socketio_client_with_a_jwt(srv: Server) -> None:
    if not node_available():
        pytest.skip("node/npm not installed")
    ensure_node_modules()
    stream_id = (await srv.create_stream())["id"]
    client = await NodeProcess.client(
        url=srv.url + "/", query={"stream": stream_id, "token": hs256(stream_id)}, count=1
    )
    try:
        await client.wait_line(lambda line: line.get("event") == "replay_end")
        await srv.publish(stream_id, {"data": "to node"})
        await client.wait_line(lambda line: line.get("event") == "message")
        assert client.events("message") == [{"event": "message", "data": "to node"}]
        assert await client.finish() == 0
    finally:
        await client.kill()
    bad = await NodeProcess.client(
        url=srv.url + "/", query={"stream": stream_id, "token": hs256("otherstrm0")}
    )
    try:
        line = await bad.wait_line(lambda line: line.get("event") == "error")
        assert line["data"]["code"] == "unauthorized"
    finally:
        await bad.kill()


# -- refused like a bad token ---------------------------------------------------------


async def test_bad_jwts_are_unauthorized_everywhere(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    now = int(time.time())
    header, body, _ = hs256(stream_id).split(".")
    bad = {
        "bad signature": jwt.encode(claims(stream_id), "x" * 40, algorithm="HS256"),
        "forged": f"{header}.{body}.AAAA",
        "alg none": jwt.encode(claims(stream_id), None, algorithm="none"),
        "expired": hs256(stream_id, exp=now - 10),
        "not yet valid": hs256(stream_id, nbf=now + 600),
        "no exp": hs256(stream_id, exp=None),
        "no streams": hs256(stream_id, streams=None),
        "unknown kid": rs256(stream_id, kid="c"),
        "wrong stream": hs256("otherstrm0"),
    }
    for why, token in bad.items():
        error = await refused(srv.socket_url(stream=stream_id, token=token))
        assert error["code"] == "unauthorized", why
        r = await get(srv, f"/api/streams/{stream_id}/messages", token)
        expected = 403 if why == "wrong stream" else 401  # SPEC §3: a valid token
        assert r.status_code == expected, (why, r.text)
        async with srv.client() as c:
            r = await c.get(f"/api/streams/{stream_id}/events", params={"token": token})
        assert r.status_code == expected, (why, r.text)


async def test_jwt_expiry_ends_live_sessions(srv: Server) -> None:
    """Socket, SSE and a long poll alike, as a stored token's `expires_at` does."""
    stream_id = (await srv.create_stream())["id"]
    token = hs256(stream_id, exp=int(time.time()) + 2)
    url = f"/api/streams/{stream_id}/"

    async def sse() -> list[str]:
        async with srv.client() as c, c.stream("GET", url + "events", params={"token": token}) as r:
            assert r.status_code == 200
            return [line async for line in r.aiter_lines()]

    async def long_poll() -> httpx.Response:
        return await get(srv, url + "messages", token, wait="30")

    async with live(srv, stream_id, token) as client:
        lines, polled = await asyncio.gather(sse(), long_poll())
        await client.wait_disconnect(timeout=10)
        assert client.errors[-1]["code"] == "unauthorized", client.summary()
    assert "event: error" in lines and any('"unauthorized"' in line for line in lines)
    assert polled.status_code == 401


# -- channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stored", "jwt"])
async def test_channel_scoped_tokens(srv: Server, kind: str) -> None:
    stream_id = (await srv.create_stream())["id"]
    if kind == "stored":
        doc = await srv.create_token(
            [stream_id], ["subscribe", "publish"], channels=["build.*", "errors"]
        )
        assert doc["channels"] == ["build.*", "errors"]
        token = doc["token"]
    else:
        token = hs256(stream_id, channels=["build.*", "errors"], scopes=["subscribe", "publish"])
    async with live(srv, stream_id, token, channel="build.linux") as client:
        await srv.publish(stream_id, [{"channel": "build.linux", "data": "ok"}], secret=token)
        assert await client.wait_messages(1) == ["ok"]
    for channel in ("", "deploy", "build"):
        query = {"stream": stream_id, "token": token, "channel": channel}
        error = await refused(srv.socket_url(**query))
        assert error["code"] == "unauthorized", channel
        r = await get(srv, f"/api/streams/{stream_id}/messages", token, channel=channel)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", channel
        r = await get(srv, f"/api/streams/{stream_id}/events", token, channel=channel)
        assert r.status_code == 403, channel
    r = await get(srv, f"/api/streams/{stream_id}/messages", token, channel="build.x", wait="0")
    assert r.status_code == 200
    async with srv.client() as c:
        url = f"/api/streams/{stream_id}/messages"
        auth = {"Authorization": f"Bearer {token}"}
        batch = [{"channel": "build.1", "data": 1}, {"data": "stdout is not covered"}]
        r = await c.post(url, json=batch, headers=auth)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await c.post(url, json={"channel": "errors", "data": 2}, headers=auth)
        assert r.status_code == 201
    if kind == "stored":
        async with srv.client() as c:
            listed = (await c.get("/api/tokens", headers=srv.admin)).json()["tokens"]
        assert next(t for t in listed if t["id"] == doc["id"])["channels"] == ["build.*", "errors"]


# -- revocation -------------------------------------------------------------------------


async def revoke(srv: Server, body: dict[str, Any]) -> httpx.Response:
    async with srv.client() as c:
        return await c.post("/api/jwt/revoke", json=body, headers=srv.admin)


async def test_revoke_by_jti_ends_the_live_session_within_a_second(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    token, other = hs256(stream_id, jti="jti-1"), hs256(stream_id, jti="jti-2")
    async with live(srv, stream_id, token) as doomed, live(srv, stream_id, other) as kept:
        started = time.monotonic()
        r = await revoke(srv, {"jti": "jti-1"})
        assert r.status_code == 200, r.text
        await doomed.wait_disconnect(timeout=5)
        assert time.monotonic() - started < 1.0
        assert doomed.errors[-1]["code"] == "token_revoked"
        await srv.publish(stream_id, {"data": "still here"})
        assert await kept.wait_messages(1) == ["still here"]
    assert (await refused(srv.socket_url(stream=stream_id, token=token)))["code"] == "unauthorized"
    r = await get(srv, f"/api/streams/{stream_id}/messages", token)
    assert r.status_code == 401


async def test_revoke_by_sub_issued_before(srv: Server) -> None:
    stream_id = (await srv.create_stream())["id"]
    old = int(time.time()) - 60
    token = hs256(stream_id, sub="bob", iat=old, jti=None)
    async with live(srv, stream_id, token) as doomed:
        started = time.monotonic()
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old + 30))
        r = await revoke(srv, {"sub": "bob", "issued_before": cutoff})
        assert r.status_code == 200, r.text
        assert r.json()["revocation"]["issued_before"].startswith(cutoff[:-1])
        await doomed.wait_disconnect(timeout=5)
        assert time.monotonic() - started < 1.0
        assert doomed.errors[-1]["code"] == "token_revoked"
    assert (await refused(srv.socket_url(stream=stream_id, token=token)))["code"] == "unauthorized"
    fresh = hs256(stream_id, sub="bob")  # issued after the cut-off: fine
    async with live(srv, stream_id, fresh):
        pass
    async with live(srv, stream_id, hs256(stream_id, sub="carol", iat=old)):
        pass


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"jti": "x", "sub": "bob", "issued_before": "2030-01-01T00:00:00Z"},
        {"sub": "bob"},
        {"issued_before": "2030-01-01T00:00:00Z"},
        {"sub": "bob", "issued_before": "yesterday"},
        {"jti": ""},
        {"jti": "x", "extra": 1},
    ],
)
async def test_revoke_takes_exactly_one_form(srv: Server, body: dict[str, Any]) -> None:
    r = await revoke(srv, body)
    assert r.status_code == 422, r.text


async def test_revoke_needs_the_admin_key(srv: Server) -> None:
    async with srv.client() as c:
        as_jwt = {"Authorization": f"Bearer {hs256('*', scopes=['publish'])}"}
        r = await c.post("/api/jwt/revoke", json={"jti": "x"}, headers=as_jwt)
    assert r.status_code == 403


async def test_revocations_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with jwt_server(tmp_path, data_dir) as (srv, _):
        stream_id = (await srv.create_stream())["id"]
        token = hs256(stream_id, jti="persisted")
        assert (await get(srv, f"/api/streams/{stream_id}/messages", token)).status_code == 200
        assert (await revoke(srv, {"jti": "persisted"})).status_code == 200
    with jwt_server(tmp_path, data_dir) as (srv, _):
        assert (await get(srv, f"/api/streams/{stream_id}/messages", token)).status_code == 401
        other = hs256(stream_id, jti="another")
        assert (await get(srv, f"/api/streams/{stream_id}/messages", other)).status_code == 200


def test_serve_refuses_a_short_secret(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bloomr", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env={**os.environ, "BLOOMR_JWT_SECRET": "short", "BLOOMR_ADMIN_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: BLOOMR_JWT_SECRET")
    assert "short" not in done.stderr.replace("BLOOMR_JWT_SECRET must", "")


# -- the README -------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_mint() -> Any:
    """The README's minting example, as written."""
    section = README.read_text().split("### Tokens minted by your application (JWT)", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    scope: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), scope)
    return scope["mint"]


async def test_the_readme_minting_example(srv: Server) -> None:
    mint = readme_mint()
    stream_id = (await srv.create_stream())["id"]
    token = mint(SECRET, stream_id, "alice", ["build.*"])
    async with live(srv, stream_id, token, channel="build.1") as client:
        await srv.publish(stream_id, {"channel": "build.1", "data": "minted"})
        assert await client.wait_messages(1) == ["minted"]
    error = await refused(srv.socket_url(stream=stream_id, token=token))  # channel ""
    assert error["code"] == "unauthorized"
    everything = mint(SECRET, stream_id, "bob")
    r = await get(srv, f"/api/streams/{stream_id}/messages", everything, channel="build.1")
    assert r.status_code == 200 and r.json()["messages"][0]["data"] == "minted"


# -- a cluster ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_revocation_on_one_node_ends_sessions_on_the_other() -> None:
    """PostgreSQL keeps the revocation, the control channel (Redis) carries it: a JWT
    revoked on a ends its session on b within a second, and a third node started
    afterwards refuses it too."""
    name = "t_jwt_" + uuid.uuid4().hex[:12]
    env = {"BLOOMR_JWT_SECRET": SECRET, "BLOOMR_AUTH_FAILURES": "0"}
    try:
        with (
            running_server(*cluster_args(name), env=env) as a,
            running_server(*cluster_args(name), env=env) as b,
        ):
            stream_id = (await a.create_stream())["id"]
            token = hs256(stream_id, jti="cluster-1")
            async with live(b, stream_id, token) as client:
                started = time.monotonic()
                assert (await revoke(a, {"jti": "cluster-1"})).status_code == 200
                await client.wait_disconnect(timeout=5)
                assert time.monotonic() - started < 1.0
                assert client.errors[-1]["code"] == "token_revoked"
            with running_server(*cluster_args(name), env=env) as c:
                r = await get(c, f"/api/streams/{stream_id}/messages", token)
                assert r.status_code == 401
    finally:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, forget_cluster(name)).result()

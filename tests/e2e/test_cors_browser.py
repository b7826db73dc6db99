"""CORS (SPEC §3) from a real page on another origin: the page is served from
http://localhost:<p>, bloomr listens on http://127.0.0.1:<q>. `fetch` (publish and
poll), `EventSource` and Socket.IO (both transports) work with any origin; the admin API
only from the origins given with `--cors-origin`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chromium import publish, static_site, stream_and_token
from playwright.sync_api import Page

from server import Server, running_server

pytestmark = pytest.mark.timeout(90)

PAGE = "<!doctype html><title>another origin</title><p>a page elsewhere</p>"


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    with static_site({"index.html": PAGE}) as url:
        yield url


@pytest.fixture(scope="module")
def allowing(origin: str) -> Iterator[Server]:
    with running_server("--cors-origin", origin) as srv:
        yield srv


@pytest.fixture
def elsewhere(page: Page, origin: str) -> Page:
    page.goto(origin + "/")
    return page


def test_fetch_publish_and_poll(elsewhere: Page, server: Server) -> None:
    stream_id, token = stream_and_token(server)
    result = elsewhere.evaluate(
        """async ([host, stream, token]) => {
          const url = `${host}/api/streams/${stream}/messages`;
          const headers = { Authorization: `Bearer ${token}` };
          const published = await fetch(url, { method: "POST",
            headers: { ...headers, "Content-Type": "application/json", "Idempotency-Key": "k-1" },
            body: JSON.stringify([{ data: "from the page" }, { channel: "c", data: 2 }]) });
          const polled = await fetch(`${url}?channel=c`, { headers });
          return { status: published.status, ids: (await published.json()).ids,
                   polled: (await polled.json()).messages };
        }""",
        [server.url, stream_id, token],
    )
    assert result["status"] == 201 and len(result["ids"]) == 2
    assert [m["data"] for m in result["polled"]] == [2]
    assert result["polled"][0]["id"] == result["ids"][1]


def test_event_source(elsewhere: Page, server: Server) -> None:
    stream_id, token = stream_and_token(server)
    ids = publish(server, stream_id, [{"data": "one"}, {"data": "two"}])
    events = elsewhere.evaluate(
        """([host, stream, token]) => new Promise((resolve, reject) => {
          const source = new EventSource(
            `${host}/api/streams/${stream}/events?token=${token}&replay=1h`);
          const seen = [];
          source.addEventListener("message", (e) => seen.push([e.lastEventId, JSON.parse(e.data)]));
          source.addEventListener("replay_end", (e) => {
            source.close();
            resolve({ seen, end: JSON.parse(e.data) });
          });
          source.onerror = () => { source.close(); reject(new Error("EventSource failed")); };
        })""",
        [server.url, stream_id, token],
    )
    assert [event_id for event_id, _ in events["seen"]] == ids
    assert [envelope["data"] for _, envelope in events["seen"]] == ["one", "two"]
    assert events["end"] == {"count": 2, "lastId": ids[1]}


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_socket_io(elsewhere: Page, server: Server, transport: str) -> None:
    stream_id, token = stream_and_token(server)
    ids = publish(server, stream_id, [{"data": "replayed"}])
    got: Any = elsewhere.evaluate(
        """async ([host, stream, token, transport]) => {
          const { io } = await import("./socket.io.esm.min.js");
          const socket = io(host, { transports: [transport], upgrade: false,
            query: { stream, token, replay: "1h", includeMetadata: true } });
          const message = await new Promise((resolve, reject) => {
            socket.on("message", resolve);
            socket.on("connect_error", reject);
          });
          const used = socket.io.engine.transport.name;
          socket.close();
          return { message, used };
        }""",
        [server.url, stream_id, token, transport],
    )
    assert got["used"] == transport
    assert got["message"]["id"] == ids[0] and got["message"]["data"] == "replayed"


ADMIN_FETCH = """async ([host, key]) => {
  try {
    const r = await fetch(`${host}/api/streams`, { headers: { Authorization: `Bearer ${key}` } });
    return r.status;
  } catch (error) {
    return error.name;  // a CORS refusal: TypeError, the page cannot read the answer
  }
}"""


def test_admin_api_only_from_configured_origins(
    elsewhere: Page, server: Server, allowing: Server
) -> None:
    assert elsewhere.evaluate(ADMIN_FETCH, [allowing.url, allowing.admin_key]) == 200
    assert elsewhere.evaluate(ADMIN_FETCH, [server.url, server.admin_key]) == "TypeError"

"""The web dashboard (SPEC §8) driven in headless Chromium: every action, with the
keyboard where it matters; checked against the HTTP API."""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import admin_client, free_port, new_stream, publish
from playwright.sync_api import Page, expect

from server import Server, running_server
from sioclient import NODE_DIR, ensure_node_modules, node_available

pytestmark = pytest.mark.timeout(90)

TICKER = "import time; [(print('tick', i, flush=True), time.sleep(0.05)) for i in range(10**6)]"


def sign_in(page: Page, bloomr: Server) -> None:
    page.goto(bloomr.url + "/")
    page.get_by_label("Admin key").fill(bloomr.admin_key)
    page.get_by_label("Admin key").press("Enter")
    expect(page.get_by_role("heading", name="Streams")).to_be_visible()


def test_sign_in_and_out(page: Page, bloomr: Server) -> None:
    page.goto(bloomr.url + "/")
    key = page.get_by_label("Admin key")
    expect(key).to_be_focused()
    key.fill("not-the-key")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert").filter(has_text="not valid")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('bloomr.adminKey')") is None
    sign_in(page, bloomr)
    assert page.evaluate("sessionStorage.getItem('bloomr.adminKey')") == bloomr.admin_key
    page.reload()  # the key lives as long as the tab
    expect(page.get_by_role("heading", name="Streams")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('bloomr.adminKey')") is None


def test_create_edit_start_stop_delete_a_stream(page: Page, bloomr: Server) -> None:
    sign_in(page, bloomr)
    page.get_by_role("button", name="New stream").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Name")).to_be_focused()
    dialog.get_by_label("Name").fill("ticker")
    dialog.get_by_label("Command").fill(f"{sys.executable}\n-c\n{TICKER}")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog).to_have_count(0)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="ticker"))
    expect(row).to_contain_text("stopped")
    stream_id = row.locator("code").inner_text()
    with admin_client(bloomr) as c:
        created = c.get(f"/api/streams/{stream_id}").json()
    assert created["command"] == [sys.executable, "-c", TICKER]

    row.get_by_role("button", name="Start ticker").click()
    expect(row.get_by_role("cell").nth(2)).to_contain_text("running")
    expect(row.get_by_role("cell").nth(4)).to_contain_text("tick")  # last message
    expect(row.get_by_role("cell").nth(3)).not_to_have_text("0.00/s")  # live rate
    row.get_by_role("button", name="Stop ticker").click()
    expect(row.get_by_role("cell").nth(2)).not_to_contain_text("running")

    edit = row.get_by_role("button", name="Edit ticker")
    edit.click()
    page.keyboard.press("Escape")  # closes the dialog, focus back on its opener
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(edit).to_be_focused()
    edit.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Store history").uncheck()
    dialog.get_by_label("Keep messages for").fill("2h")
    dialog.get_by_label("Keep at most (messages)").fill("500")
    dialog.get_by_label("Command").fill("true")
    dialog.get_by_label("Restart").select_option("on-failure")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    with admin_client(bloomr) as c:
        edited = c.get(f"/api/streams/{stream_id}").json()
    assert edited["store_history"] is False
    assert edited["retention"] == {"max_age": "2h", "max_messages": 500}
    assert (edited["command"], edited["restart"]) == (["true"], "on-failure")

    row.get_by_role("button", name="Delete ticker").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    with admin_client(bloomr) as c:
        assert c.get(f"/api/streams/{stream_id}").status_code == 404


def test_bad_input_is_reported_in_the_dialog(page: Page, bloomr: Server) -> None:
    sign_in(page, bloomr)
    page.get_by_role("button", name="New stream").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Keep messages for").fill("forever")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_contain_text("validation_failed")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_live_tail_with_channel_replay_metadata_and_occupancy(page: Page, bloomr: Server) -> None:
    stream = new_stream(bloomr, name="tailed")
    old = publish(bloomr, stream["id"], [{"data": f"old {i}"} for i in range(3)])
    publish(bloomr, stream["id"], {"channel": "errors", "data": "old error"})
    sign_in(page, bloomr)
    page.get_by_role("link", name="tailed").click()
    expect(page.get_by_role("heading", name="tailed")).to_be_visible()
    expect(page.locator("#occupancy")).to_have_text("0 live subscribers")
    log = page.get_by_role("list", name="Messages")

    page.get_by_label("Replay").fill("1h")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Live (replayed 3).")
    expect(log.get_by_role("listitem")).to_have_text(["old 0", "old 1", "old 2"])
    expect(page.locator("#occupancy")).to_have_text("1 live subscriber — (stdout): 1")
    publish(bloomr, stream["id"], {"data": {"n": 1}})
    expect(log.get_by_role("listitem")).to_have_count(4)
    expect(log.get_by_role("listitem").last).to_have_text('{"n":1}')

    page.get_by_label("Include metadata").check()
    ids = publish(bloomr, stream["id"], {"data": "with metadata"})
    expect(log.get_by_role("listitem").last).to_contain_text(f'"id":"{ids[0]}"')

    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Include metadata").uncheck()
    page.get_by_label("Channel", exact=True).fill("errors")
    page.get_by_label("Replay").fill(old[0])  # an id: the messages after it
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Live (replayed 1).")
    expect(log.get_by_role("listitem")).to_have_text(["old error"])
    expect(page.locator("#occupancy")).to_have_text("1 live subscriber — errors: 1")
    page.get_by_role("button", name="Disconnect").click()
    expect(page.get_by_role("status")).to_have_text("Not connected.")
    expect(page.locator("#occupancy")).to_have_text("0 live subscribers")


def test_tail_resumes_exactly_after_a_restart(context: Any, tmp_path: Any) -> None:
    port = free_port()
    args = ("--port", str(port))
    page = context.new_page()
    with running_server(*args, data_dir=tmp_path) as first:
        stream = new_stream(first, name="resumed")
        sign_in(page, first)
        page.goto(f"{first.url}/#/streams/{stream['id']}")
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.get_by_role("status")).to_have_text("Live (replayed 0).")
        publish(first, stream["id"], [{"data": i} for i in range(5)])
        expect(page.get_by_role("list", name="Messages").get_by_role("listitem")).to_have_count(5)
    expect(page.get_by_role("status")).to_have_text("Connection lost: reconnecting…")
    warned = page.get_by_role("list", name="Messages").locator("li.warning")
    expect(warned).to_have_count(1)  # shutting_down: the tail says why it reconnects
    with running_server(*args, data_dir=tmp_path) as second:
        publish(second, stream["id"], [{"data": i} for i in range(5, 10)])
        items = page.get_by_role("list", name="Messages").locator("li:not(.warning)")
        expect(items).to_have_text([str(i) for i in range(10)])  # no gap, no duplicate
        publish(second, stream["id"], {"data": 10})
        expect(items).to_have_count(11)
        page.close()


def test_webhooks_create_list_with_delivery_state_delete(
    page: Page, bloomr: Server, receiver: tuple[str, list[bytes]]
) -> None:
    url, bodies = receiver
    stream = new_stream(bloomr, name="hooked")
    sign_in(page, bloomr)
    page.goto(f"{bloomr.url}/#/streams/{stream['id']}")
    page.get_by_label("Webhook URL").fill(url)
    page.get_by_label("Webhook channel").fill("progress")
    page.get_by_role("button", name="Add webhook").click()
    dialog = page.get_by_role("dialog")
    secret = dialog.locator("#webhook-secret").inner_text()
    assert len(secret) >= 8
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    row = page.get_by_role("row").filter(has_text=url)
    expect(row).to_contain_text("progress")
    publish(bloomr, stream["id"], [{"channel": "progress", "data": 50}, {"data": "not this"}])
    delivered = row.get_by_role("cell")
    expect(delivered.nth(3)).to_have_text("1")  # delivered
    expect(delivered.nth(5)).to_have_text("200")  # last status
    assert b'"data":50' in bodies[0]
    with admin_client(bloomr) as c:
        (hook,) = c.get(f"/api/streams/{stream['id']}/webhooks").json()["webhooks"]
    assert "secret" not in hook
    row.get_by_role("button", name=f"Delete webhook {url}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    with admin_client(bloomr) as c:
        assert c.get(f"/api/streams/{stream['id']}/webhooks").json()["webhooks"] == []


def test_tokens_create_with_snippets_list_revoke(
    page: Page, bloomr: Server, tmp_path: Path
) -> None:
    stream = new_stream(bloomr, name="for tokens")
    sign_in(page, bloomr)
    page.get_by_role("link", name="Tokens", exact=True).click()
    page.get_by_label("Token name").fill("browser app")
    page.get_by_label("Streams").select_option(stream["id"])
    page.get_by_label("publish").check()
    page.get_by_role("button", name="Create token").click()
    dialog = page.get_by_role("dialog", name="Token created")
    secret = dialog.locator("#token-secret").inner_text()
    javascript = dialog.locator("#snippet-js").inner_text()
    python = dialog.locator("#snippet-py").inner_text()
    host = bloomr.url + "/"
    for snippet in (javascript, python):
        assert host in snippet and stream["id"] in snippet and secret in snippet
    assert "import { io } from 'socket.io-client';" in javascript
    assert re.search(r"socket\.on\('message', arg => \{", javascript)
    page.keyboard.press("Escape")
    run_snippet(["node", "snippet.mjs"], javascript, bloomr, stream["id"], tmp_path)
    if importlib.util.find_spec("bloomr.client") is not None:  # SPEC §8's Python client
        run_snippet([sys.executable, "-u", "snippet.py"], python, bloomr, stream["id"], tmp_path)
    row = page.get_by_role("row").filter(has_text="browser app")
    expect(row).to_contain_text("subscribe, publish")
    expect(row).to_contain_text(stream["id"])
    r = httpx.get(f"{bloomr.url}/api/streams/{stream['id']}/messages?token={secret}")
    assert r.status_code == 200  # the secret shown is the token

    row.get_by_role("button", name="Revoke browser app").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    r = httpx.get(f"{bloomr.url}/api/streams/{stream['id']}/messages?token={secret}")
    assert r.status_code == 401


def test_a_token_for_some_channels_only(page: Page, bloomr: Server) -> None:
    """SPEC §7: stored tokens may name channels (a trailing `*` a prefix)."""
    stream = new_stream(bloomr, name="for channel tokens")
    sign_in(page, bloomr)
    page.get_by_role("link", name="Tokens", exact=True).click()
    page.get_by_label("Token name").fill("build watcher")
    page.get_by_label("Streams").select_option(stream["id"])
    page.get_by_label("Channels (optional)").fill("build.*, errors")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_role("dialog", name="Token created").locator("#token-secret").inner_text()
    page.keyboard.press("Escape")
    row = page.get_by_role("row").filter(has_text="build watcher")
    expect(row).to_contain_text("build.*, errors")
    url = f"{bloomr.url}/api/streams/{stream['id']}/messages"
    assert httpx.get(url, params={"token": secret, "channel": "build.1"}).status_code == 200
    assert httpx.get(url, params={"token": secret}).status_code == 403  # stdout: not covered


def run_snippet(
    command: list[str], code: str, bloomr: Server, stream_id: str, tmp_path: Path
) -> None:
    """A snippet of the token dialog, unchanged, run as `command` (Node with the pinned
    socket.io-client, or Python): it shows a message published once it is connected."""
    if command[0] == "node":
        if not node_available():
            pytest.skip("node is missing")
        ensure_node_modules()
        (tmp_path / "node_modules").symlink_to(NODE_DIR / "node_modules")
    (tmp_path / command[-1]).write_text(code)
    lines: queue.Queue[str] = queue.Queue()
    process = subprocess.Popen(
        command, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()])
    reader.start()
    try:
        if command[0] == "node":
            assert lines.get(timeout=15).startswith("Connected to")
            publish(bloomr, stream_id, {"data": "to node"})
            assert lines.get(timeout=15).strip() == "MESSAGE => to node"
        else:  # live only, and no connect line: publish until one arrives
            for _ in range(30):
                publish(bloomr, stream_id, {"data": "to python"})
                with contextlib.suppress(queue.Empty):
                    assert lines.get(timeout=0.5).strip() == "to python"  # channel "" then the data
                    break
            else:
                raise AssertionError("the Python snippet showed nothing")
    finally:
        process.kill()
        process.wait()
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()

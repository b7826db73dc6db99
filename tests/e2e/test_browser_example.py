"""The README's browser example (docs/examples/live.html), as written, in Chromium: a
page on another origin that shows live output with socket.io-client alone, and resumes
after a drop (here, the harshest one: bloomr restarted)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import free_port, new_stream, new_token, publish, static_site
from playwright.sync_api import Page, expect

from server import Server, running_server

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "docs/examples/live.html"


def test_the_readme_shows_the_example_as_tested() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "```html\n" + EXAMPLE.read_text() + "```" in readme


@contextlib.contextmanager
def example_page(page: Page, tmp_path: Path) -> Iterator[tuple[Page, Server, str]]:
    """The example, filled in with a new stream and token, open in `page`; bloomr on a
    fixed port, so that the test can restart it under the page's feet."""
    port = free_port()
    with running_server("--port", str(port), data_dir=tmp_path) as srv:
        stream_id = new_stream(srv, name="example")["id"]
        token = new_token(srv, [stream_id], ["subscribe"])
        html = (
            EXAMPLE.read_text()
            .replace("http://127.0.0.1:8080/", srv.url + "/")
            .replace("dwd23RWdwE", stream_id)
            .replace("your-token-here", token)
        )
        with static_site({"live.html": html}) as origin:
            page.goto(origin + "/live.html")
            expect(page.locator("#status")).to_have_text("live")
            yield page, srv, stream_id


def lines(page: Page) -> list[str]:
    text: str = page.locator("#output").inner_text()
    return [line.split(" ", 1)[1] for line in text.splitlines()]


def test_live_output_resumes_after_a_drop(page: Page, tmp_path: Path) -> None:
    with example_page(page, tmp_path) as (page, srv, stream_id):
        publish(srv, stream_id, [{"data": i} for i in range(5)])
        expect(page.locator("#output")).to_contain_text("4")
        assert lines(page) == [str(i) for i in range(5)]
        with restart(page, srv, tmp_path) as again:
            publish(again, stream_id, [{"data": i} for i in range(5, 10)])
            expect(page.locator("#status")).not_to_have_text("reconnecting…")
            publish(again, stream_id, {"data": 10})
            expect(page.locator("#output")).to_contain_text(" 10\n")
            assert lines(page) == [str(i) for i in range(11)]  # no gap, no duplicate


def test_the_session_is_recovered_after_a_drop(page: Page, tmp_path: Path) -> None:
    """SPEC §2 "Resume after a drop": socket.io-client's connection state recovery works
    after a restart of bloomr, and `socket.recovered` is true (the page says "resumed")."""
    with example_page(page, tmp_path) as (page, srv, stream_id):
        publish(srv, stream_id, [{"data": i} for i in range(3)])
        expect(page.locator("#output")).to_contain_text("2")
        with restart(page, srv, tmp_path) as again:
            publish(again, stream_id, {"data": 3})
            expect(page.locator("#status")).not_to_have_text("reconnecting…")
            assert page.locator("#status").inner_text() == "resumed"
            expect(page.locator("#output")).to_contain_text("3")
            assert lines(page) == ["0", "1", "2", "3"]


@contextlib.contextmanager
def restart(page: Page, srv: Server, tmp_path: Path) -> Iterator[Server]:
    """Stop bloomr (the page sees the drop), start it again on the same port and data."""
    port = srv.url.rsplit(":", 1)[1]
    srv.process.terminate()
    expect(page.locator("#status")).to_have_text("reconnecting…")
    srv.process.wait(10)
    with running_server("--port", port, data_dir=tmp_path) as again:
        yield again

"""A screenshot of each dashboard page, as the README shows them. Taken on every run
(each page must render with live data); written to docs/ with
`BLOOMR_SCREENSHOTS=docs pytest tests/e2e/test_screenshots.py`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from chromium import new_stream, publish
from playwright.sync_api import Page, expect
from test_dashboard import TICKER, sign_in

from server import Server

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).parents[2]


def test_screenshot_each_page(
    page: Page, bloomr: Server, tmp_path: Path, receiver: tuple[str, list[bytes]]
) -> None:
    out = (
        ROOT / os.environ["BLOOMR_SCREENSHOTS"] if "BLOOMR_SCREENSHOTS" in os.environ else tmp_path
    )
    page.set_viewport_size({"width": 1280, "height": 800})

    def shot(name: str) -> None:
        page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=True)

    build = new_stream(bloomr, name="nightly build", command=[sys.executable, "-u", "-c", TICKER])
    deploy = new_stream(bloomr, name="deploy", retention={"max_age": "30d"})
    publish(bloomr, deploy["id"], [{"channel": "progress", "data": {"pct": 40}}])
    page.goto(bloomr.url + "/")
    expect(page.get_by_label("Admin key")).to_be_focused()
    shot("sign-in")

    sign_in(page, bloomr)
    page.get_by_role("button", name="Start nightly build").click()
    row = page.get_by_role("row").filter(has_text="nightly build")
    expect(row.get_by_role("cell").nth(3)).not_to_have_text("0.00/s")
    shot("streams")

    page.get_by_role("link", name="nightly build").click()
    page.get_by_label("Replay").fill("1m")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.get_by_role("list", name="Messages").get_by_role("listitem")).not_to_have_count(0)
    page.get_by_label("Webhook URL").fill(receiver[0])
    page.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_role("dialog", name="Webhook created")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator("#occupancy")).to_contain_text("1 live subscriber")
    hook = page.get_by_role("row").filter(has_text=receiver[0]).get_by_role("cell")
    expect(hook.nth(5)).to_have_text("200")
    page.evaluate("window.scrollTo(0, 0)")
    shot("stream")

    page.get_by_role("button", name="Disconnect").click()
    page.get_by_role("link", name="Tokens", exact=True).click()
    page.get_by_label("Token name").fill("status page")
    page.get_by_label("Streams").select_option(build["id"])
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("dialog", name="Token created")).to_be_visible()
    shot("token-created")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text="status page")).to_be_visible()
    shot("tokens")
    page.get_by_role("link", name="Streams", exact=True).click()
    page.get_by_role("button", name="Stop nightly build").click()

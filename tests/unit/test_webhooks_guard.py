"""Which URLs webhooks may call. DNS is never asked about a name: literal addresses
resolve to themselves, and a fake resolver stands for names."""

from __future__ import annotations

import pytest

from bloomr.webhooks.guard import UrlRefused, check, check_syntax, first_refused, is_public, pin

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.10",
    "169.254.169.254",  # cloud metadata
    "0.0.0.0",
    "100.64.0.1",  # shared (carrier-grade NAT)
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "::1",
    "::",
    "fe80::1",
    "fe80::1%1",
    "febf:ffff::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "::ffff:127.0.0.1",  # mapped
    "::ffff:10.1.2.3",
    "::ffff:169.254.1.1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "ff02::1",
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",  # just outside 172.16/12
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public(address)


def test_first_refused_checks_every_address() -> None:
    assert first_refused(["8.8.8.8", "1.1.1.1"]) is None
    assert first_refused(["8.8.8.8", "10.0.0.1", "::1"]) == "10.0.0.1"
    assert first_refused(["not-an-address"]) == "not-an-address"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://[::1]/hook",
        "https://10.0.0.5/x",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0:80/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fc00::1]:8443/",
    ],
)
async def test_urls_of_private_literal_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="private, loopback or link-local"):
        await check(url, allow_private=False)


async def test_a_public_literal_address_is_called_as_is() -> None:
    target = await check("https://8.8.8.8/hook?x=1", allow_private=False)
    assert target.url == "https://8.8.8.8/hook?x=1"
    assert target.headers == {} and target.extensions == {}


async def test_allow_private_resolves_nothing() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise AssertionError("no DNS when private addresses are allowed")

    target = await check("http://127.0.0.1:9/x", allow_private=True, resolver=resolver)
    assert target.url == "http://127.0.0.1:9/x"


async def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["93.184.216.34", "2606:2800:220:1::1", "::1"]

    with pytest.raises(UrlRefused, match="::1"):
        await check("https://example.com/hook", allow_private=False, resolver=resolver)
    assert asked == [("example.com", 443)]


async def test_a_name_is_pinned_to_its_checked_address() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 8443)
        return ["93.184.216.34", "1.1.1.1"]

    target = await check(
        "https://user:pw@hooks.example.com:8443/in?a=b", allow_private=False, resolver=resolver
    )
    assert target.url == "https://user:pw@93.184.216.34:8443/in?a=b"
    assert target.headers == {"Host": "hooks.example.com:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}


def test_pin_to_an_ipv6_address_over_http() -> None:
    target = pin("http://example.com/x", "2606:2800:220:1::1")
    assert target.url == "http://[2606:2800:220:1::1]/x"
    assert target.headers == {"Host": "example.com"}
    assert target.extensions == {}


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise UrlRefused(f"host {host} does not resolve")

    with pytest.raises(UrlRefused, match="does not resolve"):
        await check("http://nowhere.invalid/", allow_private=False, resolver=resolver)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http:///path-only", "must name a host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        check_syntax(url)


def test_good_urls() -> None:
    for url in ("http://example.com", "HTTPS://example.com:8443/a/b?c=d", "http://[::1]:9/"):
        check_syntax(url)

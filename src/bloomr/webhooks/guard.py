"""Which URLs a webhook may call: http(s) only, and (unless private addresses are
allowed) never a host that resolves to a loopback, private, link-local or otherwise
non-public address, so that an admin API cannot be turned into a probe of the
server's own network (SSRF).

Everything here is pure except `resolve` (DNS). The check runs when a webhook is
created and again before every attempt, because DNS can change; a delivery then
connects to the very address that was checked (see `pin`), so a DNS answer that flips
between the check and the connection (rebinding) cannot reach a private address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
DNS_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UrlRefused(ValueError):
    """A URL a webhook may not call; the message says why, for people."""


def check_syntax(url: str) -> None:
    """An absolute http(s) URL with a host; raises UrlRefused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UrlRefused("must name a host")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: str | IPAddress) -> bool:
    """True for an address on the public internet: not loopback (127/8, ::1), private
    (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10),
    unspecified (0.0.0.0, ::), shared (100.64/10), reserved, documentation or multicast;
    IPv6 forms that embed an IPv4 address (::ffff:10.0.0.1) are judged by that address."""
    ip = address if not isinstance(address, str) else ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return is_public(embedded)
        if ip.scope_id:
            return False  # a zone index only makes sense on a local link
    return ip.is_global and not ip.is_multicast


def first_refused(addresses: Iterable[str]) -> str | None:
    """The first address that is not public, or None when all are."""
    for address in addresses:
        try:
            if not is_public(address):
                return address
        except ValueError:
            return address
    return None


async def resolve(host: str, port: int) -> list[str]:
    """Every address `getaddrinfo` gives for the host (IPv4 and IPv6), in its order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), DNS_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise UrlRefused(f"host {host} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UrlRefused(f"host {host} does not resolve")
    return addresses


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt connects: the URL (its host replaced by the checked address
    when pinned), the Host header and the TLS server name to keep, for httpx."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def pin(url: str, address: str) -> Target:
    """`url` sent to `address`: same path and port, `Host` and TLS SNI (so certificate
    checks) still for the URL's host name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return Target(url)  # already a literal address
    except ValueError:
        pass
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    pinned = parts._replace(netloc=netloc).geturl()
    shown_host = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return Target(pinned, {"Host": shown_host}, extensions)


async def check(url: str, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """Where to send a request for `url`, or UrlRefused. With `allow_private` nothing is
    resolved here (httpx resolves as usual); otherwise every address the host resolves
    to must be public, and the request is pinned to the first of them."""
    check_syntax(url)
    if allow_private:
        return Target(url)
    parts = urlsplit(url)
    host = (parts.hostname or "").split("%", 1)[0]
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = await resolver(host, port)
    refused = first_refused(addresses)
    if refused is not None:
        raise UrlRefused(
            f"host {host} resolves to {refused}, a private, loopback or link-local address "
            "(allowed only with BLOOMR_WEBHOOK_ALLOW_PRIVATE=1 or --webhook-allow-private)"
        )
    return pin(url, addresses[0])

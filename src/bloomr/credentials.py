"""Where a request carries its secret: `Authorization: Bearer <secret>`, else `?token=`.

The one reader, for every path that takes a secret: the HTTP API, the publish fast
path inside the HTTP protocol, and server-sent events. Pure: raw ASGI headers (lower-
case names) and the raw query string in, the secret (or None) out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

Headers = Iterable[tuple[bytes, bytes]]


class QuerySecret(str):
    """A secret read from the query string (where access logs and proxies keep it):
    a token is taken from there, the admin key is not."""

    __slots__ = ()


def secret_of(headers: Headers, query_string: bytes) -> str | None:
    """The bearer token if there is one, else the `token` query parameter. Any other
    `Authorization` scheme is ignored, as if the header were missing."""
    for name, raw in headers:
        if name == b"authorization":
            kind, _, secret = bytes(raw).decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and secret.strip():
                return secret.strip()
    if not query_string or b"token" not in query_string:
        return None
    found = None
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "token":
            found = value  # the last one, as a query-parameter dict would keep it
    return None if found is None else QuerySecret(found)


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The client's address of an ASGI scope (its host: failures are counted per
    address, not per connection)."""
    client = scope.get("client")
    return None if not client else str(client[0])

"""Who is asking: the admin key, or a token with scopes and streams."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .errors import BloomrError
from .model import Scope, Stream, Token, hash_secret
from .store.base import MetadataStore


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: `token` is None for the admin key."""

    token: Token | None

    @property
    def is_admin(self) -> bool:
        return self.token is None

    @property
    def token_id(self) -> str | None:
        return None if self.token is None else self.token.id

    @property
    def expires_at(self) -> str | None:
        """When its sessions end (the admin key never expires)."""
        return None if self.token is None else self.token.expires_at


ADMIN = Principal(None)


class Authenticator:
    def __init__(self, meta: MetadataStore, admin_key: str) -> None:
        self._meta = meta
        self._admin_key = admin_key

    async def identify(self, secret: str | None) -> Principal:
        """The principal behind a secret; `unauthorized` if it is none (unknown, revoked
        or expired: one answer for all three)."""
        if not secret:
            raise BloomrError("unauthorized", "missing credentials")
        if hmac.compare_digest(secret.encode(), self._admin_key.encode()):
            return ADMIN
        token = await self._meta.get_token_by_hash(hash_secret(secret))
        if token is None or token.expired():
            raise BloomrError("unauthorized", "invalid, expired or revoked token")
        return Principal(token)

    def require_admin(self, principal: Principal) -> None:
        if not principal.is_admin:
            raise BloomrError("forbidden", "this needs the admin key")


def check_access(principal: Principal, stream_id: str, scope: Scope) -> None:
    """`forbidden` when a valid token lacks the scope or the stream."""
    token = principal.token
    if token is None:
        return
    if scope not in token.scopes:
        raise BloomrError("forbidden", f"this token lacks the '{scope}' scope")
    if not token.allows_stream(stream_id):
        raise BloomrError("forbidden", "this token is not valid for this stream")


def require_stream(stream: Stream | None, stream_id: str) -> Stream:
    if stream is None:
        raise BloomrError("not_found", f"stream {stream_id} not found")
    return stream

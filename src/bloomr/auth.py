"""Who is asking: the admin key, or a token with scopes and streams."""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass

from .credentials import QuerySecret
from .errors import BloomrError
from .jwt_tokens.verifier import JwtVerifier, looks_like_jwt
from .model import Draft, Scope, Stream, Token, hash_secret
from .throttle import FailureThrottle


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
FindToken = Callable[[str], Awaitable[Token | None]]  # a token by its secret's hash


class Authenticator:
    """Checks secrets. Tokens found are cached briefly (a publish every few milliseconds
    must not read the database each time). `revoked` holds the ids of tokens revoked
    while this node runs (the hub adds them as the revocation events arrive, from any
    node): they are refused even from the cache or from a read that raced the delete."""

    CACHE_SECONDS = 1.0
    CACHE_SIZE = 10_000
    # While the token store is unavailable (a PostgreSQL restart or failover), a token
    # this node has seen is honoured from its cache for this much longer: a short outage
    # does not log every client out. Revocations this node has heard of still win, and
    # `expires_at` still holds; the risk is only a revocation whose event this node
    # missed, for at most this long.
    STALE_SECONDS = 60.0

    def __init__(
        self,
        find_token: FindToken,
        admin_key_hash: str,
        revoked: Set[str] = frozenset(),
        throttle: FailureThrottle | None = None,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self._find_token = find_token
        self._jwt = jwt  # application-minted tokens (SPEC §7), when configured
        self.admin_key_hash = admin_key_hash  # hash_secret(the admin key): all a node keeps
        self._revoked = revoked
        self._cache: OrderedDict[str, tuple[Token, float]] = OrderedDict()
        self.throttle = throttle or FailureThrottle(0)

    async def identify(self, secret: str | None, client: str | None = None) -> Principal:
        """The principal behind a secret; `unauthorized` if it is none (unknown, revoked
        or expired: one answer for all three). With the `client` address, failures are
        counted and an address past its allowance gets `rate_limited` before its secret
        is even looked at (so its guesses learn nothing)."""
        if not secret:
            raise BloomrError("unauthorized", "missing credentials")
        if client is not None:
            wait = self.throttle.retry_after(client)
            if wait > 0:
                raise BloomrError(
                    "rate_limited",
                    "too many failed authentications from this address",
                    retry_after=math.ceil(wait),
                )
        try:
            return await self._identify(secret)
        except BloomrError:
            if client is not None:
                self.throttle.failed(client)
            raise

    async def _identify(self, secret: str) -> Principal:
        secret_hash = hash_secret(secret)
        if self._is_admin(secret_hash):
            if isinstance(secret, QuerySecret):
                raise BloomrError(
                    "unauthorized", "the admin key is taken only in the Authorization header"
                )
            return ADMIN
        if self._jwt is not None and looks_like_jwt(secret):
            return self._principal(await self._jwt.verify(secret))
        return self._principal(await self._token(secret_hash))

    def identify_cached(self, secret: str) -> Principal | None:
        """`identify` without waiting: None unless the answer is the admin key or a token
        in the cache that is still valid (ask `identify` then)."""
        secret_hash = hash_secret(secret)
        if self._is_admin(secret_hash):
            return None if isinstance(secret, QuerySecret) else ADMIN
        token: Token | None
        if self._jwt is not None and looks_like_jwt(secret):
            token = self._jwt.cached(secret)
        else:
            cached = self._cache.get(secret_hash)
            token = cached[0] if cached is not None and cached[1] > time.monotonic() else None
        if token is None:
            return None
        try:
            return self._principal(token)
        except BloomrError:
            return None

    def _is_admin(self, secret_hash: str) -> bool:
        return bool(self.admin_key_hash) and hmac.compare_digest(secret_hash, self.admin_key_hash)

    def _principal(self, token: Token | None) -> Principal:
        if token is None or token.expired() or token.id in self._revoked:
            raise BloomrError("unauthorized", "invalid, expired or revoked token")
        return Principal(token)

    async def _token(self, secret_hash: str) -> Token | None:
        cached = self._cache.get(secret_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            token = await self._find_token(secret_hash)
        except BloomrError as exc:
            if exc.code == "unavailable" and cached is not None:
                if cached[1] + self.STALE_SECONDS > now:
                    return cached[0]  # fresh until then: see STALE_SECONDS
            raise
        if token is None:  # unknown secrets are not cached: anyone can make up more
            self._cache.pop(secret_hash, None)
            return None
        self._cache[secret_hash] = (token, now + self.CACHE_SECONDS)
        self._cache.move_to_end(secret_hash)
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return token

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


def check_channel(principal: Principal, channel: object) -> None:
    """`forbidden` when a valid token's `channels` do not cover `channel` (a channel
    that is not a string is left to the argument's own check)."""
    token = principal.token
    if token is None or token.channels is None:
        return
    name = "" if channel is None else channel
    if isinstance(name, str) and not token.allows_channel(name):
        raise BloomrError("forbidden", "this token is not valid for this channel")


def check_publish_channels(principal: Principal, drafts: Sequence[Draft]) -> None:
    """`check_channel` for each message of a publish (nothing to do for a token without
    `channels`, the common case: two attribute reads on the publish path)."""
    token = principal.token
    if token is not None and token.channels is not None:
        for draft in drafts:
            check_channel(principal, draft.channel)


def require_stream(stream: Stream | None, stream_id: str) -> Stream:
    if stream is None:
        raise BloomrError("not_found", f"stream {stream_id} not found")
    return stream

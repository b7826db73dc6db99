"""Verifies JWTs (RFC 7519) into `Token`s. Verified tokens are cached by their exact
string until they expire, so a publisher sending the same JWT with every request pays
the signature check once."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt

from ..config import JwtConfig
from ..errors import BloomrError
from ..model import Token
from .claims import REQUIRED, refuse, token_from_claims
from .keys import Jwks, Key, load_key_file, pick, secret_key
from .revocations import RevokedTokens


def looks_like_jwt(secret: str) -> bool:
    """A JWS compact serialization: three base64url parts joined by dots (stored tokens
    and the admin key are `bt_` / `bk_` and URL-safe base64, which has no dot)."""
    return secret.count(".") == 2


class JwtVerifier:
    CACHE_SIZE = 10_000

    def __init__(self, config: JwtConfig, revoked: RevokedTokens | None = None) -> None:
        """Raises keys.KeyProblem for a key that cannot be used (bloomr does not start).
        `revoked`: the revocations in force (the streams service keeps them)."""
        self._revoked = RevokedTokens() if revoked is None else revoked
        self._secret: Key | None = secret_key(config.secret) if config.secret else None
        self._file: dict[str, Key] = load_key_file(config.public_key) if config.public_key else {}
        self._jwks = Jwks(config.jwks_url) if config.jwks_url else None
        self._cache: OrderedDict[str, tuple[Token, float]] = OrderedDict()

    def cached(self, encoded: str) -> Token | None:
        """The token if this string was verified before and has not expired yet."""
        hit = self._cache.get(encoded)
        if hit is None or hit[1] <= time.time() or self._revoked.covers(hit[0].id):
            return None
        return hit[0]

    async def verify(self, encoded: str) -> Token:
        """The token the JWT stands for, or `unauthorized`: a bad signature, an unknown
        kid, an algorithm the key does not take (`none` included), expired, not yet
        valid, a required claim missing or malformed."""
        hit = self._cache.get(encoded)
        if hit is not None and hit[1] > time.time():
            return self._unless_revoked(hit[0])
        try:
            header = jwt.get_unverified_header(encoded)
        except jwt.PyJWTError:
            raise refuse("not a JWT") from None
        key = await self._key(header)
        claims = _decode(encoded, key)
        token = token_from_claims(claims)
        self._remember(encoded, token, float(claims["exp"]))
        return self._unless_revoked(token)

    def _unless_revoked(self, token: Token) -> Token:
        if self._revoked.covers(token.id):
            raise BloomrError("unauthorized", "invalid, expired or revoked token")
        return token

    async def _key(self, header: dict[str, Any]) -> Key:
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise refuse("kid must be a string")
        key: Key | None = None
        if alg == "HS256":
            key = self._secret  # a shared secret verifies HS256, and nothing else does
        elif isinstance(alg, str) and alg not in ("none", "HS384", "HS512"):
            key = pick(self._file, kid) if self._file else None
            if key is None and self._jwks is not None:
                key = await self._jwks.key(kid)
        if key is None or key.algorithm != alg:
            raise refuse(f"no key for alg {alg!r}" + (f" and kid {kid!r}" if kid else ""))
        return key

    def _remember(self, encoded: str, token: Token, exp: float) -> None:
        self._cache[encoded] = (token, exp)
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)


def _decode(encoded: str, key: Key) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            encoded,
            key.key,
            algorithms=[key.algorithm],  # pinned: the key's own algorithm only
            options={"require": list(REQUIRED), "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise refuse("expired") from None
    except jwt.ImmatureSignatureError:
        raise refuse("not valid yet") from None
    except jwt.MissingRequiredClaimError as exc:
        raise refuse(f"{exc.claim} is required") from None
    except jwt.PyJWTError as exc:
        raise refuse(str(exc) or type(exc).__name__) from None
    return claims


def verifier_for(config: JwtConfig, revoked: RevokedTokens | None = None) -> JwtVerifier | None:
    return JwtVerifier(config, revoked) if config.enabled else None

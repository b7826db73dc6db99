"""A verified JWT's claims -> the `Token` a stored token would be. Pure.

`exp` and `streams` are required; `channels` (names, a trailing `*` a prefix; absent:
every channel) and `scopes` (default `["subscribe"]`) are optional; `sub`, `jti` and
`iat` name the token for revocations (`revocations.py`). Anything malformed is
`unauthorized`, the answer to a bad token."""

from __future__ import annotations

from typing import Any, cast

from ..errors import BloomrError
from ..model import SCOPES, Scope, Token, is_valid_channel_pattern, iso_from_ms
from .revocations import JwtIdentity, jwt_token_id

# claims PyJWT checks itself (signature, exp, nbf, iat) before these
REQUIRED = ("exp", "streams")
_LAST_MOMENT = 253_402_300_799  # 9999-12-31T23:59:59Z: a later exp means "that long"


def refuse(why: str) -> BloomrError:
    return BloomrError("unauthorized", f"invalid token: {why}")


def token_from_claims(claims: dict[str, Any]) -> Token:
    identity = JwtIdentity(
        jti=_optional_str(claims, "jti"),
        sub=_optional_str(claims, "sub"),
        iat=_optional_number(claims, "iat"),
    )
    exp = _optional_number(claims, "exp")
    if exp is None:
        raise refuse("exp is required")
    return Token(
        id=jwt_token_id(identity),
        name=identity.sub or "jwt",
        secret_hash="",
        streams=_streams(claims.get("streams")),
        scopes=_scopes(claims.get("scopes")),
        expires_at=iso_from_ms(int(min(exp, _LAST_MOMENT) * 1000)),
        channels=_channels(claims.get("channels")),
    )


def _optional_str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise refuse(f"{name} must be a string")
    return value


def _optional_number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise refuse(f"{name} must be a number")
    return float(value)


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise refuse(f"{name} must be a list of strings")
    return list(dict.fromkeys(value))


def _streams(value: Any) -> list[str]:
    if value is None:
        raise refuse("streams is required")
    streams = _str_list(value, "streams")
    if not streams:
        raise refuse("streams must name at least one stream, or '*'")
    return streams


def _scopes(value: Any) -> list[Scope]:
    if value is None:
        return ["subscribe"]
    scopes = _str_list(value, "scopes")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise refuse(f"unknown scope {unknown[0]!r}")
    return cast(list[Scope], scopes)


def _channels(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise refuse("channels must be a list of strings")
    bad = [c for c in value if not is_valid_channel_pattern(c)]
    if bad:
        raise refuse(f"invalid channel {bad[0]!r}")
    return list(dict.fromkeys(value))

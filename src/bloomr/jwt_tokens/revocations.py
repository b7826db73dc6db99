"""JWT revocations: by `jti`, or every token of a `sub` issued before a moment. Pure.

A JWT's session carries a token id that names what a revocation can match on
(`jwt_token_id`): the hub and the authenticator only ask `token_id in revoked`, the
same question they ask of a stored token, and `RevokedTokens` answers it for both."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

# Without `expires_at`, a revocation is kept this long: JWTs are short-lived; one that
# lives longer is revoked with an explicit `expires_at` (its latest `exp`).
DEFAULT_KEEP_SECONDS = 30 * 86_400
_PREFIX = "jwt:"


@dataclass(frozen=True, slots=True)
class JwtRevocation:
    """Refuse the JWT with `jti`, or (`sub`, `issued_before`) every JWT of `sub` whose
    `iat` is before `issued_before` (Unix seconds; a JWT without `iat` counts as
    issued before). Kept until `until` (Unix seconds), when the tokens it names have
    expired."""

    jti: str | None
    sub: str | None
    issued_before: float | None
    until: float

    @property
    def id(self) -> str:
        """The same revocation made twice is stored once."""
        key = orjson.dumps([self.jti, self.sub, self.issued_before])
        return "rv_" + hashlib.sha256(key).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        return {
            "jti": self.jti,
            "sub": self.sub,
            "issued_before": self.issued_before,
            "until": self.until,
        }

    def encode(self) -> str:
        return orjson.dumps(self.to_json()).decode()

    @staticmethod
    def from_json(doc: dict[str, Any]) -> JwtRevocation:
        before = doc.get("issued_before")
        return JwtRevocation(
            jti=doc.get("jti"),
            sub=doc.get("sub"),
            issued_before=None if before is None else float(before),
            until=float(doc["until"]),
        )

    @staticmethod
    def decode(text: str) -> JwtRevocation | None:
        try:
            return JwtRevocation.from_json(orjson.loads(text))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None

    def matches(self, claims: JwtIdentity) -> bool:
        if self.jti is not None:
            return claims.jti == self.jti
        if self.sub is None or claims.sub != self.sub or self.issued_before is None:
            return False
        return claims.iat is None or claims.iat < self.issued_before


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """What a revocation can name in a JWT."""

    jti: str | None
    sub: str | None
    iat: float | None


def jwt_token_id(identity: JwtIdentity) -> str:
    """`jwt:<iat>:<jti>:<sub>` (jti quoted; sub last, so it may hold anything): the
    session's token id, from which a revocation is matched without any registry."""
    iat = "" if identity.iat is None else repr(float(identity.iat))
    jti = "" if identity.jti is None else quote(identity.jti, safe="")
    sub = "" if identity.sub is None else "=" + identity.sub  # `=`: present, maybe empty
    return f"{_PREFIX}{iat}:{jti}{'' if identity.jti is None else '~'}:{sub}"


def identity_of(token_id: str) -> JwtIdentity | None:
    """The inverse of `jwt_token_id` (None for a stored token's id)."""
    if not token_id.startswith(_PREFIX):
        return None
    iat, _, rest = token_id[len(_PREFIX) :].partition(":")
    jti, _, sub = rest.partition(":")
    return JwtIdentity(
        jti=unquote(jti[:-1]) if jti.endswith("~") else None,
        sub=sub[1:] if sub.startswith("=") else None,
        iat=float(iat) if iat else None,
    )


class RevokedTokens(set[str]):
    """The ids of stored tokens revoked while this node runs (its members: `in` is the
    plain set lookup a publish pays, unchanged), and the JWT revocations in force
    (`covers`); `revokes` asks both."""

    def __init__(self) -> None:
        super().__init__()
        self._rules: dict[str, JwtRevocation] = {}

    def add_revocation(self, rule: JwtRevocation) -> bool:
        """Add it; whether it is new here."""
        new = rule.id not in self._rules
        self._rules[rule.id] = rule
        self.prune()
        return new

    def prune(self, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        for key in [k for k, rule in self._rules.items() if rule.until <= moment]:
            del self._rules[key]

    @property
    def revocations(self) -> list[JwtRevocation]:
        return list(self._rules.values())

    def covers(self, token_id: str) -> bool:
        """Whether a JWT revocation names the JWT with this id."""
        if not self._rules:
            return False
        identity = identity_of(token_id)
        return identity is not None and any(r.matches(identity) for r in self._rules.values())

    def revokes(self, token_id: str) -> bool:
        return token_id in self or self.covers(token_id)

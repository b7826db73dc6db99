"""Where JWT keys come from: `BLOOMR_JWT_SECRET` (HS256), a public key file
(`--jwt-public-key`: PEM, or a JWK / JWKS JSON) and a JWKS URL (`--jwt-jwks-url`,
fetched with httpx, cached, fetched again for a `kid` it does not hold, at most once a
second).

Each key verifies only the algorithm of its type (alg confusion: an HS256 token is
checked against the shared secret and nothing else, never against a public key; an
RSA key takes RS256 only, a P-256 key ES256, an Ed25519 key EdDSA)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..errors import BloomrError

log = logging.getLogger("bloomr.jwt")

MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key has at least 256 bits
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"})
JWKS_REFETCH_SECONDS = 1.0  # an unknown kid fetches the JWKS again, at most this often
JWKS_MAX_AGE = 300.0  # a JWKS older than this is fetched again when used (keys retire)
JWKS_TIMEOUT = 5.0
JWKS_MAX_BYTES = 1 << 20


class KeyProblem(ValueError):
    """A key that cannot be used (named for the flag that gave it)."""


@dataclass(frozen=True, slots=True)
class Key:
    """A verification key and the one algorithm it verifies."""

    key: Any  # bytes (HS256) or a cryptography public key
    algorithm: str


def secret_key(secret: str) -> Key:
    raw = secret.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise KeyProblem(f"BLOOMR_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return Key(raw, "HS256")


def public_key_algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise KeyProblem(f"unsupported public key type {type(key).__name__}")


def jwk_key(doc: dict[str, Any]) -> tuple[str, Key]:
    """(kid, key) of one JWK; a symmetric or unknown key is refused."""
    try:
        jwk = jwt.PyJWK(doc)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise KeyProblem(f"unusable JWK: {exc}") from None
    if jwk.algorithm_name not in _ASYMMETRIC:
        raise KeyProblem(f"JWK algorithm {jwk.algorithm_name} is not a public-key one")
    return str(doc.get("kid") or ""), Key(jwk.key, jwk.algorithm_name)


def jwks_keys(doc: Any) -> dict[str, Key]:
    """The usable signing keys of a JWKS document, by kid (others are skipped)."""
    items = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise KeyProblem("a JWKS is an object with a 'keys' list")
    keys: dict[str, Key] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            kid, key = jwk_key(item)
        except KeyProblem as exc:
            log.warning("JWKS: skipping a key: %s", exc)
            continue
        keys[kid] = key
    return keys


def load_key_file(path: Path) -> dict[str, Key]:
    """A PEM public key, a JWK or a JWKS, by kid (`""` for a PEM or a JWK without one)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror}") from None
    if raw.lstrip().startswith(b"{"):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise KeyProblem(f"{path} is not valid JSON") from None
        if "keys" in doc:
            return jwks_keys(doc)
        kid, key = jwk_key(doc)
        return {kid: key}
    if b"PRIVATE KEY" in raw:
        raise KeyProblem(f"{path} holds a private key: give bloomr the public key only")
    try:
        public = load_pem_public_key(raw)
    except ValueError:
        raise KeyProblem(f"{path} is not a PEM public key") from None
    return {"": Key(public, public_key_algorithm(public))}


def pick(keys: dict[str, Key], kid: str | None) -> Key | None:
    """The key a token's `kid` names; without a kid, the only key there is."""
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


class Jwks:
    """A JWKS URL's keys, fetched when first needed, again when older than
    `JWKS_MAX_AGE`, and for a `kid` it does not hold (one fetch at a time, at most one
    a `JWKS_REFETCH_SECONDS`: a flood of made-up kids costs the JWKS server one request
    a second). A fetch that fails keeps the keys held."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("https://", "http://")):
            raise KeyProblem(f"the JWKS URL must be http(s): {url}")
        self.url = url
        self.keys: dict[str, Key] = {}
        self._fetched = False
        self._fetched_at = -JWKS_REFETCH_SECONDS  # monotonic, of the last attempt
        self._fetching: asyncio.Future[None] | None = None

    async def key(self, kid: str | None) -> Key | None:
        if not self._fetched or time.monotonic() - self._fetched_at > JWKS_MAX_AGE:
            await self.refresh()
        found = pick(self.keys, kid)
        if found is None and kid is not None:
            await self.refresh()
            found = pick(self.keys, kid)
        return found

    async def refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._done)
        await asyncio.shield(self._fetching)

    def _done(self, _: asyncio.Future[None]) -> None:
        self._fetching = None

    async def _fetch(self) -> None:
        wait = self._fetched_at + JWKS_REFETCH_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT) as client:
                response = await client.get(self.url, headers={"accept": "application/json"})
                response.raise_for_status()
                if len(response.content) > JWKS_MAX_BYTES:
                    raise KeyProblem("the JWKS is too large")
                self.keys = jwks_keys(orjson.loads(response.content))
                self._fetched = True
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyProblem) as exc:
            log.warning("JWKS %s: fetch failed: %s", self.url, exc)
            if not self._fetched:
                raise BloomrError("unavailable", "the JWT key set cannot be fetched now") from None

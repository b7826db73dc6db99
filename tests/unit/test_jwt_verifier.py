"""JWT verification (SPEC §7): each way a JWT is refused, pinned algorithms, claims ->
Token, revocations matching, and the authenticator taking JWTs beside stored tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bloomr.auth import Authenticator, check_channel, check_publish_channels
from bloomr.broker.embedded import EmbeddedBroker
from bloomr.config import JwtConfig
from bloomr.control import Control
from bloomr.control.local import LocalControl
from bloomr.errors import BloomrError
from bloomr.hub import Hub
from bloomr.jwt_tokens.keys import KeyProblem, jwks_keys, load_key_file
from bloomr.jwt_tokens.revocations import (
    JwtIdentity,
    JwtRevocation,
    RevokedTokens,
    identity_of,
    jwt_token_id,
)
from bloomr.jwt_tokens.verifier import JwtVerifier, looks_like_jwt
from bloomr.model import Token, channel_allowed, drafts_of, hash_secret
from bloomr.store.sqlite import SQLiteStore
from bloomr.streams import Streams

SECRET = "s" * 40
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    doc: dict[str, Any] = {"exp": now + 600, "iat": now, "sub": "alice", "streams": ["s1"]}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def hs256(**extra: Any) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], body: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: what PyJWT would refuse to make (alg none, HMAC with a PEM)."""
    signing = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(body))}"
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def key_file(tmp_path: Path, private: Any, name: str = "key.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(pem(private))
    return path


async def refused(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(BloomrError) as caught:
        await verifier.verify(token)
    assert caught.value.code == "unauthorized"
    return caught.value.message


# -- claims -----------------------------------------------------------------------------


async def test_a_valid_hs256_jwt_is_a_token() -> None:
    verifier = JwtVerifier(JwtConfig(secret=SECRET))
    exp = int(time.time()) + 600
    token = await verifier.verify(
        hs256(exp=exp, jti="j1", scopes=["publish"], channels=["build.*"], streams=["*"])
    )
    assert token.streams == ["*"] and token.scopes == ["publish"]
    assert token.channels == ["build.*"] and token.name == "alice"
    assert token.expires_at is not None and token.expires_at.startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(exp))
    )
    assert identity_of(token.id) == JwtIdentity("j1", "alice", float(claims()["iat"]))


async def test_defaults_subscribe_and_every_channel() -> None:
    token = await JwtVerifier(JwtConfig(secret=SECRET)).verify(hs256())
    assert token.scopes == ["subscribe"] and token.channels is None


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"exp": lambda: int(time.time()) - 5}, "expired"),  # when the test runs
        ({"nbf": lambda: int(time.time()) + 60}, "not valid yet"),
        ({"exp": None}, "exp is required"),
        ({"streams": None}, "streams is required"),
        ({"streams": "s1"}, "streams must be a list"),
        ({"streams": []}, "at least one stream"),
        ({"scopes": ["admin"]}, "unknown scope"),
        ({"channels": ["bad name"]}, "invalid channel"),
        ({"channels": "build.*"}, "channels must be a list"),
        ({"sub": 7}, "ubject must be a string"),
        ({"exp": "soon"}, "exp"),
    ],
)
async def test_bad_claims_are_unauthorized(extra: dict[str, Any], why: str) -> None:
    extra = {name: value() if callable(value) else value for name, value in extra.items()}
    token = jwt.encode(claims(**extra), SECRET, algorithm="HS256")
    assert why in await refused(JwtVerifier(JwtConfig(secret=SECRET)), token)


async def test_a_bad_signature_is_unauthorized() -> None:
    verifier = JwtVerifier(JwtConfig(secret=SECRET))
    assert "Signature" in await refused(verifier, jwt.encode(claims(), "t" * 40, "HS256"))
    header, body, _ = hs256().split(".")
    await refused(verifier, f"{header}.{body}.{b64(b'forged')}")


async def test_alg_none_is_unauthorized() -> None:
    verifier = JwtVerifier(JwtConfig(secret=SECRET))
    await refused(verifier, hand_made({"alg": "none", "typ": "JWT"}, claims(), None))
    await refused(verifier, hand_made({"alg": "None"}, claims(), None))


async def test_hs256_never_verifies_against_a_public_key(tmp_path: Path) -> None:
    """Alg confusion: an HS256 token "signed" with the RSA public key's PEM."""
    verifier = JwtVerifier(JwtConfig(public_key=key_file(tmp_path, RSA_KEY)))
    forged = hand_made({"alg": "HS256"}, claims(), pem(RSA_KEY))
    assert "no key for alg 'HS256'" in await refused(verifier, forged)
    # and with a secret configured too, the public key still plays no part
    both = JwtVerifier(JwtConfig(secret=SECRET, public_key=key_file(tmp_path, RSA_KEY)))
    assert "Signature" in await refused(both, forged)


async def test_each_key_type_verifies_its_own_algorithm(tmp_path: Path) -> None:
    for private, alg in [
        (RSA_KEY, "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ]:
        verifier = JwtVerifier(JwtConfig(public_key=key_file(tmp_path, private)))
        token = await verifier.verify(jwt.encode(claims(), private, algorithm=alg))
        assert token.streams == ["s1"]
        if alg == "RS256":  # an RSA key takes RS256 only
            await refused(verifier, jwt.encode(claims(), private, algorithm="RS512"))
            await refused(verifier, jwt.encode(claims(), private, algorithm="PS256"))


async def test_a_key_file_with_kids_refuses_an_unknown_kid(tmp_path: Path) -> None:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [{**public, "kid": "k1", "use": "sig"}]}))
    verifier = JwtVerifier(JwtConfig(public_key=path))
    good = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
    assert (await verifier.verify(good)).streams == ["s1"]
    other = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k2"})
    assert "kid 'k2'" in await refused(verifier, other)


def test_unusable_keys_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(KeyProblem, match="at least 32 bytes"):
        JwtVerifier(JwtConfig(secret="short"))
    private = tmp_path / "private.pem"
    private.write_bytes(
        RSA_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyProblem, match="private key"):
        load_key_file(private)
    with pytest.raises(KeyProblem, match="cannot read"):
        load_key_file(tmp_path / "missing.pem")
    with pytest.raises(KeyProblem, match="http"):
        JwtVerifier(JwtConfig(jwks_url="file:///etc/passwd"))
    # a JWKS never lends a symmetric key
    assert jwks_keys({"keys": [{"kty": "oct", "k": b64(b"x" * 32), "kid": "h"}]}) == {}


async def test_a_verified_jwt_is_cached_until_it_expires() -> None:
    verifier = JwtVerifier(JwtConfig(secret=SECRET))
    token = hs256()
    assert verifier.cached(token) is None
    first = await verifier.verify(token)
    assert verifier.cached(token) is first and await verifier.verify(token) is first
    short = hs256(exp=int(time.time()) + 1)
    await verifier.verify(short)
    verifier._cache[short] = (verifier._cache[short][0], time.time() - 1)  # its exp passed
    assert verifier.cached(short) is None


# -- revocations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "identity",
    [
        JwtIdentity("j:1~%", "a:b=c", 1700000000.5),
        JwtIdentity(None, None, None),
        JwtIdentity("", "", 0.0),
        JwtIdentity(None, "only-sub", None),
    ],
)
def test_token_ids_name_what_revocations_match(identity: JwtIdentity) -> None:
    assert identity_of(jwt_token_id(identity)) == identity
    assert identity_of("tok_abc") is None


def test_revocations_by_jti_and_by_sub_issued_before() -> None:
    revoked = RevokedTokens()
    later = time.time() + 60
    old = jwt_token_id(JwtIdentity("a", "alice", 100.0))
    new = jwt_token_id(JwtIdentity("b", "alice", 200.0))
    bob = jwt_token_id(JwtIdentity("c", "bob", 100.0))
    undated = jwt_token_id(JwtIdentity(None, "alice", None))
    assert not revoked.revokes(old)
    revoked.add_revocation(JwtRevocation(None, "alice", 150.0, later))
    assert revoked.revokes(old) and revoked.revokes(undated)
    assert not revoked.revokes(new) and not revoked.revokes(bob)
    revoked.add_revocation(JwtRevocation("c", None, None, later))
    assert revoked.revokes(bob) and revoked.covers(bob)
    revoked.add("tok_x")  # a stored token: a plain member
    assert revoked.revokes("tok_x") and "tok_x" in revoked and not revoked.revokes("tok_y")
    assert old not in revoked  # `in` is the stored tokens' lookup only
    # an expired revocation is forgotten: those tokens have expired too
    revoked.add_revocation(JwtRevocation("b", None, None, time.time() - 1))
    assert not revoked.revokes(new) and len(revoked.revocations) == 2


def test_a_revocation_round_trips_through_a_control_event() -> None:
    rule = JwtRevocation(None, "alice", 150.0, 99.0)
    assert JwtRevocation.decode(rule.encode()) == rule
    assert JwtRevocation.decode("{not json") is None
    assert JwtRevocation.decode('{"jti": "x"}') is None  # no until


# -- channels and the authenticator -----------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        (["build.*"], "build.linux", True),
        (["build.*"], "build.", True),
        (["build.*"], "build", False),
        (["build.*"], "", False),
        ([""], "", True),
        ([""], "errors", False),
        (["*"], "anything", True),
        (["errors", "x"], "x", True),
        ([], "", False),
    ],
)
def test_channel_patterns(patterns: list[str], channel: str, allowed: bool) -> None:
    assert channel_allowed(patterns, channel) is allowed


async def test_the_authenticator_takes_jwts_beside_stored_tokens() -> None:
    stored = Token("tok_a", "", hash_secret("bt_x"), ["s1"], ["subscribe"], channels=[""])

    async def find(secret_hash: str) -> Token | None:
        return stored if secret_hash == stored.secret_hash else None

    revoked = RevokedTokens()
    verifier = JwtVerifier(JwtConfig(SECRET), revoked)
    auth = Authenticator(find, hash_secret("admin"), revoked, jwt=verifier)
    token = hs256(jti="j9", channels=["build.*"])
    assert looks_like_jwt(token) and not looks_like_jwt("bt_x")
    principal = await auth.identify(token)
    assert principal.token is not None and principal.token.channels == ["build.*"]
    assert auth.identify_cached(token) == principal  # the publish fast path
    check_channel(principal, "build.1")
    check_publish_channels(principal, drafts_of("build.1", [b"1"]) + drafts_of("build.2", [b"2"]))
    for bad in ("", "deploy"):
        with pytest.raises(BloomrError, match="channel"):
            check_channel(principal, bad)
    with pytest.raises(BloomrError) as caught:
        check_publish_channels(principal, drafts_of("build.1", [b"1"]) + drafts_of("x", [b"2"]))
    assert caught.value.code == "forbidden"
    assert (await auth.identify("bt_x")).token == stored
    revoked.add_revocation(JwtRevocation("j9", None, None, time.time() + 60))
    with pytest.raises(BloomrError, match="revoked"):
        await auth.identify(token)
    assert auth.identify_cached(token) is None
    # no verifier configured: a JWT is just an unknown secret
    plain = Authenticator(find, hash_secret("admin"), revoked)
    with pytest.raises(BloomrError):
        await plain.identify(hs256())


# -- the streams service: stored revocations ---------------------------------------------


async def test_stored_revocations_end_sessions_when_read_again(tmp_path: Path) -> None:
    """A revocation whose event a node missed (or made before it started) takes effect
    when the node reads the store: new ones end their sessions, known ones do nothing."""
    store = SQLiteStore(tmp_path / "bloomr.db")
    await store.open()
    revoked = RevokedTokens()
    control = Control(LocalControl())
    hub = Hub(EmbeddedBroker(store), control, revoked_tokens=revoked)
    streams = Streams(store, hub, control, revoked)
    try:
        doomed_id = jwt_token_id(JwtIdentity("j1", "alice", 100.0))
        kept_id = jwt_token_id(JwtIdentity("j2", "alice", 100.0))
        doomed = hub.subscribe("streamAAAA", "", doomed_id)
        kept = hub.subscribe("streamAAAA", "", kept_id)
        await store.save_jwt_revocation(JwtRevocation("j1", None, None, time.time() + 60))
        await streams.load_jwt_revocations()
        assert doomed.ended().done() and not kept.ended().done()
        late = hub.subscribe("streamAAAA", "", doomed_id)  # authenticated just before
        assert late.ended().done()
    finally:
        await store.close()

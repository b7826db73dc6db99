"""Webhook signatures: HMAC-SHA256 of "<timestamp>.<raw body>", keyed by the secret."""

from __future__ import annotations

import pytest

from bloomr.webhooks.signing import headers, signature, verify

SECRET = "whsec_test"
BODY = b'{"messages":[]}'
# printf '1700000000.{"messages":[]}' | openssl dgst -sha256 -hmac whsec_test
KNOWN = "sha256=f088397f0e94d4a31a8f22175e82951791c376fde9cac5e9126f4cac1b39c3de"


def test_signature_matches_an_independent_computation() -> None:
    assert signature(SECRET, 1700000000, BODY) == KNOWN


def test_verify_accepts_the_signature() -> None:
    assert verify(SECRET, "1700000000", BODY, KNOWN)
    assert verify(SECRET, 1700000000, BODY, KNOWN)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        ("whsec_other", "1700000000", BODY),  # another secret
        (SECRET, "1700000001", BODY),  # another moment
        (SECRET, "1700000000", BODY + b" "),  # one byte more
        (SECRET, "1700000000", b'{"messages": []}'),  # same JSON, other bytes
        (SECRET, "not-a-number", BODY),
    ],
)
def test_verify_refuses_anything_changed(secret: str, timestamp: str, body: bytes) -> None:
    assert not verify(secret, timestamp, body, KNOWN)


def test_verify_refuses_a_malformed_header() -> None:
    assert not verify(SECRET, "1700000000", BODY, KNOWN.removeprefix("sha256="))
    assert not verify(SECRET, "1700000000", BODY, "")


def test_headers_of_an_attempt() -> None:
    got = headers(SECRET, "d-1", 1700000000, BODY)
    assert got == {
        "Content-Type": "application/json",
        "X-Bloomr-Delivery": "d-1",
        "X-Bloomr-Timestamp": "1700000000",
        "X-Bloomr-Signature": KNOWN,
    }


def test_signature_is_lowercase_hex_of_sha256() -> None:
    value = signature("k", 0, b"")
    prefix, digest = value.split("=", 1)
    assert prefix == "sha256"
    assert len(digest) == 64 and digest == digest.lower()
    int(digest, 16)

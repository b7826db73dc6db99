"""The nouns: token hashing and expiry, stream access, UUIDv7 ids, timestamps and the
one envelope builder."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bloomr.model import (
    STREAM_ID_RE,
    Message,
    Stream,
    Token,
    _format_ids,
    build_envelope,
    hash_secret,
    is_valid_channel,
    iso_from_ms,
    new_message_id,
    new_stream_id,
    new_token_id,
    new_token_secret,
    now_ms,
    stream_from_json,
    token_from_doc,
    token_to_doc,
)

ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def token(**fields: object) -> Token:
    base: dict[str, object] = {
        "id": "tok_1",
        "name": "t",
        "secret_hash": hash_secret("s"),
        "streams": ["abcdefghij"],
        "scopes": ["subscribe"],
    }
    return Token(**{**base, **fields})  # type: ignore[arg-type]


# -- token secrets ----------------------------------------------------------------------


def test_secrets_are_hashed_with_sha256() -> None:
    secret = new_token_secret()
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_secret(secret))


def test_a_secret_never_equals_its_hash() -> None:
    for _ in range(100):
        secret = new_token_secret()
        assert hash_secret(secret) != secret
        assert secret not in hash_secret(secret)


def test_hashing_is_deterministic_and_distinguishes_secrets() -> None:
    assert hash_secret("bt_a") == hash_secret("bt_a")
    assert hash_secret("bt_a") != hash_secret("bt_b")


def test_new_secrets_and_ids_are_unique_and_long() -> None:
    secrets = [new_token_secret() for _ in range(2000)]
    assert len(set(secrets)) == len(secrets)
    assert all(len(s) >= 40 for s in secrets)  # 256 random bits, url-safe
    ids = [new_token_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)


def test_stream_ids_are_ten_alphanumerics() -> None:
    ids = [new_stream_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[A-Za-z0-9]{10}", i) for i in ids)
    assert all(STREAM_ID_RE.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


# -- token expiry and access ------------------------------------------------------------


def test_token_without_expiry_never_expires() -> None:
    assert not token(expires_at=None).expired()
    assert not token(expires_at=None).expired(datetime(9999, 1, 1, tzinfo=UTC))


def test_token_expiry_in_the_past_and_future() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert token(expires_at=past).expired()
    assert not token(expires_at=future).expired()


def test_token_expires_at_its_instant() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    t = token(expires_at="2030-01-01T00:00:00Z")
    assert not t.expired(at - timedelta(milliseconds=1))
    assert t.expired(at)
    assert t.expired(at + timedelta(days=1))


def test_token_expiry_with_an_offset() -> None:
    t = token(expires_at="2030-01-01T02:00:00+02:00")
    assert t.expired(datetime(2030, 1, 1, tzinfo=UTC))
    assert not t.expired(datetime(2029, 12, 31, 23, 59, tzinfo=UTC))


def test_allows_stream() -> None:
    assert token(streams=["abcdefghij"]).allows_stream("abcdefghij")
    assert not token(streams=["abcdefghij"]).allows_stream("ABCDEFGHIJ")
    assert not token(streams=["abcdefghij"]).allows_stream("other00000")
    assert token(streams=["*"]).allows_stream("anything00")
    assert token(streams=["x", "*"]).allows_stream("anything00")


def test_token_json_never_holds_the_hash() -> None:
    t = token()
    public = t.to_json()
    assert set(public) == {
        "id",
        "name",
        "streams",
        "scopes",
        "expires_at",
        "created_at",
        "channels",
    }
    assert t.secret_hash not in orjson.dumps(public).decode()
    assert token_from_doc(token_to_doc(t)) == t


# -- UUIDv7 -----------------------------------------------------------------------------


def test_message_ids_strictly_increase() -> None:
    ids = [new_message_id()[0] for _ in range(50_000)]
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False))
    assert len(set(ids)) == len(ids)


def test_message_ids_are_uuidv7() -> None:
    before = now_ms()
    message_id, ms = new_message_id()
    after = now_ms()
    parsed = uuid.UUID(message_id)
    assert str(parsed) == message_id  # canonical lowercase form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert message_id[14] == "7" and message_id[19] in "89ab"
    assert parsed.int >> 80 == ms  # the 48-bit unix_ts_ms field is the message's time
    assert before <= ms <= after + 1


@pytest.mark.parametrize("first", [1, (1 << 48) - 3, (5 << 48) - 1, (1 << 74) - 9, 12345 << 40])
def test_a_batch_of_ids_is_its_counters_in_order(first: int) -> None:
    """Each id holds the millisecond, version 7, its 74-bit counter (12 bits of rand_a,
    then rand_b after the variant), even where the counter carries out of the low 48
    bits in the middle of a batch."""
    ms = 1_711_466_697_123
    ids = _format_ids(ms, first, 8)
    for i, message_id in enumerate(ids):
        counter = first + i
        rand_a, rand_b = counter >> 62, counter & ((1 << 62) - 1)
        expected = uuid.UUID(int=ms << 80 | 7 << 76 | rand_a << 64 | 2 << 62 | rand_b)
        assert message_id == str(expected)
    assert ids == sorted(ids)


def test_message_id_time_never_decreases() -> None:
    stamps = [new_message_id()[1] for _ in range(10_000)]
    assert stamps == sorted(stamps)


# -- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1_711_466_697_123, "2024-03-26T15:24:57.123Z"),
        (1_711_466_697_000, "2024-03-26T15:24:57.000Z"),
        (1_711_466_699_999, "2024-03-26T15:24:59.999Z"),
    ],
)
def test_iso_from_ms(ms: int, text: str) -> None:
    assert iso_from_ms(ms) == text


@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # to 9999-12-31
def test_iso_from_ms_is_exact(ms: int) -> None:
    text = iso_from_ms(ms)
    assert ISO_MS.fullmatch(text)
    exact = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert text == exact.strftime("%Y-%m-%dT%H:%M:%S.") + f"{exact.microsecond // 1000:03d}Z"


# -- envelopes --------------------------------------------------------------------------


def message(data: object, channel: str = "progress") -> Message:
    message_id, ts = new_message_id()
    return Message(message_id, "dwd23RWdwE", channel, ts, 7, orjson.dumps(data))


@pytest.mark.parametrize("data", ["line", 1, 1.5, None, True, [1, "a"], {"pct": 50, "n": {}}])
@pytest.mark.parametrize("replayed", [True, False, None])
def test_envelope_shape(data: object, replayed: bool | None) -> None:
    m = message(data)
    doc = orjson.loads(m.envelope_json(replayed))
    expected = {
        "id": m.id,
        "stream": "dwd23RWdwE",
        "channel": "progress",
        "timestamp": iso_from_ms(m.ts_ms),
        "data": data,
    }
    if replayed is not None:
        expected["replayed"] = replayed
    assert doc == expected
    assert list(doc)[:5] == ["id", "stream", "channel", "timestamp", "data"]
    assert ISO_MS.fullmatch(doc["timestamp"])


def test_envelope_is_cached_per_replayed_flag() -> None:
    m = message({"a": 1}, channel="")
    assert m.envelope_json(True) is m.envelope_json(True)
    assert m.envelope_json(True) != m.envelope_json(False)
    assert build_envelope(m, None) == m.envelope_json(None)
    assert orjson.loads(m.envelope_json(None))["channel"] == ""


def test_message_data_and_size() -> None:
    m = message({"k": "v"})
    assert m.data == {"k": "v"}
    assert m.size >= len(m.data_json)


# -- streams and channels ---------------------------------------------------------------


def test_stream_defaults_and_json_round_trip() -> None:
    s = Stream(id="abcdefghij", name="demo")
    doc = s.to_json()
    assert doc["store_history"] is True
    assert doc["retention"] == {"max_age": "7d", "max_messages": 1_000_000}
    assert stream_from_json(orjson.loads(orjson.dumps(doc))) == s


@pytest.mark.parametrize("name", ["", "errors", "progress", "a.b:c-d_e", "x" * 64])
def test_valid_channels(name: str) -> None:
    assert is_valid_channel(name)


@pytest.mark.parametrize("name", ["x" * 65, "a b", "a/b", "é", "a\n"])
def test_invalid_channels(name: str) -> None:
    assert not is_valid_channel(name)

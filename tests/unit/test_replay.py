"""The one parser for subscription arguments (SPEC §2): every replay format, the
replayLimit cap, includeMetadata, channels and the handshake merge; every bad input
is `invalid_argument` with its `field`, and no input raises anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bloomr.errors import BloomrError
from bloomr.model import iso_from_ms
from bloomr.replay import (
    MAX_REPLAY,
    AfterId,
    ReplayRequest,
    Since,
    merge_handshake,
    parse_bool,
    parse_channel,
    parse_credentials,
    parse_positive_int,
    parse_replay,
    parse_replay_request,
    parse_subscribe_options,
)

NOW = 1_711_466_697_123  # 2024-03-26T15:24:57.123Z
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
UNITS: dict[str, int] = {
    "s": SECOND, "sec": SECOND, "second": SECOND, "seconds": SECOND,
    "m": MINUTE, "min": MINUTE, "mins": MINUTE, "minute": MINUTE, "minutes": MINUTE,
    "h": HOUR, "hour": HOUR, "hours": HOUR,
    "d": DAY, "day": DAY, "days": DAY,
}  # fmt: skip
MESSAGE_ID = "01a21e8f-1bd9-7000-9db2-13099afeb463"


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO date-time, computed exactly (no float)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def expect_invalid(field: str, call: Any, *args: Any) -> BloomrError:
    with pytest.raises(BloomrError) as caught:
        call(*args)
    assert caught.value.code == "invalid_argument"
    assert caught.value.details == {"field": field}
    assert caught.value.status == 400
    assert caught.value.message
    return caught.value


# -- replay: ISO 8601 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-26T15:24:57Z", ms("2024-03-26T15:24:57+00:00")),
        ("2024-03-26T15:24:57+00:00", ms("2024-03-26T15:24:57+00:00")),
        ("2024-03-26T15:24:57-00:00", ms("2024-03-26T15:24:57+00:00")),
        ("2024-03-26T15:24:57+02:00", ms("2024-03-26T13:24:57+00:00")),
        ("2024-03-26T15:24:57-05:30", ms("2024-03-26T20:54:57+00:00")),
        ("2024-03-26T15:24:57+0530", ms("2024-03-26T09:54:57+00:00")),
        ("2024-03-26T15:24:57", ms("2024-03-26T15:24:57+00:00")),  # no zone = UTC
        ("2024-03-26 15:24:57", ms("2024-03-26T15:24:57+00:00")),
        ("2024-03-26T15:24", ms("2024-03-26T15:24:00+00:00")),
        ("2024-03-26", ms("2024-03-26T00:00:00+00:00")),
        ("20240326T152457Z", ms("2024-03-26T15:24:57+00:00")),
        ("2024-03-26T15:24:57.1Z", ms("2024-03-26T15:24:57+00:00") + 100),
        ("2024-03-26T15:24:57.12Z", ms("2024-03-26T15:24:57+00:00") + 120),
        ("2024-03-26T15:24:57.123Z", ms("2024-03-26T15:24:57+00:00") + 123),
        ("2024-03-26T15:24:57.123456Z", ms("2024-03-26T15:24:57+00:00") + 123),
        ("2024-03-26T15:24:57.999+01:00", ms("2024-03-26T14:24:57+00:00") + 999),
        ("1970-01-01T00:00:00Z", 0),
        ("  2024-03-26T15:24:57Z  ", ms("2024-03-26T15:24:57+00:00")),
    ],
)
def test_iso_datetimes(text: str, expected: int) -> None:
    assert parse_replay(text, NOW) == Since(expected)


@given(st.integers(min_value=0, max_value=ms("9999-12-31T23:59:59.999Z")))
def test_iso_timestamps_round_trip_to_the_millisecond(at: int) -> None:
    """A message timestamp passed back as `replay` names exactly that millisecond."""
    assert parse_replay(iso_from_ms(at), NOW) == Since(at)


@given(
    st.integers(min_value=ms("1971-01-01T00:00:00Z"), max_value=ms("9998-12-31T00:00:00Z")),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_iso_offsets_name_the_same_instant(at: int, offset_min: int) -> None:
    zone = timezone(timedelta(minutes=offset_min))
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at)
    text = local.astimezone(zone).isoformat(timespec="milliseconds")
    assert parse_replay(text, NOW) == Since(at)


@pytest.mark.parametrize(  # float seconds * 1000 would lose the millisecond of these
    "text",
    [
        "2004-03-23T00:00:00.001Z",
        "2039-07-22T18:56:42.897Z",
        "1970-01-01T00:00:01.001Z",
        "9999-12-31T23:59:59.999Z",
    ],
)
def test_iso_milliseconds_are_exact(text: str) -> None:
    assert parse_replay(text, NOW) == Since(ms(text))


# -- replay: ages -------------------------------------------------------------------


@pytest.mark.parametrize("unit", sorted(UNITS))
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.capitalize])
@pytest.mark.parametrize("space", ["", " "])
def test_age_every_unit_spelling(unit: str, spelling: Any, space: str) -> None:
    assert parse_replay(f"15{space}{spelling(unit)}", NOW) == Since(NOW - 15 * UNITS[unit])


@given(
    amount=st.integers(min_value=0, max_value=10**12),
    unit=st.sampled_from(sorted(UNITS)),
    space=st.sampled_from(["", " "]),
    upper=st.lists(st.booleans(), min_size=7, max_size=7),
)
def test_ages_round_trip_to_exact_milliseconds(
    amount: int, unit: str, space: str, upper: list[bool]
) -> None:
    cased = "".join(c.upper() if up else c for c, up in zip(unit, upper, strict=False))
    # ages reaching before -2**62 ms (older than time itself) mean "all history"
    expected = Since(max(NOW - amount * UNITS[unit], -(2**62)))
    assert parse_replay(f"{amount}{space}{cased}", NOW) == expected


def test_zero_age_means_now() -> None:
    assert parse_replay("0s", NOW) == Since(NOW)


# -- replay: message ids and empty --------------------------------------------------


@pytest.mark.parametrize("text", [MESSAGE_ID, MESSAGE_ID.upper(), f" {MESSAGE_ID} "])
def test_message_ids_are_case_normalized(text: str) -> None:
    assert parse_replay(text, NOW) == AfterId(MESSAGE_ID)


def test_mixed_case_uuid() -> None:
    assert parse_replay("01A21E8F-1bd9-7000-9DB2-13099afeb463", NOW) == AfterId(MESSAGE_ID)


@pytest.mark.parametrize("text", ["", " ", "\t\n"])
def test_empty_replay_is_absent(text: str) -> None:
    assert parse_replay(text, NOW) is None
    assert parse_replay_request(text, None, NOW) is None


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "5",
        "s",
        "5 fortnights",
        "5  s",  # one optional space only
        "-5s",
        "+5s",
        "5.5h",
        "5s ago",
        "5 s 3 m",
        "２h",  # not an ASCII digit
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-03-26T25:00:00Z",
        "2024-03-26T15:24:57+25:00",
        "2024-03-26T15:24:57 UTC",
        "26/03/2024",
        "01a21e8f-1bd9-7000-9db2-13099afeb46",  # one digit short
        "01a21e8f1bd970009db213099afeb463",  # no dashes
        "{01a21e8f-1bd9-7000-9db2-13099afeb463}",
        "null",
    ],
)
def test_bad_replay(text: str) -> None:
    expect_invalid("replay", parse_replay, text, NOW)
    expect_invalid("replay", parse_replay_request, text, None, NOW)


@pytest.mark.parametrize("value", [5, 5.0, True, [], {}, ["2h"], {"a": 1}])
def test_replay_must_be_a_string(value: Any) -> None:
    expect_invalid("replay", parse_replay_request, value, None, NOW)


# -- replayLimit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("1", 1),
        ("25", 25),
        (" 25 ", 25),
        (25, 25),
        ("10000", 10_000),
        (10**20, 2**53 - 1),
        (1e300, 2**53 - 1),
    ],
)
def test_positive_int(value: Any, number: int) -> None:
    assert parse_positive_int(value, "replayLimit") == number


@pytest.mark.parametrize("value", [None, "", "  "])
def test_positive_int_absent(value: Any) -> None:
    assert parse_positive_int(value, "replayLimit") is None


@pytest.mark.parametrize(
    "value",
    ["0", "-1", "abc", "1.5", "1e3", "+5", "0x10", "٣", "5 0", 0, -3, 1.5, True, False, [], {}],
)
def test_bad_positive_int(value: Any) -> None:
    expect_invalid("replayLimit", parse_positive_int, value, "replayLimit")
    expect_invalid("replayLimit", parse_replay_request, None, value, NOW)


def test_limit_alone_replays_the_newest() -> None:
    assert parse_replay_request(None, "50", NOW) == ReplayRequest(None, 50, 50)
    assert parse_replay_request("", 50, NOW) == ReplayRequest(None, 50, 50)


def test_replay_alone_uses_the_maximum_limit() -> None:
    request = parse_replay_request("2h", None, NOW)
    assert request == ReplayRequest(Since(NOW - 2 * HOUR), MAX_REPLAY, None)
    assert request is not None and not request.capped


def test_replay_and_limit() -> None:
    request = parse_replay_request(MESSAGE_ID, 7, NOW)
    assert request == ReplayRequest(AfterId(MESSAGE_ID), 7, 7)


@pytest.mark.parametrize(("value", "capped"), [(10_000, False), ("10001", True), (11_000, True)])
def test_limit_is_capped_at_10000(value: Any, capped: bool) -> None:
    request = parse_replay_request(None, value, NOW)
    assert request is not None
    assert request.limit == MAX_REPLAY == 10_000
    assert request.requested == int(value)
    assert request.capped is capped


def test_no_replay_arguments_means_live_only() -> None:
    assert parse_replay_request(None, None, NOW) is None
    assert parse_replay_request("", "", NOW) is None


# -- includeMetadata -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        (True, True),
        (1, True),
        ("false", False),
        ("False", False),
        ("0", False),
        (False, False),
        (0, False),
        (None, False),
        ("", False),
    ],
)
def test_bool(value: Any, expected: bool) -> None:
    assert parse_bool(value, "includeMetadata") is expected


@pytest.mark.parametrize("value", ["yes", "no", "on", "2", "-1", "tru", 2, -1, 1.0, [], {}])
def test_bad_bool(value: Any) -> None:
    expect_invalid("includeMetadata", parse_bool, value, "includeMetadata")


# -- channel ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("", ""),
        ("errors", "errors"),
        ("progress", "progress"),
        ("a.b:c-d_e", "a.b:c-d_e"),
        ("A9", "A9"),
        ("x" * 64, "x" * 64),
    ],
)
def test_channel(value: Any, expected: str) -> None:
    assert parse_channel(value) == expected


@pytest.mark.parametrize(
    "value", ["x" * 65, "a b", " ", "a/b", "é", "a\n", "#x", "x*", 5, True, ["a"], {"a": 1}]
)
def test_bad_channel(value: Any) -> None:
    expect_invalid("channel", parse_channel, value)


# -- the handshake ---------------------------------------------------------------------


def test_auth_wins_over_the_query() -> None:
    query = {"stream": "q-stream", "token": "q-token", "channel": "q", "replay": "1h"}
    auth = {"token": "a-token", "channel": "a"}
    assert merge_handshake(query, auth) == {
        "stream": "q-stream",
        "token": "a-token",
        "channel": "a",
        "replay": "1h",
    }


@pytest.mark.parametrize("auth", [None, "token", 5, ["token"]])
def test_auth_that_is_not_an_object_is_ignored(auth: Any) -> None:
    assert merge_handshake({"stream": "s"}, auth) == {"stream": "s"}


def test_auth_keys_that_are_not_strings_are_ignored() -> None:
    assert merge_handshake({"stream": "s"}, {1: "x", "token": "t"}) == {"stream": "s", "token": "t"}


def test_merge_does_not_change_its_inputs() -> None:
    query, auth = {"channel": "q"}, {"channel": "a"}
    merge_handshake(query, auth)
    assert query == {"channel": "q"} and auth == {"channel": "a"}


@pytest.mark.parametrize(
    "args", [{}, {"stream": "s"}, {"token": "t"}, {"stream": "", "token": "t"}, {"stream": 5}]
)
def test_missing_credentials_are_unauthorized(args: dict[str, Any]) -> None:
    with pytest.raises(BloomrError) as caught:
        parse_credentials(args)
    assert caught.value.code == "unauthorized"


def test_credentials() -> None:
    assert parse_credentials({"stream": "dwd23RWdwE", "token": "bt_x"}) == ("dwd23RWdwE", "bt_x")


def test_subscribe_options_defaults() -> None:
    assert parse_subscribe_options({"stream": "s", "token": "t"}, NOW) == ("", None, False)


def test_subscribe_options_from_an_original_style_query() -> None:
    args = merge_handshake(
        {"channel": "progress", "replay": "30 min", "replayLimit": "100"},
        {"includeMetadata": True},
    )
    channel, request, metadata = parse_subscribe_options(args, NOW)
    assert channel == "progress"
    assert request == ReplayRequest(Since(NOW - 30 * MINUTE), 100, 100)
    assert metadata is True


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"channel": "bad channel"}, "channel"),
        ({"replay": "whenever"}, "replay"),
        ({"replayLimit": "0"}, "replayLimit"),
        ({"includeMetadata": "maybe"}, "includeMetadata"),
    ],
)
def test_subscribe_options_name_the_bad_field(args: dict[str, Any], field: str) -> None:
    expect_invalid(field, parse_subscribe_options, args, NOW)


# -- properties: any input gives a value or invalid_argument ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
texts_and_values = st.text() | json_values


def value_or_invalid(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except BloomrError as error:
        assert error.code == "invalid_argument", error.code
        assert isinstance(error.details.get("field"), str)
        return error


@given(st.text())
def test_any_text_replay(text: str) -> None:
    result = value_or_invalid(parse_replay, text, NOW)
    assert result is None or isinstance(result, Since | AfterId | BloomrError)


@given(texts_and_values, texts_and_values)
def test_any_replay_request(replay: Any, limit: Any) -> None:
    result = value_or_invalid(parse_replay_request, replay, limit, NOW)
    if isinstance(result, ReplayRequest):
        assert 1 <= result.limit <= MAX_REPLAY


@given(st.dictionaries(st.sampled_from(["channel", "replay", "replayLimit"]), texts_and_values))
def test_any_subscribe_options(args: dict[str, Any]) -> None:
    value_or_invalid(parse_subscribe_options, args, NOW)


@given(
    st.dictionaries(
        st.sampled_from(["stream", "token", "channel", "replay", "replayLimit", "includeMetadata"])
        | st.text(),
        texts_and_values,
    ),
    texts_and_values,
)
def test_any_handshake(query: dict[str, Any], auth: Any) -> None:
    args = merge_handshake(query, auth)
    value_or_invalid(parse_subscribe_options, args, NOW)


@given(texts_and_values)
def test_any_positive_int(value: Any) -> None:
    result = value_or_invalid(parse_positive_int, value, "limit")
    assert result is None or isinstance(result, BloomrError) or result >= 1


@given(texts_and_values)
def test_any_bool(value: Any) -> None:
    result = value_or_invalid(parse_bool, value, "includeMetadata")
    assert isinstance(result, bool | BloomrError)


@given(texts_and_values)
def test_any_channel(value: Any) -> None:
    result = value_or_invalid(parse_channel, value)
    assert isinstance(result, str | BloomrError)


@pytest.mark.parametrize("digits", [30, 31, 4301, 5000])
def test_huge_ages_are_a_value_or_invalid_argument(digits: int) -> None:
    value_or_invalid(parse_replay, "1" * digits + "s", NOW)
    value_or_invalid(parse_replay_request, "9" * digits + " days", None, NOW)


@pytest.mark.parametrize("digits", [30, 31, 4301, 5000])
def test_huge_limits_are_capped(digits: int) -> None:
    request = parse_replay_request(None, "1" * digits, NOW)
    assert request is not None and request.limit == MAX_REPLAY and request.capped
    request = parse_replay_request(None, "0" * digits + "5", NOW)
    assert request is not None and request.limit == 5 and not request.capped

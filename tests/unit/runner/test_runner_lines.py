"""Pure decoding of pipe bytes into messages: line splitting, encodings, emit lines."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bloomr.model import Draft, json_bytes
from bloomr.runner.events import utf8_cut
from bloomr.runner.lines import MAX_LINE, EmitLines, OutputLines, parse_emit_line


def texts(drafts: list[Draft]) -> list[Any]:
    return [orjson.loads(d.data_json) for d in drafts]


def feed_all(decoder: OutputLines | EmitLines, *chunks: bytes) -> list[Draft]:
    out: list[Draft] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.close()


# -- stdout / stderr lines ----------------------------------------------------------


def test_lines_lose_their_newline_and_a_carriage_return_before_it() -> None:
    out = feed_all(OutputLines(""), b"one\ntwo\r\n\nthree\rstill three\n")
    assert texts(out) == ["one", "two", "", "three\rstill three"]
    assert {d.channel for d in out} == {""}


def test_a_line_split_across_reads_is_one_message_and_the_last_partial_line_is_kept() -> None:
    decoder = OutputLines("errors")
    assert decoder.feed(b"hel") == []
    assert texts(decoder.feed(b"lo\nwor")) == ["hello"]
    assert texts(decoder.close()) == ["wor"]
    assert decoder.close() == []


def test_undecodable_bytes_are_replaced() -> None:
    assert texts(feed_all(OutputLines(""), b"\xff\xfe ok \xc3\n")) == ["\ufffd\ufffd ok \ufffd"]


def test_a_long_line_is_split_into_64k_pieces() -> None:
    out = texts(feed_all(OutputLines(""), b"a" * 150_000 + b"\nnext\n"))
    assert [len(t) for t in out] == [MAX_LINE, MAX_LINE, 150_000 - 2 * MAX_LINE, 4]


def test_a_line_of_exactly_the_limit_is_one_message_however_it_arrives() -> None:
    line = b"x" * MAX_LINE
    for chunks in (
        [line + b"\n"],
        [line, b"\n"],
        [line + b"\r", b"\n"],
        [line[:10], line[10:] + b"\r\n"],
    ):
        assert [len(t) for t in texts(feed_all(OutputLines(""), *chunks))] == [MAX_LINE], chunks


def test_pieces_never_split_a_utf8_character() -> None:
    for char in ("é", "€", "🌸"):
        line = char * (200_000 // len(char.encode()))
        pieces = texts(feed_all(OutputLines(""), line.encode() + b"\n"))
        assert len(pieces) > 1
        assert all(len(p.encode()) <= MAX_LINE and "\ufffd" not in p for p in pieces)
        assert "".join(pieces) == line


def test_output_without_newline_is_sent_in_pieces_as_it_comes() -> None:
    """Nothing grows without bound: a script that never prints a newline still gets its
    output out, one 64 KiB piece at a time."""
    decoder = OutputLines("")
    sent = 0
    for _ in range(64):
        sent += len(decoder.feed(b"z" * 16_384))
        assert len(decoder._partial) <= MAX_LINE
    assert sent == 15  # 1 MiB so far; the last 64 KiB may still grow
    assert len(decoder.close()) == 1


@given(
    st.lists(st.binary(max_size=40), max_size=12),
    st.lists(st.integers(min_value=1, max_value=30), min_size=1),
)
def test_how_output_is_chunked_never_changes_the_messages(
    parts: list[bytes], sizes: list[int]
) -> None:
    data = b"\n".join(parts)
    whole = texts(feed_all(OutputLines("", max_line=8), data))
    chunks, at, i = [], 0, 0
    while at < len(data):
        chunks.append(data[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    assert texts(feed_all(OutputLines("", max_line=8), *chunks)) == whole


@given(
    st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30)
    )
)
def test_pieces_of_text_rejoin_into_the_lines(lines: list[str]) -> None:
    out = texts(feed_all(OutputLines("", max_line=8), *(line.encode() + b"\n" for line in lines)))
    assert all(len(piece.encode()) <= 8 for piece in out)
    assert "".join(out) == "".join(lines)


@given(
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), max_size=20),
    st.integers(min_value=1, max_value=50),
)
def test_each_line_is_encoded_as_json_encodes_its_text(lines: list[str], size: int) -> None:
    """Byte for byte, whichever way a read is decoded (whole reads of plain lines take
    a shortcut past the JSON encoder)."""
    data = "".join(line.replace("\n", " ") + "\n" for line in lines).encode()
    chunks = [data[at : at + size] for at in range(0, len(data), size)]
    out = feed_all(OutputLines("out", max_line=200), *chunks)
    expected = [line.replace("\n", " ").removesuffix("\r") for line in lines]
    assert [d.data_json for d in out] == [json_bytes(text) for text in expected]
    assert all(d.channel == "out" for d in out)


def test_a_flood_of_plain_lines_arrives_whole() -> None:
    data = b"".join(b"line %d \xc3\xa9\x7f\n" % i for i in range(5000))
    out = feed_all(OutputLines(""), data[:30_000], data[30_000:])
    assert texts(out) == [f"line {i} \u00e9\x7f" for i in range(5000)]


def test_utf8_cut() -> None:
    assert utf8_cut(b"abc", 8) == 3
    assert utf8_cut(b"abcdef", 4) == 4
    assert utf8_cut("aé".encode() + b"z", 2) == 1  # é is 2 bytes at 1..2
    assert utf8_cut("a🌸".encode(), 4) == 1  # the flower is 4 bytes at 1..4
    assert utf8_cut(b"a" + b"\x80" * 8, 5) == 5  # not UTF-8: cut where asked


# -- emit lines ----------------------------------------------------------------------


def test_an_emit_line_becomes_a_message_on_its_channel() -> None:
    draft = parse_emit_line(b'{"channel": "metrics", "data": {"cpu": 0.5, "tags": ["a"]}}')
    assert draft.channel == "metrics"
    assert orjson.loads(draft.data_json) == {"cpu": 0.5, "tags": ["a"]}
    assert parse_emit_line(b'{"channel": "", "data": null}') == Draft("", b"null")


def error_of(line: bytes) -> dict[str, Any]:
    draft = parse_emit_line(line)
    assert draft.channel == "errors"
    event: dict[str, Any] = orjson.loads(draft.data_json)
    assert event["event"] == "emit_error"
    assert event["line"] == line.decode("utf-8", "replace")
    return event


def test_each_kind_of_malformed_emit_line_says_what_is_wrong() -> None:
    assert error_of(b"hello")["message"].startswith("not valid JSON")
    assert error_of(b'{"channel": "a", "data": 1')["message"].startswith("not valid JSON")
    assert "got an array" in error_of(b"[1, 2]")["message"]
    assert "got a string" in error_of(b'"text"')["message"]
    assert error_of(b'{"data": 1}')["message"] == 'missing "channel"'
    assert error_of(b'{"channel": "x"}')["message"] == 'missing "data"'
    assert error_of(b'{"channel": "no spaces", "data": 1}')["message"].startswith(
        'invalid channel "no spaces"'
    )
    assert error_of(b'{"channel": 7, "data": 1}')["message"].startswith("invalid channel 7")
    assert error_of(b'{"channel": "' + b"c" * 65 + b'", "data": 1}')["message"].startswith(
        "invalid channel"
    )


def test_the_offending_line_is_quoted_up_to_1k() -> None:
    draft = parse_emit_line(b"x" * 5000)
    assert orjson.loads(draft.data_json)["line"] == "x" * 1024


def test_emit_lines_across_reads_blank_lines_and_a_last_line_without_newline() -> None:
    out = feed_all(
        EmitLines(), b'{"channel": "a", "da', b'ta": 1}\n\n  \r\n{"channel": "b", "data": 2}'
    )
    assert [(d.channel, orjson.loads(d.data_json)) for d in out] == [("a", 1), ("b", 2)]


def test_an_over_long_emit_line_is_refused_once_and_the_next_line_works() -> None:
    decoder = EmitLines(max_line=100)
    out = feed_all(decoder, b'{"channel": "a", "data": "', b"y" * 150, b"y" * 150, b'"}\n')
    out += feed_all(decoder, b'{"channel": "a", "data": "fine"}\n')
    out += feed_all(decoder, b'{"channel": "a", "data": "' + b"z" * 200 + b'"}\n')
    assert [d.channel for d in out] == ["errors", "a", "errors"]
    assert "longer than 100 bytes" in orjson.loads(out[0].data_json)["message"]
    assert orjson.loads(out[1].data_json) == "fine"

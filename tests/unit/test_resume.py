"""Resume points (pids): what one node signs, every node of the deployment reads back;
nothing else is accepted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bloomr.errors import BloomrError
from bloomr.replay import AfterId, AfterSeq
from bloomr.resume import PidSigner, ResumePoint, resume_start
from bloomr.transports.socketio import wants_recovery

POINT = ResumePoint("dwd23RWdwE", "progress", "tok_abc", "0123456789abcdef", 42)


def test_a_pid_names_its_point_for_any_node_with_the_same_secret() -> None:
    pid = PidSigner("admin-key-hash").sign(POINT)
    assert PidSigner("admin-key-hash").verify(pid) == POINT
    admin = ResumePoint("dwd23RWdwE", "", None, "", 0)
    assert PidSigner("s").verify(PidSigner("s").sign(admin)) == admin


def test_another_deployment_or_a_changed_pid_is_refused() -> None:
    pid = PidSigner("one").sign(POINT)
    assert PidSigner("two").verify(pid) is None
    body, mac = pid.split(".")
    forged = PidSigner("one").sign(ResumePoint("otherstrea", "", None, "", 0)).split(".")[0]
    assert PidSigner("one").verify(forged + "." + mac) is None
    assert PidSigner("one").verify(body + "." + mac[:-2] + "AA") is None


@given(st.one_of(st.text(max_size=300), st.integers(), st.none(), st.lists(st.text())))
def test_anything_else_is_not_a_pid(value: object) -> None:
    assert PidSigner("one").verify(value) is None


def test_where_a_client_resumes() -> None:
    point = POINT
    args = (point.stream, point.channel, point.token)
    assert resume_start(point, *args, None) == AfterSeq(42, point.epoch)
    assert resume_start(point, *args, "") == AfterSeq(42, point.epoch)
    offset = "0190a7b2-1c3d-7e4f-8a5b-6c7d8e9f0a1b"
    assert resume_start(point, *args, offset.upper()) == AfterId(offset)
    assert resume_start(point, *args, "not an id") == "invalid_offset"
    assert resume_start(point, *args, 12) == "invalid_offset"
    assert resume_start(None, *args, offset) == "invalid_pid"
    other = "another_stream_channel_or_token"
    assert resume_start(point, "otherstrea", point.channel, point.token, None) == other
    assert resume_start(point, point.stream, "", point.token, None) == other
    assert resume_start(point, point.stream, point.channel, None, None) == other


def test_python_socketio_is_told_from_socket_io_client_by_its_handshake() -> None:
    js = {"stream": "s", "token": "t", "EIO": "4", "transport": "polling", "t": "x"}
    python = {"stream": "s", "token": "t", "transport": "polling", "EIO": "4"}
    assert wants_recovery({}, js) is True
    assert wants_recovery({}, python) is False
    assert wants_recovery({"recovery": "true"}, python) is True
    assert wants_recovery({"recovery": False}, js) is False
    with pytest.raises(BloomrError) as refused:
        wants_recovery({"recovery": "maybe"}, js)
    assert refused.value.details == {"field": "recovery"}

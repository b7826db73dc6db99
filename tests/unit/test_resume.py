"""Resume points (pids): what one node signs, every node of the deployment reads back;
nothing else is accepted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bloomr.resume import PidSigner, ResumePoint

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

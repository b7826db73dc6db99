"""The state table, exit classification, restart policy and backoff: pure logic."""

from __future__ import annotations

import pytest

from bloomr.runner.policy import Backoff, ExitInfo, should_restart, signal_name
from bloomr.runner.states import (
    TRANSITIONS,
    InvalidTransition,
    ProcessState,
    check_transition,
    public_name,
)

S = ProcessState


def test_every_state_has_a_row_and_can_be_left() -> None:
    assert set(TRANSITIONS) == set(ProcessState)
    assert all(TRANSITIONS[state] for state in ProcessState)


def test_the_lifecycle_follows_the_table() -> None:
    path = [S.STOPPED, S.STARTING, S.RUNNING, S.CRASHED, S.BACKOFF, S.STARTING, S.RUNNING]
    path += [S.STOPPING, S.STOPPED, S.STARTING, S.FATAL, S.STARTING, S.RUNNING, S.EXITED]
    for old, new in zip(path, path[1:], strict=False):
        check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [(S.STOPPED, S.RUNNING), (S.RUNNING, S.STOPPED), (S.BACKOFF, S.RUNNING), (S.EXITED, S.STOPPED)],
)
def test_impossible_transitions_are_refused(old: ProcessState, new: ProcessState) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


def test_public_names() -> None:
    assert {public_name(s) for s in ProcessState} == {
        "starting", "running", "backoff", "stopping", "stopped", "exited", "crashed",
    }  # fmt: skip
    assert public_name(S.FATAL) == "crashed"


def test_exit_info_from_returncode() -> None:
    assert ExitInfo.from_returncode(0) == ExitInfo(0, None)
    assert not ExitInfo.from_returncode(0).failed
    assert ExitInfo.from_returncode(3) == ExitInfo(3, None)
    assert ExitInfo.from_returncode(-9) == ExitInfo(None, "SIGKILL")
    assert ExitInfo.from_returncode(-15).failed
    assert signal_name(99) == "SIG99"


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        ("never", 0, False),
        ("never", 1, False),
        ("on-failure", 0, False),
        ("on-failure", 1, True),
        ("on-failure", None, True),
        ("always", 0, True),
        ("always", 1, True),
    ],
)
def test_restart_policy(policy: str, code: int | None, restarts: bool) -> None:
    ended = ExitInfo(code, None if code is not None else "SIGKILL")
    assert should_restart(policy, ended) is restarts  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_a_healthy_run() -> None:
    backoff = Backoff(initial=1, maximum=10, reset_after=30)
    assert [backoff.next_delay(uptime=0.1) for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    assert backoff.next_delay(uptime=30) == 1
    assert backoff.next_delay(uptime=29) == 2
    backoff.reset()
    assert backoff.next_delay(uptime=0) == 1
    assert Backoff(initial=5, maximum=2).next_delay(0) == 2

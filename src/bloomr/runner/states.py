"""The states of a supervised script and the only transitions allowed between them.

Modelled on supervisor's `states.py`. The supervisor checks every change against
`TRANSITIONS`, so a bug in its sequencing fails loudly instead of reporting a state
that cannot be true. Pure: no I/O."""

from __future__ import annotations

import enum
from typing import Literal

PublicState = Literal["starting", "running", "backoff", "stopping", "stopped", "exited", "crashed"]


class ProcessState(enum.Enum):
    STOPPED = "stopped"  # never started, or stopped on request
    STARTING = "starting"  # spawning the child
    RUNNING = "running"
    BACKOFF = "backoff"  # exited, waiting to be restarted by the policy
    STOPPING = "stopping"  # SIGTERM sent on request, waiting for the group to die
    EXITED = "exited"  # exited by itself with code 0
    CRASHED = "crashed"  # non-zero exit, or killed by a signal that stop() did not send
    FATAL = "fatal"  # could not be started at all (missing file, permission, bad cwd)


_S = ProcessState

TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    _S.STOPPED: frozenset({_S.STARTING}),
    _S.STARTING: frozenset({_S.RUNNING, _S.FATAL}),
    _S.RUNNING: frozenset({_S.STOPPING, _S.EXITED, _S.CRASHED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.EXITED: frozenset({_S.STARTING, _S.BACKOFF}),
    _S.CRASHED: frozenset({_S.STARTING, _S.BACKOFF}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPED}),
    _S.FATAL: frozenset({_S.STARTING}),
}


class InvalidTransition(RuntimeError):
    """A bug in the supervisor, never a user error."""


def check_transition(old: ProcessState, new: ProcessState) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"script state cannot go from {old.name} to {new.name}")


_PUBLIC: dict[ProcessState, PublicState] = {
    _S.STOPPED: "stopped",
    _S.STARTING: "starting",
    _S.RUNNING: "running",
    _S.BACKOFF: "backoff",
    _S.STOPPING: "stopping",
    _S.EXITED: "exited",
    _S.CRASHED: "crashed",
    _S.FATAL: "crashed",  # clients need not tell "could not start" from "died"
}


def public_name(state: ProcessState) -> PublicState:
    """The `state` clients see in the stream's status."""
    return _PUBLIC[state]


def _public_set(*states: ProcessState) -> frozenset[PublicState]:
    return frozenset(_PUBLIC[state] for state in states)


# What the server asks of a state it only knows by its public name (a report from
# another node): the sets, from the table above, so no state name is written twice.
ALIVE = _public_set(_S.STARTING, _S.RUNNING, _S.BACKOFF)  # runs, or will by itself
ALIVE_OR_STOPPING = ALIVE | _public_set(_S.STOPPING)  # a process may still run
FINISHED = _public_set(_S.EXITED, _S.CRASHED, _S.FATAL)  # ended by itself, no restart due
PASSING = _public_set(_S.STARTING, _S.STOPPING)  # on the way to another state
STOPPED = _PUBLIC[_S.STOPPED]

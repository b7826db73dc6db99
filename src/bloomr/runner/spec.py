"""What the server gives a supervisor (ScriptSpec, Publish) and what it gets back
(ScriptStatus, ScriptError). Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bloomr.model import RESTART_POLICIES, Draft, RestartPolicy

from .states import STOPPED, PublicState

# Stores the drafts as messages, in order, before returning; may raise.
Publish = Callable[[list[Draft]], Awaitable[None]]

ScriptErrorCode = Literal["conflict", "invalid_argument"]


class ScriptError(Exception):
    """A request the supervisor refuses: `conflict` (already running, or closed) or
    `invalid_argument` (a ScriptSpec that cannot be run)."""

    def __init__(self, code: ScriptErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ScriptSpec:
    """How to run a stream's script. Checked on creation, so a bad spec is refused when
    it is given rather than when the script is (re)started."""

    command: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None
    restart: RestartPolicy = "never"

    def __post_init__(self) -> None:
        _check_command(self.command)
        if self.cwd is not None:
            _check_text("cwd", self.cwd)
        if self.env is not None:
            _check_env(self.env)
        if self.restart not in RESTART_POLICIES:
            raise _invalid(f"restart must be one of {', '.join(RESTART_POLICIES)}")


def _invalid(message: str) -> ScriptError:
    return ScriptError("invalid_argument", message)


def _check_text(what: str, value: object) -> None:
    # exec and chdir take C strings: a NUL byte cannot be passed, so say so up front
    if not isinstance(value, str) or "\0" in value:
        raise _invalid(f"{what} must be a string without NUL characters")


def _check_command(command: object) -> None:
    if not isinstance(command, list) or not command:
        raise _invalid("command must be a non-empty list of strings")
    for arg in command:
        _check_text("every command argument", arg)
    if not command[0]:
        raise _invalid("command[0] (the program) must not be empty")


def _check_env(env: object) -> None:
    if not isinstance(env, dict):
        raise _invalid("env must be an object of string values")
    for key, value in env.items():
        _check_text("env names and values", key)
        _check_text("env names and values", value)
        if not key or "=" in key:
            raise _invalid(f"invalid environment variable name {key!r}")


@dataclass(frozen=True, slots=True)
class ScriptStatus:
    state: PublicState
    pid: int | None  # of the running child; None when none runs
    exit_code: int | None  # of the last run; None while running or when killed by a signal
    signal: str | None  # name of the signal that killed the last run, e.g. "SIGKILL"
    restarts: int  # automatic restarts by the policy since the last start()/restart()
    started_at: str | None  # ISO 8601 UTC, when the current or last run started
    backoff_until: str | None = None  # ISO 8601 UTC, only while waiting to restart

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "restarts": self.restarts,
            "started_at": self.started_at,
        }
        if self.backoff_until is not None:
            out["backoff_until"] = self.backoff_until
        return out

    @staticmethod
    def from_json(doc: dict[str, Any]) -> ScriptStatus:
        """The inverse of `to_json` (a report read back from a store)."""
        return ScriptStatus(
            state=doc["state"],
            pid=doc.get("pid"),
            exit_code=doc.get("exit_code"),
            signal=doc.get("signal"),
            restarts=int(doc.get("restarts") or 0),
            started_at=doc.get("started_at"),
            backoff_until=doc.get("backoff_until"),
        )


NEVER_RAN = ScriptStatus(STOPPED, None, None, None, 0, None)


@dataclass(frozen=True, slots=True)
class ScriptReport:
    """A script's status as the node running it reported it, for every node's API."""

    status: ScriptStatus
    node: str | None  # the reporting node's name (None: a lone node, which needs none)

    @property
    def state(self) -> PublicState:
        return self.status.state

    def to_json(self) -> dict[str, Any]:
        return {**self.status.to_json(), "node": self.node}

    @staticmethod
    def from_json(doc: dict[str, Any]) -> ScriptReport:
        return ScriptReport(ScriptStatus.from_json(doc), doc.get("node"))

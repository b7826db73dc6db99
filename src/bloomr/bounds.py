"""The node's bounds against hostile or broken clients (SPEC §3 "Availability and
limits"): one table, read by `Settings` (environment variables) and by `bloomr serve`
(flags), so every limit is configurable in both places and listed in `--help`.

Pure: no I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

KIB = 1024


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit: its flag and what it means; its environment variable is the flag's
    name, `BLOOMR_` and upper case (`--max-head-bytes`: `BLOOMR_MAX_HEAD_BYTES`)."""

    flag: str
    help: str

    @property
    def env(self) -> str:
        return "BLOOMR_" + self.flag.removeprefix("--").replace("-", "_").upper()


def _bound(default: Any, flag: str, help: str) -> Any:
    return field(default=default, metadata={"bound": Bound(flag, help)})


@dataclass(frozen=True, slots=True)
class Bounds:
    max_head_bytes: int = _bound(
        64 * KIB, "--max-head-bytes",
        "Largest request head (request line and headers); over it: 431.",
    )  # fmt: skip
    request_timeout: float = _bound(
        30.0, "--request-timeout",
        "Seconds a request's head and body have to arrive; after it: 408 and the "
        "connection is closed (slowloris).",
    )  # fmt: skip
    stall_timeout: float = _bound(
        10.0, "--stall-timeout",
        "Seconds a connection with more than its backlog queued (a replay being sent "
        "counts) may read nothing before it is cut off as a slow consumer.",
    )  # fmt: skip
    connect_timeout: float = _bound(
        10.0, "--connect-timeout",
        "Seconds an Engine.IO session has to complete its Socket.IO CONNECT.",
    )  # fmt: skip
    max_unconnected: int = _bound(
        1000, "--max-unconnected",
        "Most Engine.IO sessions that have not completed their Socket.IO CONNECT; "
        "over it a new one is refused (503).",
    )  # fmt: skip
    auth_failures: int = _bound(
        30, "--auth-failures",
        "Failed authentications one client address may make per minute; past them its "
        "requests get 429 with Retry-After (0: no limit).",
    )  # fmt: skip
    max_per_token: int = _bound(
        0, "--max-connections-per-token",
        "Most live subscribers (Socket.IO, SSE, long polls) per token (0: no limit).",
    )  # fmt: skip
    max_per_address: int = _bound(
        0, "--max-connections-per-address",
        "Most open connections per client address (0: no limit).",
    )  # fmt: skip

    @classmethod
    def from_env(cls) -> Bounds:
        """The defaults, each overridden by its environment variable when set."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["bound"].env)
            if raw:
                values[f.name] = float(raw) if f.type == "float" else int(raw)
        return cls(**values)


def bound_fields() -> list[tuple[str, type, Any, Bound]]:
    """`(name, type, default, Bound)` for each limit, in order (for the CLI)."""
    kinds = {"int": int, "float": float}
    return [(f.name, kinds[str(f.type)], f.default, f.metadata["bound"]) for f in fields(Bounds)]

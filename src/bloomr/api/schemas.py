"""Request bodies. Unknown fields are refused (422) rather than silently ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from ..model import RestartPolicy, Scope, is_valid_channel_pattern
from ..replay import parse_age_ms


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The largest retention bloomr takes (documented in the README): beyond any history,
# and within what every backend compares (64-bit integers, JSON's exact integers).
MAX_RETENTION_DAYS = 36_500  # 100 years
MAX_RETENTION_MESSAGES = 2**53 - 1
_MAX_AGE_MS = MAX_RETENTION_DAYS * 86_400_000


class RetentionIn(_Body):
    max_age: StrictStr | None = Field(None, examples=["7d"])
    max_messages: Annotated[StrictInt, Field(gt=0, le=MAX_RETENTION_MESSAGES)] | None = None

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is None:
            return value
        age = parse_age_ms(value)
        if age is None:
            raise ValueError("must be an age such as '7d', '12h' or '30 min'")
        if age > _MAX_AGE_MS:
            raise ValueError(f"must be at most {MAX_RETENTION_DAYS} days")
        return value


Command = Annotated[list[StrictStr], Field(min_length=1)]


class StreamPatch(_Body):
    name: StrictStr | None = None
    store_history: StrictBool | None = None
    retention: RetentionIn | None = None
    command: Command | None = None
    cwd: StrictStr | None = None
    env: dict[str, StrictStr] | None = None
    restart: RestartPolicy | None = None


class StreamCreate(StreamPatch):
    pass


def _in_utc(value: datetime | None) -> datetime | None:
    """The moment in UTC (no zone: UTC); one that UTC cannot write (year 9999 at
    -14:00) is refused here rather than failing later."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("must be a date-time between years 1 and 9999 in UTC") from None


class TokenCreate(_Body):
    name: StrictStr | None = None
    streams: Annotated[list[StrictStr], Field(min_length=1, examples=[["dwd23RWdwE"], ["*"]])]
    scopes: Annotated[list[Scope], Field(min_length=1)] = ["subscribe"]
    expires_at: datetime | None = None
    # channel names, a trailing `*` matching a prefix (`build.*`); absent: every channel
    channels: Annotated[list[StrictStr], Field(examples=[["", "build.*"]])] | None = None

    _expires_in_utc = field_validator("expires_at")(_in_utc)

    @field_validator("channels")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        bad = [c for c in value or () if not is_valid_channel_pattern(c)]
        if bad:
            raise ValueError(
                f"{bad[0]!r} is not a channel name, optionally ending in '*' to match a prefix"
            )
        return None if value is None else list(dict.fromkeys(value))


class JwtRevoke(_Body):
    """`{jti}`, or `{sub, issued_before}`; `expires_at`: when the tokens it names
    expire at the latest (default: 30 days from now), after which it is forgotten."""

    jti: Annotated[StrictStr, Field(min_length=1)] | None = None
    sub: StrictStr | None = None
    issued_before: datetime | None = None
    expires_at: datetime | None = None

    _moments_in_utc = field_validator("issued_before", "expires_at")(_in_utc)

    @model_validator(mode="after")
    def _one_form(self) -> JwtRevoke:
        by_jti = self.jti is not None
        by_sub = self.sub is not None or self.issued_before is not None
        if by_jti == by_sub:
            raise ValueError("give either jti, or sub and issued_before")
        if by_sub and (self.sub is None or self.issued_before is None):
            raise ValueError("sub and issued_before go together")
        return self


PUBLISH_SCHEMA = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "1-255 visible ASCII characters, scoped to the stream: a repeat "
            "within 24 h with the same body answers what the first answered and stores "
            "nothing more; with another body, 422 idempotency_key_reused",
            "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/PublishItem"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/PublishItem"}},
                    ]
                },
                "examples": {
                    "one": {"value": {"data": "hello"}},
                    "batch": {"value": [{"data": 1}, {"channel": "progress", "data": {"pct": 50}}]},
                },
            }
        },
    },
}
PUBLISH_ITEM_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": False,
    "properties": {
        "channel": {"type": "string", "default": "", "pattern": "^$|^[A-Za-z0-9_.:-]{1,64}$"},
        "data": {"description": "any JSON value"},
    },
}

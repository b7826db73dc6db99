"""Request bodies. Unknown fields are refused (422) rather than silently ignored."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from ..model import RestartPolicy, Scope
from ..replay import parse_age_ms


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetentionIn(_Body):
    max_age: StrictStr | None = Field(None, examples=["7d"])
    max_messages: Annotated[StrictInt, Field(gt=0)] | None = None

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is not None and parse_age_ms(value) is None:
            raise ValueError("must be an age such as '7d', '12h' or '30 min'")
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


class TokenCreate(_Body):
    name: StrictStr | None = None
    streams: Annotated[list[StrictStr], Field(min_length=1, examples=[["dwd23RWdwE"], ["*"]])]
    scopes: Annotated[list[Scope], Field(min_length=1)] = ["subscribe"]
    expires_at: datetime | None = None


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

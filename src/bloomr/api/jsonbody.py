"""The one reading of a JSON request body, for every route that takes one: one code,
`invalid_json`, for every way a body is not JSON bloomr can hold (not JSON, invalid
UTF-8, nested deeper than bloomr can write back)."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import BloomrError

# orjson reads 1024 levels of nesting but writes only 254: a value bloomr stores or
# echoes must be one it can write back.
MAX_DEPTH = 254

NOT_JSON = "the request body is not valid JSON (UTF-8)"
TOO_DEEP = f"the request body is nested deeper than {MAX_DEPTH} levels"


def load_json(raw: bytes) -> Any:
    """The body's value; `invalid_json` when it is not JSON or too deep to write back."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = TOO_DEEP if "recursion" in str(exc).lower() else NOT_JSON
        raise BloomrError("invalid_json", message) from None
    return value


def encode_json(value: Any) -> bytes:
    """`value` as JSON, right-sized (see `model.json_bytes`); `invalid_json` when it is
    nested too deep to write."""
    try:
        return b"".join((orjson.dumps(value), b""))
    except orjson.JSONEncodeError:
        raise BloomrError("invalid_json", TOO_DEEP) from None


def check_json(raw: bytes) -> None:
    """Refuse a body bloomr could not hold (routes parsed by FastAPI: checked first)."""
    if raw.strip():
        encode_json(load_json(raw))

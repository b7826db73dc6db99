"""Credentials: `Authorization: Bearer <secret>` or `?token=<secret>` (`credentials.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ..auth import Principal
from ..credentials import client_address, secret_of
from .context import Context, get_context

# Documents the scheme in OpenAPI only: the secret itself is read by `secret_of`, the
# one reader every path shares.
_bearer = HTTPBearer(auto_error=False, description="The admin key or a token")


async def get_principal(
    request: Request,
    ctx: Annotated[Context, Depends(get_context)],
    _: Annotated[object, Depends(_bearer)],
) -> Principal:
    scope = request.scope
    return await ctx.auth.identify(
        secret_of(scope["headers"], scope["query_string"]), client_address(scope)
    )


async def get_admin(
    ctx: Annotated[Context, Depends(get_context)],
    principal: Annotated[Principal, Depends(get_principal)],
) -> Principal:
    ctx.auth.require_admin(principal)
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
Ctx = Annotated[Context, Depends(get_context)]

"""Credentials: `Authorization: Bearer <secret>` or `?token=<secret>`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..auth import Principal
from .context import Context, get_context

_bearer = HTTPBearer(auto_error=False, description="The admin key or a token")


async def get_principal(
    request: Request,
    ctx: Annotated[Context, Depends(get_context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    secret = credentials.credentials if credentials else request.query_params.get("token")
    return await ctx.auth.identify(secret)


async def get_admin(
    ctx: Annotated[Context, Depends(get_context)],
    principal: Annotated[Principal, Depends(get_principal)],
) -> Principal:
    ctx.auth.require_admin(principal)
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
Ctx = Annotated[Context, Depends(get_context)]

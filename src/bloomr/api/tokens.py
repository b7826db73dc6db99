"""Tokens: create (the secret is shown once), list (never secrets), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..errors import BloomrError
from ..model import Token, hash_secret, new_token_id, new_token_secret
from .deps import Admin, Ctx
from .responses import JSON
from .schemas import TokenCreate

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


@router.post("", status_code=201)
async def create_token(body: TokenCreate, ctx: Ctx, _: Admin) -> JSON:
    for stream_id in body.streams:
        if stream_id != "*" and await ctx.meta.get_stream(stream_id) is None:
            raise BloomrError("validation_failed", f"unknown stream {stream_id}", field="streams")
    expires_at = None
    if body.expires_at is not None:
        expires_at = body.expires_at.isoformat().replace("+00:00", "Z")  # in UTC already
    secret = new_token_secret()
    token = Token(
        id=new_token_id(),
        name=body.name or "",
        secret_hash=hash_secret(secret),
        streams=list(dict.fromkeys(body.streams)),
        scopes=list(dict.fromkeys(body.scopes)),
        expires_at=expires_at,
    )
    await ctx.meta.create_token(token)
    return JSON({**token.to_json(), "token": secret}, status_code=201)


@router.get("")
async def list_tokens(ctx: Ctx, _: Admin) -> JSON:
    return JSON({"tokens": [t.to_json() for t in await ctx.meta.list_tokens()]})


@router.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: str, ctx: Ctx, _: Admin) -> Response:
    await ctx.streams.revoke_token(token_id)
    return Response(status_code=204)

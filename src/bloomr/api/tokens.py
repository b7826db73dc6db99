"""Tokens: create (the secret is shown once), list (never secrets), revoke; and the
revocation of JWTs minted by applications."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from ..errors import BloomrError
from ..jwt_tokens.revocations import DEFAULT_KEEP_SECONDS, JwtRevocation
from ..model import Token, hash_secret, iso_from_ms, new_token_id, new_token_secret
from .deps import Admin, Ctx
from .responses import JSON
from .schemas import JwtRevoke, TokenCreate

router = APIRouter(tags=["tokens"])


@router.post("/api/tokens", status_code=201)
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
        channels=body.channels,
    )
    await ctx.meta.create_token(token)
    return JSON({**token.to_json(), "token": secret}, status_code=201)


@router.get("/api/tokens")
async def list_tokens(ctx: Ctx, _: Admin) -> JSON:
    return JSON({"tokens": [t.to_json() for t in await ctx.meta.list_tokens()]})


@router.delete("/api/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: str, ctx: Ctx, _: Admin) -> Response:
    await ctx.streams.revoke_token(token_id)
    return Response(status_code=204)


@router.post("/api/jwt/revoke")
async def revoke_jwt(body: JwtRevoke, ctx: Ctx, _: Admin) -> JSON:
    """Refuse the JWTs with this `jti`, or those of `sub` issued before `issued_before`,
    until they expire; their live sessions end on every node within a second.
    200, not 201: an action on tokens that exist, like a script's start or stop."""
    until = body.expires_at.timestamp() if body.expires_at else time.time() + DEFAULT_KEEP_SECONDS
    rule = JwtRevocation(
        jti=body.jti,
        sub=body.sub,
        issued_before=None if body.issued_before is None else body.issued_before.timestamp(),
        until=until,
    )
    await ctx.streams.revoke_jwt(rule)
    return JSON({"revocation": _revocation_json(rule)})


def _revocation_json(rule: JwtRevocation) -> dict[str, object]:
    before = rule.issued_before
    return {
        "id": rule.id,
        "jti": rule.jti,
        "sub": rule.sub,
        "issued_before": None if before is None else iso_from_ms(int(before * 1000)),
        "expires_at": iso_from_ms(int(rule.until * 1000)),
    }

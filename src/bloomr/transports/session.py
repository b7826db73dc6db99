"""One subscriber connection's life, the same for every push transport: authorize,
register with the hub, warnings, replay, `replay_end`, then live until it ends.

A transport adapts its connection to `Client`; nothing here knows Socket.IO or HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth import Authenticator, check_access, check_channel
from ..errors import BloomrError, warning
from ..faults import as_error
from ..hub import Hub
from ..model import Message, Stream, now_ms
from ..replay import ReplayRequest, parse_credentials, parse_subscribe_options
from ..replay_plan import HistoryGap, Notice, RecoveryFailed, ReplayPlan
from ..resume import PidSigner, ResumePoint, resume_start
from ..streams import Streams
from ..subscription import Sink, SlowConsumer, Subscription, SubscriptionClosed
from .notices import notice_payload
from .pacing import STALL_SECONDS, drain, send_replay

log = logging.getLogger("bloomr.transports")

SLOW_CONSUMER = warning(
    "slow_consumer",
    "this client fell too far behind and is disconnected; reconnect with replay=<last id> "
    "to catch up",
)
SHUTTING_DOWN = warning(
    "shutting_down",
    "this server is stopping; reconnect (with replay=<last id>, or as your client "
    "resumes) to carry on where you left off",
)


class Client(Protocol):
    """A connected client as the session sees it. Sending never waits; the session
    waits for `drained()` while the client is not `writable`."""

    async def emit(self, event: str, payload: Any) -> None: ...

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None: ...

    @property
    def writable(self) -> bool:
        """Its outgoing buffer has room."""
        ...

    async def drained(self) -> None:
        """Wait until it is writable again."""
        ...

    def live_sink(self, include_metadata: bool) -> Sink | None:
        """A sink for direct live writes, if this transport has one right now."""
        ...

    async def end(self, event: str, payload: dict[str, Any], hard: bool) -> None:
        """Emit why, then disconnect; `hard` also drops the underlying connection."""
        ...

    async def cut(self) -> None:
        """End the connection without a word, after what was sent, as a network would:
        a client that reconnects by itself comes back, and learns where it stands."""
        ...


async def authorize(
    streams: Streams, auth: Authenticator, args: dict[str, Any], client: str | None = None
) -> tuple[Stream, str | None, str | None]:
    """`(stream, token id, token expiry)`; one answer, `unauthorized`, for every reason a
    client may not subscribe, so stream ids cannot be probed (but `rate_limited` for an
    address, `client`, that failed too often)."""
    stream_id, secret = parse_credentials(args)
    try:
        principal = await auth.identify(secret, client)
        check_access(principal, stream_id, "subscribe")
        check_channel(principal, args.get("channel"))
    except BloomrError as exc:
        if exc.code in ("unavailable", "rate_limited"):  # not an answer about the token
            raise
        raise BloomrError("unauthorized", exc.message) from None
    stream = await streams.get(stream_id)
    if stream is None:
        raise BloomrError("unauthorized", "unknown stream or token not valid for it")
    return stream, principal.token_id, principal.expires_at


@dataclass(slots=True)
class Opened:
    """A subscriber registered with the hub, not yet served."""

    stream: Stream
    sub: Subscription
    replay: ReplayRequest | None
    include_metadata: bool
    # connection state recovery (a transport that gave a signer): the pid to give the
    # client, the plan of a resumed connection, why a resume was refused
    pid: str | None = None
    resumed: ReplayPlan | None = None
    notices: list[Notice] = field(default_factory=list)


async def open_session(
    hub: Hub,
    streams: Streams,
    auth: Authenticator,
    args: dict[str, Any],
    signer: PidSigner | None = None,
    client: str | None = None,
) -> Opened | BloomrError:
    """Authorize and register with the hub. A transport calls this *before* it confirms
    the connection, so that anything published after the client sees `connect` is
    certain to reach it (the original's promise: no message missed). With a `signer`,
    a client that sent a `pid` is resumed where it stood, if it can be, before it is
    confirmed (its confirmation says whether it was). A refusal is returned, never
    raised: the client is told, then disconnected (`run_session`)."""
    sub: Subscription | None = None
    try:
        stream, token_id, expires_at = await authorize(streams, auth, args, client)
        channel, replay, include_metadata = parse_subscribe_options(args, now_ms())
        sub = hub.subscribe(stream.id, channel, token_id, expires_at)
        opened = Opened(stream, sub, replay, include_metadata)
        if signer is not None:
            await _recover(hub, signer, opened, token_id, args)
        return opened
    except BaseException as exc:
        if sub is not None:
            hub.unsubscribe(sub)
        if not isinstance(exc, Exception):
            raise
        return as_error(exc, "opening a session")


async def _recover(
    hub: Hub, signer: PidSigner, opened: Opened, token_id: str | None, args: dict[str, Any]
) -> None:
    """Resume from the client's `{pid, offset}`, or give it a pid of its own: the point
    where this connection goes live (the stream's head now; anything newer reaches it)."""
    stream, channel = opened.stream, opened.sub.channel
    pid = args.get("pid")
    if pid is not None:
        start = resume_start(signer.verify(pid), stream.id, channel, token_id, args.get("offset"))
        if not isinstance(start, str):
            plan = await hub.plan_resume(opened.sub, stream, start)
            if not isinstance(plan, RecoveryFailed):
                opened.resumed, opened.pid = plan, pid  # the same pid: `recovered` is true
                return
            start = plan.reason
        opened.notices.append(RecoveryFailed(start))
    seq, epoch = await hub.head(stream.id)
    opened.pid = signer.sign(ResumePoint(stream.id, channel, token_id, epoch, seq))


async def run_session(
    hub: Hub, opened: Opened | BloomrError, client: Client, stall: float = STALL_SECONDS
) -> None:
    """Serve one subscriber (refusing it first if opening failed) until it leaves
    (cancel the task) or the subscription ends."""
    if isinstance(opened, BloomrError):
        await client.end("error", opened.payload(), hard=False)
        return
    sub, include_metadata = opened.sub, opened.include_metadata
    try:
        plan = opened.resumed or await hub.plan_replay(sub, opened.stream, opened.replay)
        for payload in map(notice_payload, [*opened.notices, *plan.notices]):
            await client.emit("warning", payload)

        async def read_next(last: Message) -> list[Message]:
            return await hub.page(plan.next_page(last))

        page, plan.messages = plan.messages, []
        count, last_id = await send_replay(
            client, sub, page, plan.count, read_next, include_metadata, stall
        )
        await client.emit("replay_end", {"count": count, "lastId": last_id})
        sub.go_live(plan.head_seq, plan.epoch)
        sink = client.live_sink(include_metadata)
        if sink is not None:
            sub.attach(sink)
        while True:
            batch = await sub.next_batch()
            for payload in sub.take_warnings():  # history_reset, where it falls
                await client.emit("warning", payload)
            if batch:
                await client.send_messages(batch, False, include_metadata)
                await drain(client, sub)
    except HistoryGap:
        # a resume said `recovered` and retention has since trimmed what it was still to
        # send: rather than skip it, drop the connection; socket.io-client reconnects
        # from the last message it got and is told `recovery_failed`
        await client.cut()
    except BloomrError as exc:
        await client.end("error", exc.payload(), hard=False)
    except SubscriptionClosed as exc:
        await client.end("error", exc.error.payload(), hard=False)
    except SlowConsumer:
        await client.end("warning", SLOW_CONSUMER, hard=True)
    except Exception:
        log.exception("subscriber session failed")
        await client.end("error", {"code": "internal", "message": "internal error"}, hard=False)
    finally:
        hub.unsubscribe(sub)

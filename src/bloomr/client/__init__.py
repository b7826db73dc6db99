"""A Python client for bloomr: subscribe with exact resume, publish in batches.

Subscribe (async)::

    from bloomr.client import BloomrError, subscribe

    async with subscribe("http://127.0.0.1:8080", "dwd23RWdwE", "bt_...",
                         replay="10 min", on_warning=print) as messages:
        async for message in messages:  # Message(id, stream, channel, timestamp, data, replayed)
            print(message.data)

The iterator reconnects by itself (backoff with jitter) and resumes right after the
last message it received: no gap, no duplicate, across network drops and server
restarts. `backfill=True` also fetches what a truncated replay left out. An error that
will not go away raises `BloomrError` (`.code`, `.message`, `.details`).

Subscribe (plain iterator)::

    from bloomr.client import subscribe_sync

    for message in subscribe_sync(url, stream, token, channel="progress"):
        print(message.data)

Publish in batches, each stored exactly once (an `Idempotency-Key` per batch, retried
with the same key through 5xx, 429 and broken connections)::

    from bloomr.client import Publisher

    async with Publisher(url, stream, token) as publisher:
        await publisher.publish({"pct": 50}, channel="progress")
        await publisher.flush()

`SyncPublisher` does the same without asyncio. `Options` tunes a subscription's
transports, timeouts, backoff and buffer (`subscribe(..., options=Options(...))`). Needs `httpx` and
`python-socketio[asyncio_client]` (both installed with bloomr); nothing of the server
is imported."""

from .connection import Options
from .model import BloomrError, BloomrWarning, Message
from .publisher import Publisher
from .subscribe import Subscription, subscribe
from .sync import SyncPublisher, SyncSubscription, subscribe_sync

__all__ = [
    "BloomrError",
    "BloomrWarning",
    "Message",
    "Options",
    "Publisher",
    "Subscription",
    "SyncPublisher",
    "SyncSubscription",
    "subscribe",
    "subscribe_sync",
]

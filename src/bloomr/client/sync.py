"""Plain (blocking) versions of `subscribe` and `Publisher`, for code without asyncio.

Each runs the async one on a private event loop in a daemon thread; `on_warning` is
called from that thread."""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from .model import Message
from .publisher import Publisher
from .subscribe import Subscription, subscribe

P = ParamSpec("P")
T = TypeVar("T")


class _LoopThread:
    """An event loop running in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _make(factory: Any, *args: Any, **kwargs: Any) -> Any:
    return factory(*args, **kwargs)


def _build(thread: _LoopThread, factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Objects that hold asyncio primitives are made on the loop that uses them; the
    thread stops if that fails (a bad argument)."""
    try:
        return thread.run(_make(factory, *args, **kwargs))
    except BaseException:
        thread.stop()
        raise


class SyncSubscription:
    """The plain iterator `subscribe_sync()` returns; also a context manager."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Takes `subscribe()`'s arguments."""
        self._thread = _LoopThread()
        self._subscription: Subscription = _build(self._thread, subscribe, *args, **kwargs)
        # closed even when dropped unclosed (a `for` left with `break`)
        self._finalizer = weakref.finalize(self, _shut, self._thread, self._subscription)

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            return self._thread.run(self._subscription.__anext__())
        except StopAsyncIteration:
            self.close()
            raise StopIteration from None

    def close(self) -> None:
        """Disconnect and stop the private loop; safe to call more than once."""
        self._finalizer()

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _shut(thread: _LoopThread, subscription: Subscription) -> None:
    if not thread.loop.is_closed():
        thread.run(subscription.aclose())
        thread.stop()


def _same_arguments_as(
    model: Callable[P, object],
) -> Callable[[Callable[..., T]], Callable[P, T]]:
    """Gives the decorated function `model`'s parameters, for type checkers and
    `help()` alike: one list of keyword arguments, not a copy that could drift."""

    def decorate(function: Callable[..., T]) -> Callable[P, T]:
        signature = inspect.signature(model)
        function.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=inspect.signature(function).return_annotation
        )
        return function

    return decorate


@_same_arguments_as(subscribe)
def subscribe_sync(*args: Any, **kwargs: Any) -> SyncSubscription:
    """`subscribe()` as a plain iterator (same arguments, same guarantees).

    Example::

        with subscribe_sync(url, "dwd23RWdwE", "bt_...", replay_limit=100) as messages:
            for message in messages:
                print(message.data)
    """
    return SyncSubscription(*args, **kwargs)


class SyncPublisher:
    """`Publisher` for code without asyncio: `publish()` buffers, `flush()` and
    `close()` wait until everything is stored and raise the first BloomrError.

    Example::

        with SyncPublisher(url, "dwd23RWdwE", "bt_...") as publisher:
            for line in open("build.log"):
                publisher.publish(line.rstrip("\\n"))
    """

    def __init__(self, url: str, stream: str, token: str, **options: Any) -> None:
        self._thread = _LoopThread()
        self._publisher: Publisher = _build(self._thread, Publisher, url, stream, token, **options)

    def publish(self, data: Any, channel: str = "") -> None:
        self._thread.run(self._publish(data, channel))

    async def _publish(self, data: Any, channel: str) -> None:
        await self._publisher.publish(data, channel)

    def flush(self) -> None:
        self._thread.run(self._publisher.flush())

    def close(self) -> None:
        if self._thread.loop.is_closed():
            return
        try:
            self._thread.run(self._publisher.aclose())
        finally:
            self._thread.stop()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""A TCP proxy for tests that cut connections: forwards everything to a target and,
on demand, severs every connection it carries or refuses new ones for a while.

    async with Proxy("127.0.0.1", server_port) as proxy:
        client connects to proxy.url ...
        await proxy.sever()          # every current connection is cut (both sides)
        await proxy.refuse()         # the port stops listening: connection refused
        await proxy.allow()          # listening again, on the same port
        proxy.drop_replies = 1       # the next answer is lost: the connection is cut
                                     # when the server starts answering (after the
                                     # request reached it)
        proxy.truncate_replies = 1   # the next answer is cut after its head: the
                                     # client reads the status and headers, then EOF
        proxy.target = (host, port)  # later connections go elsewhere
        proxy.hold()                 # the server's bytes stop here (a client that does
        proxy.hold(after=N)          # not read), or once N more have passed;
        proxy.release()              # release() passes them on again

It runs on the caller's event loop; a test driving blocking clients runs them in a
thread (`asyncio.to_thread`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

CHUNK = 64 * 1024
# the proxy's receive buffer towards the server: small and fixed, so that a `hold()`
# stops the server's writes after about this much (Linux grows a buffer of its own
# choosing up to tcp_rmem's maximum, 32 MiB here)
UPSTREAM_RCVBUF = 128 * 1024


class Proxy:
    def __init__(self, host: str, port: int, listen_port: int = 0) -> None:
        self.target = (host, port)
        self.port = listen_port  # 0: a free one, kept across refuse()/allow()
        self.accepted = 0  # connections accepted so far
        self.drop_replies = 0  # server answers still to cut off (see the module doc)
        self.truncate_replies = 0  # server answers still to cut after their head
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # every accepted connection, from the moment it is made: one whose handler task
        # has not run yet (or never will: cancelled at the loop's end) is cut too
        self._accepted: set[asyncio.BaseTransport] = set()
        self._flowing = asyncio.Event()  # the server's bytes go on to the client
        self._flowing.set()
        self._hold_after: int | None = None  # server bytes to pass before holding

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections open right now."""
        return len(self._pipes)

    async def __aenter__(self) -> Proxy:
        await self.allow()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def allow(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _Tracked(self._accepted, self._accept),
                "127.0.0.1",
                self.port,
                reuse_address=True,
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening (new connections are refused); open ones are left alone."""
        server, self._server = self._server, None
        if server is not None:
            server.close()  # not wait_closed(): from 3.12 it waits for open connections too

    async def sever(self) -> None:
        """Cut every open connection, on both sides, at once. A connection the listener
        had accepted before `refuse()` may reach its handler a few turns of the loop
        later (asyncio sets it up in steps): the cutting goes on until none comes for
        a while."""
        quiet = 0
        while quiet < 5:
            if self._writers or self._pipes or self._accepted:
                quiet = 0
                transports: list[Any] = [w.transport for w in self._writers]
                transports += self._accepted
                self._accepted.clear()
                for transport in transports:
                    with contextlib.suppress(Exception):
                        transport.abort()
                pipes = list(self._pipes)
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
            else:
                quiet += 1
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.release()
        await self.refuse()
        await self.sever()
        # an aborted transport lets go of its socket one turn of the loop later: a test
        # whose loop ended first would leak it (a ResourceWarning, an error here)
        await asyncio.sleep(0.05)

    def hold(self, after: int = 0) -> None:
        """Stop passing on what the server sends (its writes soon block), as a client
        that stops reading, once `after` more bytes of it have passed (say, the answer
        to a handshake); what the client sends still goes through."""
        if after > 0:
            self._hold_after = after
        else:
            self._flowing.clear()

    def release(self) -> None:
        self._hold_after = None
        self._flowing.set()

    def _passed(self, size: int) -> None:
        if self._hold_after is not None:
            self._hold_after -= size
            if self._hold_after <= 0:
                self._hold_after = None
                self._flowing.clear()

    def _cut_reply(self, data: bytes) -> bytes | None:
        """None to pass `data` on; else what to pass before cutting the connection."""
        if self.drop_replies > 0:
            self.drop_replies -= 1
            return b""
        if self.truncate_replies > 0:
            self.truncate_replies -= 1
            head = data.find(b"\r\n\r\n")
            return data if head < 0 else data[: head + 4]
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await _open_upstream(*self.target)
            self._writers.add(upstream)
            replies = _pump(up_reader, writer, self._cut_reply, self._flowing, self._passed)
            await asyncio.gather(_pump(reader, upstream), replies)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._pipes.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()


class _Tracked(asyncio.StreamReaderProtocol):
    """asyncio.start_server's protocol, keeping its transport in `accepted` while the
    connection lasts."""

    def __init__(self, accepted: set[asyncio.BaseTransport], handler: Any) -> None:
        super().__init__(asyncio.StreamReader(), handler)
        self._accepted = accepted
        self._own: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._own = transport
        self._accepted.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._own is not None:
            self._accepted.discard(self._own)
        super().connection_lost(exc)


async def _open_upstream(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    # set once connected, it still caps what the kernel holds for a reader that stops
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RCVBUF)
    return reader, writer


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    cut: Callable[[bytes], bytes | None] = lambda _: None,
    flowing: asyncio.Event | None = None,
    passed: Callable[[int], None] = lambda _: None,
) -> None:
    """Copy one direction until EOF, then half-close, as a plain TCP path would; when
    `cut(data)` gives bytes, pass only those on and cut the connection. While `flowing`
    is clear, nothing is read (the sender's writes back up); `passed` is told of what
    went through."""
    while (flowing is None or await flowing.wait()) and (data := await reader.read(CHUNK)):
        if (kept := cut(data)) is not None:
            writer.write(kept)
            await writer.drain()
            raise ConnectionAbortedError("reply cut by the proxy")
        writer.write(data)
        passed(len(data))
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()

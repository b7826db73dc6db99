"""A clean stop (SPEC §3 "Availability and limits").

SIGTERM or SIGINT: stop accepting, stop the scripts (their last lines still reach the
store), end the HTTP long polls, send every subscriber `warning` `shutting_down` and
close its transport so that its client reconnects and resumes by itself, answer the
publishes in progress, then stop the node and exit 0 — in `STOP_SECONDS` at most.
A second signal forces the exit (status 1), as does running out of time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

import uvicorn

from ..app import Bloomr

log = logging.getLogger("bloomr")

STOP_SECONDS = 9.5  # the stop's deadline: SPEC gives 10 s from the signal to the exit
DRAIN_SECONDS = 5  # for connections to finish their requests (uvicorn's graceful timeout)
_FORCE_SECONDS = 1.0  # after a second signal, for the loop to wind down


class StoppingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: Bloomr) -> None:
        super().__init__(config)
        self.node = node

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, less raising the signal again once the server has stopped: that
        made the process die of its SIGTERM (exit 143) after a clean stop."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        loop = asyncio.get_running_loop()
        if not self.should_exit:
            self.should_exit = True
            loop.call_later(STOP_SECONDS, exit_now, "the stop took too long")
            return
        # uvicorn then stops waiting for connections and skips the node's stop; the
        # timer covers a stop that is past that point
        self.force_exit = True
        loop.call_later(_FORCE_SECONDS, exit_now, "forced by a second signal")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no one new from here on
            server.close()
        for sock in sockets or []:
            sock.close()
        self.node.begin_stop()
        await self.node.transports.close()
        await super().shutdown(sockets)  # answers what is in progress, then the lifespan


def exit_now(why: str) -> None:
    """Exit 1 at once, whatever still runs (the store's thread would hold a normal exit)."""
    log.error("exiting now: %s", why)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)

"""`bloomr tail` on bloomr.client: `--until-live`, `--backfill`, and what it says on
standard error about the stream's script, with a token only (the `errors` channel)
and with an admin key (the script's state)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import (
    Proc,
    bloomr,
    cli_env,
    new_stream,
    new_token,
    ok,
    server_publish,
    server_publish_to,
    wait_until,
)

from server import Server

CRASHES = "import sys; print('working', flush=True); print('boom', file=sys.stderr); sys.exit(3)"


@pytest.fixture
def tails() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def test_until_live_ends_after_the_replay(server: Server) -> None:
    stream = new_stream(server)
    server_publish(server, stream, "m0", "m1", "m2")
    done = bloomr(server.url, "tail", stream, "--replay-limit", "2", "--until-live")
    assert ok(done) == "m1\nm2\n" and done.stderr == ""

    empty = new_stream(server)
    done = bloomr(server.url, "tail", empty, "--until-live")
    assert ok(done) == "" and done.stderr == ""


def test_backfill_prints_what_a_truncated_replay_left_out(server: Server) -> None:
    stream = new_stream(server)
    server_publish(server, stream, *range(30))
    args = ["tail", stream, "--replay", "1h", "--replay-limit", "5", "--until-live"]
    plain = bloomr(server.url, *args)
    assert ok(plain).split() == [str(i) for i in range(25, 30)]
    assert plain.stderr.startswith("warning: replay_truncated:")
    filled = bloomr(server.url, *args, "--backfill")
    assert ok(filled).split() == [str(i) for i in range(30)]


def _errors_live(server: Server, stream: str, tail: Proc) -> bool:
    """Publish a marker on `errors` until the tail shows it on stderr."""
    server_publish_to(server, stream, "errors", "marker")
    return "marker" in tail.err


def test_a_token_holder_sees_the_scripts_errors_and_exit(
    server: Server, tails: list[Proc], tmp_path: Path
) -> None:
    stream = new_stream(server, command=[sys.executable, "-c", CRASHES])
    token = new_token(server, stream, ["subscribe"])
    env = cli_env(server.url)
    del env["BLOOMR_ADMIN_KEY"]  # and no ./bloomr-data in its cwd: a token only
    tail = Proc(server.url, "tail", stream, "--token", token, env=env, cwd=tmp_path)
    tails.append(tail)
    wait_until(lambda: _errors_live(server, stream, tail), "the tail to watch the errors")
    ok(bloomr(server.url, "streams", "start", stream))
    assert tail.lines(1) == ["working"]
    tail.wait_err("boom")
    assert tail.wait_err("script crashed") == "script crashed (exit code 3)"
    assert not any(line.startswith("script state:") for line in tail.err)  # no admin key


def test_with_an_admin_key_it_prints_the_scripts_state_changes(
    server: Server, tails: list[Proc]
) -> None:
    stream = new_stream(server, command=[sys.executable, "-c", CRASHES])
    tail = Proc(server.url, "tail", stream)  # BLOOMR_ADMIN_KEY is set
    tails.append(tail)
    assert tail.wait_err("script state:") == "script state: stopped"
    ok(bloomr(server.url, "streams", "start", stream))
    assert tail.lines(1) == ["working"]
    assert tail.wait_err("script state: crashed") == "script state: crashed (exit code 3)"
    assert tail.wait_err("script crashed") == "script crashed (exit code 3)"


def test_exited_and_stopped_are_said_too(server: Server, tails: list[Proc]) -> None:
    quick = new_stream(server, command=[sys.executable, "-c", "print('bye')"])
    tail = Proc(server.url, "tail", quick)
    tails.append(tail)
    tail.wait_err("script state: stopped")
    ok(bloomr(server.url, "streams", "start", quick))
    assert tail.wait_err("exited") == "script state: exited (exit code 0)"

    slow = new_stream(server, command=[sys.executable, "-c", "import time; time.sleep(60)"])
    ok(bloomr(server.url, "streams", "start", slow))
    watcher = Proc(server.url, "tail", slow)
    tails.append(watcher)
    wait_until(lambda: _started(server, slow), "the script to run")
    ok(bloomr(server.url, "streams", "stop", slow))
    assert watcher.wait_err("script state:") == "script state: stopped"


def _started(server: Server, stream: str) -> bool:
    shown = ok(bloomr(server.url, "streams", "show", stream))
    return "running" in shown

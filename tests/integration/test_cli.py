"""The command line through its real entry point (`python -m bloomr ...` subprocesses)
against a real `bloomr serve`: every command, its output for people and for scripts,
bad input, an unreachable server, and `tail` / `run` across a server restart."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import ADMIN_KEY, Server, running_server

TIMEOUT = 30  # seconds, for any one CLI call or awaited event


# -- helpers ---------------------------------------------------------------------------------


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOOMR_")}
    return {**env, "BLOOMR_URL": url, "BLOOMR_ADMIN_KEY": ADMIN_KEY, **extra}


def bloomr(
    url: str,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bloomr", *args],
        input=input,
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(url),
        cwd=cwd,
        timeout=TIMEOUT,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one error line of a failed command."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    if code == 2:  # click's usage error: its usage lines, then the error
        return result.stderr.strip().splitlines()[-1]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def admin(srv: Server) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=srv.admin, timeout=TIMEOUT)


def new_stream(srv: Server, **fields: Any) -> str:
    with admin(srv) as c:
        r = c.post("/api/streams", json=fields)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def new_token(srv: Server, stream: str, scopes: list[str]) -> str:
    with admin(srv) as c:
        r = c.post("/api/tokens", json={"streams": [stream], "scopes": scopes})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def history(srv: Server, stream: str, channel: str = "") -> list[dict[str, Any]]:
    """Every stored message of a channel, oldest first."""
    messages: list[dict[str, Any]] = []
    after = ""
    with admin(srv) as c:
        while True:
            params = {"channel": channel, "limit": "10000", "after": after}
            page = c.get(f"/api/streams/{stream}/messages", params=params).json()
            if not page["messages"]:
                return messages
            messages += page["messages"]
            after = page["next"]


def data(srv: Server, stream: str, channel: str = "") -> list[Any]:
    return [m["data"] for m in history(srv, stream, channel)]


def wait_until(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A long-running CLI process whose stdout and stderr lines are awaited as events."""

    def __init__(
        self, url: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bloomr", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else cli_env(url),
            cwd=cwd,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._err_changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.out.put(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._err_changed:
                self.err.append(line.rstrip("\n"))
                self._err_changed.notify_all()

    def lines(self, count: int) -> list[str]:
        return [self.out.get(timeout=TIMEOUT) for _ in range(count)]

    def wait_err(self, fragment: str) -> str:
        with self._err_changed:
            found = self._err_changed.wait_for(
                lambda: next((e for e in self.err if fragment in e), None), TIMEOUT
            )
        assert found, f"no {fragment!r} on stderr: {self.err}"
        return found

    def wait(self) -> int:
        return self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


# -- every command has --help -----------------------------------------------------------------

COMMANDS = [
    [],
    ["serve"],
    ["streams"],
    *(["streams", c] for c in ("create", "list", "show", "update", "delete")),
    *(["streams", c] for c in ("start", "stop", "restart")),
    ["tokens"],
    *(["tokens", c] for c in ("create", "list", "revoke")),
    ["publish"],
    ["tail"],
    ["run"],
    ["admin-key"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bloomr")
def test_every_command_has_help(command: list[str]) -> None:
    out = ok(bloomr("http://127.0.0.1:1", *command, "--help"))
    assert out.startswith("Usage: bloomr")


# -- streams -------------------------------------------------------------------------------------


def test_streams_create_show_list_update_delete(server: Server) -> None:
    url = server.url
    created = bloomr(url, "streams", "create", "--name", "job", "--max-age", "2h", "--env", "A=1")
    stream = ok(created).strip()
    assert created.stderr.strip() == f"created stream {stream}"
    assert len(stream) == 10 and stream.isalnum()

    doc = json.loads(ok(bloomr(url, "streams", "show", stream, "--json")))
    assert doc["name"] == "job" and doc["retention"]["max_age"] == "2h"
    assert doc["env"] == {"A": "1"} and doc["store_history"] is True and doc["command"] is None

    shown = ok(bloomr(url, "streams", "show", stream))
    assert f"id:       {stream}" in shown
    assert "history:  on (max age 2h" in shown and "command:  -" in shown

    listed = ok(bloomr(url, "streams", "list")).splitlines()
    assert listed[0].split() == ["ID", "NAME", "HISTORY", "RETENTION", "SCRIPT", "COMMAND"]
    assert any(line.split()[:3] == [stream, "job", "on"] for line in listed[1:])
    ids = [s["id"] for s in json.loads(ok(bloomr(url, "streams", "list", "--json")))["streams"]]
    assert stream in ids

    update = ["streams", "update", stream, "--no-history", "--max-messages", "5", "--clear-env"]
    updated = json.loads(ok(bloomr(url, *update, "--json", "--", "echo", "hi there")))
    assert updated["store_history"] is False and updated["retention"]["max_messages"] == 5
    assert updated["env"] is None and updated["command"] == ["echo", "hi there"]
    assert updated["retention"]["max_age"] == "2h"  # what was not given did not change
    assert "command:  echo 'hi there'" in ok(
        bloomr(url, "streams", "update", stream, "--name", "x")
    )

    assert ok(bloomr(url, "streams", "delete", stream)).strip() == f"deleted stream {stream}"
    error = fails(bloomr(url, "streams", "show", stream))
    assert error == f"error: not_found: stream {stream} not found"


def test_streams_create_with_a_command_after_double_dash(server: Server) -> None:
    args = ["streams", "create", "--restart", "on-failure", "--cwd", "/tmp", "--json", "--"]
    doc = json.loads(ok(bloomr(server.url, *args, "python", "-u", "job.py", "--fast")))
    assert doc["command"] == ["python", "-u", "job.py", "--fast"]
    assert doc["restart"] == "on-failure" and doc["cwd"] == "/tmp"
    assert doc["script"]["state"] == "stopped"


def test_streams_start_stop_restart(server: Server) -> None:
    url = server.url
    script = "import time\nprint('up', flush=True)\ntime.sleep(60)"
    stream = new_stream(server, command=[sys.executable, "-c", script])

    started = ok(bloomr(url, "streams", "start", stream))
    assert started.startswith(f"started the script of stream {stream}: running (pid ")
    wait_until(lambda: data(server, stream) == ["up"], "the script's first line")
    doc = json.loads(ok(bloomr(url, "streams", "show", stream, "--json")))
    assert doc["script"]["state"] == "running" and doc["script"]["pid"] > 0
    assert "script:   running (pid" in ok(bloomr(url, "streams", "show", stream))

    restarted = json.loads(ok(bloomr(url, "streams", "restart", stream, "--json")))
    assert restarted["script"]["state"] == "running"
    wait_until(lambda: data(server, stream) == ["up", "up"], "the restarted script's line")

    stopped = ok(bloomr(url, "streams", "stop", stream))
    assert stopped.startswith(f"stopped the script of stream {stream}: stopped")

    no_command = new_stream(server)
    error = fails(bloomr(url, "streams", "start", no_command))
    assert error == f"error: conflict: stream {no_command} has no command to run"


# -- tokens --------------------------------------------------------------------------------------


def test_tokens_create_list_revoke(server: Server) -> None:
    url = server.url
    stream = new_stream(server)
    args = ["--stream", stream, "--scope", "publish", "--scope", "subscribe"]
    created = bloomr(url, "tokens", "create", *args, "--name", "ci", "--expires-in", "1h")
    secret = ok(created).strip()
    assert secret.startswith("bt_") and "\n" not in secret  # alone on stdout: $(...) works
    assert "shown only this once" in created.stderr
    token_id = created.stderr.split()[2]

    tokens = json.loads(ok(bloomr(url, "tokens", "list", "--json")))["tokens"]
    mine = next(t for t in tokens if t["id"] == token_id)
    assert mine["name"] == "ci" and mine["scopes"] == ["publish", "subscribe"]
    assert mine["streams"] == [stream] and mine["expires_at"] is not None
    assert all("token" not in t for t in tokens)  # never a secret
    table = ok(bloomr(url, "tokens", "list")).splitlines()
    assert table[0].split() == ["ID", "NAME", "STREAMS", "SCOPES", "CHANNELS", "EXPIRES", "CREATED"]
    assert any(line.split()[:4] == [token_id, "ci", stream, "publish,subscribe"] for line in table)

    everywhere = json.loads(ok(bloomr(url, "tokens", "create", "--all", "--json")))
    assert everywhere["streams"] == ["*"] and everywhere["scopes"] == ["subscribe"]
    assert everywhere["token"].startswith("bt_")
    channels = ["--channel", "build.*", "--channel", ""]
    scoped = json.loads(ok(bloomr(url, "tokens", "create", "--all", *channels, "--json")))
    assert scoped["channels"] == ["build.*", ""] and everywhere["channels"] is None
    at = ["tokens", "create", "--all", "--expires-at", "2099-01-01T00:00:00Z", "--json"]
    assert json.loads(ok(bloomr(url, *at)))["expires_at"].startswith("2099-01-01T00:00:00")

    assert ok(bloomr(url, "tokens", "revoke", token_id)).strip() == f"revoked token {token_id}"
    assert token_id not in ok(bloomr(url, "tokens", "list"))
    assert fails(bloomr(url, "tokens", "revoke", token_id)).startswith("error: not_found:")


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_a_non_zero_exit(server: Server) -> None:
    url = server.url
    stream = new_stream(server)
    subscriber = new_token(server, stream, ["subscribe"])
    # the server says no: exit 1 with its code and message
    error = fails(bloomr(url, "publish", "nOSuchStrm", "x"))
    assert error == "error: not_found: stream nOSuchStrm not found"
    error = fails(bloomr(url, "tokens", "create", "--stream", "nOSuchStrm"))
    assert error == "error: validation_failed: unknown stream nOSuchStrm"
    error = fails(bloomr(url, "streams", "create", "--max-age", "soon"))
    assert error.startswith("error: validation_failed: retention.max_age:")
    error = fails(bloomr(url, "publish", stream, "x", "--token", subscriber))
    assert error == "error: forbidden: this token lacks the 'publish' scope"
    error = fails(bloomr(url, "streams", "list", "--admin-key", "wrong"))
    assert error.startswith("error: unauthorized:")
    error = fails(bloomr(url, "publish", stream, "--channel", "bad channel!", "x"))
    assert error.startswith("error: validation_failed: channel must be")
    # the command line says no: click's usage error, exit 2
    error = fails(bloomr(url, "tokens", "create", "--stream", stream, "--scope", "own"), 2)
    assert "'own' is not one of 'subscribe', 'publish'" in error
    error = fails(bloomr(url, "publish", stream, "--parse", "json", "{not json"), 2)
    assert error.startswith("Error: Invalid value for 'DATA': not valid JSON")
    error = fails(bloomr(url, "streams", "create", "--env", "NOEQUALS"), 2)
    assert "'NOEQUALS' is not NAME=VALUE" in error
    fails(bloomr(url, "streams", "create", "--max-messages", "many"), 2)
    fails(bloomr(url, "tokens", "create", "--stream", stream, "--expires-in", "someday"), 2)
    fails(bloomr(url, "tokens", "create"), 2)
    fails(bloomr(url, "streams", "update", stream), 2)
    fails(bloomr(url, "tail", stream, "--replay-limit", "0"), 2)
    fails(bloomr(url, "run", "--stream", stream), 2)
    # a stdin line that is not JSON with --parse json: what came before it is published
    piped = bloomr(url, "publish", stream, "--parse", "json", input='1\n"two"\n{oops\n')
    error = fails(piped)
    assert error.startswith("error: stdin line 3 is not valid JSON")
    assert data(server, stream) == [1, "two"]


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    expected = f"error: cannot reach bloomr at {url}: connection refused"
    for args in (
        ["streams", "list"],
        ["streams", "create"],
        ["tokens", "create", "--all"],
        ["publish", "AAAAAAAAAA", "hello"],
        ["tail", "AAAAAAAAAA"],
        ["run", "--stream", "AAAAAAAAAA", "--", "touch", str(tmp_path / "ran")],
    ):
        assert fails(bloomr(url, *args)) == expected, args
    assert not (tmp_path / "ran").exists()  # run checks the server before it starts anything


def test_the_admin_key_comes_from_the_flag_the_env_or_the_data_dir(
    server: Server, tmp_path: Path
) -> None:
    env = cli_env(server.url)
    del env["BLOOMR_ADMIN_KEY"]
    error = fails(bloomr(server.url, "streams", "list", env=env, cwd=tmp_path))
    assert error.startswith("error: no admin key:")
    assert fails(bloomr(server.url, "admin-key", env=env, cwd=tmp_path)).startswith(
        "error: no admin key:"
    )
    ok(bloomr(server.url, "streams", "list", "--admin-key", ADMIN_KEY, env=env, cwd=tmp_path))

    (tmp_path / "bloomr-data").mkdir()
    (tmp_path / "bloomr-data" / "admin.key").write_text(ADMIN_KEY + "\n")
    ok(bloomr(server.url, "streams", "list", env=env, cwd=tmp_path))  # ./bloomr-data/admin.key
    assert ok(bloomr(server.url, "admin-key", env=env, cwd=tmp_path)).strip() == ADMIN_KEY
    other = tmp_path / "other"
    other.mkdir()
    (other / "admin.key").write_text("bk_other\n")
    printed = bloomr(server.url, "admin-key", "--data-dir", str(other), env=env)
    assert ok(printed).strip() == "bk_other"
    env_dir = {**env, "BLOOMR_DATA_DIR": str(other)}
    assert ok(bloomr(server.url, "admin-key", env=env_dir)).strip() == "bk_other"
    assert ok(bloomr(server.url, "admin-key")).strip() == ADMIN_KEY  # BLOOMR_ADMIN_KEY wins


# -- publish -------------------------------------------------------------------------------------


def test_publish_one_message(server: Server) -> None:
    url = server.url
    stream = new_stream(server)
    publisher = new_token(server, stream, ["publish"])
    assert ok(bloomr(url, "publish", stream, '{"a": [1, 2]}')).strip() == "published 1 message"
    ids = json.loads(ok(bloomr(url, "publish", stream, "plain text", "--json")))["ids"]
    assert len(ids) == 1
    ok(bloomr(url, "publish", stream, "42", "--token", publisher, "--channel", "progress"))
    ok(bloomr(url, "publish", stream, "42", "--parse", "text"))
    assert data(server, stream) == [{"a": [1, 2]}, "plain text", "42"]
    assert data(server, stream, "progress") == [42]
    assert history(server, stream)[1]["id"] == ids[0]


def test_publish_from_stdin_in_batches(server: Server) -> None:
    stream = new_stream(server)
    publisher = new_token(server, stream, ["publish"])
    lines = [f"line {i}" for i in range(1203)] + ['{"n": 1}', "", "NaN", "[1, 2]", "ünïcode"]
    piped = bloomr(server.url, "publish", stream, "--token", publisher, input="\n".join(lines))
    assert ok(piped).strip() == f"published {len(lines)} messages"
    expected = [f"line {i}" for i in range(1203)] + [{"n": 1}, "", "NaN", [1, 2], "ünïcode"]
    assert data(server, stream) == expected

    as_json = bloomr(server.url, "publish", stream, "--json", "--channel", "c", input="a\nb\n")
    ids = json.loads(ok(as_json))["ids"]
    assert [m["id"] for m in history(server, stream, "c")] == ids


# -- tail ------------------------------------------------------------------------------------------


def test_tail_prints_live_messages_and_exits_when_the_stream_is_deleted(
    server: Server, procs: list[Proc]
) -> None:
    stream = new_stream(server)
    server_publish(server, stream, "ready")
    subscriber = new_token(server, stream, ["subscribe"])
    tail = Proc(server.url, "tail", stream, "--replay-limit", "1", "--token", subscriber)
    procs.append(tail)
    assert tail.lines(1) == ["ready"]  # replayed: from now on it is live
    server_publish(server, stream, "one", {"n": 2}, [1, "x"], "multi\nline")
    assert tail.lines(5) == ["one", '{"n":2}', '[1,"x"]', "multi", "line"]

    ok(bloomr(server.url, "streams", "delete", stream))
    assert tail.wait() == 1
    assert tail.wait_err("error:") == "error: stream_deleted: the stream was deleted"
    assert "Traceback" not in "\n".join(tail.err)


def test_tail_exits_when_its_token_is_revoked(server: Server, procs: list[Proc]) -> None:
    stream = new_stream(server)
    server_publish(server, stream, "ready")
    created = bloomr(server.url, "tokens", "create", "--stream", stream, "--json")
    token = json.loads(ok(created))
    tail = Proc(server.url, "tail", stream, "--replay-limit", "1", "--token", token["token"])
    procs.append(tail)
    assert tail.lines(1) == ["ready"]
    ok(bloomr(server.url, "tokens", "revoke", token["id"]))
    assert tail.wait() == 1
    assert tail.wait_err("error:").startswith("error: token_revoked:")


def test_tail_without_replay_prints_only_new_messages(server: Server, procs: list[Proc]) -> None:
    stream = new_stream(server)
    server_publish(server, stream, "old")
    tail = Proc(server.url, "tail", stream)
    procs.append(tail)
    # it prints nothing before it is live, so publish until something shows
    first = wait_until(lambda: _ping(server, stream, tail), "tail to go live")
    server_publish(server, stream, "after")
    rest = wait_until(lambda: _drain_until(tail, "after"), "the message after the pings")
    printed = [first, *rest]
    assert "old" not in printed and printed[0].startswith("ping")
    assert printed[-1] == "after"
    tail.process.send_signal(signal.SIGINT)
    assert tail.wait() == 0 and tail.err == []  # Ctrl-C: quiet, exit 0


def _ping(server: Server, stream: str, tail: Proc) -> str | None:
    server_publish(server, stream, f"ping {time.monotonic()}")
    try:
        return tail.out.get(timeout=0.2)
    except queue.Empty:
        return None


def _drain_until(tail: Proc, last: str) -> list[str] | None:
    seen: list[str] = []
    while True:
        try:
            seen.append(tail.out.get(timeout=TIMEOUT))
        except queue.Empty:
            return None
        if seen[-1] == last:
            return seen


def test_tail_replay_limit_channel_and_metadata(server: Server, procs: list[Proc]) -> None:
    stream = new_stream(server)
    server_publish(server, stream, *[f"m{i}" for i in range(5)])
    server_publish_to(server, stream, "errors", "e0", "e1")

    tail = Proc(server.url, "tail", stream, "--replay-limit", "2")
    procs.append(tail)
    assert tail.lines(2) == ["m3", "m4"]
    tail.process.send_signal(signal.SIGINT)
    assert tail.wait() == 0 and tail.err == []

    args = ["tail", stream, "--channel", "errors", "--replay-limit", "10", "--metadata"]
    meta = Proc(server.url, *args)
    procs.append(meta)
    envelopes = [json.loads(line) for line in meta.lines(2)]
    assert [e["data"] for e in envelopes] == ["e0", "e1"]
    assert all(e["channel"] == "errors" and e["replayed"] is True for e in envelopes)
    assert set(envelopes[0]) == {"id", "stream", "channel", "timestamp", "data", "replayed"}
    server_publish_to(server, stream, "errors", "live")
    live = json.loads(meta.lines(1)[0])
    assert live["data"] == "live" and live["replayed"] is False
    meta.process.send_signal(signal.SIGTERM)
    assert meta.wait() == 0


def test_tail_refused_is_one_line(server: Server) -> None:
    stream = new_stream(server)
    error = fails(bloomr(server.url, "tail", stream, "--token", "bt_wrong"))
    assert error == "error: unauthorized: invalid, expired or revoked token"
    error = fails(bloomr(server.url, "tail", stream, "--replay", "the other day"))
    assert error.startswith("error: invalid_argument: replay must be")


def test_tail_resumes_after_the_server_restarts_without_loss_or_repeats(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    with running_server("--port", str(port), data_dir=tmp_path) as first:
        stream = new_stream(first)
        server_publish(first, stream, "a")
        tail = Proc(first.url, "tail", stream, "--replay-limit", "1")
        procs.append(tail)
        assert tail.lines(1) == ["a"]
        server_publish(first, stream, "b")
        assert tail.lines(1) == ["b"]
    tail.wait_err("lost; reconnecting")
    with running_server("--port", str(port), data_dir=tmp_path) as second:
        server_publish(second, stream, "c", "d")  # most likely before the tail is back
        tail.wait_err("reconnected")
        server_publish(second, stream, "e")
        assert tail.lines(3) == ["c", "d", "e"]
        tail.process.send_signal(signal.SIGINT)
        assert tail.wait() == 0
    assert tail.out.empty()


def server_publish(srv: Server, stream: str, *items: Any) -> None:
    server_publish_to(srv, stream, "", *items)


def server_publish_to(srv: Server, stream: str, channel: str, *items: Any) -> None:
    body = [{"channel": channel, "data": item} for item in items]
    with admin(srv) as c:
        r = c.post(f"/api/streams/{stream}/messages", json=body)
        assert r.status_code == 201, r.text


# -- run -------------------------------------------------------------------------------------------

CHATTY = """
import sys, bloomr
for i in range(3):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
bloomr.emit("progress", {"done": 3})
sys.exit(3)
"""


def test_run_publishes_stdout_stderr_and_emits_and_exits_with_the_commands_code(
    server: Server,
) -> None:
    stream = new_stream(server)
    publisher = new_token(server, stream, ["publish"])
    args = ["run", "--stream", stream, "--token", publisher, "--"]
    result = bloomr(server.url, *args, sys.executable, "-c", CHATTY)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert data(server, stream) == ["out 0", "out 1", "out 2"]
    errors = data(server, stream, "errors")
    assert errors == ["err 0", "err 1", "err 2", {"event": "exit", "code": 3, "signal": None}]
    assert data(server, stream, "progress") == [{"done": 3}]


def test_run_echo_env_cwd_and_a_killed_command(server: Server, tmp_path: Path) -> None:
    stream = new_stream(server)
    script = 'echo "$GREETING from $(pwd)"; echo oops >&2; kill -9 $$'
    args = ["run", "--stream", stream, "--echo", "--env", "GREETING=hello", "--cwd", str(tmp_path)]
    result = bloomr(server.url, *args, "--", "sh", "-c", script)
    assert result.returncode == 128 + signal.SIGKILL
    assert result.stdout == f"hello from {tmp_path}\n"
    assert result.stderr.splitlines()[0] == "oops"
    assert data(server, stream) == [f"hello from {tmp_path}"]
    assert data(server, stream, "errors")[-1] == {
        "event": "exit",
        "code": None,
        "signal": "SIGKILL",
    }


def test_run_refusals(server: Server, tmp_path: Path) -> None:
    stream = new_stream(server)
    subscriber = new_token(server, stream, ["subscribe"])
    marker = tmp_path / "ran"
    args = ["run", "--stream", stream, "--token", subscriber, "--", "touch", str(marker)]
    assert fails(bloomr(server.url, *args)) == (
        "error: forbidden: this token lacks the 'publish' scope"
    )
    assert not marker.exists()
    result = bloomr(server.url, "run", "--stream", stream, "--", "no-such-command-here")
    assert fails(result, 127).startswith("error: cannot start 'no-such-command-here':")
    assert data(server, stream, "errors")[0]["event"] == "spawn_error"


# the script of the outage test: prints a counter until told to stop
COUNTER = """
import os, sys, time
i = 0
while not os.path.exists(sys.argv[1]):
    print(i, flush=True)
    i += 1
    time.sleep(0.005)
print("done")
sys.exit(5)
"""


@pytest.mark.slow
def test_run_survives_the_server_going_away_without_loss_or_duplicates(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    stop_file = tmp_path / "stop"
    with running_server("--port", str(port), data_dir=tmp_path / "data") as first:
        stream = new_stream(first)
        publisher = new_token(first, stream, ["publish"])
        args = ["run", "--stream", stream, "--token", publisher, "--"]
        run = Proc(first.url, *args, sys.executable, "-c", COUNTER, str(stop_file))
        procs.append(run)
        wait_until(lambda: len(history(first, stream)) >= 50, "lines before the outage")
    run.wait_err("cannot publish to")  # the server is gone and the command goes on
    with running_server("--port", str(port), data_dir=tmp_path / "data") as second:
        run.wait_err("publishing again")
        count = len(history(second, stream))
        wait_until(lambda: len(history(second, stream)) > count + 50, "lines after the outage")
        stop_file.touch()
        assert run.wait() == 5
        lines = data(second, stream)
    assert lines[-1] == "done"
    assert lines[:-1] == [str(i) for i in range(len(lines) - 1)]  # each once, in order
    assert run.err[0].startswith(f"warning: cannot publish to {second.url}: ")


def test_run_gives_up_after_max_outage(tmp_path: Path, procs: list[Proc]) -> None:
    stop_file = tmp_path / "stop"
    with running_server(data_dir=tmp_path / "data") as srv:
        stream = new_stream(srv)
        args = ["run", "--stream", stream, "--max-outage", "1", "--"]
        run = Proc(srv.url, *args, sys.executable, "-c", COUNTER, str(stop_file))
        procs.append(run)
        wait_until(lambda: history(srv, stream), "the first line")
    assert run.wait() == 1
    last = run.err[-1]
    assert last.startswith(f"error: cannot publish to {srv.url} for 1s: connection refused;")
    assert last.endswith("the command was stopped")

"""Scripts (SPEC §4, issue 3) against a real `bloomr serve` running real child processes.

Every script is `python -c ...` with this interpreter (`sys.executable`), which has
bloomr installed, so `import bloomr; bloomr.emit(...)` works in it without PYTHONPATH.
Conditions are awaited by polling the HTTP API with short sleeps under a timeout."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from server import Server, running_server
from sioclient import Recorder, connect_and_wait

T = TypeVar("T")
POLL = 0.05


# -- helpers -----------------------------------------------------------------------------


def py(code: str) -> list[str]:
    """The argv of a Python script run by this interpreter (bloomr importable)."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def until(
    check: Callable[[], Awaitable[T]], timeout: float = 10, what: str = "condition"
) -> T:
    """Poll `check()` until it returns something truthy; return that."""
    last: list[Any] = [None]

    async def loop() -> T:
        while True:
            result = await check()
            last[0] = result
            if result:
                return result
            await asyncio.sleep(POLL)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        message = f"timed out after {timeout}s waiting for {what}; last: {last[0]!r}"
        raise AssertionError(message) from None


async def until_gone(pid: int, timeout: float = 5) -> None:
    async def gone() -> bool:
        return not alive(pid)

    await until(gone, timeout, f"pid {pid} to be gone")


class Api:
    """The admin's and a subscriber's HTTP calls, on one client."""

    def __init__(self, srv: Server, http: httpx.AsyncClient) -> None:
        self.srv = srv
        self.http = http
        self.tokens: dict[str, str] = {}

    async def create(self, command: list[str] | None = None, **fields: Any) -> str:
        """A stream (with `command` if given) and a subscribe token for it; its id."""
        if command is not None:
            fields["command"] = command
        r = await self.http.post("/api/streams", json=fields, headers=self.srv.admin)
        assert r.status_code == 201, r.text
        stream = r.json()
        assert stream["command"] == fields.get("command")
        token = await self.srv.create_token([stream["id"]], ["subscribe"])
        self.tokens[stream["id"]] = token["token"]
        return str(stream["id"])

    async def stream(self, sid: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/streams/{sid}", headers=self.srv.admin)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def script(self, sid: str) -> dict[str, Any]:
        script = (await self.stream(sid))["script"]
        assert isinstance(script, dict), script
        return script

    async def control(self, sid: str, action: str, status: int = 200) -> dict[str, Any]:
        r = await self.http.post(f"/api/streams/{sid}/{action}", headers=self.srv.admin)
        assert r.status_code == status, (action, r.status_code, r.text)
        return dict(r.json())

    async def page(self, sid: str, **params: Any) -> dict[str, Any]:
        r = await self.http.get(
            f"/api/streams/{sid}/messages",
            params=params,
            headers={"Authorization": f"Bearer {self.tokens[sid]}"},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def envelopes(self, sid: str, channel: str = "", limit: int = 1000) -> list[Any]:
        """Every stored message of the channel, oldest first, paging with `next`."""
        out: list[Any] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"channel": channel, "limit": limit}
            if after is not None:
                params["after"] = after
            page = await self.page(sid, **params)
            out += page["messages"]
            if len(page["messages"]) < limit:
                return out
            after = page["next"]

    async def data(self, sid: str, channel: str = "", limit: int = 1000) -> list[Any]:
        return [m["data"] for m in await self.envelopes(sid, channel, limit)]

    async def wait_state(self, sid: str, *states: str, timeout: float = 10) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            script = await self.script(sid)
            return script if script["state"] in states else None

        return await until(check, timeout, f"state in {states}")

    async def wait_data(
        self, sid: str, predicate: Callable[[list[Any]], bool], channel: str = "", timeout=10
    ) -> list[Any]:
        async def check() -> list[Any] | None:
            data = await self.data(sid, channel)
            return data if predicate(data) else None

        return await until(check, timeout, f"messages on {channel!r}")


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with server.client() as http:
        yield Api(server, http)


def exit_events(errors: list[Any]) -> list[dict[str, Any]]:
    return [e for e in errors if isinstance(e, dict) and e.get("event") == "exit"]


def assert_iso(value: Any) -> datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    return datetime.fromisoformat(value)


SLEEPER = """
import os, sys, time
print(os.getpid(), flush=True)
time.sleep(60)
"""


# -- output, channels, status --------------------------------------------------------------

CHATTY = r"""
import os, sys, time
import bloomr
for i in range(5):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
bloomr.emit("progress", {"pct": 50})
bloomr.emit("progress", [1, "two", None])
fd = int(os.environ["BLOOMR_EMIT_FD"])
os.write(fd, b"this is not json\n")
os.write(fd, b'{"channel": "bad channel!", "data": 1}\n')
bloomr.emit("progress", {"pct": 100})
print("ready")
time.sleep(60)
"""


async def test_output_reaches_channels_over_http_and_socketio(api: Api, server: Server) -> None:
    sid = await api.create(py(CHATTY), name="chatty")
    before = await api.stream(sid)
    assert before["enabled"] is False
    assert before["script"] == {
        "state": "stopped",
        "pid": None,
        "exit_code": None,
        "signal": None,
        "restarts": 0,
        "started_at": None,
        "enabled": False,
    }
    token = api.tokens[sid]
    recorders: dict[str, Recorder] = {}
    try:
        for channel in ("", "errors", "progress"):
            url = server.socket_url(stream=sid, token=token, channel=channel)
            recorders[channel] = await connect_and_wait(url)

        started = await api.control(sid, "start")
        script = started["script"]
        assert script["state"] == "running"
        assert isinstance(script["pid"], int) and alive(script["pid"])
        assert script["exit_code"] is None and script["signal"] is None
        assert script["restarts"] == 0 and script["enabled"] is True
        assert_iso(script["started_at"])
        assert started["enabled"] is True

        stdout = [f"out {i}" for i in range(5)] + ["ready"]
        stderr = [f"err {i}" for i in range(5)]
        progress = [{"pct": 50}, [1, "two", None], {"pct": 100}]

        # HTTP polling
        assert await api.wait_data(sid, lambda d: "ready" in d) == stdout
        errors = await api.wait_data(sid, lambda d: len(d) >= 7, "errors")
        assert [e for e in errors if isinstance(e, str)] == stderr
        emit_errors = [e for e in errors if isinstance(e, dict)]
        assert [e["event"] for e in emit_errors] == ["emit_error", "emit_error"], errors
        assert "JSON" in emit_errors[0]["message"]
        assert emit_errors[0]["line"] == "this is not json"
        assert "channel" in emit_errors[1]["message"]
        assert len(errors) == 7, errors
        assert await api.wait_data(sid, lambda d: len(d) >= 3, "progress") == progress
        envelopes = await api.envelopes(sid, "progress")
        assert [e["channel"] for e in envelopes] == ["progress"] * 3
        assert all(e["stream"] == sid for e in envelopes)

        # the live subscribers, connected before the start, saw the same in the same order
        await recorders[""].wait_messages(len(stdout))
        assert recorders[""].messages == stdout
        await recorders["errors"].wait_messages(len(errors))
        assert recorders["errors"].messages == errors
        await recorders["progress"].wait_messages(len(progress))
        assert recorders["progress"].messages == progress
        for recorder in recorders.values():
            assert recorder.errors == [] and not recorder.disconnected, recorder.summary()

        # still running after the malformed lines; stop it
        now = await api.script(sid)
        assert now["state"] == "running" and now["pid"] == script["pid"]
        stopped = await api.control(sid, "stop")
        assert stopped["script"]["state"] == "stopped"
        assert stopped["script"]["pid"] is None
        assert stopped["enabled"] is False and stopped["script"]["enabled"] is False
        await until_gone(script["pid"])
        # a requested stop is not a failure: no exit event
        assert exit_events(await api.data(sid, "errors")) == []
    finally:
        for recorder in recorders.values():
            await recorder.close()


async def test_output_edge_cases(api: Api) -> None:
    """Undecodable bytes replaced, a blank line kept, a line over 64 KiB split, CRLF
    stripped, a last line without a newline still delivered at exit."""
    code = r"""
    import sys
    out = sys.stdout.buffer
    out.write(b"caf\xc3\xa9 \xff\xfe end\n")
    out.write(b"\n")
    out.write(b"crlf\r\n")
    out.write(b"x" * 150000 + b"\n")
    out.write(b"no newline")
    out.flush()
    """
    sid = await api.create(py(code))
    await api.control(sid, "start")
    script = await api.wait_state(sid, "exited")
    assert script["exit_code"] == 0
    data = await api.data(sid)
    assert data[0] == "café \ufffd\ufffd end"
    assert data[1:3] == ["", "crlf"]
    pieces = data[3:-1]
    assert len(pieces) == 3, [len(p) for p in pieces]
    assert all(len(p.encode()) <= 64 * 1024 for p in pieces)
    assert "".join(pieces) == "x" * 150000
    assert data[-1] == "no newline"
    assert await api.data(sid, "errors") == []


# -- exits ----------------------------------------------------------------------------------


async def test_exit_zero_is_exited_without_exit_event(api: Api) -> None:
    sid = await api.create(py("print('bye')"))
    await api.control(sid, "start")
    script = await api.wait_state(sid, "exited")
    assert script["exit_code"] == 0 and script["signal"] is None
    assert script["pid"] is None
    assert_iso(script["started_at"])
    assert await api.wait_data(sid, lambda d: d == ["bye"])
    assert await api.data(sid, "errors") == []


async def test_nonzero_exit_is_crashed_with_exit_event(api: Api) -> None:
    code = """
    import sys
    print("boom", file=sys.stderr)
    sys.exit(3)
    """
    sid = await api.create(py(code))
    await api.control(sid, "start")
    script = await api.wait_state(sid, "crashed")
    assert script["exit_code"] == 3 and script["signal"] is None and script["pid"] is None
    errors = await api.wait_data(sid, lambda d: len(d) >= 2, "errors")
    # the exit event comes after everything the script wrote
    assert errors == ["boom", {"event": "exit", "code": 3, "signal": None}]


async def test_killed_by_signal(api: Api) -> None:
    code = """
    import os, signal
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
    sid = await api.create(py(code))
    await api.control(sid, "start")
    script = await api.wait_state(sid, "crashed")
    assert script["signal"] == "SIGKILL" and script["exit_code"] is None
    errors = await api.wait_data(sid, lambda d: len(d) >= 1, "errors")
    assert errors == [{"event": "exit", "code": None, "signal": "SIGKILL"}]
    assert await api.data(sid) == ["about to die"]


async def test_unrunnable_program_is_reported(api: Api, tmp_path: Path) -> None:
    sid = await api.create([str(tmp_path / "no-such-program")])
    started = await api.control(sid, "start")
    assert started["script"]["state"] == "crashed"
    errors = await api.wait_data(sid, lambda d: len(d) >= 1, "errors")
    assert errors[0]["event"] == "spawn_error", errors
    assert "no-such-program" in errors[0]["message"]


# -- restart policies -----------------------------------------------------------------------


async def test_on_failure_restarts_with_backoff(api: Api) -> None:
    code = """
    import sys
    print("run")
    sys.exit(1)
    """
    sid = await api.create(py(code), restart="on-failure")
    await api.control(sid, "start")

    backoff = await api.wait_state(sid, "backoff", timeout=5)
    assert backoff["pid"] is None and backoff["exit_code"] == 1
    until_ts = assert_iso(backoff["backoff_until"])
    assert until_ts > assert_iso(backoff["started_at"])

    def restarted(n: int) -> Callable[[], Awaitable[dict[str, Any] | None]]:
        async def check() -> dict[str, Any] | None:
            script = await api.script(sid)
            return script if script["restarts"] >= n else None

        return check

    # backoff 1 s, then 2 s: two restarts within ~3 s
    first = await until(restarted(1), 5, "restart 1")
    second = await until(restarted(2), 6, "restart 2")
    assert second["started_at"] >= first["started_at"]
    runs = await api.wait_data(sid, lambda d: len(d) >= 3)
    assert set(runs) == {"run"}
    exits = exit_events(await api.data(sid, "errors"))
    assert len(exits) >= 3 and all(e == {"event": "exit", "code": 1, "signal": None} for e in exits)

    # stop during the backoff wait: stays stopped, no more restarts
    await api.wait_state(sid, "backoff")
    stopped = await api.control(sid, "stop")
    assert stopped["script"]["state"] == "stopped"
    assert "backoff_until" not in stopped["script"]
    count = len(await api.data(sid))
    await asyncio.sleep(0.3)
    script = await api.script(sid)
    assert script["state"] == "stopped" and script["pid"] is None
    assert len(await api.data(sid)) == count


async def test_always_restarts_after_clean_exit(api: Api) -> None:
    sid = await api.create(py("print('tick')"), restart="always")
    await api.control(sid, "start")

    async def check() -> dict[str, Any] | None:
        script = await api.script(sid)
        return script if script["restarts"] >= 1 else None

    await until(check, 5, "a restart")
    assert await api.wait_data(sid, lambda d: len(d) >= 2) == ["tick"] * len(await api.data(sid))
    assert exit_events(await api.data(sid, "errors")) == []
    await api.control(sid, "stop")
    assert (await api.script(sid))["state"] == "stopped"


@pytest.mark.parametrize(
    ("policy", "code", "state"),
    [("never", 1, "crashed"), ("on-failure", 0, "exited")],
)
async def test_no_restart_when_policy_says_no(api: Api, policy: str, code: int, state: str) -> None:
    sid = await api.create(py(f"import sys; sys.exit({code})"), restart=policy)
    await api.control(sid, "start")
    await api.wait_state(sid, state)
    if code:
        await api.wait_data(sid, lambda d: len(d) >= 1, "errors")
    await asyncio.sleep(0.3)
    script = await api.script(sid)
    assert script["state"] == state and script["restarts"] == 0, script
    assert "backoff_until" not in script


# -- stop -----------------------------------------------------------------------------------


async def test_stop_kills_a_script_that_ignores_sigterm() -> None:
    code = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
    """
    with running_server(env={"BLOOMR_SCRIPT_GRACE": "1"}) as srv:
        async with srv.client() as http:
            api = Api(srv, http)
            sid = await api.create(py(code))
            pid = (await api.control(sid, "start"))["script"]["pid"]
            await api.wait_data(sid, lambda d: d == ["ready"])
            began = time.monotonic()
            stopped = await asyncio.wait_for(api.control(sid, "stop"), 3 + 2)
            took = time.monotonic() - began
            assert stopped["script"]["state"] == "stopped"
            assert stopped["script"]["signal"] == "SIGKILL"
            assert 0.8 <= took <= 3, took
            assert not alive(pid)


async def test_stop_kills_forked_children(api: Api) -> None:
    code = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    time.sleep(60)
    """
    sid = await api.create(py(code))
    pid = (await api.control(sid, "start"))["script"]["pid"]
    child = int((await api.wait_data(sid, lambda d: len(d) >= 1))[0])
    assert child != pid and alive(child)
    stopped = await api.control(sid, "stop")
    assert stopped["script"]["state"] == "stopped"
    await until_gone(pid, 2)
    await until_gone(child, 2)


async def test_a_node_killed_with_sigkill_takes_its_script_and_children_along() -> None:
    """SPEC §5 "Cluster faults" (issue 12): no script keeps running orphaned. The script
    ignores SIGTERM and SIGHUP, and its child is in its process group."""
    code = """
    import signal, subprocess, sys, time
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, flush=True)
    time.sleep(60)
    """
    with running_server() as srv:
        async with srv.client() as http:
            api = Api(srv, http)
            sid = await api.create(py(code))
            pid = (await api.control(sid, "start"))["script"]["pid"]
            child = int((await api.wait_data(sid, lambda d: len(d) >= 1))[0])
            assert alive(pid) and alive(child)
            srv.process.kill()
            srv.process.wait(5)
            await until_gone(pid, 2)
            await until_gone(child, 2)


# -- control errors and changes ---------------------------------------------------------------


async def test_start_twice_and_without_command_conflict(api: Api) -> None:
    sid = await api.create(py(SLEEPER))
    first = await api.control(sid, "start")
    r = await api.http.post(f"/api/streams/{sid}/start", headers=api.srv.admin)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict"
    assert (await api.script(sid))["pid"] == first["script"]["pid"]
    await api.control(sid, "stop")

    bare = await api.create(name="no command")
    assert (await api.stream(bare))["script"] is None
    for action in ("start", "restart"):
        r = await api.http.post(f"/api/streams/{bare}/{action}", headers=api.srv.admin)
        assert r.status_code == 409, (action, r.text)
        assert r.json()["error"]["code"] == "conflict"

    # two starts at once: one wins
    racing = [api.http.post(f"/api/streams/{sid}/start", headers=api.srv.admin) for _ in "ab"]
    assert sorted(r.status_code for r in await asyncio.gather(*racing)) == [200, 409]
    await api.control(sid, "stop")

    r = await api.http.post("/api/streams/NoSuchOne1/start", headers=api.srv.admin)
    assert r.status_code == 404, r.text
    r = await api.http.post(f"/api/streams/{sid}/start")
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    "fields",
    [
        {"command": ["python3", "-c", "print('a\0b')"]},
        {"command": ["bad\0program"]},
        {"command": []},
        {"command": [""]},
        {"command": "python3 -c pass"},
        {"command": ["python3", 1]},
        {"command": ["true"], "cwd": "/tmp\0x"},
        {"command": ["true"], "env": {"A=B": "x"}},
        {"command": ["true"], "env": {"A": "x\0y"}},
        {"command": ["true"], "restart": "sometimes"},
    ],
)
async def test_invalid_script_fields_are_422(api: Api, fields: dict[str, Any]) -> None:
    r = await api.http.post("/api/streams", json=fields, headers=api.srv.admin)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_failed"

    sid = await api.create(["true"])
    r = await api.http.patch(f"/api/streams/{sid}", json=fields, headers=api.srv.admin)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_failed"
    stream = await api.stream(sid)
    assert stream["command"] == ["true"], stream
    assert stream["cwd"] is None and stream["env"] is None and stream["restart"] == "never"


async def test_patch_command_then_restart_runs_the_new_command(api: Api) -> None:
    v1 = py("import os, time; print('v1', os.getpid(), flush=True); time.sleep(60)")
    v2 = py("import os, time; print('v2', os.getpid(), flush=True); time.sleep(60)")
    sid = await api.create(v1)
    old = (await api.control(sid, "start"))["script"]["pid"]
    await api.wait_data(sid, lambda d: d == [f"v1 {old}"])

    r = await api.http.patch(f"/api/streams/{sid}", json={"command": v2}, headers=api.srv.admin)
    assert r.status_code == 200, r.text
    assert r.json()["command"] == v2
    # the running script is not touched by the change
    assert r.json()["script"]["pid"] == old and alive(old)

    restarted = await api.control(sid, "restart")
    new = restarted["script"]["pid"]
    assert restarted["script"]["state"] == "running" and new != old
    await until_gone(old, 2)
    assert await api.wait_data(sid, lambda d: len(d) >= 2) == [f"v1 {old}", f"v2 {new}"]
    assert exit_events(await api.data(sid, "errors")) == []
    await api.control(sid, "stop")


async def test_removing_the_command_of_a_running_script_stops_it_or_is_refused(api: Api) -> None:
    sid = await api.create(py(SLEEPER))
    pid = (await api.control(sid, "start"))["script"]["pid"]
    r = await api.http.patch(f"/api/streams/{sid}", json={"command": None}, headers=api.srv.admin)
    try:
        if r.status_code == 200:  # accepted: the script it described must not run on
            await until_gone(pid, 3)
            assert r.json()["enabled"] is False
        else:  # or refused while it runs, and still controllable
            assert r.status_code in (409, 422), r.text
            assert (await api.control(sid, "stop"))["script"]["state"] == "stopped"
    finally:  # don't leave it behind in the shared server
        await api.http.patch(
            f"/api/streams/{sid}", json={"command": py(SLEEPER)}, headers=api.srv.admin
        )
        await api.http.post(f"/api/streams/{sid}/stop", headers=api.srv.admin)


async def test_delete_stream_stops_its_script(api: Api) -> None:
    sid = await api.create(py(SLEEPER))
    pid = (await api.control(sid, "start"))["script"]["pid"]
    await api.wait_data(sid, lambda d: d == [str(pid)])
    r = await api.http.delete(f"/api/streams/{sid}", headers=api.srv.admin)
    assert r.status_code == 204, r.text
    await until_gone(pid, 2)
    r = await api.http.get(f"/api/streams/{sid}", headers=api.srv.admin)
    assert r.status_code == 404


# -- bloomr restarts -------------------------------------------------------------------------


TICKER = """
import itertools, os, time
for i in itertools.count():
    print(os.getpid(), i, flush=True)
    time.sleep(0.2)
"""


async def test_scripts_survive_a_bloomr_restart(tmp_path: Path) -> None:
    with running_server(data_dir=tmp_path) as srv:
        async with srv.client() as http:
            api = Api(srv, http)
            sid = await api.create(py(TICKER))
            idle = await api.create(py(SLEEPER))  # started, then stopped: stays stopped
            old = (await api.control(sid, "start"))["script"]["pid"]
            await api.control(idle, "start")
            await api.control(idle, "stop")
            await api.wait_data(sid, lambda d: len(d) >= 2)
    # stopping bloomr stopped its script
    await until_gone(old, 2)

    with running_server(data_dir=tmp_path) as srv:
        async with srv.client() as http:
            api2 = Api(srv, http)
            api2.tokens = api.tokens  # tokens live in the data dir too
            script = await api2.wait_state(sid, "running", timeout=5)
            new = script["pid"]
            assert isinstance(new, int) and new != old and alive(new)
            assert script["enabled"] is True
            assert_iso(script["started_at"])

            def fresh(d: list[Any]) -> bool:
                return sum(line.startswith(f"{new} ") for line in d) >= 2

            lines = await api2.wait_data(sid, fresh, timeout=5)
            pids = [int(line.split()[0]) for line in lines]
            split = pids.index(new)
            assert split >= 2 and set(pids[:split]) == {old} and set(pids[split:]) == {new}
            counters = [int(line.split()[1]) for line in lines]
            assert counters[:split] == list(range(split)), lines
            assert counters[split:] == list(range(len(lines) - split)), lines

            idle_script = await api2.script(idle)
            assert idle_script["state"] == "stopped" and idle_script["pid"] is None
            assert idle_script["enabled"] is False
    await until_gone(new, 2)


# -- flood ----------------------------------------------------------------------------------

FLOOD_LINES = 200_000
FLOOD = f"""
import sys
for start in range(0, {FLOOD_LINES}, 2000):
    sys.stdout.write("".join(f"{{i}}\\n" for i in range(start, start + 2000)))
sys.stdout.flush()
"""


async def test_flooding_script_is_stored_in_order_and_server_stays_responsive() -> None:
    """200k lines as fast as Python writes them: all stored, in order; meanwhile /healthz
    answers quickly, memory stays bounded, and a reader pages through the history (pages
    of 10000, following `next`) as it grows."""
    with running_server() as srv:
        async with srv.client() as http:
            api = Api(srv, http)
            sid = await api.create(py(FLOOD))
            baseline = rss_kib(srv.process.pid)
            done = asyncio.Event()
            read: list[Any] = []

            async def reader() -> None:
                after: str | None = None
                while True:
                    finished = done.is_set()  # before the page: then an empty page is the end
                    params: dict[str, Any] = {"channel": "", "limit": 10000}
                    if after is not None:
                        params["after"] = after
                    page = await api.page(sid, **params)
                    read.extend(m["data"] for m in page["messages"])
                    after = page["next"]
                    if not page["messages"]:
                        if finished:
                            return
                        await asyncio.sleep(0.1)

            async def monitor() -> tuple[float, int, dict[str, Any]]:
                slowest, peak = 0.0, baseline
                while True:
                    began = time.monotonic()
                    r = await http.get("/healthz")
                    slowest = max(slowest, time.monotonic() - began)
                    assert r.status_code == 200
                    peak = max(peak, rss_kib(srv.process.pid))
                    script = await api.script(sid)
                    if script["state"] != "running":
                        done.set()
                        return slowest, peak, script
                    await asyncio.sleep(0.02)

            await api.control(sid, "start")
            reading = asyncio.create_task(reader())
            try:
                slowest, peak, script = await asyncio.wait_for(monitor(), 40)
                await asyncio.wait_for(reading, 20)
            finally:
                reading.cancel()
            assert script["state"] == "exited" and script["exit_code"] == 0, script
            assert slowest < 1.5, f"/healthz took {slowest:.2f}s during the flood"
            # reading is paced by storing (about 6 MiB of growth here); a server that
            # buffered the whole flood as messages would hold several times more
            growth_mib = (peak - baseline) / 1024
            assert growth_mib < 40, f"server RSS grew {growth_mib:.0f} MiB"

            assert len(read) == FLOOD_LINES
            assert read[0] == "0" and read[-1] == str(FLOOD_LINES - 1)
            assert read == [str(i) for i in range(FLOOD_LINES)]
            assert (await api.page(sid, channel="errors"))["messages"] == []

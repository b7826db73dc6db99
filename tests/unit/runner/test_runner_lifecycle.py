"""Exit reporting, restart policies with backoff, stop, spawn errors: real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from runner_helpers import Collector, Factory, proc_alive, py, wait_until

from bloomr.runner import ScriptError, ScriptSpec, Supervisor

SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


async def started(sup_collector: Collector, count: int = 1) -> None:
    await wait_until(lambda: sup_collector.on("").count("ready") >= count)


# -- exits ---------------------------------------------------------------------------


async def test_a_clean_exit_is_exited_and_reports_nothing_on_errors(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(py("print('bye')"))
    await sup.start()
    await wait_until(lambda: sup.status().state == "exited")
    status = sup.status().to_json()
    assert status["exit_code"] == 0 and status["signal"] is None and status["pid"] is None
    assert collector.on("") == ["bye"] and collector.on("errors") == []


async def test_a_non_zero_exit_is_reported_after_all_output(
    supervise: Factory, collector: Collector
) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    sup = supervise(py(code))
    await sup.start()
    await wait_until(lambda: sup.status().state == "crashed")
    assert collector.on("errors") == ["err", {"event": "exit", "code": 3, "signal": None}]
    assert [d.channel for d in collector.drafts][-1] == "errors"  # the very last message
    assert sup.status().exit_code == 3


async def test_death_by_a_signal_is_reported_with_its_name(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(py(SLEEPER))
    await sup.start()
    await started(collector)
    pid = sup.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # not stop(): an outside kill is a crash
    await wait_until(lambda: sup.status().state == "crashed")
    assert collector.events("exit") == [{"event": "exit", "code": None, "signal": "SIGKILL"}]
    assert sup.status().signal == "SIGKILL"


# -- restart policies ----------------------------------------------------------------

COUNTED = r"""
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1])
with runs.open("a") as f:
    f.write(f"{time.monotonic()}\n")
n = len(runs.read_text().splitlines())
print(f"run {n}")
sys.exit(int(sys.argv[2]) if n <= int(sys.argv[3]) else 0)
"""


def starts(runs: Path) -> list[float]:
    return [float(t) for t in runs.read_text().splitlines()] if runs.exists() else []


async def test_never_does_not_restart(supervise: Factory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sup = supervise(py(COUNTED, str(runs), "1", "99"), restart="never", backoff_initial=0.02)
    await sup.start()
    await wait_until(lambda: sup.status().state == "crashed")
    await asyncio.sleep(0.2)  # ten backoffs' worth: nothing may happen
    assert len(starts(runs)) == 1 and sup.status().state == "crashed"


async def test_on_failure_restarts_with_doubling_capped_backoff_until_success(
    supervise: Factory, collector: Collector, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    sup = supervise(
        py(COUNTED, str(runs), "1", "4"),  # fails 4 times, then exits 0
        restart="on-failure",
        backoff_initial=0.05,
        backoff_max=0.1,
    )
    await sup.start()
    await wait_until(lambda: len(starts(runs)) == 5 and sup.status().state == "exited")
    times = starts(runs)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= d for g, d in zip(gaps, [0.05, 0.1, 0.1, 0.1], strict=True)), gaps
    assert sup.status().restarts == 4
    assert collector.on("") == [f"run {n}" for n in range(1, 6)]
    assert len(collector.events("exit")) == 4  # the clean exit is not reported


async def test_always_restarts_even_after_a_clean_exit(supervise: Factory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sup = supervise(py(COUNTED, str(runs), "0", "0"), restart="always", backoff_initial=0.02)
    await sup.start()
    await wait_until(lambda: sup.status().restarts >= 3)
    await sup.stop()
    assert sup.status().state == "stopped"
    count = len(starts(runs))
    await asyncio.sleep(0.1)
    assert len(starts(runs)) == count  # stop() cancelled any pending restart


async def test_backoff_is_reported_and_stop_cancels_the_restart(
    supervise: Factory, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    sup = supervise(py(COUNTED, str(runs), "1", "99"), restart="always", backoff_initial=30)
    await sup.start()
    await wait_until(lambda: sup.status().state == "backoff")
    status = sup.status().to_json()
    until = datetime.fromisoformat(status["backoff_until"]).timestamp()
    assert 25 < until - time.time() <= 30
    assert status["exit_code"] == 1
    began = time.monotonic()
    await sup.stop()
    assert time.monotonic() - began < 1
    assert sup.status().state == "stopped" and "backoff_until" not in sup.status().to_json()
    assert len(starts(runs)) == 1


async def test_start_during_backoff_starts_now(supervise: Factory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sup = supervise(py(COUNTED, str(runs), "1", "1"), restart="on-failure", backoff_initial=30)
    await sup.start()
    await wait_until(lambda: sup.status().state == "backoff")
    await sup.start()
    await wait_until(lambda: sup.status().state == "exited")  # the second run succeeds
    assert len(starts(runs)) == 2 and sup.status().restarts == 0


# -- stop ----------------------------------------------------------------------------


async def test_stop_is_not_a_crash(supervise: Factory, collector: Collector) -> None:
    sup = supervise(py(SLEEPER), restart="always")
    await sup.start()
    await started(collector)
    await sup.stop()
    status = sup.status()
    assert (status.state, status.signal, status.pid) == ("stopped", "SIGTERM", None)
    assert collector.on("errors") == []  # no exit event, no restart


async def test_stop_kills_a_script_that_ignores_sigterm_after_the_grace(
    supervise: Factory, collector: Collector
) -> None:
    code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    sup = supervise(py(code), grace_seconds=0.3)
    await sup.start()
    await started(collector)
    began = time.monotonic()
    await sup.stop()
    assert 0.3 <= time.monotonic() - began < 3
    assert (sup.status().state, sup.status().signal) == ("stopped", "SIGKILL")
    assert collector.events("exit") == []


FORKER = r"""
import subprocess, time
# children that ignore SIGTERM: only the group-wide SIGKILL can end them
kids = [subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
        for _ in range(2)]
print(*(k.pid for k in kids), flush=True)
time.sleep(60)
"""


async def test_stop_kills_the_children_of_the_script(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(py(FORKER), grace_seconds=0.3)
    await sup.start()
    await wait_until(lambda: collector.on(""))
    kids = [int(pid) for pid in collector.on("")[0].split()]
    assert all(proc_alive(pid) for pid in kids)
    await sup.stop()
    await wait_until(lambda: not any(proc_alive(pid) for pid in kids), timeout=2)
    assert sup.status().state == "stopped"


async def test_what_a_script_leaves_behind_in_its_group_goes_when_it_exits(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(["sh", "-c", "sleep 60 & echo $!"], grace_seconds=5)
    await sup.start()
    # well within the grace: the leftover dies on SIGTERM, and its zombie (until init
    # reaps it) does not count as alive
    await wait_until(lambda: sup.status().state == "exited", timeout=2.5)
    (leftover,) = (int(pid) for pid in collector.on(""))
    await wait_until(lambda: not proc_alive(leftover), timeout=2)


async def test_close_stops_the_script_and_refuses_a_new_start(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(py(SLEEPER))
    await sup.start()
    await started(collector)
    pid = sup.status().pid
    assert pid is not None
    await sup.close()
    assert sup.status().state == "stopped" and not proc_alive(pid)
    with pytest.raises(ScriptError) as err:
        await sup.start()
    assert err.value.code == "conflict"


# -- start, restart, spec ------------------------------------------------------------


async def test_starting_a_running_script_is_a_conflict(
    supervise: Factory, collector: Collector
) -> None:
    sup = supervise(py(SLEEPER))
    await sup.start()
    with pytest.raises(ScriptError) as err:
        await sup.start()
    assert err.value.code == "conflict"
    assert sup.status().state == "running"


async def test_status_while_running(supervise: Factory, collector: Collector) -> None:
    sup = supervise(py(SLEEPER))
    assert sup.status().to_json() == {
        "state": "stopped", "pid": None, "exit_code": None, "signal": None,
        "restarts": 0, "started_at": None,
    }  # fmt: skip
    await sup.start()
    status = sup.status().to_json()
    assert status["state"] == "running" and proc_alive(status["pid"])
    assert status["started_at"].endswith("Z") and status["exit_code"] is None


async def test_restart_runs_the_updated_spec(supervise: Factory, collector: Collector) -> None:
    sup = supervise(py(SLEEPER))
    await sup.start()
    await started(collector)
    first = sup.status().pid
    sup.update_spec(ScriptSpec(py("print('new command')")))
    assert sup.status().pid == first  # takes effect at the next start only
    await sup.restart()
    await wait_until(lambda: sup.status().state == "exited")
    assert collector.on("") == ["ready", "new command"]
    assert collector.on("errors") == []  # the stop inside restart is not a crash


async def test_a_restart_is_never_seen_as_stopped(collector: Collector) -> None:
    """Whoever looks at each state change (the reconciler, which reports it to other
    nodes' API calls) sees the restart pass through stopping and starting only."""
    seen: list[str] = []
    sup = Supervisor("TestStream", ScriptSpec(py(SLEEPER)), collector, grace_seconds=2.0,
                     on_state=lambda: asyncio.get_running_loop().call_soon(look))  # fmt: skip

    def look() -> None:  # a turn of the loop later, as the reconciler does
        seen.append(sup.status().state)

    try:
        await sup.start()
        await started(collector)
        seen.clear()
        await sup.restart()
        await asyncio.sleep(0)
        assert "stopped" not in seen and seen[-1] == "running", seen
        assert sup.status().state == "running"
    finally:
        await sup.close()


@pytest.mark.parametrize(
    ("command", "cwd", "expected"),
    [
        (["/nonexistent/program"], None, "No such file or directory"),
        ([__file__], None, "Permission denied"),  # not executable
        (["true"], "/nonexistent/dir", "No such file or directory"),
    ],
)
async def test_a_command_that_cannot_start_is_reported_not_raised(
    supervise: Factory, collector: Collector, command: list[str], cwd: str | None, expected: str
) -> None:
    sup = supervise(command, cwd=cwd, restart="always")
    await sup.start()  # does not raise
    assert sup.status().state == "crashed" and sup.status().pid is None
    (event,) = collector.on("errors")
    assert event["event"] == "spawn_error" and expected in event["message"]


@pytest.mark.parametrize(
    "spec",
    [
        {"command": []},
        {"command": "echo hi"},
        {"command": ["echo", "a\0b"]},
        {"command": [""]},
        {"command": ["echo"], "env": {"A=B": "x"}},
        {"command": ["echo"], "env": {"A": 1}},
        {"command": ["echo"], "restart": "sometimes"},
    ],
)
def test_a_spec_that_cannot_run_is_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ScriptError) as err:
        ScriptSpec(**spec)  # type: ignore[arg-type]
    assert err.value.code == "invalid_argument"

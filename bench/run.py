"""bloomr's benchmark: bloomr (embedded default, history on) against a Node socket.io 4.8
peer and a plain python-socketio peer, in the same run, driven by one load generator.

    .venv/bin/python bench/run.py            # everything, writes bench/RESULTS.md (~25 min)
    .venv/bin/python bench/run.py --quick    # a reduced set, for a fast check (~8 min)

Options: --only SCENARIO[,...], --targets bloomr,node,pysio, --out DIR (where
results.json, RESULTS.md and fanout.png go; default bench/). See bench/README.md for what
each scenario measures. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
NODE = shutil.which("node") or "node"
ADMIN_KEY = "bench-admin-key"
TARGETS = ("bloomr", "node", "pysio", "cluster")
# the full run's: `cluster` (two bloomr nodes on the machine's Redis and PostgreSQL,
# publishes through one, subscribers on the other) is asked for by name
DEFAULT_TARGETS = ("bloomr", "node", "pysio")
# --node-recovery: Node's server with socket.io's connection state recovery on, which
# (as bloomr, SPEC's resume) appends an offset to every broadcast and keeps the packets
NODE_RECOVERY = False
CLK_TCK = os.sysconf("SC_CLK_TCK")
_URL_RE = re.compile(r"listening on (http://\S+)")


def log(*parts: Any) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


# -- set-up -----------------------------------------------------------------------------


def ensure_dependencies() -> None:
    """The pinned Node packages (npm ci) and the bench-only Python requirements."""
    if not (BENCH / "node_modules" / "socket.io" / "package.json").exists():
        log("installing the pinned Node packages (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    try:
        import httpx  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing bench/requirements.txt into", sys.prefix)
        subprocess.run(
            [PYTHON, "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements.txt")],
            check=True,
        )


def raise_fd_limit() -> int:
    """10 000 connections need more than the usual 1024 descriptors, here and in children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    target: str
    process: subprocess.Popen[str]
    url: str
    data_dir: Path | None = None
    stream: str | None = None
    token: str | None = None
    output: list[str] = field(default_factory=list)
    # a cluster: its other node, which the publisher posts to (`url` is the subscribers')
    publisher: subprocess.Popen[str] | None = None
    publish_url: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid] + ([self.publisher.pid] if self.publisher is not None else [])

    def cpu_seconds(self) -> float:
        """utime + stime of the server (every node of a cluster; not Redis nor
        PostgreSQL) and its waited-for children, from /proc/PID/stat."""
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        return total / CLK_TCK

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return total

    def loadgen_args(self) -> list[str]:
        target = "bloomr" if self.target == "cluster" else self.target
        args = ["--target", target, "--url", self.url]
        if self.publish_url:
            args += ["--publish-url", self.publish_url]
        if self.stream:
            args += ["--stream", self.stream]
        if self.token:
            args += ["--token", self.token]
        return args

    # bloomr's HTTP API (admin)
    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = httpx.request(method, self.url + path, json=body, headers=headers, timeout=timeout)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def new_stream(self, **fields: Any) -> tuple[str, str]:
        # retention past anything a scenario writes: the store scenario's count pages
        # through all of it, and a trim under way would take its cursor away
        keep = {"retention": {"max_messages": 100_000_000}}
        stream = self.api("POST", "/api/streams", {"name": "bench", **keep, **fields})
        token = self.api(
            "POST", "/api/tokens", {"streams": [stream["id"]], "scopes": ["subscribe", "publish"]}
        )
        return stream["id"], token["token"]


def _command(target: str, data_dir: Path | None) -> list[str]:
    if target == "bloomr":
        assert data_dir is not None
        return [PYTHON, "-m", "bloomr", "serve", "--port", "0", "--data-dir", str(data_dir)]
    if target == "node":
        recovery = ["--recovery"] if NODE_RECOVERY else []
        return [NODE, str(BENCH / "node_server.mjs"), "--port", "0", *recovery]
    return [PYTHON, str(BENCH / "pysio_server.py"), "--port", "0"]


@contextlib.contextmanager
def running(target: str) -> Iterator[Server]:
    """A fresh server (bloomr: in a fresh data dir, with a stream and a token; a cluster:
    two fresh nodes under a cluster name of their own, its keys and schema dropped
    afterwards)."""
    with contextlib.ExitStack() as stack:
        if target == "cluster":
            server = _cluster(stack)
        else:
            data_dir = _data_dir(stack) if target == "bloomr" else None
            process, url, output = stack.enter_context(_started(target, _command(target, data_dir)))
            server = Server(target, process, url, data_dir, output=output)
        if target in ("bloomr", "cluster"):
            server.stream, server.token = server.new_stream()
        time.sleep(0.5)  # let start-up work settle before any baseline is taken
        yield server


def _data_dir(stack: contextlib.ExitStack) -> Path:
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bloomr-b-")))


@contextlib.contextmanager
def _started(
    target: str, command: list[str]
) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """A server process, its URL once it listens, and what it printed; stopped after."""
    env = {**os.environ, "BLOOMR_ADMIN_KEY": ADMIN_KEY}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    output: list[str] = []
    watchdog = threading.Timer(30, process.kill)  # a server that never listens
    watchdog.start()
    try:
        url = _wait_url(process, output)
        watchdog.cancel()
        yield process, url, output
    finally:
        watchdog.cancel()
        _stop(process)
        if process.returncode not in (0, -signal.SIGTERM, None):
            log(f"{target} exited with {process.returncode}; last output:")
            for line in output[-20:]:
                log("  ", line.rstrip())


def _cluster(stack: contextlib.ExitStack) -> Server:
    """Two bloomr nodes on the Redis and PostgreSQL the tests use (tests/backends.py:
    `BLOOMR_TEST_REDIS_URL`, `BLOOMR_TEST_DATABASE`), under a key prefix and a schema of
    their own: subscribers on the first, publishes through the second, so every message
    crosses Redis."""
    sys.path.insert(0, str(ROOT / "tests"))
    import backends

    name = "bench_" + uuid.uuid4().hex[:10]
    # registered first, so it runs after both nodes stop
    stack.callback(lambda: asyncio.run(_forget_cluster(backends, name)))
    nodes = []
    for _ in range(2):
        command = [*_command("bloomr", _data_dir(stack)), "--redis", backends.REDIS_URL]
        command += ["--database", backends.PG_DSN, "--cluster-name", name]
        nodes.append(stack.enter_context(_started("cluster", command)))
    (process, url, output), (publisher, publish_url, _) = nodes
    server = Server("cluster", process, url, output=output)
    server.publisher, server.publish_url = publisher, publish_url
    return server


async def _forget_cluster(backends: Any, name: str) -> None:
    """The cluster's Redis keys and PostgreSQL schema (only those: both are shared)."""
    await backends.delete_redis_prefix(name)
    await backends.drop_schema(backends.PgSchema(backends.PG_DSN, name))


def _wait_url(process: subprocess.Popen[str], output: list[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        match = _URL_RE.search(line)
        if match:

            def drain() -> None:
                assert process.stdout is not None
                for rest in process.stdout:
                    output.append(rest)

            threading.Thread(target=drain, daemon=True).start()
            return match.group(1)
    raise RuntimeError("server exited before listening:\n" + "".join(output))


def _stop(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the load generator -------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


QUIET_MAX_WAIT = 20.0  # seconds; --quick waits less


def wait_for_quiet(threshold: float = 0.5) -> float:
    """Other work shares this machine: before a run, wait (at most `max_wait` s) for a
    second in which less than `threshold` cores were busy. Returns the last reading."""
    deadline = time.monotonic() + QUIET_MAX_WAIT
    while True:
        before = machine_busy_seconds()
        time.sleep(1)
        busy = machine_busy_seconds() - before
        if busy < threshold or time.monotonic() > deadline:
            return busy


def loadgen(
    server: Server, args: list[str], on_event: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run loadgen.mjs against `server`; call `on_event` for each JSON line; return the
    result line. The server's CPU time is sampled at steady_start and steady_end."""
    quiet = wait_for_quiet()
    command = [NODE, str(BENCH / "loadgen.mjs"), *server.loadgen_args(), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=BENCH)
    assert process.stdout is not None
    result: dict[str, Any] | None = None
    cpu: dict[str, float] = {}
    try:
        for line in process.stdout:
            event = json.loads(line)
            kind = event["event"]
            if kind in ("steady_start", "steady_end"):
                cpu[kind] = server.cpu_seconds()
                cpu[kind + "_wall"] = time.monotonic()
                cpu[kind + "_machine"] = machine_busy_seconds()
                cpu[kind + "_loadgen_main"] = process_cpu_seconds(process.pid)
            elif kind == "result":
                result = event
            if on_event is not None:
                on_event(event)
        process.wait(60)
    finally:
        _stop(process)
    if result is None:
        raise RuntimeError(f"loadgen failed ({process.returncode}): {' '.join(args)}")
    result["machine_busy_before"] = quiet
    if "steady_end" in cpu:
        result["server_cpu_s"] = cpu["steady_end"] - cpu["steady_start"]
        wall = cpu["steady_end_wall"] - cpu["steady_start_wall"]
        result["server_cpu_util"] = result["server_cpu_s"] / wall
        machine = (cpu["steady_end_machine"] - cpu["steady_start_machine"]) / wall
        main = (cpu["steady_end_loadgen_main"] - cpu["steady_start_loadgen_main"]) / wall
        ours = result["server_cpu_util"] + main + sum(result.get("loadgen_cpu_util") or [0])
        result["machine_cores"] = machine
        # Cores busy with something else than this server and this load generator.
        result["other_cores"] = max(0.0, machine - ours)
    return result


# -- scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fanout:
    subs: int
    rate: int
    batch: int
    procs: int
    warmup: float = 3
    duration: float = 10
    rounds: int = 1
    pad: int = 0  # bytes of padding in each message's data

    def args(self) -> list[str]:
        return [
            "--mode", "fanout", "--subs", str(self.subs), "--rate", str(self.rate),
            "--batch", str(self.batch), "--procs", str(self.procs),
            "--warmup", str(self.warmup), "--duration", str(self.duration),
            "--pad", str(self.pad),
        ]  # fmt: skip


def fanout_once(target: str, plan: Fanout, stall_seconds: float | None = None) -> dict[str, Any]:
    """One fan-out run on a fresh server; with `stall_seconds`, one more client that
    connects first and then stops reading."""
    with running(target) as server:
        rss_before = server.rss_kib()
        stall = start_stall_client(server, stall_seconds) if stall_seconds else None
        result = loadgen(server, plan.args())
        result["server_rss_kib"] = {"before": rss_before, "end": server.rss_kib()}
        if stall is not None:
            result["stall_client"] = finish_stall_client(stall)
    return with_cpu_per_message(result)


def with_cpu_per_message(result: dict[str, Any]) -> dict[str, Any]:
    delivered = result.get("delivered_in_window") or 0
    cpu = result.get("server_cpu_s")
    result["cpu_us_per_msg"] = cpu * 1e6 / delivered if cpu is not None and delivered else None
    return result


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# loadgen.mjs's latency histogram: bucket i holds latencies of about expm1((i + 0.5) /
# 100) microseconds (log buckets, ~1 % wide)
_BUCKETS_PER_E = 100


def latency_quantile(hists: list[dict[str, int]], q: float) -> float | None:
    """A quantile, in ms, of every sample of several rounds together (their histograms
    added up): with a p99 made of a few stalls per round, pooling rounds is steadier
    than the median of their p99s."""
    pooled: dict[int, int] = {}
    for hist in hists:
        for bucket, count in hist.items():
            pooled[int(bucket)] = pooled.get(int(bucket), 0) + count
    total = sum(pooled.values())
    if not total:
        return None
    rank, seen = math.ceil(q * total), 0
    for bucket in sorted(pooled):
        seen += pooled[bucket]
        if seen >= rank:
            return math.expm1((bucket + 0.5) / _BUCKETS_PER_E) / 1000
    return None


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one fan-out: the median of each figure (loss, duplicates and
    disconnections summed, so a single bad round shows), and latency quantiles of all
    rounds' samples pooled."""
    lat = [r.get("latency_ms") or {} for r in runs]
    hists = [r["latency_hist"] for r in runs if r.get("latency_hist")]
    p99s = [x["p99"] for x in lat if x.get("p99") is not None]
    return {
        "rounds": len(runs),
        "pooled_p50_ms": latency_quantile(hists, 0.5),
        "pooled_p99_ms": latency_quantile(hists, 0.99),
        "p99_range_ms": [min(p99s), max(p99s)] if p99s else None,
        "delivered_per_s": _median([r["delivered_per_s"] for r in runs]),
        "offered_per_s": _median([r["offered_per_s"] for r in runs]),
        "publish_rate_achieved": _median([r["publish_rate_achieved"] for r in runs]),
        "p50_ms": _median([x.get("p50") for x in lat]),
        "p99_ms": _median([x.get("p99") for x in lat]),
        "max_ms": _median([x.get("max") for x in lat]),
        "cpu_us_per_msg": _median([r.get("cpu_us_per_msg") for r in runs]),
        "server_cpu_util": _median([r.get("server_cpu_util") for r in runs]),
        "loadgen_cpu_util": _median([sum(r["loadgen_cpu_util"]) for r in runs]),
        "loadgen_proc_max": _median([max(r["loadgen_cpu_util"]) for r in runs]),
        "other_cores": _median([r.get("other_cores") for r in runs]),
        "lost": sum(r["lost_total"] for r in runs),
        "subs_with_loss": max(r["subs_with_loss"] for r in runs),
        "dups": sum(r["dup_total"] for r in runs),
        "order_mismatch": sum(r["order_mismatch_subs"] for r in runs),
        "disconnected": sum(r["disconnected_subs"] for r in runs),
        "not_ready": sum(r["subscribers"] - r["ready"] for r in runs),
        "publish_failures": sum(sum(r["publish_failures"].values()) for r in runs),
        "complete": all(r["complete"] for r in runs),
        "rss_growth_mib": _median(
            [(r["server_rss_kib"]["end"] - r["server_rss_kib"]["before"]) / 1024 for r in runs]
        ),
        "warnings": _merge_counts([r["warnings"] for r in runs]),
        "errors": _merge_counts([r["errors"] for r in runs]),
    }


def _merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _rotated(targets: list[str], n: int) -> list[str]:
    """Round n starts with a different server, so no server always runs first."""
    k = n % len(targets)
    return targets[k:] + targets[:k]


def scenario_fanout(targets: list[str], plans: list[Fanout]) -> dict[str, Any]:
    """Delivered/s, latency, CPU and loss against the number of subscribers."""
    points = []
    for plan in plans:
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        for n in range(plan.rounds):
            for target in _rotated(targets, n):
                log(f"fanout {plan.subs} subs x {plan.rate} msg/s (batch {plan.batch}): {target}")
                runs[target].append(fanout_once(target, plan))
                log("  ", summary(runs[target][-1]))
        point = {"plan": asdict(plan), "runs": runs}
        point["median"] = {t: combine(runs[t]) for t in targets}
        for run in (r for t in targets for r in runs[t]):
            run.pop("latency_hist", None)  # pooled into the medians; too long to keep
        points.append(point)
    return {"points": points}


def summary(r: dict[str, Any]) -> str:
    lat = r.get("latency_ms") or {}
    return (
        f"delivered {r['delivered_per_s']:.0f}/s of {r['offered_per_s']:.0f} offered "
        f"(published {r['publish_rate_achieved']:.0f}/s), "
        f"p50 {fmt(lat.get('p50'))} p99 {fmt(lat.get('p99'))} max {fmt(lat.get('max'))} ms, "
        f"cpu {fmt(r.get('cpu_us_per_msg'))} us/msg ({fmt(r.get('server_cpu_util'), 2)} cores), "
        f"lost {r['lost_total']} dup {r['dup_total']} disc {r['disconnected_subs']} "
        f"loadgen {[round(x, 2) for x in r['loadgen_cpu_util']]}, "
        f"others {fmt(r.get('other_cores'), 2)} cores"
    )


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def scenario_stall(targets: list[str], plan: Fanout) -> dict[str, Any]:
    """The same fan-out with and without one more client that stops reading (connected
    before the subscribers; it sleeps until after the measured window)."""
    stall_seconds = plan.warmup + plan.duration + 3
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {"baseline": [], "stalled": []} for t in targets
    }
    for n in range(plan.rounds):
        for target in _rotated(targets, n):
            for stalled in (False, True) if n % 2 == 0 else (True, False):
                kind = "stalled" if stalled else "baseline"
                log(f"stall ({kind}) {plan.subs} subs x {plan.rate} msg/s pad {plan.pad}: {target}")
                result = fanout_once(target, plan, stall_seconds if stalled else None)
                runs[target][kind].append(result)
                log("  ", summary(result), result.get("stall_client", ""))
    median: dict[str, Any] = {}
    for target in targets:
        base = combine(runs[target]["baseline"])
        stalled = combine(runs[target]["stalled"])
        clients = [r["stall_client"] for r in runs[target]["stalled"]]
        median[target] = {
            "baseline": base,
            "stalled": stalled,
            "ratio": _ratio(stalled["delivered_per_s"], base["delivered_per_s"]),
            "p99_ratio": _ratio(stalled["p99_ms"], base["p99_ms"]),
            "stall_client_cut": sum(1 for c in clients if c.get("server_closed")),
            "stall_client_runs": len(clients),
        }
    return {"plan": asdict(plan), "runs": runs, "median": median}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def start_stall_client(server: Server, seconds: float) -> subprocess.Popen[str]:
    """bench/stall_client.py on the same stream (room) as the subscribers; returns once it
    has joined and stopped reading."""
    query = ["--query", f"stream={server.stream or 'bench'}"]
    if server.token:
        query += ["--query", f"token={server.token}"]
    command = [PYTHON, str(BENCH / "stall_client.py"), server.url, *query]
    process = subprocess.Popen(
        [*command, "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    if '"stalled"' not in first:
        raise RuntimeError(f"the stall client did not connect: {first!r}")
    return process


def finish_stall_client(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=60)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return lines[-1] if lines else {"error": "no result"}


def scenario_idle(targets: list[str], connections: int, procs: int) -> dict[str, Any]:
    """Server memory per idle websocket connection: VmRSS before and after."""
    out: dict[str, Any] = {"connections": connections}
    args = ["--mode", "idle", "--subs", str(connections), "--procs", str(procs)]
    args += ["--hold", "1", "--connect-concurrency", "100"]
    for target in targets:
        log(f"idle: {connections} connections to {target}")
        with running(target) as server:
            before = server.rss_kib()
            after = rss_when_connected(server, args)
            result = after.pop("result")
        result["rss_before_kib"] = before
        result["rss_after_kib"] = after.get("rss")
        if after.get("rss") and result["connected"]:
            result["kib_per_connection"] = (after["rss"] - before) / result["connected"]
        keys = ("connected", "connect_seconds", "kib_per_connection")
        log("  ", {k: result.get(k) for k in keys})
        out[target] = result
    return out


def rss_when_connected(server: Server, args: list[str]) -> dict[str, Any]:
    """Run the idle loadgen; VmRSS 3 s after every connection completed."""
    sample: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "connected":
            time.sleep(3)  # let the connections settle
            sample["rss"] = server.rss_kib()

    sample["result"] = loadgen(server, args, on_event)
    return sample


def scenario_replay(count: int, repeat: int) -> dict[str, Any]:
    """bloomr only: connect with replayLimit=count after publishing count messages."""
    log(f"replay: {count} messages to one client, {repeat} times")
    with running("bloomr") as server:
        result = loadgen(
            server, ["--mode", "replay", "--count", str(count), "--repeat", str(repeat)]
        )
    runs = result["runs"]
    ok = [r for r in runs if r["end"] == "replay_end" and r["count"] == count and r["inOrder"]]
    times = [r["replayEndMs"] for r in ok]
    result["ok_runs"] = len(ok)
    if times:
        result["replay_end_ms"] = {
            "min": min(times),
            "median": statistics.median(times),
            "max": max(times),
        }
        result["connect_ms_median"] = statistics.median(r["connectMs"] for r in ok)
    log("  ", result.get("replay_end_ms"), f"{len(ok)}/{len(runs)} complete and in order")
    return result


def scenario_store(batch: int, concurrency: int, duration: float) -> dict[str, Any]:
    """bloomr only: HTTP batch publish into the store, back to back."""
    log(f"store: batches of {batch} from {concurrency} clients")
    with running("bloomr") as server:
        args = ["--mode", "store", "--batch", str(batch), "--concurrency", str(concurrency)]
        args += ["--warmup", "2", "--duration", str(duration)]
        result = loadgen(server, args)
        check = count_stored(server, server.stream or "")
    result["stored_total_checked"] = check
    if result.get("server_cpu_s") and result["stored_in_window"]:
        result["cpu_us_per_msg"] = result["server_cpu_s"] * 1e6 / result["stored_in_window"]
    log("  ", f"{result['stored_per_s']:.0f} msg/s stored; {check} in the store")
    return result


def count_stored(
    server: Server, stream: str, check: Callable[[int, Any], bool] | None = None
) -> Any:
    """Page through the whole history over HTTP: how many messages, and how many of them
    fail `check(index, data)` (order / content)."""
    import httpx

    total = 0
    bad = 0
    after = None
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"limit": 10000}
            if after:
                params["after"] = after
            page = client.get(f"/api/streams/{stream}/messages", params=params).json()
            for message in page["messages"]:
                if check is not None and not check(total, message["data"]):
                    bad += 1
                total += 1
            if not page["messages"]:
                break
            after = page["next"]
    return total if check is None else {"count": total, "mismatched": bad}


def scenario_flood(lines: int) -> dict[str, Any]:
    """bloomr only: a script printing `lines` lines as fast as it can; time until the last
    one is stored (checked with a replayLimit=1 socket connection)."""
    log(f"flood: a script printing {lines} lines")
    with running("bloomr") as server:
        command = ["python3", "-c", f"for i in range({lines}): print(i)"]
        stream, token = server.new_stream(command=command, restart="never")
        server.token = token
        cpu0 = server.cpu_seconds()
        t0 = time.monotonic()
        server.api("POST", f"/api/streams/{stream}/start")
        state = None
        exited_at = None
        last = None
        stored_at = None
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if exited_at is None:
                state = server.api("GET", f"/api/streams/{stream}")["script"]["state"]
                if state != "running":
                    exited_at = time.monotonic()
            if exited_at is not None:
                last = newest_data(server.url, stream, token)
                if last == str(lines - 1):
                    stored_at = time.monotonic()
                    break
            time.sleep(0.05)
        cpu1 = server.cpu_seconds()
        checked = count_stored(server, stream, lambda i, data: data == str(i))
        status = server.api("GET", f"/api/streams/{stream}")["script"]
    seconds = (stored_at or time.monotonic()) - t0
    result = {
        "lines": lines,
        "seconds_to_last_stored": seconds if stored_at else None,
        "seconds_to_exit": exited_at - t0 if exited_at else None,
        "lines_per_s": lines / seconds if stored_at else None,
        "server_cpu_s": cpu1 - cpu0,
        "stored": checked,
        "script": status,
        "last_seen": last,
    }
    log("  ", {k: result[k] for k in ("seconds_to_last_stored", "lines_per_s", "stored")})
    return result


def newest_data(url: str, stream: str, token: str) -> Any:
    """The data of the stream's newest message: a socket.io connection with replayLimit=1."""
    script = (
        "import { io } from 'socket.io-client';"
        "const [url, stream, token] = process.argv.slice(1);"
        "const s = io(url, {transports: ['websocket'], reconnection: false,"
        " query: {stream, token, replayLimit: '1'}});"
        "let last = null;"
        "s.on('message', (d) => { last = d; });"
        "s.on('replay_end', () => { console.log(JSON.stringify(last)); s.disconnect(); });"
        "s.on('connect_error', (e) => { console.log('null'); process.exit(1); });"
    )
    out = subprocess.run(
        [NODE, "--input-type=module", "-e", script, url, stream, token],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout.strip() or "null")


# -- the run -------------------------------------------------------------------------------


def host_stalls(seconds: float = 10.0, slice_s: float = 0.01) -> dict[str, Any]:
    """How often the machine itself takes the CPU away (a shared virtual machine): a
    busy loop counts the work it gets done in each 10 ms slice; a slice with less than
    half the median is stalled. Measured on an otherwise idle machine, this is the
    noise every server's latency tail carries."""
    counts: list[int] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        n = 0
        while time.perf_counter() - start < slice_s:
            n += 1
        counts.append(n)
    median = statistics.median(counts)
    stalls, run, longest = 0, 0, 0
    for n in counts:
        if n < median / 2:
            run += 1
            stalls += run == 1
            longest = max(longest, run)
        else:
            run = 0
    slow = sum(1 for n in counts if n < median / 2)
    return {
        "seconds": seconds,
        "stalled_pct": round(100 * slow / len(counts), 1),
        "stalls_per_s": round(stalls / seconds, 2),
        "longest_ms": round(longest * slice_s * 1000),
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    versions = {}
    for name in ("socket.io", "socket.io-client"):
        pkg = BENCH / "node_modules" / name / "package.json"
        versions[name] = json.loads(pkg.read_text())["version"] if pkg.exists() else None
    from importlib.metadata import version

    for name in ("python-socketio", "python-engineio", "uvicorn", "uvloop", "websockets"):
        versions[name] = version(name)
    node = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "versions": versions,
    }


def plans(quick: bool) -> dict[str, Any]:
    """The scenarios' parameters. The fan-out sweep asks every server for 300 000
    deliveries/s (more than any of them manages here); the latency and stall runs use
    rates every server sustains."""
    if quick:
        return {
            "fanout": [Fanout(100, 3000, 30, 2, 2, 6), Fanout(1000, 300, 10, 2, 2, 6)],
            "latency": Fanout(100, 200, 1, 1, 2, 6),
            "stall": Fanout(100, 500, 10, 2, 2, 6),
            "stall_cutoff": None,  # the full run only
            "idle": (2000, 2),
            "replay": (10_000, 3),
            "store": (1000, 4, 5),
            "flood": 200_000,
        }
    return {
        "fanout": [
            # 5000, not 10 000 msg/s: on a machine where the two loadgen processes read
            # at most ~210k deliveries/s, 300k/s offered left each of these 30
            # subscribers 10 000 messages behind within seconds, and bloomr cut one off
            # as a slow consumer (bench/RESULTS.md, run at 1a9387c). Node saturates
            # well below either rate.
            Fanout(30, 5000, 50, 2),
            Fanout(100, 3000, 30, 2),
            Fanout(300, 1000, 10, 2),
            Fanout(1000, 300, 10, 2),
        ],
        # five rounds of 20 s: this machine's p99 is made by the host's stalls (see
        # host_stalls), a few per round; fewer or shorter rounds make it a coin toss
        "latency": Fanout(100, 200, 1, 1, 3, 20, rounds=5),
        "stall": Fanout(100, 500, 10, 2, 3, 12),
        # Big messages fill the stalled connection's kernel buffers (about 4 MB on
        # loopback) within seconds, so the servers' own backlog handling is reached.
        "stall_cutoff": Fanout(10, 1000, 10, 1, 3, 15, pad=2000),
        "idle": (10_000, 4),
        "replay": (10_000, 5),
        "store": (1000, 4, 10),
        "flood": 500_000,
    }


SCENARIOS = ("fanout", "latency", "stall", "stall_cutoff", "idle", "replay", "store", "flood")


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain", "src").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "src_changes": changed}


def cpu_pressure() -> str | None:
    """`some avg10 avg60` from /proc/pressure/cpu: how often something waited for a CPU."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    fields = dict(part.split("=") for part in line.split()[1:])
    return f"{fields['avg10']}% / {fields['avg60']}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a reduced set, for a fast check")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help=f"of {', '.join(TARGETS)}"
    )
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument(
        "--node-recovery",
        action="store_true",
        help="run Node's server with connectionStateRecovery (offsets on every message)",
    )
    args = parser.parse_args()
    global NODE_RECOVERY
    NODE_RECOVERY = args.node_recovery
    only = [s for s in args.only.split(",") if s]
    targets = [t for t in args.targets.split(",") if t]
    unknown = (set(only) - set(SCENARIOS)) | (set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")

    ensure_dependencies()
    fds = raise_fd_limit()
    global QUIET_MAX_WAIT
    QUIET_MAX_WAIT = 5.0 if args.quick else 20.0
    p = plans(args.quick)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": {**machine(), "fd_limit": fds},
        "bloomr": git_state(),
        "noise": {
            "loadavg_start": os.getloadavg(),
            "cpu_pressure_start": cpu_pressure(),
            "host_stalls_start": host_stalls(3 if args.quick else 10),
        },
        "targets": targets,
        "scenarios": {},
    }
    started = time.monotonic()
    sc = results["scenarios"]
    if "fanout" in only:
        sc["fanout"] = scenario_fanout(targets, p["fanout"])
    if "latency" in only:
        sc["latency"] = scenario_fanout(targets, [p["latency"]])
    if "stall" in only:
        sc["stall"] = scenario_stall(targets, p["stall"])
    if "stall_cutoff" in only and p["stall_cutoff"] is not None:
        sc["stall_cutoff"] = scenario_stall(targets, p["stall_cutoff"])
    if "idle" in only:
        sc["idle"] = scenario_idle(targets, *p["idle"])
    if "bloomr" in targets:
        if "replay" in only:
            sc["replay"] = scenario_replay(*p["replay"])
        if "store" in only:
            sc["store"] = scenario_store(*p["store"])
        if "flood" in only:
            sc["flood"] = scenario_flood(p["flood"])
    results["seconds"] = round(time.monotonic() - started)
    results["noise"]["loadavg_end"] = os.getloadavg()
    results["noise"]["cpu_pressure_end"] = cpu_pressure()
    results["noise"]["host_stalls_end"] = host_stalls(3 if args.quick else 10)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    sys.path.insert(0, str(BENCH))
    from report import write_results

    write_results(results, args.out / "RESULTS.md")
    log(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    if "fanout" in sc:
        subprocess.run(
            [PYTHON, str(BENCH / "plot.py"), str(args.out / "results.json")], check=False
        )


if __name__ == "__main__":
    main()

"""bloomr.emit(): from a real child script run by a Supervisor, and outside bloomr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from runner_helpers import SRC, Collector, Factory, py, wait_until

import bloomr

SCRIPT = r"""
import threading
import bloomr
bloomr.emit("metrics", {"cpu": 0.25, "name": "é🌸"})
bloomr.emit("", "to standard output")
bloomr.emit("bad channel!", 1)
big = "b" * 300_000  # far over a pipe's atomic write size: must still arrive whole
threads = [threading.Thread(target=bloomr.emit, args=("big", big)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("done")
"""


async def test_emit_from_a_script_run_by_bloomr(supervise: Factory, collector: Collector) -> None:
    sup = supervise(py(SCRIPT), env={"PYTHONPATH": SRC})
    await sup.start()
    await wait_until(lambda: sup.status().state in ("exited", "crashed"))
    assert collector.on("metrics") == [{"cpu": 0.25, "name": "é🌸"}]
    assert collector.on("") == ["to standard output", "done"]
    assert collector.on("big") == ["b" * 300_000] * 4
    (error,) = collector.on("errors")
    assert error["event"] == "emit_error" and "invalid channel" in error["message"]


def test_emit_outside_bloomr_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOOMR_EMIT_FD", raising=False)
    with pytest.raises(RuntimeError) as err:
        bloomr.emit("metrics", 1)
    assert str(err.value) == (
        "bloomr.emit() works only in a script run by bloomr: BLOOMR_EMIT_FD is not set"
    )


def test_emit_outside_bloomr_in_a_plain_child_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLOOMR_EMIT_FD"} | {"PYTHONPATH": SRC}
    code = "import bloomr; bloomr.emit('x', 1)"
    done = subprocess.run(py(code), env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert "RuntimeError: bloomr.emit() works only in a script run by bloomr" in done.stderr


def test_emit_writes_one_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    try:
        monkeypatch.setenv("BLOOMR_EMIT_FD", str(write))
        bloomr.emit("a.b:c-d_e", [1, "two", None])
        assert json.loads(os.read(read, 1000)) == {"channel": "a.b:c-d_e", "data": [1, "two", None]}
        with pytest.raises(ValueError):
            bloomr.emit("x", float("nan"))  # not JSON: refused in the script
        with pytest.raises(TypeError):
            bloomr.emit(b"x", 1)  # type: ignore[arg-type]
    finally:
        os.close(read)
        os.close(write)


def test_import_bloomr_stays_light() -> None:
    code = "import sys, bloomr; print(sorted(m for m in sys.modules if m.startswith('bloomr')))"
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "['bloomr', 'bloomr.emit']"


OUTSIDE = r"""
import os, sys
import bloomr
outside = sorted(
    name for name in sys.modules
    if name.split(".")[0] not in {*sys.stdlib_module_names, "__main__", "bloomr"}
)
bloomr.emit("check", {"outside": outside, "pythonpath": os.environ["PYTHONPATH"]})
"""


async def test_a_script_imports_bloomr_without_the_servers_site_packages(
    supervise: Factory, collector: Collector
) -> None:
    """`python -S` skips site-packages, where the virtualenv installs bloomr: only the
    PYTHONPATH bloomr gives its scripts can find it. The stream's own PYTHONPATH stays,
    after bloomr's, and `import bloomr` loads nothing beyond the standard library."""
    sup = supervise([sys.executable, "-S", "-c", OUTSIDE], env={"PYTHONPATH": "/opt/mine"})
    await sup.start()
    await wait_until(lambda: sup.status().state in ("exited", "crashed"))
    assert collector.on("errors") == []
    assert collector.on("check") == [{"outside": [], "pythonpath": f"{SRC}{os.pathsep}/opt/mine"}]

"""bloomr's locked dependencies: write the lock, and audit it for known vulnerabilities.

    .venv/bin/python scripts/deps.py lock    # refresh requirements.lock
    .venv/bin/python scripts/deps.py audit   # scripts/test.sh runs this

`lock` asks pip which exact versions it installs today for bloomr's runtime
dependencies, the cluster extra included (`pip install --dry-run --report`, on this
Python and platform), and writes them to requirements.lock. `audit` checks that the
lock still satisfies every range in pyproject.toml, then runs pip-audit over it and
`npm audit --omit=dev` over tests/node. A known vulnerability fails; a vulnerability
service that cannot be reached (no network, a registry mirror without the audit API)
is one warning line, so CI does not depend on it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
NODE = ROOT / "tests" / "node"
EXTRAS = ("cluster",)  # runtime extras locked with the base dependencies
HEADER = """\
# bloomr's runtime dependencies (with the cluster extra), as pip resolves them on Linux
# for Python 3.11+. Refresh: .venv/bin/python scripts/deps.py lock
# Audited by scripts/test.sh (scripts/deps.py audit).
"""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -- lock ---------------------------------------------------------------------------------


def lock() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        target = f"{ROOT}[{','.join(EXTRAS)}]"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run"]
        command += ["--ignore-installed", "--report", str(report), target]
        subprocess.run(command, check=True)
        installs = json.loads(report.read_text())["install"]
    found = (item["metadata"] for item in installs)
    pins = sorted(
        (f"{m['name']}=={m['version']}" for m in found if m["name"] != "bloomr"), key=str.lower
    )
    LOCK.write_text(HEADER + "\n".join(pins) + "\n")
    print(f"wrote {len(pins)} pins to {LOCK.relative_to(ROOT)}")
    return 0


# -- audit --------------------------------------------------------------------------------


def locked() -> dict[str, str]:
    """name (canonical) -> version, from requirements.lock."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in EXTRAS:
        specs += project["optional-dependencies"][extra]
    return [Requirement(spec) for spec in specs]


def stale() -> list[str]:
    """The pyproject.toml requirements the lock does not satisfy."""
    pins = locked()
    return [
        str(req)
        for req in declared()
        if pins.get(canonicalize_name(req.name)) is None
        or not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)
    ]


def pip_audit() -> bool:
    """False when a locked version has a known vulnerability."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        command = [sys.executable, "-m", "pip_audit", "-r", str(LOCK), "--no-deps"]
        command += ["--disable-pip", "--progress-spinner", "off", "-f", "json", "-o", str(out)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            stderr = done.stderr
        except subprocess.TimeoutExpired:
            stderr = "no answer within 300 s"
        if not out.exists():  # it could not ask the service at all
            reason = (stderr.strip().splitlines() or ["no answer"])[-1]
            warn(f"pip-audit could not check requirements.lock (service unreachable?): {reason}")
            return True
        deps: list[dict[str, Any]] = json.loads(out.read_text())["dependencies"]
    found, skipped = pip_findings(deps)
    for line in found:
        print(line, file=sys.stderr)
    if skipped:
        warn(
            f"pip-audit could not check {len(skipped)} of {len(deps)} locked packages "
            "(the vulnerability service did not answer for them)"
        )
    elif not found:
        print(f"pip-audit: no known vulnerabilities in {len(deps)} locked packages")
    return not found


def pip_findings(deps: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """pip-audit's JSON `dependencies` -> (one line per known vulnerability, the names
    of the packages it could not check)."""
    found = [
        f"{dep['name']} {dep['version']}: {vuln['id']} "
        f"(fixed in {', '.join(vuln.get('fix_versions') or []) or 'no release yet'})"
        for dep in deps
        for vuln in dep.get("vulns") or []
    ]
    return found, [dep["name"] for dep in deps if dep.get("skip_reason")]


def npm_audit() -> bool:
    """False when a package tests/node installs has a known vulnerability."""
    command = ["npm", "audit", "--omit=dev", "--json"]
    try:
        done = subprocess.run(command, cwd=NODE, capture_output=True, text=True, timeout=120)
        report: dict[str, Any] = json.loads(done.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        warn(f"npm audit could not run: {exc}")
        return True
    found = npm_findings(report)
    if found is None:
        reason = report.get("message") or report.get("error", {}).get("summary") or "no answer"
        warn(f"npm audit could not check tests/node (service unreachable?): {reason}")
        return True
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print("npm audit: no known vulnerabilities in tests/node")
    return not found


def npm_findings(report: dict[str, Any]) -> list[str] | None:
    """`npm audit --json` -> one line per vulnerable package; None when the audit
    endpoint did not answer (the report is then an error)."""
    if not isinstance(report.get("vulnerabilities"), dict):
        return None
    return [
        f"npm {name}: {vuln.get('severity')} ({vuln.get('range')})"
        for name, vuln in report["vulnerabilities"].items()
    ]


def audit() -> int:
    if missing := stale():
        print(
            "requirements.lock does not satisfy pyproject.toml for: "
            + ", ".join(missing)
            + "; refresh it: .venv/bin/python scripts/deps.py lock",
            file=sys.stderr,
        )
        return 1
    ok = pip_audit()
    ok = npm_audit() and ok
    return 0 if ok else 1


def main() -> int:
    commands = {"lock": lock, "audit": audit}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())

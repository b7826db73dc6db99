"""scripts/deps.py: the lock satisfies pyproject.toml, and the audit reads pip-audit's and
npm's reports right (a vulnerability fails; a service that did not answer does not)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deps.py"


@pytest.fixture(scope="module")
def deps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deps", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("deps", module)
    spec.loader.exec_module(module)
    return module


def test_requirements_lock_satisfies_pyproject(deps: ModuleType) -> None:
    assert deps.stale() == []
    assert {"redis", "asyncpg", "uvicorn", "fastapi"} <= set(deps.locked())


def test_a_known_vulnerability_is_a_finding(deps: ModuleType) -> None:
    report = [
        {"name": "ok", "version": "1.0", "vulns": []},
        {
            "name": "bad",
            "version": "2.0",
            "vulns": [{"id": "PYSEC-2099-1", "fix_versions": ["2.1", "3.0"]}],
        },
        {"name": "new", "version": "0.1", "vulns": [{"id": "GHSA-xxxx", "fix_versions": []}]},
    ]
    found, skipped = deps.pip_findings(report)
    assert found == [
        "bad 2.0: PYSEC-2099-1 (fixed in 2.1, 3.0)",
        "new 0.1: GHSA-xxxx (fixed in no release yet)",
    ]
    assert skipped == []


def test_packages_the_service_did_not_check_are_skipped_not_found(deps: ModuleType) -> None:
    report = [
        {"name": "httpx", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "ok", "version": "1.0", "vulns": []},
    ]
    assert deps.pip_findings(report) == ([], ["httpx"])


def test_npm_reports(deps: ModuleType) -> None:
    clean = {"auditReportVersion": 2, "vulnerabilities": {}, "metadata": {}}
    assert deps.npm_findings(clean) == []
    bad = {"vulnerabilities": {"ws": {"severity": "high", "range": "8.0.0 - 8.17.0"}}}
    assert deps.npm_findings(bad) == ["npm ws: high (8.0.0 - 8.17.0)"]
    unreachable = {"message": "405 Method Not Allowed - POST .../advisories/bulk", "error": {}}
    assert deps.npm_findings(unreachable) is None

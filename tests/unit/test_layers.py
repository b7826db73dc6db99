"""The architecture's rules, checked on the source (docs/architecture.md): dependencies
point down, no module or class grows past what a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "bloomr"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250


def _modules(package: str = "") -> list[Path]:
    root = SRC / package if package else SRC
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def _imports(path: Path) -> set[str]:
    """Absolute names of the bloomr modules (and third-party ones) a file imports."""
    package = path.relative_to(SRC.parent).with_suffix("").parts
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("store", "bloomr.webhooks"),
        ("store", "bloomr.api"),
        ("store", "bloomr.transports"),
        ("store", "bloomr.hub"),
        ("broker", "bloomr.webhooks"),
        ("broker", "bloomr.api"),
        ("broker", "bloomr.transports"),
        ("broker", "bloomr.hub"),
        ("control", "bloomr.hub"),
        ("transports", "bloomr.store"),
        ("transports", "bloomr.broker"),
        ("api", "uvicorn"),
    ],
)
def test_dependencies_point_down(low: str, high: str) -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in _modules(low)
        if any(name == high or name.startswith(high + ".") for name in _imports(path))
    ]
    assert offenders == [], f"{low} must not import {high}"


def _class_names(package: str) -> set[str]:
    return {
        node.name
        for path in _modules(package)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }


def test_the_hub_asks_no_backend_what_it_is() -> None:
    """What differs between backends is declared (`Capabilities`), never tested for."""
    backends = _class_names("broker") | _class_names("store") | _class_names("control")
    tree = ast.parse((SRC / "hub.py").read_text())
    tested = {
        name.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance"
        for name in ast.walk(node.args[1])
        if isinstance(name, ast.Name)
    }
    assert tested & backends == set()


def test_modules_and_classes_stay_small() -> None:
    too_big: list[str] = []
    for path in _modules():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(SRC)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_big.append(f"{path.relative_to(SRC)}: class {node.name} {size} lines")
    assert too_big == []

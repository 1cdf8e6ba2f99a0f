"""The layout holds: the ingress sees only the contract package, and no module imports itself back.

    shared/           the contract: envelope, schemas, errors and their HTTP status, config, logging
    ingress/          imports shared only
    workers/runtime/  the worker runtime;  workers/ops/  operator tools;  workers/<domain>/  a domain
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "ingress", "workers")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at any depth (a lazy import inside a function counts)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def test_the_ingress_and_the_contract_import_nothing_from_the_workers():
    known = modules()
    for name, path in known.items():
        if name.split(".")[0] == "ingress":
            assert {m for m in imports(path, name, known) if not m.startswith(("shared", "ingress"))} == set(), name
        if name.split(".")[0] == "shared":
            assert {m for m in imports(path, name, known) if not m.startswith("shared")} == set(), name


def test_the_running_ingress_loads_no_worker_module():
    loaded = subprocess.run([sys.executable, "-c", "import sys, ingress.app, ingress.publisher, ingress.documents; "
                             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'workers'))"],
                            cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_no_import_cycle():
    known = modules()
    graph = {name: imports(path, name, known) for name, path in known.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_test_module_imports_another():
    """Helpers live in tests/support and fixtures in conftest.py: a test module is never a library."""
    offenders = []
    for path in (REPO / "tests").rglob("test_*.py"):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                last = node.module.split(".")[-1]
                if last.startswith("test_") or last == "conftest":
                    offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
    assert offenders == []


def test_every_worker_and_operator_tool_imports():
    """What `workers run <name>` and the operator commands load, imported for real."""
    from workers import WORKERS, load
    for name in WORKERS:
        assert load(name).name == name
    for tool in ("cli", "podhealth", "devstack", "devpage", "preflight", "deadletters", "migrate", "management", "storage_setup"):
        importlib.import_module(f"workers.ops.{tool}")

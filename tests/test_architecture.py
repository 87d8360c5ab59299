"""The three packages form a tree (docs/architecture.md) and every module does one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def _imports(path: Path) -> set[str]:
    """Absolute imports anywhere in the module, function bodies included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _application_layer(rel: str) -> bool:
    return rel.startswith("controlplane/cli/") or rel == "controlplane/testing.py"


RULES = {
    "controlplane": lambda rel, m: not _application_layer(rel) and m.split(".")[0] in ("sim", "plugins"),
    "plugins": lambda rel, m: m.split(".")[0] in ("sim", "torch") or m.startswith("controlplane.live"),
    "sim": lambda rel, m: m.split(".")[0] == "plugins",
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(RULES))
def test_imports_follow_the_dependency_tree(package):
    against = RULES[package]
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _modules(package)
           for m in sorted(_imports(p)) if against(str(p.relative_to(ROOT)), m)]
    assert not bad, "imports against the tree:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_module_over_500_lines(package):
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in _modules(package)
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, "split these by job:\n" + "\n".join(big)


def test_the_rules_catch_an_import_against_the_tree():
    assert RULES["plugins"]("plugins/x.py", "controlplane.live.driver")
    assert RULES["controlplane"]("controlplane/core.py", "sim.replay")
    assert not RULES["controlplane"]("controlplane/cli/sim.py", "sim.replay")
    assert RULES["sim"]("sim/replay.py", "plugins.memory")

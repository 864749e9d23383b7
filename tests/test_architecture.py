"""The shape of the code: no import cycle between the modules of hvc, label_prop, scripts/ and
benchmarks/, and no module
imports a command-line module (label_prop's run, segment, demo and hvc.train are entry points only;
hvc.export is the encoder-file library that label_prop.propagation.features loads encoders with, and also has
a ``python -m hvc.export`` entry point of its own)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGES = ("hvc", "label_prop")
#: Folders of stand-alone scripts: their files import each other as siblings (``import device_stages``).
SCRIPT_DIRS = ("scripts", "benchmarks")
CLI_MODULES = {"label_prop.run", "label_prop.segment", "label_prop.demo", "hvc.train", "label_prop.app.__main__",
               "label_prop.interactive.run"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any level of the file, relative imports resolved)."""
    files = {_module_name(p): p for pkg in PACKAGES + SCRIPT_DIRS for p in (REPO_ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        folder = path.parent.name if path.parent.name in SCRIPT_DIRS else None
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if folder:  # a sibling script imported by its bare name
                targets = targets + [f"{folder}.{t}" for t in targets]
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert {"label_prop.propagation.multiref", "label_prop.data.plans"} <= graph["label_prop.propagation.pipeline"]
    assert {"hvc.checkpoint", "hvc.runtime"} <= graph["hvc.export"]  # relative imports resolved
    assert "scripts.device_stages" in graph["scripts.device_check"]  # sibling scripts resolved
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_imports_a_command_line_module():
    graph = import_graph()
    assert "hvc.trainer" in graph["hvc.train"] and "hvc.export" in graph["label_prop.propagation.features"]
    importers = {m: sorted(deps & CLI_MODULES) for m, deps in graph.items() if deps & CLI_MODULES}
    assert importers == {}


@pytest.mark.parametrize("module", ["hvc.config", "label_prop.config", "label_prop.app.config", "hvc.errors",
                                    "hvc.tables", "hvc.records"])
def test_configs_and_tables_import_no_torch(module):
    """Settings are leaves: reading or validating a config never loads torch (or the trainer or
    the pipeline)."""
    code = (f"import sys, {module}; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy') "
            f"or m in ('hvc.trainer', 'label_prop.propagation.pipeline')); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()[:200]}"

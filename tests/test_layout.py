"""The package's shape: no import cycles, and a CLI whose ``--help`` never imports torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compressor"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every ``compressor`` import of every module, wherever it sits: module level, inside a
    function, or under ``TYPE_CHECKING`` (a type-only import still ties two modules together)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                assert not node.level, f"{name}: use absolute imports"
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]  # fmt: skip
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "compressor.losses.total" in graph["compressor.train.loop"]
    assert cycles(graph) == []


# Which parts of the package each part may import (docs/design.md, "Layout"): a sub-package or
# root module may import the ones listed, and nothing above it. Changing this table is a design
# decision: say why in docs/design.md.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "files": {"errors"},
    "progress": set(),
    "config": {"errors"},
    "data": {"errors", "files"},
    "run_folder": {"errors", "files"},
    "compute": {"errors", "files", "config", "data"},
    "latency": {"errors", "files", "data"},
    "losses": {"errors", "config"},
    "models": {"errors", "files", "compute", "data"},
    "export": {"errors", "files", "compute", "data", "latency"},
    "selection": {"errors", "files", "export", "latency", "models"},
    "train": {"errors", "files", "compute", "config", "data", "losses", "run_folder"},
    "report": {"errors", "files", "export", "latency", "run_folder"},
}
TOP = {"pipeline", "cli", "__main__", "__init__"}  # may import anything below (cli: pipeline too)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_part_imports_only_the_parts_below_it() -> None:
    """Sub-packages by job with one direction of imports: a newcomer reads the layout from the
    folders, and a change that needs an upward import has to change this table first."""
    graph = import_graph()
    parts = {_part(name) for name in graph}
    assert parts <= set(ALLOWED) | TOP, parts - set(ALLOWED) - TOP
    wrong = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if _part(name) in ALLOWED
        and _part(target) not in (_part(name), "__init__")  # the root holds only __version__
        and _part(target) not in ALLOWED[_part(name)]
    )
    assert wrong == []
    into_cli = sorted(f"{n} -> {t}" for n, ts in graph.items() for t in ts
                      if _part(t) == "cli" and _part(n) not in ("cli", "__main__"))  # fmt: skip
    assert into_cli == [], "only __main__ imports the CLI"


def test_the_cycle_finder_finds_a_type_only_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


HELP_SCRIPT = """
import json, sys
import typer.main
from typer.testing import CliRunner
from compressor.cli.main import app

command = typer.main.get_command(app)
paths = [[]] + [[name] for name in command.commands]
paths += [[group, name] for group, sub in command.commands.items()
          if hasattr(sub, "commands") for name in sub.commands]
codes = {" ".join(p): CliRunner().invoke(app, [*p, "--help"]).exit_code for p in paths}
heavy = sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_every_help_page_imports_no_torch() -> None:
    """``compressor --help`` and every command's help load only the torch-free modules (the
    configuration, the registry of loss methods, the CLI): 0.1 s instead of seconds."""
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True,
                            check=True, cwd=PACKAGE.parent)  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["codes"]) >= 10 and set(report["codes"].values()) == {0}, report["codes"]
    assert report["heavy"] == []

"""The tree's layers: every import points down, no package imports itself in a circle, and the CLI starts light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"core": 0, "tasks": 1, "memory": 1, "prompts": 1, "tools": 2, "roles": 3, "graph": 4, "readers": 5,
          "bench": 5}


def _imports(path: Path) -> set[str]:
    """Every module an file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _package_edges() -> set[tuple[str, str, str]]:
    edges = set()
    for package in LAYERS:
        for path in (REPO / package).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in LAYERS and top != package:
                    edges.add((package, top, str(path.relative_to(REPO))))
    return edges


def test_every_import_points_down():
    upward = sorted(f"{where} imports {dst} ({src} is below {dst})" for src, dst, where in _package_edges()
                    if LAYERS[dst] >= LAYERS[src] and not (LAYERS[dst] == LAYERS[src] == 5))
    assert not upward, "\n".join(upward)


def test_no_module_cycle():
    """Module-level imports of our own modules form no cycle (imports inside functions are deferred on purpose)."""
    modules = {}
    for package in LAYERS:
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            tree = ast.parse(path.read_text())
            deps = set()
            for node in tree.body:  # module level only
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps.add(node.module)
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names}
            modules[name] = {d for d in deps if d.split(".")[0] in LAYERS}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in modules.get(m, ()):
            if d not in modules:
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, m, d]))
            if d not in state:
                visit(d, [*trail, m])
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m, [])


def test_the_cli_module_loads_no_heavy_library():
    code = ("import sys, graph.run; heavy = [m for m in ('torch', 'transformers', 'langgraph', 'chromadb', "
            "'inspect_ai', 'datasets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_shared_module_names_a_benchmark():
    """Everything a benchmark decides lives in its module under tasks/: the shared packages never name one or
    hold its wording (its name, its answer format, its option names)."""
    from tasks import TASKS, task_class

    words = set()
    for name in TASKS:
        cls = task_class(name)
        words |= {name, *cls.construction_options, cls.answer_line_hint}
    hits = []
    for package in ("core", "memory", "prompts", "tools", "roles", "graph", "readers"):
        for path in (REPO / package).rglob("*"):
            if path.suffix not in (".py", ".md") or not path.is_file():
                continue
            text = path.read_text().lower()
            hits += [f"{path.relative_to(REPO)}: {w!r}" for w in words if w.lower() in text]
    assert not hits, "\n".join(sorted(hits))

"""The shape of the code base: module sizes, import direction, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Names of modules imported by a file (``from a.b import c`` -> ``a.b.c`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_module_is_over_the_size_limit():
    too_long = {name: n for name, path in {**modules("labeler"), **modules("workers")}.items()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_no_import_cycle_at_import_time():
    mods = {**modules("labeler"), **modules("workers")}
    graph = {name: sorted(m for m in imports(path, top_level_only=True) if m in mods and m != name)
             for name, path in mods.items()}
    # an edge to a package also names its submodule when one was imported: keep the deepest
    graph = {n: [m for m in deps if not any(d.startswith(m + ".") for d in deps)] for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_library_never_imports_the_worker_app():
    offenders = [name for name, path in modules("labeler").items()
                 if any(m == "workers" or m.startswith("workers.") for m in imports(path, top_level_only=False))]
    assert not offenders, f"labeler modules importing workers/: {offenders}"


def test_test_doubles_stay_out_of_the_pipeline():
    """The LLM test server and the scoring oracle are test doubles: only the command that serves
    them (``labeler llm-test-server``) and labeler.testing itself import them."""
    allowed = {"labeler.cli.llm"}
    offenders = [name for name, path in modules("labeler").items()
                 if not name.startswith("labeler.testing") and name not in allowed
                 and any(m.startswith("labeler.testing") for m in imports(path, top_level_only=False))]
    assert not offenders, f"library modules importing labeler.testing: {offenders}"


def test_the_checks_above_can_fail(tmp_path):
    """The cycle and size checks see what they should (guards against a check that passes vacuously)."""
    a = tmp_path / "a.py"
    a.write_text("import labeler.db\nfrom labeler.runs import runner\n" + "x = 1\n" * (MAX_LINES + 1))
    assert {"labeler.db", "labeler.runs", "labeler.runs.runner"} <= imports(a, top_level_only=True)
    assert len(a.read_text().splitlines()) > MAX_LINES
    nested = tmp_path / "b.py"
    nested.write_text("def f():\n    import workers.app\n")
    assert "workers.app" not in imports(nested, top_level_only=True)
    assert "workers.app" in imports(nested, top_level_only=False)

"""No import cycle in widen_cli, at module level or inside functions: each module imports what it needs
from its home, and a module never needs (even lazily) one that needs it back. Imports under
`if TYPE_CHECKING:` are left out: they are never run (annotations are strings), only read by type checkers."""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "widen_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The widen_cli modules `path` imports anywhere in it (a package's __init__ counts as the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _run_time_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from widen_cli import config`
    return {m for m in found if m in modules and m != name}


def _run_time_nodes(tree: ast.AST):
    """Every node of `tree`, at any depth, except what is under `if TYPE_CHECKING:`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> nx.DiGraph:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for p in paths:
        graph.add_edges_from((module_name(p), m) for m in imported(p, modules))
    return graph


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert graph.has_edge("widen_cli.commands", "widen_cli.train")  # imported inside a command function
    assert graph.has_edge("widen_cli.lifecycle", "widen_cli.checkpoint")
    assert graph.has_edge("widen_cli.kernels", "widen_cli.datasets.readers")


def test_widen_cli_has_no_import_cycle():
    cycles = sorted(c[c.index(min(c)):] + c[:c.index(min(c))] for c in nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles[:20])


def test_jobs_and_plan_need_no_torch():
    """A job is plain picklable data and planning reads no data: neither pulls torch in (a fresh process)."""
    import subprocess
    import sys

    code = ("import sys, widen_cli.jobs, widen_cli.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

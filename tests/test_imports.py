"""nncli's import graph: no cycles among its modules, and function-local imports only where they
keep `nncli --help` and `nncli grad` from importing PyTensor (and in cli.py, which imports each
command's module when that command runs).

    python tests/test_imports.py      # prints the graph: module -> the nncli modules it imports

Read with `ast` from the source files, so nothing is imported to build it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nncli"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The nncli modules an import statement imports (`from nncli import x` imports nncli.x
    when that is a module, else nncli itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = here.split(".") if is_package else here.split(".")[:-1]
            pkg = pkg[:len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        names = []
        for a in node.names:
            full = f"{base}.{a.name}"
            names.append(full if full in known else base)
    return [n for n in names if n == "nncli" or n.startswith("nncli.")]


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(top-level imports, function-local imports): module -> nncli modules."""
    mods = modules()
    known = set(mods)
    top: dict[str, set[str]] = {m: set() for m in mods}
    local: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = {t for t in _targets(node, name, is_package, known) if t != name}
                (top if node.col_offset == 0 and _at_module_level(tree, node) else local)[name] |= found
    return top, local


def _at_module_level(tree: ast.Module, node: ast.AST) -> bool:
    """An import directly in the module body (or in a module-level try/if), not in a function."""
    stack = list(tree.body)
    while stack:
        item = stack.pop()
        if item is node:
            return True
        if isinstance(item, (ast.If, ast.Try)):
            stack.extend(item.body + item.orelse + getattr(item, "finalbody", [])
                         + [h for handler in getattr(item, "handlers", []) for h in handler.body])
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from its smallest member)."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if n == "nncli":  # the package's __init__ only holds the version
                continue
            if state.get(n) == 1:
                cyc = stack[stack.index(n):]
                i = cyc.index(min(cyc))
                cyc = cyc[i:] + cyc[:i]
                if cyc not in found:
                    found.append(cyc)
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


# Function-local imports that are allowed: cli.py imports each command's module when the command
# runs; the rest keep PyTensor out of `nncli --help` and `nncli grad` (or a heavy optional package,
# matplotlib or a GPU probe, out of commands that do not draw or probe).
LOCAL_OK = {
    "nncli.cli",
}


def test_no_import_cycles():
    top, local = graph()
    both = {m: top[m] | local[m] for m in top}
    assert cycles(top) == [], f"cycles among module-level imports: {cycles(top)}"
    assert cycles(both) == [], f"cycles once function-local imports count too: {cycles(both)}"


def test_function_local_imports_only_where_they_keep_commands_light():
    _, local = graph()
    extra = {m: sorted(t) for m, t in local.items() if t and m not in LOCAL_OK}
    assert extra == {}, f"function-local imports of nncli modules outside cli.py: {extra}"


def main() -> int:
    top, local = graph()
    for m in sorted(top):
        line = f"{m}: {', '.join(sorted(top[m])) or '-'}"
        if local[m]:
            line += f"  (in functions: {', '.join(sorted(local[m]))})"
        print(line)
    both = {m: top[m] | local[m] for m in top}
    print(f"\ncycles (module level): {cycles(top) or 'none'}")
    print(f"cycles (with function-local imports): {cycles(both) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

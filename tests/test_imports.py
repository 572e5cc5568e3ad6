"""The import graph of src/mtfuse: no cycles among module-level imports, and every module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mtfuse

SRC = Path(mtfuse.__file__).resolve().parent


def modules() -> list[str]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def module_imports(name: str) -> set[str]:
    """mtfuse modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    path = SRC.parent.joinpath(*name.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(file.read_text(encoding="utf-8"))
    is_pkg = file.name == "__init__.py"
    found: set[str] = set()
    known = set(modules())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in (
            ast.walk(node)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            else []
        ):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("mtfuse")}
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - sub.level + 1]
                    mod = ".".join([*base, sub.module] if sub.module else base)
                else:
                    mod = sub.module or ""
                if not mod.startswith("mtfuse"):
                    continue
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in sub.names if f"{mod}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_find_cycles_finds_one() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = {m: module_imports(m) for m in modules()}
    # a package's __init__ importing its own submodules is how packages register their entries: not a cycle
    for m, deps in graph.items():
        graph[m] = {
            d for d in deps if not (d.startswith(m + ".") and SRC.parent.joinpath(*m.split(".")).is_dir())
        }
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def test_every_module_imports_alone() -> None:
    """Each module in a fresh set of mtfuse modules (one subprocess; torch and friends stay loaded)."""
    code = (
        "import importlib, sys\n"
        f"mods = {modules()!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'mtfuse' or k.startswith('mtfuse.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

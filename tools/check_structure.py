"""Check the package's structure: import cycles, layer rules and function length.

    python tools/check_structure.py            # report; exit status 1 on any violation
    python tools/check_structure.py --json     # the same figures as JSON

Imports are read from the source (ast), lazy imports inside functions included, so an import
that only runs on some path still counts. A cycle is a strongly connected set of modules.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = "pderl_jax"
MAX_FUNCTION_LINES = 60
# A module under the first prefix may not import any module under the second.
FORBIDDEN_LAYERS = [
    ("pderl_jax.training", "pderl_jax.analysis"),
    ("pderl_jax.training", "pderl_jax.experiments"),
    ("pderl_jax.training", "pderl_jax.cli"),
]


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    files = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
        else:
            continue
        for target in targets:
            # `from a.b import c` names module a.b.c when it exists, else a.b.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), as sorted lists."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between the package's layers: its subpackages and top-level modules."""
    def layer(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    return out


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    def under(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                  for low, high in FORBIDDEN_LAYERS if under(module, low) and under(target, high))


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(module:qualified name, lines) of every function longer than `limit` lines, longest first."""
    out = []
    for name, path in module_files(root).items():
        tree = ast.parse(path.read_text(), str(path))

        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > limit:
                        out.append((f"{name}:{prefix}{child.name}", lines))
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(tree, "")
    return sorted(out, key=lambda item: -item[1])


def report(root: Path) -> dict:
    graph = import_graph(root)
    return {"modules": len(graph), "import_cycles": cycles(graph), "layer_cycles": cycles(layer_graph(graph)),
            "layer_violations": layer_violations(graph),
            "max_function_lines": MAX_FUNCTION_LINES,
            "long_functions": [{"function": f, "lines": n} for f, n in long_functions(root)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    result = report(args.root)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['modules']} modules in {PACKAGE}/")
        print(f"import cycles: {len(result['import_cycles'])}")
        for cycle in result["import_cycles"]:
            print("  " + " <-> ".join(cycle))
        print(f"import cycles between subpackages: {len(result['layer_cycles'])}")
        for cycle in result["layer_cycles"]:
            print("  " + " <-> ".join(cycle))
        print(f"layer violations: {len(result['layer_violations'])}")
        for line in result["layer_violations"]:
            print("  " + line)
        print(f"functions over {MAX_FUNCTION_LINES} lines: {len(result['long_functions'])}")
        for item in result["long_functions"]:
            print(f"  {item['lines']:4d}  {item['function']}")
    clean = not (result["import_cycles"] or result["layer_cycles"] or result["layer_violations"] or result["long_functions"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

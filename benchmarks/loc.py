"""Size and shape of lenet/ at git revisions: lines of code, the longest functions and import cycles.

    python benchmarks/loc.py 98deba4 HEAD     # one row per revision (default: HEAD)

Code lines are non-blank Python lines that are not `# ...` comments (docstrings count). A function's
length runs from its `def` line to its last line, nested functions included. An import cycle is a
group of lenet modules that import each other, directly or round a loop; every import counts, also
one inside a function or under `if TYPE_CHECKING:` (it still ties the two modules together).
Writes benchmarks/results/loc.json and loc.md (or --results-dir).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

from results_file import add_results_dir_option, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]
LONGEST_SHOWN = 5


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def sources(revision: str, folder: str = "lenet") -> dict[str, str]:
    """{path: source} of the .py files under `folder` at `revision`."""
    paths = [path for path in git("ls-tree", "-r", "--name-only", revision, folder).split() if path.endswith(".py")]
    return {path: git("show", f"{revision}:{path}") for path in paths}


def module_name(path: str) -> str:
    """lenet/serve/app.py -> lenet.serve.app; lenet/serve/__init__.py -> lenet.serve."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def code_lines(source: str) -> int:
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


def functions(module: str, tree: ast.Module) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in the module, nested ones too."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{prefix}.{child.name}", child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}.{child.name}")
            else:
                visit(child, prefix)

    visit(tree, module)
    return found


def imported_modules(module: str, tree: ast.Module, known: set[str], is_package: bool) -> set[str]:
    """The project modules `module` imports anywhere in its source (the most specific one that exists)."""

    def existing(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(existing(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from ..y import z`
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from lenet import serve` imports the module lenet.serve
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else existing(base))
    return {target for target in targets if target and target != module}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (strongly connected, 2+ modules), by
    Tarjan's algorithm; each group sorted, the groups in order of their first member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def measure(revision: str, folder: str = "lenet") -> dict:
    """Lines, files, the longest functions and the import cycles of `folder` at `revision`."""
    files = sources(revision, folder)
    modules = {module_name(path): source for path, source in files.items()}
    packages = {module_name(path) for path in files if path.endswith("/__init__.py")}
    trees = {module: ast.parse(source) for module, source in modules.items()}
    longest = sorted((f for module, tree in trees.items() for f in functions(module, tree)), key=lambda f: -f[1])
    graph = {module: imported_modules(module, tree, set(modules), module in packages) for module, tree in trees.items()}
    cycles = import_cycles(graph)
    return {
        "revision": revision,
        "commit": git("rev-parse", revision).strip(),
        "files": len(modules),
        "code_lines": sum(code_lines(source) for source in modules.values()),
        "total_lines": sum(len(source.splitlines()) for source in modules.values()),
        "longest_functions": [{"name": name, "lines": lines} for name, lines in longest[:LONGEST_SHOWN]],
        "import_cycles": cycles,
    }


def cycle_text(cycle: list[str]) -> str:
    return " ↔ ".join(module.removeprefix("lenet.") for module in cycle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", default=["HEAD"], help="git revisions (default: HEAD)")
    add_results_dir_option(parser)
    args = parser.parse_args()
    rows = [measure(revision) for revision in args.revisions]
    for row in rows:
        top = row["longest_functions"][0]
        cycles = "; ".join(cycle_text(c) for c in row["import_cycles"]) or "none"
        print(f"{row['revision']}: {row['code_lines']} lines of code ({row['total_lines']} in all) in {row['files']} files "
              f"under lenet/; longest function {top['name']} ({top['lines']} lines); "
              f"{len(row['import_cycles'])} import cycles: {cycles}")  # fmt: skip
    table = markdown_table(
        ["revision", "commit", "files", "code lines", "all lines", f"{LONGEST_SHOWN} longest functions (lines)", "import cycles"],
        [[row["revision"], row["commit"][:10], row["files"], row["code_lines"], row["total_lines"],
          ", ".join(f"`{f['name']}` {f['lines']}" for f in row["longest_functions"]),
          f"{len(row['import_cycles'])}: " + ("; ".join(cycle_text(c) for c in row["import_cycles"]) or "none")]
         for row in rows],
    )  # fmt: skip
    paths = write_results("loc", rows, table, results_dir=args.results_dir, title="Size and shape of lenet/")
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()

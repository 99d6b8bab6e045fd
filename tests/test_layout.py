"""The layout is the architecture (docs/ARCHITECTURE.md): no import cycles, nothing imports upward, every folder
says what it owns. Reads the sources with ``ast`` (imports inside functions count too)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "maskformer"
# The two documented lazy imports that reach up one floor (convenience constructors of the Predictor).
ALLOWED_UP = {("maskformer.inference.predictor", "maskformer.engine.checkpoint"),
              ("maskformer.inference.predictor", "maskformer.zoo")}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _imports() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            graph[name].update(c for c in candidates if c in modules and c != name)
    return graph


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles() -> None:
    graph = _imports()
    seen, stack, cycles = set(), [], []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])

    for module in sorted(_modules()):
        visit(module, stack)
    assert not cycles, cycles[:3]


def test_nothing_imports_upward() -> None:
    upper = {"engine", "cli", "zoo", "serve"}
    rules = {  # floor -> floors it must not import
        "modeling": {"data", "criterion", "engine", "cli", "inference", "zoo", "serve", "evaluation", "build"},
        "criterion": {"data", "modeling", "engine", "cli", "inference", "zoo", "serve", "build"},
        "data": {"modeling", "criterion", "engine", "cli", "zoo", "serve", "build"},
        "evaluation": {"modeling", "criterion", "engine", "cli", "inference", "zoo", "serve", "build"},
        "convert": {"engine", "cli", "zoo", "serve", "build", "inference", "data"},
        "inference": {"data", "engine", "cli", "zoo", "serve", "criterion", "build"},
        "build": upper,
        "config": {"modeling", "data", "engine", "cli", "build", "inference"},
        "errors": {"modeling", "data", "engine", "cli", "build", "inference", "config"},
        "optim": upper | {"build"},
        "engine": {"cli", "serve"},
        "zoo": {"cli", "serve"},
        "serve": {"cli", "engine"},
    }
    bad = []
    for module, targets in _imports().items():
        for target in targets:
            if (module, target) in ALLOWED_UP:
                continue
            if _floor(target) in rules.get(_floor(module), set()):
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_every_folder_says_what_it_owns() -> None:
    for init in SRC.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 40, f"{init.relative_to(SRC)} needs a docstring naming its job"

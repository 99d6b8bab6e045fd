"""The layout is the architecture (docs/ARCHITECTURE.md): no import cycles, every import points down, every folder
says what it owns and what it may import. Reads the sources with ``ast``: imports inside functions count too."""

from __future__ import annotations

import ast
import os
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "maskformer"

_BELOW_BUILD = {
    "allocator",
    "errors",
    "config",
    "optim",
    "modeling",
    "criterion",
    "evaluation",
    "data",
    "convert",
    "inference",
}
# Module (or package) -> the parts of the package it may import, as in each folder's ``__init__`` docstring; the
# longest matching key applies; a module may always import inside its own key.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "optim": {"errors"},
    "modeling": {"errors"},
    "modeling.backbone": {"errors", "modeling.layers"},
    "criterion": {"errors"},
    "evaluation": {"errors"},
    "data": {"errors", "inference.preprocess"},
    "convert": {"errors", "config", "modeling"},
    "inference": {"errors", "config"},
    "inference.accelerate": {"errors", "config", "modeling", "inference.postprocess", "allocator"},
    "build": _BELOW_BUILD,
    "engine": _BELOW_BUILD | {"build"},
    "fetch": {"errors"},  # downloads and Hub snapshots, for the zoo
    "zoo": _BELOW_BUILD | {"build", "engine", "fetch"},
    "serve": {"errors", "inference"},
    "cli": _BELOW_BUILD | {"build", "engine", "zoo", "serve", ""},  # "" = the public package itself
    "": _BELOW_BUILD | {"build", "engine", "zoo"},  # the public package: re-exports only
}
# The two leaves everything may import: the user-facing errors and the atomic file writes.
for _key, _allowed in MAY_IMPORT.items():
    if _key not in ("errors", "fileio"):
        _allowed.update({"errors", "fileio"})
MAY_IMPORT["fileio"] = set()
MAY_IMPORT["allocator"] = set()  # glibc malloc tuning: for the optimised Predictor and training
# Two documented lazy imports reach up (convenience constructors of the Predictor); each must stay inside a function.
ALLOWED_UP = {
    # Predictor.from_checkpoint: the checkpoint loader builds models, so it lives in engine/ above inference/
    ("inference.predictor", "engine.checkpoint"),
    # Predictor.from_pretrained: the zoo downloads and converts, so it lives above inference/ too
    ("inference.predictor", "zoo"),
}


def _modules() -> dict[str, Path]:
    """``{"": .../__init__.py, "inference.predictor": .../predictor.py, ...}`` (names relative to the package)."""
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports() -> dict[str, dict[str, bool]]:
    """module -> {imported module of the package: True if imported at module level (not inside a function)}."""
    modules = _modules()
    graph: dict[str, dict[str, bool]] = defaultdict(dict)
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(f.read_text())
        functions = [fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)]
        lazy = {id(n) for fn in functions for n in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = ["maskformer", *package.split(".")] if package else ["maskformer"]
                    base = parts[: len(parts) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for c in candidates:
                rel = c.removeprefix("maskformer").removeprefix(".")
                if (c == "maskformer" or c.startswith("maskformer.")) and rel in modules and rel != name:
                    graph[name][rel] = graph[name].get(rel, False) or id(node) not in lazy
    return graph


def _within(module: str, prefix: str) -> bool:
    return prefix == "" or module == prefix or module.startswith(prefix + ".")


def _rule(module: str) -> tuple[str, set[str]]:
    key = max((k for k in MAY_IMPORT if _within(module, k)), key=len)
    return key, MAY_IMPORT[key]


def test_the_graph_is_read():
    graph = _imports()
    assert graph["inference.predictor"]["engine.checkpoint"] is False  # the lazy one, seen inside from_checkpoint
    assert graph["inference.predictor"]["inference.postprocess"] is True
    assert graph[""]["inference.predictor"] is True  # relative import from the package __init__
    assert "modeling.layers" in graph["modeling.backbone.resnet"]  # ``from ..layers import``
    assert _rule("inference.accelerate.labels")[0] == "inference.accelerate" and _rule("zoo")[0] == "zoo"


def test_no_import_cycles() -> None:
    graph = _imports()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(_modules()):
        visit(module, [])
    assert not cycles, cycles[:3]


def test_every_import_points_down() -> None:
    bad = []
    for module, targets in _imports().items():
        key, allowed = _rule(module)
        for target, top_level in targets.items():
            if (module, target) in ALLOWED_UP:
                if top_level:
                    bad.append(f"{module} -> {target} must stay a lazy import inside a function")
                continue
            if not (_within(target, key) and key) and not any(_within(target, a) for a in allowed if a):
                if not ("" in allowed and target == ""):
                    bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_nothing_below_imports_engine_or_cli() -> None:
    # the rule stated on its own: only cli/, engine/, serve/, zoo and the package __init__ may import them
    top = {"cli", "engine", "serve", "zoo", ""}
    bad = [
        f"{m} -> {t}"
        for m, targets in _imports().items()
        for t in targets
        if t.split(".")[0] in {"engine", "cli"} and m.split(".")[0] not in top and (m, t) not in ALLOWED_UP
    ]
    assert not bad, bad


def test_every_folder_says_what_it_owns_and_may_import() -> None:
    for init in SRC.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        where = init.relative_to(SRC)
        assert doc and len(doc) > 40, f"{where} needs a docstring naming its job"
        if init.parent != SRC:
            assert "May import" in doc, f"{where}: the docstring should say what the folder may import"


def test_no_tool_imports_another_tool() -> None:
    """tools/ scripts share code through tools/experiment_common.py only."""
    tools = SRC.parents[1] / "tools"
    names = {f.stem for f in tools.glob("*.py")}
    assert "experiment_common" in names
    for f in tools.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert imported & names <= {"experiment_common"} - {f.stem}, f"{f.name} imports {imported & names}"


def test_the_speed_code_has_one_door() -> None:
    """Only the Predictor enters inference/accelerate (through its __init__); export reuses the FrozenBN folding and
    the benchmark times the optimised parts one by one (inference/accelerate/README.md)."""
    users = {
        m: {t for t in targets if _within(t, "inference.accelerate")}
        for m, targets in _imports().items()
        if not _within(m, "inference.accelerate")
    }
    users = {m: t for m, t in users.items() if t}
    assert users == {
        "inference.predictor": {"inference.accelerate"},
        "inference.export": {"inference.accelerate.fast_model"},
        "cli.benchmark": {"inference.accelerate.fast_model", "inference.accelerate.labels"},
    }


def test_no_source_file_is_ignored_by_git() -> None:
    """.gitignore's `build/` once hid src/maskformer/build/datasets.py: the working copy passed, a clone could not
    import maskformer.build. Every file of the package, tests, configs and benchmarks must be one git can track."""
    import shutil
    import subprocess

    root = SRC.parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "src", "tests", "configs", "benchmarks"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    hidden = [p for p in listed if "__pycache__" not in p and ".egg-info" not in p and not p.endswith(".pyc")]
    assert hidden == [], f"ignored by .gitignore but part of the project: {hidden}"


def test_the_command_line_starts_without_torch_and_takes_an_early_ctrl_c_in_one_line() -> None:
    """``import maskformer`` imported torch (~2 s) before the command set up its interrupt handling: a Ctrl-C in the
    first seconds of any command printed a 30-line traceback. The package's names are now imported when first used."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    probe = "import sys, maskformer, maskformer.cli; maskformer.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout == "False\n"
    early = (
        "import os, signal, sys, threading\n"
        "from maskformer.cli import main\n"
        "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        # (a command of seconds, so that the Ctrl-C lands within it also on a loaded machine: the demo config's 2 s
        # run once ended before a late timer, whose Ctrl-C at the interpreter's exit was then ignored: exit 0)
        "sys.argv = ['maskformer', 'info', 'configs/ade20k-150/maskformer_R50_bs16_160k.yaml']\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", early], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 130 and done.stderr.strip() == "maskformer info: interrupted", done.stderr


def test_subpackages_are_reached_from_the_package_and_an_import_cut_by_ctrl_c_is_an_interrupt(
    monkeypatch, capsys
) -> None:
    """After the lazy package import, ``maskformer.zoo`` (and every subpackage) raised AttributeError; a Ctrl-C that
    cut numpy's import surfaced as numpy's "Importing the numpy C-extensions failed" ImportError (exit 1)."""
    import subprocess
    import sys

    import maskformer.cli.info as info
    from maskformer.cli import main

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    probe = "import maskformer; print(maskformer.zoo.__name__, maskformer.errors.DataError.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout == "maskformer.zoo DataError\n", out.stderr

    def cut_import(args) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("Importing the numpy C-extensions failed.")  # noqa: B904 - (as numpy raises it)

    monkeypatch.setattr(info, "run", cut_import)
    assert main(["info", "configs/demo.yaml"]) == 130
    assert capsys.readouterr().err.strip() == "maskformer info: interrupted"


def test_the_package_lists_its_public_names_not_its_helpers() -> None:
    """dir(maskformer) listed Any, TYPE_CHECKING, annotations and importlib beside the API."""
    import maskformer

    names = dir(maskformer)
    assert set(maskformer.__all__) <= set(names) and "__version__" in names
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names), names

"""The import contract: one-way layers and no circles, lazy imports included.

Every ``import`` / ``from ... import`` statement at any depth (inside functions
and methods too) is read from the source with :mod:`ast`, so an import that only
runs when a magic is called counts as much as one at the top of a module.

Layers, lowest first; a module may import only from its own layer or a lower one:

1. ``config``, ``options``, ``errors``, ``events``, ``units``, ``fileio``, ``_version``, ``quiet``, ...
2. ``data``, ``memory``
3. ``engine``
4. ``views``
5. ``magics``
6. ``cli`` and the package's ``__init__`` (the public façade and ``%load_ext`` entry point)

Imports under ``if TYPE_CHECKING:`` never run, so they are held to the layer
order but left out of the circle check (a type hint naming ``Session`` is not a
load-order dependency).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "qlora_nb"

LAYERS: list[tuple[str, ...]] = [
    ("config", "command_options", "options", "errors", "events", "units", "fileio", "_version", "precision", "textsplit", "overwrite",
     "weightfiles", "quiet", "naming"),
    ("data", "memory"),
    ("engine",),
    ("views",),
    ("magics",),
    ("cli", ""),  # "" is the package itself (qlora_nb/__init__.py)
]

# Copied out as a standalone train.py by `%qlora_export`; it uses the public API (`import qlora_nb`) like a
# user's script would, and nothing in the package imports it.
STANDALONE = {"qlora_nb.engine.export.script_template"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer_of(module: str) -> int:
    rest = module.split(".")[1:]
    top = rest[0] if rest else ""
    for i, names in enumerate(LAYERS, start=1):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS in tests/test_layers.py")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    out.update(id(n) for n in ast.walk(sub))
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported qlora_nb module, line, runs at run time) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        for target in targets:
            if target == "qlora_nb" or target.startswith("qlora_nb."):
                while target not in modules:  # `import qlora_nb.x.y` of an attribute: its module
                    target = target.rpartition(".")[0]
                out.append((target, node.lineno, id(node) not in typing_only))
    return out


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items() if m not in STANDALONE}


def upward_imports(g: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    bad = []
    for module, targets in g.items():
        for target, line, _ in targets:
            if target != module and layer_of(target) > layer_of(module):
                bad.append(f"{module}:{line} imports {target} (layer {layer_of(module)} -> {layer_of(target)})")
    return bad


def cycles(g: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), over run-time imports."""
    edges = {m: sorted({t for t, _, runtime in ts if runtime and t != m and t in g}) for m, ts in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_no_upward_imports():
    bad = upward_imports(graph())
    assert not bad, "imports that run back up a layer:\n" + "\n".join(bad)


def test_no_import_circles():
    found = cycles(graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_can_fail(tmp_path):
    """The contract catches a lazy upward import and a circle (so the two tests above can fail)."""
    g = graph()
    g["qlora_nb.memory.ledger"] = g["qlora_nb.memory.ledger"] + [("qlora_nb.views.base", 1, True)]
    assert any("qlora_nb.memory.ledger:1 imports qlora_nb.views.base" in b for b in upward_imports(g))
    g["qlora_nb.errors"] = g["qlora_nb.errors"] + [("qlora_nb.events", 1, True)]
    g["qlora_nb.events"] = g["qlora_nb.events"] + [("qlora_nb.errors", 1, True)]
    assert ["qlora_nb.errors", "qlora_nb.events"] in cycles(g)
    # a lazy import inside a function body is seen
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from qlora_nb.views import base\n", encoding="utf-8")
    modules = all_modules()
    assert imports_of("qlora_nb.memory.m", src, modules) == [("qlora_nb.views.base", 2, True)]


@pytest.mark.parametrize("name", ["views", "magics"])
def test_the_engine_never_imports_a_view_or_a_magic(name):
    g = graph()
    offenders = [f"{m} -> {t}" for m, ts in g.items() if m.startswith("qlora_nb.engine")
                 for t, _, _ in ts if t.startswith(f"qlora_nb.{name}")]
    assert not offenders


# ------------------------------------------------------------------ no shell below the views
SHELL_PACKAGES = ("IPython", "ipywidgets", "anywidget", "ipykernel")
_SHELL_NAME = re.compile(rf"({'|'.join(SHELL_PACKAGES)})(\.\w+)*")
BELOW_VIEWS = ("config", "options", "errors", "events", "units", "data", "memory", "engine")


def shell_references(path: Path) -> list[str]:
    """Imports of a shell/widget package, and module names of one written as text (``sys.modules.get(...)``,
    ``importlib.import_module(...)``): both mean the module knows about the notebook front end."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _SHELL_NAME.fullmatch(node.value):
            names = [node.value]
        found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in SHELL_PACKAGES]
    return found


def test_nothing_below_the_views_knows_the_shell_or_the_widgets():
    """data, memory and engine (and layer 1) neither import IPython/ipywidgets/anywidget/ipykernel nor look them
    up in ``sys.modules``: shell and widget work (``Out``, ``user_ns``, the widget registry) is the views' and
    the magics'."""
    offenders = [ref for m, p in all_modules().items() if m.split(".")[1:2] and m.split(".")[1] in BELOW_VIEWS
                 for ref in shell_references(p)]
    assert not offenders, "shell/widget knowledge below the views:\n" + "\n".join(offenders)


def test_the_shell_check_can_fail(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('import sys\nimport IPython.display\nfrom ipykernel import kernelapp\n\n'
                   'def f():\n    return sys.modules.get("ipywidgets.widgets.widget")\n'
                   '"""IPython\'s displayhook is prose, not a lookup."""\n', encoding="utf-8")
    assert shell_references(src) == ["m.py:2 IPython.display", "m.py:3 ipykernel", "m.py:6 ipywidgets.widgets.widget"]


# ------------------------------------------------------------------ the engine's sub-packages
# Lowest first: a module of the engine imports only from its own group or one before it. The shared lifecycle
# (unloading frees an attached GGUF; an OOM asks the planner for the cheapest fix) sits between generation
# and training, and the Session facade above everything.
ENGINE_GROUPS: list[tuple[str, ...]] = [
    ("arguments", "rollback"),
    ("scale",),
    ("model",),
    ("speed",),
    ("forecast",),
    ("export",),
    ("generation",),
    ("lifecycle", "interrupts"),
    ("training",),
    ("session", ""),  # "" is qlora_nb/engine/__init__.py
]


def engine_group(module: str) -> int:
    parts = module.split(".")
    assert parts[:2] == ["qlora_nb", "engine"], module
    top = parts[2] if len(parts) > 2 else ""
    for i, names in enumerate(ENGINE_GROUPS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no engine group: add it to ENGINE_GROUPS in tests/test_layers.py")


def engine_edges(g: dict[str, list[tuple[str, int, bool]]]) -> list[tuple[str, str, int, bool]]:
    return [(m, t, line, runtime) for m, ts in g.items() if m.startswith("qlora_nb.engine")
            for t, line, runtime in ts if t.startswith("qlora_nb.engine") and t != m]


def backward_engine_imports(g: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    """Imports that run back up a group. One kind is allowed: a type hint (``if TYPE_CHECKING:``) naming the
    ``Session`` an operation acts on; it never runs, so it orders nothing."""
    return [f"{m}:{line} imports {t}" for m, t, line, runtime in engine_edges(g)
            if engine_group(t) > engine_group(m) and (runtime or t != "qlora_nb.engine.session")]


def subpackage_cycles(g: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Circles between the engine's groups (run-time imports; a type hint is not a load-order dependency)."""
    def group_name(module: str) -> str:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 else ""

    collapsed: dict[str, list[tuple[str, int, bool]]] = {}
    for m, t, line, runtime in engine_edges(g):
        a, b = group_name(m), group_name(t)
        collapsed.setdefault(a, [])
        collapsed.setdefault(b, [])
        if a != b:
            collapsed[a].append((b, line, runtime))
    return cycles(collapsed)


def test_every_engine_module_has_a_group():
    for module in all_modules():
        if module.startswith("qlora_nb.engine"):
            engine_group(module)


def test_engine_groups_import_one_way():
    bad = backward_engine_imports(graph())
    assert not bad, "engine imports that run back up a group:\n" + "\n".join(bad)


def test_no_circles_between_engine_subpackages():
    found = subpackage_cycles(graph())
    assert not found, "circles between engine sub-packages:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_engine_checks_can_fail():
    """Plant a circle between two sub-packages: both checks see it."""
    g = graph()
    g["qlora_nb.engine.model.quantize"] = g["qlora_nb.engine.model.quantize"] + [
        ("qlora_nb.engine.training.train", 1, True)]
    assert any("qlora_nb.engine.model.quantize:1 imports qlora_nb.engine.training.train" in b
               for b in backward_engine_imports(g))
    assert any({"model", "training"} <= set(c) for c in subpackage_cycles(g))


def test_engine_top_holds_only_the_facade_and_the_shared_lifecycle():
    """The flat folder is gone: every other module lives in a sub-package named for its capability."""
    top = sorted(p.stem for p in (PKG / "engine").glob("*.py") if p.stem != "__init__")
    assert top == sorted(n for group in ENGINE_GROUPS for n in group if n and (PKG / "engine" / f"{n}.py").exists())
    assert top == ["arguments", "interrupts", "lifecycle", "rollback", "session"]

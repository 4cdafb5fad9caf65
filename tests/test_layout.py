"""The package's import graph is its architecture: these tests fail when a module crosses a line of the house plan.

The plan (README "Code map", and PLAN below): cli -> tasks -> video; cli/tasks -> factory;
factory -> registry -> models; factory -> weights; registry -> weights/manifest.py (the records naming where weights
live). ``models/`` needs only torch, torchvision.ops and einops; ``weights/`` imports no other part of the package and
``video/`` none but itself; nothing imports ``cli``; no cycles; no module imports another module's private names.
The one exception to every rule: ``slowfast_zoo/errors.py``, the root of the package's own exceptions, which every
module may import and which itself imports nothing of the package (so ``except SlowFastZooError`` catches the
errors of every layer).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "slowfast_zoo"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_module_names() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for every import statement in one file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {  # ``if TYPE_CHECKING:`` imports name types for annotations; they never run
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            found.append((target, names))  # ``from pkg import module`` also imports the module itself:
            found += [(f"{target}.{n}", []) for n in names if f"{target}.{n}" in _all_module_names()]
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {mod: _imports(path) for mod, path in MODULES.items()}


def _internal(target: str) -> str | None:
    """The package module an import names (the longest known prefix), or None for third-party / stdlib."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> set[tuple[str, str]]:
    return {(m, t) for m, imps in GRAPH.items() for target, _ in imps if (t := _internal(target)) and t != m}


# The plan as an allow-list: the subpackages each part may import (besides itself and the leaves every module may
# import: errors.py, the root exception, and version.py, the version string). An import the plan does not name fails,
# and so does a new top-level module or subpackage until its rule is written here.
LEAVES = {"errors", "version"}
PLAN = {
    "__init__": {"factory", "models", "registry", "tasks", "weights"},  # the public API re-exports the layers
    "cli": {"__init__", "factory", "registry", "tasks", "video", "weights"},  # public names only (checked below)
    "factory": {"models", "registry", "weights"},
    "tasks": {"factory", "models", "registry", "video", "weights"},  # models: optimize (live's compiled model)
    "registry": {"models", "weights"},  # weights: manifest.py only (checked below)
    "models": set(),
    "weights": set(),
    "video": set(),
    **{leaf: set() for leaf in LEAVES},
}


def test_every_subpackage_has_a_rule():
    assert {_area(m) for m in MODULES} == set(PLAN), "a new subpackage needs its line in PLAN (and the README)"


def test_the_subpackage_graph_is_the_plan():
    crossings = sorted(
        f"{a} -> {b}"
        for a, b in _edges()
        if _area(a) != _area(b) and _area(b) not in LEAVES and _area(b) not in PLAN.get(_area(a), set())
    )
    assert not crossings, crossings


@pytest.mark.parametrize("module", [m for m in MODULES if _area(m) == "models"])
def test_models_need_only_torch_torchvision_ops_einops(module):
    for target, _ in GRAPH[module]:
        top = target.split(".")[0]
        if _internal(target):
            assert _area(_internal(target)) in ("models", "errors"), f"{module} imports {target}"
        elif top == "torchvision":
            assert target.startswith("torchvision.ops"), f"{module} imports {target}"
        else:
            assert top in STDLIB | {"torch", "einops"}, f"{module} imports {target}"


@pytest.mark.parametrize(
    ("area", "forbidden"),
    [
        ("weights", {"models", "registry", "video", "tasks", "factory", "cli", "__init__"}),
        ("video", {"models", "registry", "weights", "tasks", "factory", "cli", "__init__"}),
        ("registry", {"video", "tasks", "factory", "cli", "__init__"}),
        ("tasks", {"cli"}),
        ("factory", {"tasks", "video", "cli"}),
    ],
)
def test_one_way_imports(area, forbidden):
    crossings = [(a, b) for a, b in _edges() if _area(a) == area and _area(b) in forbidden]
    assert not crossings, f"{area}/ must not import {sorted(forbidden)}: {crossings}"


def test_registry_needs_only_the_weight_records():
    """A pretrained config names where its weights live (HubFile, Origin, provenance records of weights/manifest.py);
    the registry never reads, downloads or converts files."""
    crossings = {b for a, b in _edges() if _area(a) == "registry" and _area(b) == "weights"}
    assert crossings <= {"slowfast_zoo.weights.manifest"}, crossings


ERRORS = "slowfast_zoo.errors"


def test_the_root_error_module_imports_nothing_of_the_package():
    """Every layer may import slowfast_zoo/errors.py (the one shared root exception); it depends on no layer."""
    assert ERRORS in MODULES
    assert not [t for t, _ in GRAPH[ERRORS] if _internal(t)], GRAPH[ERRORS]


def test_nothing_imports_cli():
    assert not [a for a, b in _edges() if b == "slowfast_zoo.cli"]


def test_cli_uses_only_the_public_api():
    """Everything the CLI does a user can do in Python: it calls public names, never a model's internals."""
    for target, names in GRAPH["slowfast_zoo.cli"]:
        module = _internal(target)
        if module is None:
            continue
        assert _area(module) != "models", f"cli imports {target}: models are built through create()"
        assert not any(n.startswith("_") for n in names), f"cli imports private names {names} of {target}"
        assert not any(part.startswith("_") for part in target.split(".")), f"cli imports private {target}"


def test_no_import_cycles():
    edges = _edges()
    succ: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b in edges:
        # a package's __init__ re-exporting its children is not a cycle of logic
        if not b.startswith(a + ".") and not a.startswith(b + ".") and b != "slowfast_zoo":
            succ[a].add(b)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in succ[node]:
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_no_private_names_across_modules():
    leaks = [
        f"{m} imports {target}.{n}"
        for m, imps in GRAPH.items()
        for target, names in imps
        if _internal(target) and _internal(target) != m
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not leaks, leaks


def test_decoding_knows_no_preprocessing():
    """io.py decodes frames; how they are preprocessed afterwards (transforms) is not its business."""
    internal = {_internal(t) for t, _ in GRAPH["slowfast_zoo.video.io"]} - {None, "slowfast_zoo.video", ERRORS}
    assert internal <= {"slowfast_zoo.video.views"}, f"video/io.py imports {sorted(internal)}"
    views = {_internal(t) for t, _ in GRAPH["slowfast_zoo.video.views"]} - {None, "slowfast_zoo.video"}
    assert not views, f"video/views.py (pure index arithmetic) imports {sorted(views)}"


def test_only_the_ray_runner_imports_ray():
    """Ray is an optional extra (``slowfast-zoo[ray]``): tasks/ray_jobs.py is the one module that imports it, and
    only evaluate and the CLI import ray_jobs (inside the functions that run ``engine="ray"``)."""
    importers = {m for m, imps in GRAPH.items() for target, _ in imps if target.split(".")[0] == "ray"}
    assert importers <= {"slowfast_zoo.tasks.ray_jobs"}, importers
    users = {a for a, b in _edges() if b == "slowfast_zoo.tasks.ray_jobs"}
    assert users <= {"slowfast_zoo.cli", "slowfast_zoo.tasks.evaluate"}, users


def test_importing_the_package_and_cli_loads_no_ray():
    import subprocess

    code = "import sys, slowfast_zoo, slowfast_zoo.cli; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent).returncode == 0

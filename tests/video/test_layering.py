"""video/ knows no models and no registry: it gets sizes, rates and protocol from a config object."""

from __future__ import annotations

import ast
from pathlib import Path

import slowfast_zoo.video

VIDEO = Path(slowfast_zoo.video.__file__).parent


def imports(path: Path) -> set[str]:
    """Modules a file imports (relative imports resolved against slowfast_zoo.video), TYPE_CHECKING ones included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ["slowfast_zoo", "video"][: max(0, 3 - node.level)] if node.level else []
            out.add(".".join([*base, node.module] if node.module else base))
    return out


def test_video_imports_no_models_registry_weights_or_tasks():
    for path in VIDEO.glob("*.py"):
        layers = tuple(f"slowfast_zoo.{p}" for p in ("models", "registry", "weights", "tasks", "factory", "cli"))
        bad = {m for m in imports(path) if m.startswith(layers)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_io_does_not_import_transforms_and_views_imports_nothing_of_video():
    assert not any(m.endswith("transforms") for m in imports(VIDEO / "io.py"))
    assert not any(m.startswith("slowfast_zoo") for m in imports(VIDEO / "views.py"))

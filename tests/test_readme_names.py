"""Every dotted ``slowfast_zoo.…`` name the README shows imports as written."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NAMES = sorted({m.rstrip(".") for m in re.findall(r"\bslowfast_zoo(?:\.[A-Za-z_]\w*)+\.?", README.read_text())})


def test_the_readme_shows_dotted_names():
    assert {"slowfast_zoo.metrics.topk_accuracy", "slowfast_zoo.create"} <= set(NAMES), NAMES


@pytest.mark.parametrize("name", NAMES)
def test_readme_name_imports_as_written(name):
    """``a.b.c`` works as ``from a.b import c`` and as ``import a.b`` (when ``a.b`` is a module or alias)."""
    parent, _, last = name.rpartition(".")
    module = importlib.import_module(parent)  # ModuleNotFoundError for an attribute that only looks like a module
    assert hasattr(module, last), f"from {parent} import {last}: no such name"
    if inspect.ismodule(getattr(module, last)):  # a module shown by name: ``import slowfast_zoo.data`` works too
        assert importlib.import_module(name) is getattr(module, last)

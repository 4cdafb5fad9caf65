"""One root for the package's own errors, and no decision taken on an error's message text."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import slowfast_zoo
from slowfast_zoo.errors import SlowFastZooError

PACKAGE = Path(slowfast_zoo.__file__).parent
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
)


def _own_exceptions() -> dict[str, type]:
    found = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{attr}"] = obj
    return found


def test_every_exception_class_of_the_package_derives_from_the_root():
    found = _own_exceptions()
    assert len(found) >= 10, sorted(found)  # weights, video, registry, checkpoint, annotations, outputs...
    strays = [name for name, cls in found.items() if not issubclass(cls, SlowFastZooError)]
    assert not strays, f"not under SlowFastZooError: {strays}"


# ``"deadline" in str(e)``, ``"HTTP 404" in f``, ``str(e).startswith(...)``, ``text.replace(<message>, ...)``
MESSAGE_TESTS = re.compile(
    r"""(["'][^"']*["']\s+(not\s+)?in\s+(str\(\w+\)|f\b|msg\b|message\b|text\b))|(str\(e\w*\)\.(startswith|endswith)\()"""
    r"""|(text\.replace\(["'])"""
)


def test_no_control_flow_on_error_message_text():
    hits = [
        f"{p.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if MESSAGE_TESTS.search(line)
    ]
    assert not hits, hits

"""The documentation site: its Python examples run, its API reference covers ``__all__``, its README includes
resolve, and (with the ``[docs]`` extra installed) ``mkdocs build --strict`` passes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import slowfast_zoo

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples() -> list[tuple[str, str]]:
    return [(p.relative_to(DOCS).as_posix(), block) for p in PAGES for block in _BLOCK.findall(p.read_text())]


def test_the_docs_have_examples() -> None:
    assert {page for page, _ in _examples()} >= {"index.md", "tasks/predict.md", "tasks/finetune.md"}


@pytest.mark.parametrize(("page", "code"), _examples(), ids=[f"{p}#{i}" for i, (p, _) in enumerate(_examples())])
def test_docs_example_runs(page, code, tmp_path, monkeypatch) -> None:
    """Each Python block of a docs page, as written (they run offline: no ``pretrained=True``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(code, f"docs/{page}", "exec"), {"__name__": "__docs__"})


def test_api_reference_lists_every_public_name() -> None:
    text = (DOCS / "reference.md").read_text()
    listed = re.findall(r"^\s+- (\S+)$", text, re.M)
    assert sorted(listed) == sorted(slowfast_zoo.__all__)  # each once, none missing, none that is not public


def test_every_readme_include_resolves_and_the_model_table_is_the_registry() -> None:
    hooks = _hooks()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        out = hooks.expand(page.read_text(encoding="utf-8"), readme)
        assert "<!-- readme:" not in out and "<!-- models-table -->" not in out, page
    table = hooks.models_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == slowfast_zoo.list_pretrained()
    # PySlowFast MODEL_ZOO.md SLOWFAST_8x8_R50: 77.0 / 92.6; parameters and GFLOPs as in the README's model table
    assert "| `slowfast_r50_8x8.k400_pysf` | 34.57 M | 65.71 | kinetics400 | top1 77.0, top5 92.6 |" in table


def test_sphinx_roles_render_as_code() -> None:
    html = "Inverse of :meth:<code>to_dict</code>; see :func:<code>~slowfast_zoo.weights.convert.convert</code>."
    assert _hooks().on_page_content(html) == "Inverse of <code>to_dict</code>; see <code>convert</code>."


def test_a_missing_readme_section_fails_the_build() -> None:
    with pytest.raises(KeyError, match="no section '## Nowhere'"):
        _hooks().expand("<!-- readme: Nowhere -->\n", "# t\n\n## Somewhere\n\ntext\n")


def test_site_builds_strict(tmp_path) -> None:
    """``mkdocs build --strict``: every page, link and docstring reference resolves; the reference names each export."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"NO_MKDOCS_2_WARNING": "1", **_env()})
    assert done.returncode == 0, done.stderr[-4000:]
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for name in slowfast_zoo.__all__:
        assert f'id="slowfast_zoo.{name}"' in reference, name
    assert "slowfast_r101_50_50_16x8.k400_ptv" in (site / "models" / "index.html").read_text(encoding="utf-8")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)

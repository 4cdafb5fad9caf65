"""MkDocs hooks for the documentation site (mkdocs.yml ``hooks:``): the README stays the one text.

- ``<!-- readme: TITLE -->`` on a line of its own is replaced by the README section ``## TITLE`` (its body, down to
  the next ``## `` heading). Links to repository files become plain code: the site holds only docs/.
- Sphinx roles in docstrings (``:class:`x```, ``:func:`~a.b.c```) are shown as code (``x``, ``c``): the docstrings
  are written for both help() and the site, and the site renders Markdown.
- ``<!-- models-table -->`` is replaced by the table of every pretrained model, generated from the registry
  (``slowfast_zoo.list_pretrained`` and each ``PretrainedCfg``), never typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_INCLUDE = re.compile(r"^<!-- readme: (.+?) -->$", re.M)
_ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>~?(?:[\w.]*\.)?([\w]+)</code>")
_LOCAL_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)[^)]+\)")


def readme_sections(text: str) -> dict[str, str]:
    """``{heading: body}`` of every ``## `` section (code blocks are skipped when looking for headings)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            continue
        if current is not None:
            current.append(line)
    return {k: "\n".join(v).strip() + "\n" for k, v in sections.items()}


def models_table() -> str:
    """One row per pretrained ``arch.tag``: parameters, GFLOPs, dataset, published metrics."""
    import slowfast_zoo

    rows = [
        "| model | params | GFLOPs/view | dataset | published metrics |",
        "|---|---|---|---|---|",
    ]
    for name in slowfast_zoo.list_pretrained():
        cfg = slowfast_zoo.get_pretrained_cfg(name)
        params = f"{cfg.params / 1e6:.2f} M" if cfg.params else "-"
        gflops = f"{cfg.gflops:.2f}" if cfg.gflops else "-"
        metrics = ", ".join(f"{k} {v}" for k, v in cfg.metrics.items()) or "-"
        rows.append(f"| `{name}` | {params} | {gflops} | {cfg.dataset} | {metrics} |")
    return "\n".join(rows) + "\n"


def expand(markdown: str, readme: str) -> str:
    """The page with its README includes and generated tables filled in."""
    sections = readme_sections(readme)

    def include(m: re.Match[str]) -> str:
        title = m[1]
        if title not in sections:
            raise KeyError(f"README.md has no section '## {title}' (known: {sorted(sections)})")
        return _LOCAL_LINK.sub(r"\1", sections[title])

    markdown = _INCLUDE.sub(include, markdown)
    if "<!-- models-table -->" in markdown:
        markdown = markdown.replace("<!-- models-table -->", models_table())
    return markdown


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return expand(markdown, (ROOT / "README.md").read_text(encoding="utf-8"))


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(r"<code>\1</code>", html)

"""Evaluation results as pictures: a bar per class (AP or accuracy), sorted, as papers show AVA's per-class AP.

Needs matplotlib (``pip install "slowfast-zoo[plot]"``); the PNG is written atomically (a temporary file renamed into
place, a symlink planted at the output replaced, never followed).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..weights.cache import atomic_write

__all__ = ["metrics_figure", "per_class_figure", "save_png"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('plots need matplotlib: pip install "slowfast-zoo[plot]"') from e
    return plt


def per_class_figure(values: Mapping[str, float], title: str, metric: str = "AP (%)") -> Any:
    """A horizontal bar per class, highest on top; classes without a value (NaN) are left out."""
    plt = _pyplot()
    items = sorted(((v, k) for k, v in values.items() if not math.isnan(v)), reverse=True)
    if not items:
        raise ValueError(f"{title}: no class has a value to plot")
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.22 * len(items)), dpi=100)
    ax.barh(range(len(items)), [v for v, _ in items], color="#4878a8")
    ax.set_yticks(range(len(items)), [k for _, k in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def metrics_figure(result: Any) -> Any:
    """Measured next to published for each metric row of an :class:`~slowfast_zoo.tasks.evaluate.EvalResult`."""
    plt = _pyplot()
    rows = result.metrics
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(rows), 3.5), dpi=100)
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [m.measured for m in rows], 0.4, label="measured", color="#4878a8")
    ax.bar([x + 0.2 for x in xs], [m.published or 0.0 for m in rows], 0.4, label="published", color="#b0b0b0")
    ax.set_xticks(list(xs), [m.name for m in rows], fontsize=8)
    ax.set_title(f"{result.model} on {result.dataset} ({result.used} videos)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig: Any, out: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG, all or nothing, and close it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        _pyplot().close(fig)
    atomic_write(out, buf.getvalue())
    return Path(out)

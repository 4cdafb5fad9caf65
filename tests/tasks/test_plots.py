"""evaluate --plot: bars per class (sorted, NaN left out) and measured vs published, as PNG files written atomically."""

from __future__ import annotations

import math

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from slowfast_zoo.tasks.evaluate import EvalResult, MetricRow
from slowfast_zoo.tasks.plots import metrics_figure, per_class_figure, save_png


def bars(fig):
    ax = fig.axes[0]
    return [p.get_width() for p in ax.patches], [t.get_text() for t in ax.get_yticklabels()]


def test_per_class_bars_are_the_values_highest_first(tmp_path):
    values = {"stand": 80.5, "sit": 75.0, "talk to": 60.25, "swim": math.nan, "ride": 3.0}
    fig = per_class_figure(values, "slowfast_r50_8x8_det on ava")
    widths, names = bars(fig)
    assert widths == [80.5, 75.0, 60.25, 3.0] and names == ["stand", "sit", "talk to", "ride"]
    out = save_png(fig, tmp_path / "ap.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width == 700


def test_metric_rows_measured_next_to_published(tmp_path):
    rows = [MetricRow("top1", 75.5, 77.0, 120, 0), MetricRow("top5", 92.0, None, 120, 0)]
    result = EvalResult("slow_r50_8x8", "kinetics400", rows, videos=120)
    fig = metrics_figure(result)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [75.5, 92.0, 77.0, 0.0]
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    (tmp_path / "m.png").symlink_to(victim)
    out = save_png(fig, tmp_path / "m.png")
    assert victim.read_bytes() == b"keep" and not out.is_symlink() and out.read_bytes()[:4] == b"\x89PNG"


def test_nothing_to_plot_is_an_error():
    with pytest.raises(ValueError, match="no class has a value"):
        per_class_figure({"a": math.nan}, "empty")

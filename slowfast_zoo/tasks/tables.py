"""Plain-text tables for the command line and results (``predict``, ``evaluate``, ``list``, ``detect``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, right_align_last: bool = False) -> str:
    """Columns padded to their widest cell, two spaces apart, a dashed line under the header."""
    table = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    last = len(widths) - 1

    def line(row: list[str]) -> str:
        cells = (
            c.rjust(w) if right_align_last and j == last else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))
        )
        return "  ".join(cells).rstrip()

    lines = [line(row) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

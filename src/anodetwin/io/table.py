"""Tables as CSV text: the one writer of every result table (study results, run summaries,
validation metrics, region statistics, morphology).

Floats are written with 8 significant digits by default (``%.8g``; ``digits=None``: the
shortest text that reads back to the same float), ``None`` as an empty cell, other values
with ``str``; the header is the keys of the first row, in order, and lines end in
``\\n`` on every platform. Write the text with :func:`anodetwin.io.atomic_write_text`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["csv_text"]


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
             digits: int | None = 8) -> str:
    """CSV text of ``rows`` (dicts with the same keys).

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per row.
    columns : sequence of str, optional
        The columns, in order (default: the first row's keys). With no rows and no columns
        the text is empty.
    digits : int or None
        Significant digits of floats (``%.<digits>g``); None writes ``repr``, the shortest
        text that reads back exactly.

    Returns
    -------
    str
        Header line and one line per row.
    """
    if columns is None and not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns if columns is not None else rows[0]),
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v, digits) for k, v in r.items()})
    return buf.getvalue()


def _cell(value: Any, digits: int | None) -> Any:
    """One CSV cell: None empty, floats with ``digits`` significant digits (None: repr)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if digits is None else f"{value:.{digits}g}"
    return value

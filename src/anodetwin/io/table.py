"""Tables as CSV text: one writer for result tables (design studies today).

Floats are written with 8 significant digits by default (``%.8g``), ``None`` as an empty cell, other
values with ``str``; the header is the keys of the first row, in order, and lines end in
``\\n`` on every platform. Write the text with :func:`anodetwin.io.atomic_write_text`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["csv_text"]


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
             digits: int = 8) -> str:
    """CSV text of ``rows`` (dicts with the same keys).

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per row.
    columns : sequence of str, optional
        The columns, in order (default: the first row's keys). With no rows and no columns
        the text is empty.
    digits : int
        Significant digits of floats (``%.<digits>g``).

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
        w.writerow({k: ("" if v is None else (f"{v:.{digits}g}" if isinstance(v, float)
                                              else v)) for k, v in r.items()})
    return buf.getvalue()

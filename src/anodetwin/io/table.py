"""Tables as CSV text: one writer for result tables (design studies today).

Floats are written with 8 significant digits (``%.8g``), ``None`` as an empty cell, other
values with ``str``; the header is the keys of the first row, in order, and lines end in
``\\n`` on every platform. Write the text with :func:`anodetwin.io.atomic_write_text`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["csv_text"]


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of ``rows`` (dicts with the same keys).

    Parameters
    ----------
    rows : sequence of mapping
        One mapping per row; the first row's keys are the columns.

    Returns
    -------
    str
        Header line and one line per row.
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else (f"{v:.8g}" if isinstance(v, float) else v))
                    for k, v in r.items()})
    return buf.getvalue()

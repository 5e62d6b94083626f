"""Figures without a display: the Agg backend and atomic PNG writes."""

from __future__ import annotations

import os
from typing import Any

from anodetwin.io import atomic_path

__all__ = ["pyplot", "save_png", "img_tag"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Returns
    -------
    module
        ``matplotlib.pyplot``, with the backend set to Agg (no display needed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 90) -> None:
    """Write a figure as PNG atomically and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : path-like
        The PNG file (replaced atomically).
    dpi : int
        Resolution (dots per inch).
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def img_tag(path: str | os.PathLike) -> str:
    """An HTML ``<img>`` with a PNG embedded (self-contained reports).

    Parameters
    ----------
    path : path-like
        The PNG file; its stem becomes the ``alt`` text.

    Returns
    -------
    str
        ``<img src="data:image/png;base64,...">``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    """
    import base64
    import html
    from pathlib import Path

    p = Path(path)
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(p.stem)}">'

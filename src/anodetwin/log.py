"""Logging and progress bars.

anodetwin logs through the standard :mod:`logging` module under the ``"anodetwin"`` logger.
Long work shows a rich progress bar on standard error when the logger is at INFO level or
below and the work is large enough to take more than a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

__all__ = ["get_logger", "configure_logging", "progress_bar", "PROGRESS_MIN_BYTES"]

#: Work smaller than this (bytes) gets no progress bar.
PROGRESS_MIN_BYTES = 256 * 1024**2

_LOGGER = logging.getLogger("anodetwin")


def get_logger(name: str | None = None) -> logging.Logger:
    """Logger ``anodetwin`` or one of its children (``anodetwin.<name>``).

    Parameters
    ----------
    name : str or None, optional
        Child name, e.g. ``"dvc"``; None or an empty string gives the package logger.

    Returns
    -------
    logging.Logger
        The package logger or its child ``anodetwin.<name>``.
    """
    return _LOGGER.getChild(name) if name else _LOGGER


def configure_logging(verbosity: int = 0) -> None:
    """Set up logging for the command-line interface.

    Parameters
    ----------
    verbosity : int
        -1 quiet (warnings and errors only, no progress bars), 0 normal (info), 1 verbose
        (debug).
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    _LOGGER.handlers.clear()
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=Console(stderr=True), show_time=False, show_path=verbosity > 0,
            markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    except ImportError:  # pragma: no cover - rich is a dependency
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _LOGGER.addHandler(handler)
    _LOGGER.setLevel(level)
    _LOGGER.propagate = False


@contextlib.contextmanager
def progress_bar(description: str, total: float, enabled: bool = True,
                 min_total: float = PROGRESS_MIN_BYTES) -> Iterator[Callable[[float], None]]:
    """Context manager yielding ``advance(amount)``; shows a bar for large work.

    The bar is shown only if ``enabled``, ``total >= min_total`` and the ``anodetwin`` logger
    lets INFO messages through, so library use stays silent unless logging is configured.

    Parameters
    ----------
    description : str
        Text shown left of the bar.
    total : float
        Amount of work, in the units that ``advance`` is called with (usually bytes).
    enabled : bool, optional
        False never shows a bar (``advance`` is then a no-op).
    min_total : float, optional
        Smallest ``total`` that gets a bar; default :data:`PROGRESS_MIN_BYTES`.

    Yields
    ------
    callable
        ``advance(amount: float) -> None``, adding ``amount`` to the work done.
    """
    show = enabled and total >= min_total and _LOGGER.isEnabledFor(logging.INFO) \
        and _LOGGER.handlers
    if not show:
        yield lambda amount: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda amount: prog.advance(task, amount)

"""Reading the project's TOML files (case files, settings, model files) with one-line
errors: a missing file, invalid TOML."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from anodetwin.errors import CorruptFileError, InputNotFoundError

__all__ = ["read_toml"]


def read_toml(path: str | os.PathLike, what: str, missing_fix: str | None = None) -> dict:
    """The content of a TOML file; ``what`` names it in the errors (e.g. "case file")."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, what, missing_fix)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{what} '{p}' is not valid TOML "
                               f"({' '.join(str(exc).split())})", "fix the file") from None

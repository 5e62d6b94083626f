"""Atomic writes: outputs appear whole or not at all.

Everything anodetwin writes goes to a temporary sibling first (same folder, hence same file
system) and is renamed onto the final path only after it was written completely. A failure
or an interruption leaves the previous content (or nothing) at the final path and removes the
temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anodetwin.errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "check_output_path"]


def check_output_path(path: str | os.PathLike, overwrite: bool = True,
                      inputs: Sequence = ()) -> Path:
    """Check that an output can be written at ``path`` and return it as a :class:`Path`.

    Parameters
    ----------
    path : str or os.PathLike
        Output file or folder; its parent folder must exist.
    overwrite : bool, optional
        Allow an existing output at ``path``.
    inputs : sequence of str or path-like, optional
        Input volume paths (``file.h5:/dataset`` allowed) the output must not replace.

    Returns
    -------
    Path
        ``path`` as given, as a :class:`Path`.

    Raises
    ------
    OutputError
        If the parent folder does not exist, ``path`` exists and ``overwrite`` is False,
        or ``path`` is the file of one of ``inputs``.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(
            f"output folder '{parent}' of '{p}' does not exist", "create it first or pick another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder '{parent}' of '{p}' is not writable",
                          "pick a folder you may write to")
    if p.exists() and not overwrite:
        raise OutputError(f"output '{p}' already exists", "remove it or allow overwriting")
    if p.exists():
        from anodetwin.io.formats import input_files

        for given in inputs:
            if p.resolve() in input_files(given):
                raise OutputError(f"output '{p}' is read for the input '{given}': writing it "
                                  "would destroy the input", "write the output to another file")
    return p


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, directory: bool = False, overwrite: bool = True
) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final output path (file, or folder when ``directory`` is True).
    directory : bool
        Yield an (existing, empty) temporary folder instead of a file path, for outputs that
        are folders (Zarr stores, TIFF slice folders).
    overwrite : bool
        Replace an existing output. If False an existing output raises :class:`OutputError`.

    Yields
    ------
    pathlib.Path
        The temporary path, in the same folder as ``path``.
    """
    final = check_output_path(path, overwrite=overwrite)
    parent = final.parent if str(final.parent) else Path(".")
    prefix = f".{final.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=parent, suffix=final.suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # temporary files are private (0600/0700); give the output the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory:
            if final.exists():
                # a folder cannot be renamed over a non-empty folder: move the old one aside
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=parent))
                old.rmdir()
                os.replace(final, old)
                os.replace(tmp, final)
                _remove(old)
            else:
                os.replace(tmp, final)
        else:
            if final.is_dir():
                raise OutputError(f"output '{final}' is a folder", "give a file path")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; an existing file is replaced.
    text : str
        Content to write.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    OutputError
        The parent folder does not exist or ``path`` is a folder.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path.

    Parameters
    ----------
    path : str or os.PathLike
        Output JSON file.
    obj : object
        JSON-serialisable data; numpy scalars and arrays and paths are converted
        (:func:`json_default`).

    Returns
    -------
    Path
        ``path``, once the JSON (two-space indent, trailing newline) is in place.

    Raises
    ------
    TypeError
        ``obj`` holds a value that cannot be serialised; nothing is written.
    OutputError
        As for :func:`atomic_write_text`.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """Convert what :mod:`json` cannot serialise by itself (its ``default`` hook).

    Parameters
    ----------
    obj : object
        A numpy scalar or array, or a path.

    Returns
    -------
    object
        The Python scalar, nested list or path string.

    Raises
    ------
    TypeError
        ``obj`` is of another type.
    """
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

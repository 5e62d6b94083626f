"""Atomic writes: outputs appear whole or not at all.

Everything anodetwin writes goes to a temporary sibling first (``.<name>.tmp-XXXXXXXX``, in
the same folder, hence on the same file system) and is renamed onto the final path only
after it was written completely. A failure or an interruption (an exception, Ctrl-C,
SIGTERM) leaves the previous content (or nothing) at the final path and removes the
temporary. Creating the temporary, the renames and the removal run with SIGINT and SIGTERM
held back (:func:`signals_deferred`), so that a signal cannot leave a temporary unregistered
or an output half-replaced. A temporary left by a killed process (SIGKILL, a power cut) is
removed by the next write of the same output path: one output path is written by one
process at a time.

Outputs and inputs (:func:`check_output_path`): an output never overlaps an input (it is
not an input's file, holds no input, and does not lie inside an input's folder). A folder
output (Zarr store, folder of TIFF slices, a result folder) replaces an existing folder only
when that folder is empty or recognisably the same kind of output (``kind``: a Zarr store,
only slice files, only the files of the result's layout); a folder holding other files is
refused, never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from anodetwin.errors import OutputError

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "check_output_path",
           "signals_deferred", "SLICE_NAME"]

#: File names of a folder of TIFF slices as :func:`anodetwin.io.write_volume` writes it.
SLICE_NAME = re.compile(r"slice_\d+\.tiff?")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_TEMP = "[a-z0-9_]{8}"  # the random part of a temporary's name


def check_output_path(path: str | os.PathLike, overwrite: bool = True,
                      inputs: Sequence = (), kind: str | re.Pattern | None = None) -> Path:
    """Check that an output can be written at ``path`` and return it as a :class:`Path`.

    Parameters
    ----------
    path : str or os.PathLike
        Output file or folder; its parent folder must exist.
    overwrite : bool, optional
        Allow an existing output at ``path``.
    inputs : sequence of str or path-like, optional
        Input volume paths (``file.h5:/dataset`` allowed) the output must not overlap: it
        may not be one of their files, hold one, or lie inside an input folder.
    kind : str or re.Pattern, optional
        What the output is, for an existing ``path``: ``"file"`` (a folder there is
        refused); a folder output that replaces an existing folder only when that folder is
        empty or of the same kind: ``"zarr"`` (a Zarr store), ``"tiff-dir"`` (only files
        named like :data:`SLICE_NAME`), ``"folder"`` (only an empty one), or a pattern the
        name of every file in it must match (a result folder's layout). None: not checked
        (a folder the caller writes files into).

    Returns
    -------
    Path
        ``path`` as given, as a :class:`Path`.

    Raises
    ------
    OutputError
        If the parent folder does not exist, ``path`` exists and ``overwrite`` is False,
        the output overlaps one of ``inputs``, or an existing ``path`` is not of ``kind``.
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
    exists = p.exists() or p.is_symlink()
    if exists and not overwrite:
        raise OutputError(f"output '{p}' already exists", "remove it or allow overwriting")
    if inputs:
        _check_inputs(p, inputs)
    if exists and kind is not None:
        _check_kind(p, kind)
    return p


def _check_inputs(p: Path, inputs: Sequence) -> None:
    """:class:`OutputError` if output ``p`` is, holds, or lies inside a path an input reads."""
    from anodetwin.io.formats import input_files

    out = p.resolve()
    for given in inputs:
        for q in input_files(given):
            if q == out:
                raise OutputError(f"output '{p}' is read for the input '{given}': writing it "
                                  "would destroy the input", "write the output to another file")
            if out in q.parents:
                raise OutputError(f"output '{p}' holds the input '{given}': writing it "
                                  "would destroy the input", "give a new output path")
            if q in out.parents:
                raise OutputError(f"output '{p}' lies inside the input '{given}': writing it "
                                  "would change the input", "write the output outside it")


def _check_kind(p: Path, kind: str | re.Pattern) -> None:
    """:class:`OutputError` unless the existing ``p`` may be replaced by an output of
    ``kind`` (:func:`check_output_path`)."""
    if kind == "file":
        if p.is_dir():
            raise OutputError(f"output '{p}' is a folder", "give a file path")
        return
    if not p.is_dir():
        raise OutputError(f"output '{p}' is an existing file, not a folder",
                          "give a new path or remove it")
    entries = list(p.iterdir())
    if not entries:
        return
    if kind == "zarr":
        same = any((p / m).is_file() for m in _ZARR_MARKERS)
    elif kind == "tiff-dir":
        same = all(e.is_file() and SLICE_NAME.fullmatch(e.name) for e in entries)
    elif kind == "folder":
        same = False
    elif isinstance(kind, re.Pattern):
        same = all(e.is_file() and kind.fullmatch(e.name) for e in entries)
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    if not same:
        raise OutputError(f"output '{p}' is an existing folder holding other files",
                          "give a new path or remove it")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM while the block runs; one that arrived is delivered
    (to the handler in place before) when it ends.

    For steps that must not stop half-way: creating and registering a temporary, renaming
    outputs into place, removing a temporary, a write that another thread completes. Only
    the main thread receives Python signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous: dict[int, Any] = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, hold)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def _remove(path: Path) -> None:
    """Remove a file or folder; retried while something still writes into it, and logged
    (never silent) if it cannot be removed."""
    for _ in range(40):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not (path.exists() or path.is_symlink()):
            return
        time.sleep(0.05)
    from anodetwin.log import get_logger

    get_logger().warning("could not remove the temporary '%s'; delete it by hand", path)


def _remove_stale(parent: Path, name: str, suffix: str) -> None:
    """Remove the temporaries of output ``name`` that a killed earlier write left."""
    stale = re.compile(rf"\.{re.escape(name)}\.(?:tmp|old)-{_TEMP}(?:{re.escape(suffix)})?")
    try:
        found = [e.name for e in os.scandir(parent)
                 if e.name.startswith(f".{name}.") and stale.fullmatch(e.name)]
    except OSError:
        return
    for n in found:
        _remove(parent / n)


def _make_temp(parent: Path, final: Path, directory: bool) -> Path:
    """Create a new private temporary sibling of ``final`` (a folder if ``directory``)."""
    suffix = "" if directory else final.suffix
    for _ in range(100):
        tmp = parent / f".{final.name}.tmp-{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return tmp
    raise OutputError(f"could not create a temporary file next to '{final}'",
                      "check the output folder")


def _commit(tmp: Path, final: Path, directory: bool) -> Path | None:
    """Rename the finished temporary ``tmp`` onto ``final``; the old folder moved aside
    (to be removed), if any."""
    umask = os.umask(0)
    os.umask(umask)
    # temporaries are private (0600/0700); give the output the usual permissions
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    if not directory:
        if final.is_dir():
            raise OutputError(f"output '{final}' is a folder", "give a file path")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return None
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return None
    # a folder cannot be renamed over a non-empty folder: move the old one aside
    old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    return old


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, directory: bool = False, overwrite: bool = True,
    kind: str | re.Pattern | None = None,
) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it onto ``path`` on success.

    Temporaries of the same output left by a killed earlier write are removed first (one
    output path is written by one process at a time).

    Parameters
    ----------
    path : path-like
        Final output path (file, or folder when ``directory`` is True).
    directory : bool
        Yield an (existing, empty) temporary folder instead of a file path, for outputs that
        are folders (Zarr stores, TIFF slice folders, result folders).
    overwrite : bool
        Replace an existing output. If False an existing output raises :class:`OutputError`.
    kind : str or re.Pattern, optional
        For a folder: what an existing folder at ``path`` must be to be replaced (see
        :func:`check_output_path`; default ``"folder"``: only an empty one). Files: an
        existing folder at ``path`` is always refused.

    Yields
    ------
    pathlib.Path
        The temporary path, in the same folder as ``path``.

    Raises
    ------
    OutputError
        As for :func:`check_output_path`, before anything is written.
    """
    if directory and kind == "file":
        raise ValueError("a folder output cannot be of kind 'file'")
    final = check_output_path(path, overwrite=overwrite,
                              kind=(kind or "folder") if directory else "file")
    parent = final.parent if str(final.parent) else Path(".")
    _remove_stale(parent, final.name, "" if directory else final.suffix)
    tmp: Path | None = None
    old: Path | None = None
    try:
        with signals_deferred():
            tmp = _make_temp(parent, final, directory)
        yield tmp
        with signals_deferred():
            old = _commit(tmp, final, directory)
        if old is not None:
            _remove(old)
    except BaseException:
        with signals_deferred():
            for t in (tmp, old):
                if t is not None:
                    _remove(t)
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

"""Provenance records carried by every result file.

A provenance record is a JSON-serialisable dict::

    {
      "tool": "anodetwin", "version": "0.2.0",
      "created": "2026-11-25T18:00:00+00:00",        # UTC, ISO 8601
      "command": "convert",                           # what produced the file
      "inputs": [{"path": "/abs/in.tif", "hash": "blake2b:...", "bytes": 123}],
      "parameters": {...},
      "host": {"python": "3.12.1", "platform": "Linux-..."}
    }

Content hashes are BLAKE2b (128-bit digest) of the bytes of a file; a folder (Zarr store, TIFF
slice folder) hashes the relative names and contents of its files in sorted order. Files larger
than ``FULL_HASH_LIMIT`` bytes are hashed on their size and 64 evenly spaced 1 MiB blocks,
recorded as ``"blake2b-sampled:..."`` so that a 16 GiB tomogram is fingerprinted in a second;
set ``full=True`` to hash every byte.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from anodetwin._version import __version__

__all__ = ["content_hash", "input_record", "make_provenance", "provenance_json"]

FULL_HASH_LIMIT = 2 * 1024**3
_BLOCK = 1024**2
_SAMPLES = 64


def _hash_file(path: Path, h: Any, full: bool) -> bool:
    size = path.stat().st_size
    sampled = not full and size > FULL_HASH_LIMIT
    with open(path, "rb") as fh:
        if sampled:
            h.update(str(size).encode())
            step = (size - _BLOCK) // (_SAMPLES - 1)
            for i in range(_SAMPLES):
                fh.seek(i * step)
                h.update(fh.read(_BLOCK))
        else:
            for block in iter(lambda: fh.read(8 * _BLOCK), b""):
                h.update(block)
    return sampled


def content_hash(path: str | os.PathLike, full: bool = False) -> str:
    """Content hash of a file or folder, as ``"<algorithm>:<hex digest>"``.

    Parameters
    ----------
    path : path-like
        File, or folder (all files below it, in sorted relative-path order).
    full : bool
        Hash every byte even of files larger than ``FULL_HASH_LIMIT`` (2 GiB).
    """
    p = Path(path)
    h = hashlib.blake2b(digest_size=16)
    sampled = False
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
            sampled |= _hash_file(f, h, full)
    else:
        sampled = _hash_file(p, h, full)
    return ("blake2b-sampled:" if sampled else "blake2b:") + h.hexdigest()


def _bytes(p: Path) -> int:
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


def input_record(path: str | os.PathLike, dataset: str | None = None) -> dict[str, Any]:
    """Provenance entry of one input: absolute path, content hash and size in bytes.

    Parameters
    ----------
    path : str or os.PathLike
        Input file or folder (e.g. a Zarr store).
    dataset : str, optional
        Dataset inside a container file, recorded as given.

    Returns
    -------
    dict
        ``path`` (absolute), ``dataset`` if given, and ``hash`` and ``bytes`` if the path
        exists (a folder's bytes are the sum over its files).
    """
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p.resolve())}
    if dataset:
        rec["dataset"] = dataset
    if p.exists():
        rec["hash"] = content_hash(p)
        rec["bytes"] = _bytes(p)
    return rec


def make_provenance(
    command: str,
    inputs: list[str | os.PathLike | dict[str, Any]] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a provenance record.

    Parameters
    ----------
    command : str
        What produced the result (CLI subcommand or function name).
    inputs : list of path-like or dict, optional
        Input files; paths are turned into :func:`input_record` entries, dicts are kept.
    parameters : dict, optional
        Parameters of the computation (JSON-serialisable).
    """
    recs = [i if isinstance(i, dict) else input_record(i) for i in (inputs or [])]
    return {
        "tool": "anodetwin",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "inputs": recs,
        "parameters": dict(parameters or {}),
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "argv": list(sys.argv)},
    }


def provenance_json(prov: dict[str, Any]) -> str:
    """Serialise a provenance record to compact JSON.

    Parameters
    ----------
    prov : dict
        Record from :func:`make_provenance` (numpy values are converted).

    Returns
    -------
    str
        One line of JSON without spaces after separators.
    """
    from anodetwin.io.atomic import json_default

    return json.dumps(prov, default=json_default, separators=(",", ":"))

"""Typed errors of anodetwin.

Every user-facing failure is an :class:`AnodetwinError`. Its message is one line that names the
offending input and says how to fix it; the command-line interface prints that line and exits
with status 2 (no traceback unless ``--verbose``).

Hierarchy::

    AnodetwinError
    +-- InputError                 bad user input (files, arrays, parameters)
    |   +-- InputNotFoundError     a path that does not exist
    |   +-- UnknownFormatError     an extension no reader knows
    |   +-- CorruptFileError       a truncated or unreadable file
    |   +-- MissingDataError       data a volume refers to is not there (a missing source or
    |   |                          linked file, a gap in a slice numbering, unwritten chunks)
    |   +-- MissingCodecError      a compressed file whose decoder is not installed
    |   +-- AmbiguousInputError    an input holding several candidates (e.g. two slice series)
    |   +-- DatasetNotFoundError   an HDF5/Zarr path inside a container that does not exist
    |   +-- SidecarError           a raw volume whose JSON sidecar is missing or wrong
    |   +-- DimensionError         2D/4D data where a 3D volume (z, y, x) is needed
    |   +-- NonFiniteError         NaN or inf in a float volume
    |   +-- ShapeMismatchError     volumes whose shapes must match but do not
    |   |   +-- GridMismatchError  inputs that meet but differ in voxel size, shape or origin
    |   +-- ParameterError         a non-physical or malformed parameter
    +-- OutputError                an output that cannot be written
    +-- NumericalError             a computation that failed (no convergence, ...)
"""

from __future__ import annotations

import os

__all__ = [
    "AnodetwinError",
    "InputError",
    "InputNotFoundError",
    "UnknownFormatError",
    "CorruptFileError",
    "MissingDataError",
    "MissingCodecError",
    "AmbiguousInputError",
    "DatasetNotFoundError",
    "SidecarError",
    "DimensionError",
    "NonFiniteError",
    "ShapeMismatchError",
    "ParameterError",
    "OutputError",
    "NumericalError",
    "GridMismatchError",
]


class AnodetwinError(Exception):
    """Base class of all anodetwin errors.

    Parameters
    ----------
    message : str
        What is wrong, naming the input (file, dataset, parameter).
    fix : str, optional
        What the user should do; appended as ``"; <fix>"`` so that the whole message stays
        one line.
    """

    def __init__(self, message: str, fix: str | None = None):
        self.problem = " ".join(str(message).split())
        self.fix = " ".join(fix.split()) if fix else None
        super().__init__(self.problem + (f"; {self.fix}" if self.fix else ""))


class InputError(AnodetwinError, ValueError):
    """Bad user input: a file, an array or a parameter."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A path that does not exist."""

    def __init__(self, path: str | os.PathLike, what: str = "input", fix: str | None = None):
        self.path = os.fspath(path)
        super().__init__(
            f"{what} '{self.path}' does not exist",
            fix or "check the path (relative paths are taken from the current directory)",
        )


class UnknownFormatError(InputError):
    """An extension that no reader or writer knows."""


class CorruptFileError(InputError):
    """A truncated or otherwise unreadable file."""


class MissingDataError(InputError):
    """Data that a volume refers to is not there: a missing source file of an HDF5 virtual
    dataset, the target of a broken external link, a gap in a slice numbering, chunks that
    were never written. Such data is never read as fill values (zeros)."""


class MissingCodecError(InputError):
    """A compressed file whose decoder (e.g. LZW, zstd, a floating-point predictor) is not
    installed; the message names the codec."""


class AmbiguousInputError(InputError):
    """An input that holds several candidates where one is needed (e.g. a folder mixing two
    numbered slice series)."""


class DatasetNotFoundError(InputError, KeyError):
    """A dataset path inside an HDF5 file or Zarr store that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class SidecarError(InputError):
    """A raw binary volume whose JSON sidecar is missing, malformed or inconsistent."""


class DimensionError(InputError):
    """Data of the wrong dimensionality (e.g. 2D or 4D where a 3D volume is needed)."""


class NonFiniteError(InputError):
    """NaN or inf values in a float volume."""


class ShapeMismatchError(InputError):
    """Two volumes whose shapes must match but do not."""


class ParameterError(InputError):
    """A non-physical or malformed parameter."""


class OutputError(AnodetwinError, OSError):
    """An output that cannot be written (existing path, missing folder, no permission)."""


class NumericalError(AnodetwinError, RuntimeError):
    """A computation that failed; the message says where and when."""


class GridMismatchError(ShapeMismatchError):
    """Two inputs that meet (scans of a series, labels and their tomogram, a DVC result and
    its volumes) but differ in voxel size, shape or origin."""

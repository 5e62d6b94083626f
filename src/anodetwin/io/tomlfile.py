"""The project's TOML files (case files, settings, model files, studies): reading them with
one-line errors, mapping their tables onto dataclasses, and writing the subset they use.

:func:`build_dataclass` is the one way a TOML table becomes a configuration object. The
field types of the dataclass say what each key takes:

=========================  =================================================================
field type                 TOML value
=========================  =================================================================
``float``                  a finite number (integers too); stored as ``float``
``int``                    an integer (``2.0`` too); stored as ``int``
``bool``                   ``true`` or ``false``
``str``                    a string
``tuple[T, ...]``          an array of ``T``; ``tuple[T, T, T]``: exactly three
``dict`` / ``dict[str, T]``  an inline table (of ``T``)
a dataclass                a table, built by the same rules
``A | B``                  a value of the kind of ``A`` or ``B`` (e.g. ``float | str``)
``X | None``               ``X``; ``None`` only from Python
``object`` / ``Any``       anything
=========================  =================================================================

A key the dataclass does not have, a value of the wrong kind and a number that is not finite
are :class:`~anodetwin.errors.ParameterError`\\ s that name the table and the key
(``[solver] dtheta_max = 'x' is not a number; give dtheta_max as a number``); a loader
that read them from a file names it too (:func:`in_file`: ``case.toml: [solver] ...``).
Physical bounds are the dataclasses' own business (their ``__post_init__`` or their loader).
:func:`toml_text` writes the subset of TOML these files use (study cases, cell and material
models).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from anodetwin.errors import CorruptFileError, InputNotFoundError, ParameterError

__all__ = ["read_toml", "in_file", "build_dataclass", "table_values", "typed_value",
           "field_types", "toml_text"]

T = TypeVar("T")


def read_toml(path: str | os.PathLike, what: str, missing_fix: str | None = None) -> dict:
    """The content of a TOML file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file is, for the errors (e.g. ``"case file"``).
    missing_fix : str, optional
        The fix the error of a missing file suggests.

    Returns
    -------
    dict
        The parsed TOML.

    Raises
    ------
    InputNotFoundError
        The file does not exist.
    CorruptFileError
        It is not valid TOML (or not UTF-8).
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, what, missing_fix)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{what} '{p}' is not valid TOML "
                               f"({' '.join(str(exc).split())})", "fix the file") from None


@contextlib.contextmanager
def in_file(path: str | os.PathLike) -> Iterator[None]:
    """Name a file in the :class:`~anodetwin.errors.ParameterError`\\ s raised inside:
    ``<path>: [solver] dtheta_max = ...``.

    Parameters
    ----------
    path : str or os.PathLike
        The file whose content is being checked.

    Raises
    ------
    ParameterError
        Any raised inside, its message prefixed with ``path``.
    """
    try:
        yield
    except ParameterError as exc:
        raise ParameterError(f"{os.fspath(path)}: {exc.problem}", exc.fix) from None


# --------------------------------------------------------------------------------------------
# TOML tables -> dataclasses

def _table(where: str) -> str:
    """How a table is named in messages: ``[solver]``, ``[phantom.composition]``."""
    return f"[{where}]" if where else "the top level"


def _key(where: str, key: str) -> str:
    return f"[{where}] {key}" if where else key


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every ``__init__`` field of a dataclass.

    Parameters
    ----------
    cls : type
        A dataclass (its annotations may be strings: ``from __future__ import annotations``).

    Returns
    -------
    dict
        Field name -> type, in field order.
    """
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def build_dataclass(cls: type[T], table: Any, where: str = "") -> T:
    """A dataclass from a TOML table (module notes: the field types say what each key takes).

    Parameters
    ----------
    cls : type
        The dataclass; keys left out take its defaults.
    table : mapping
        The table's content (parsed TOML).
    where : str
        The table's dotted name in the file, for messages (``"solver"``,
        ``"phantom.composition"``; ``""``: the top level).

    Returns
    -------
    object
        ``cls(**values)``; its ``__post_init__`` checks run as usual.

    Raises
    ------
    ParameterError
        ``table`` is not a table, has a key ``cls`` does not have, or a value of the wrong
        kind; the message names ``[where] key`` and the fix.
    """
    if not isinstance(table, Mapping):
        raise ParameterError(f"{_table(where)} is not a table",
                             f"write it as [{where}]" if where else "give a table")
    return cls(**table_values(table, field_types(cls), where))


def table_values(table: Mapping, types_: Mapping[str, Any], where: str = "") -> dict:
    """The values of a TOML table, each checked and converted to its type.

    Parameters
    ----------
    table : mapping
        The table's content.
    types_ : mapping
        Allowed key -> type (as :func:`field_types` returns).
    where : str
        The table's dotted name, for messages.

    Returns
    -------
    dict
        Key -> value of its type, for the keys ``table`` has.

    Raises
    ------
    ParameterError
        An unknown key, or a value of the wrong kind.
    """
    unknown = sorted(set(table) - set(types_), key=str)
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise ParameterError(f"{_table(where)} has unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{names}", f"use one of: {', '.join(sorted(types_))} (unknown "
                             "keys are refused, not ignored)")
    return {k: typed_value(v, types_[k], where, k) for k, v in table.items()}


def _number(value: Any, where: str, key: str, kind: type) -> float | int:
    """A finite number (an integer for ``kind`` int) of ``[where] key``."""
    name = _key(where, key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} = {value!r} is not a number", f"give {key} as a number")
    if not math.isfinite(value):
        raise ParameterError(f"{name} = {value} is not a finite number",
                             f"give a finite value for {key.split('[')[0]}")
    if kind is int and value != int(value):
        raise ParameterError(f"{name} = {value!r} is not an integer",
                             f"give {key} as an integer")
    return kind(value)


def _kind(tp: Any) -> str:
    """The kind of TOML value a type takes (for unions and messages)."""
    origin = typing.get_origin(tp) or tp
    if tp is bool:
        return "true or false"
    if tp in (int, float):
        return "a number"
    if tp is str:
        return "a string"
    if origin in (tuple, list):
        return "a list"
    return "a table" if origin is dict or dataclasses.is_dataclass(tp) else \
        f"a {getattr(tp, '__name__', tp)}"


def _accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` is of the kind ``tp`` takes (before its own checks)."""
    kind = _kind(tp)
    checks = {"true or false": (bool,), "a number": (numbers.Real,), "a string": (str,),
              "a list": (list, tuple), "a table": (Mapping,)}
    if kind not in checks:
        return isinstance(value, typing.get_origin(tp) or tp)
    return isinstance(value, checks[kind]) and (kind == "true or false"
                                                or not isinstance(value, bool))


def _union(value: Any, tp: Any, where: str, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for arm in options:
        if _accepts(arm, value):
            return typed_value(value, arm, where, key)
    kinds = " or ".join(dict.fromkeys(_kind(a) for a in options))
    raise ParameterError(f"{_key(where, key)} = {value!r} is not {kinds}",
                         f"give {key} as {kinds}")


def _sequence(value: Any, tp: Any, where: str, key: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"{_key(where, key)} must be a list", f"give {key} = [ ... ]")
    args = typing.get_args(tp)
    fixed = bool(args) and args[-1] is not Ellipsis  # tuple[float, float, float]
    if fixed and len(args) != len(value):
        raise ParameterError(f"{_key(where, key)} = {list(value)!r} has {len(value)} values",
                             f"give {len(args)} values")
    items = args if fixed else [args[0] if args else Any] * len(value)
    return tuple(typed_value(x, t, where, f"{key}[{i}]")
                 for i, (x, t) in enumerate(zip(value, items, strict=True)))


def typed_value(value: Any, tp: Any, where: str, key: str) -> Any:
    """One value of a TOML table, checked and converted to ``tp`` (module notes).

    Parameters
    ----------
    value : object
        The parsed TOML value.
    tp : type
        The field type.
    where, key : str
        The table's dotted name and the key, for messages (``key`` may hold an index or an
        inner key: ``times_s[0]``, ``modes.network``).

    Returns
    -------
    object
        The value as ``tp``: a float, an int, a tuple (of converted items), a dict, a
        dataclass, ...

    Raises
    ------
    ParameterError
        The value is not of the kind ``tp`` takes.
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        return _union(value, tp, where, key)
    if tp in (int, float):
        return _number(value, where, key, tp)
    if origin in (tuple, list) or tp in (tuple, list):
        return _sequence(value, tp, where, key)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, f"{where}.{key}" if where else key)
    if not _accepts(tp, value):
        kind = _kind(tp)
        raise ParameterError(f"{_key(where, key)} = {value!r} is not {kind}",
                             f"give {key} as {kind}")
    if origin is dict:
        item = typing.get_args(tp)[1]
        return {k: typed_value(v, item, where, f"{key}.{k}") for k, v in value.items()}
    return dict(value) if tp is dict else value


# --------------------------------------------------------------------------------------------
# writing

def _toml_key(k: str) -> str:
    """A key as TOML writes it: bare where it may be, quoted otherwise."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _pairs(table: Mapping) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]


def toml_text(d: Mapping) -> str:
    """TOML text of a dict of scalars, lists, tables and arrays of tables (the subset the
    model, case and study files use); :func:`read_toml` reads it back equal.

    Parameters
    ----------
    d : mapping
        Top-level keys; a dict value becomes a ``[table]`` (its own dict values inline
        tables), a list of dicts an array of tables ``[[name]]``.

    Returns
    -------
    str
        The text, ending in a newline.

    Raises
    ------
    TypeError
        A value TOML cannot hold (e.g. ``None``).
    """
    top = {k: v for k, v in d.items() if not isinstance(v, dict) and not (
        isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    lines = _pairs(top)
    for k, v in d.items():
        if isinstance(v, dict):
            lines += ["", f"[{_toml_key(k)}]", *_pairs(v)]
    for k, v in d.items():
        if k not in top and isinstance(v, list):
            for item in v:
                lines += ["", f"[[{_toml_key(k)}]]", *_pairs(item)]
    return "\n".join(lines) + "\n"

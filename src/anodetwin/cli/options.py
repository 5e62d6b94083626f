"""Shared argparse machinery of the ``anodetwin`` command line.

The parser class with one-line errors (:class:`Parser`), typed converters for numbers and
comma-separated lists (:func:`value_list` and its short forms), and the option groups that
several subcommands share (verbosity, voxel size, region of interest and binning). Every
converter names its option, the value given and a valid example in its message, so a bad
value ends in one line ``anodetwin: error: ...`` and exit status :data:`EXIT_USER_ERROR`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from anodetwin.log import get_logger

__all__ = ["EXIT_USER_ERROR", "Parser", "value_list", "int_list", "float_list", "int_value",
           "float_value", "jobs_value", "workers_value", "all_cores", "voxel_size_value",
           "roi_value", "add_verbosity", "add_command", "voxel_size_option", "volume_options",
           "flag", "print_json", "log"]

log = get_logger("cli")

#: Exit status of a user error (bad option, input or parameter): one line, no traceback.
EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``anodetwin: error: <option and fix>``, exit 2.

    Every ``--workers`` option of every subcommand takes N >= 1, or 0 for all cores (as
    ``[resources] workers = 0`` in a run file): its values are read by
    :func:`workers_value` and its help says so, whichever module declares it.
    """

    def add_argument(self, *names: Any, **kw: Any) -> argparse.Action:
        if "--workers" in names:
            # 0: all cores; where the option's default (None) is the command's own
            # all-cores choice, 0 means that default
            kw["type"] = workers_value("--workers", zero=None if kw.get("default") is None
                                       else "cores")
            help_text = kw.get("help") or ""
            if "0: all cores" not in help_text:
                kw["help"] = (help_text + "; " if help_text else "") + "0: all cores"
        return super().add_argument(*names, **kw)

    def error(self, message: str) -> NoReturn:
        # converters name their option themselves: drop argparse's "argument X: " before it
        message = re.sub(r"^argument ([^:]+): (?=\1 )", "", message)
        self.exit(EXIT_USER_ERROR, f"anodetwin: error: {message} (see '{self.prog} --help')\n")


def _shape_text(noun: str, counts: tuple | None, bound: str) -> str:
    """What a list option takes, e.g. ``1 or 3 comma-separated numbers > 0``."""
    if counts == (1,):
        return f"one {noun}{bound}"
    if counts:
        return f"{' or '.join(map(str, counts))} comma-separated {noun}s{bound}"
    return f"comma-separated {noun}s{bound}"


def value_list(option: str, kind: type = int, n: int | tuple | None = None,
               low: float | None = None, above: bool = False, example: str = "",
               empty: bool = False, single: bool = False, high: float | None = None):
    """An argparse ``type`` for a number or a comma-separated list of numbers.

    Parameters
    ----------
    option : str
        The option's name, for the message (e.g. ``"--pyramid"``).
    kind : int or float
        Type of each value (floats must be finite).
    n : int or tuple of int, optional
        Allowed numbers of values (e.g. ``(1, 3)`` for ``N`` or ``Z,Y,X``).
    low : float, optional
        Smallest value allowed (``above``: values must be larger than it).
    high : float, optional
        Largest value allowed.
    example : str
        A valid value for the fix, e.g. ``"100,70"``.
    empty : bool
        Accept an empty string (an empty list).
    single : bool
        Return the one value instead of a list when exactly one is given.

    Returns
    -------
    callable
        ``text -> list`` (or a number with ``single``); a bad value raises
        :class:`argparse.ArgumentTypeError` whose one-line message names the option, the
        value and the fix (argparse then exits with status 2).
    """
    counts = (n,) if isinstance(n, int) else n
    noun = "integer" if kind is int else "number"
    bound = "" if low is None else f" {'>' if above else '>='} {low:g}"
    if high is not None:
        bound += f"{' and' if bound else ''} <= {high:g}"
    shape = _shape_text(noun, counts, bound)

    def convert(text: str):
        shown = text if str(text).strip() and " " not in str(text) else repr(text)

        def fail(why: str):
            return argparse.ArgumentTypeError(f"{option} {shown}: {why}; give {shape}, "
                                              f"e.g. {option} {example}")

        parts = [p.strip() for p in str(text).split(",")] if str(text).strip() else []
        if not parts and not empty:
            raise fail("empty")
        vals = []
        for p in parts:
            try:
                v = kind(p)
            except ValueError:
                raise fail(f"{p!r} is not a{'n' if kind is int else ''} {noun}") from None
            if kind is float and not math.isfinite(v):
                raise fail(f"{p!r} is not a finite number")
            if (low is not None and (v <= low if above else v < low)) or \
                    (high is not None and v > high):
                raise fail(f"{p} is not{bound}")
            vals.append(v)
        if counts and parts and len(vals) not in counts:
            raise fail(f"{len(vals)} value{'s' if len(vals) != 1 else ''}")
        return vals[0] if single and len(vals) == 1 else vals

    convert.__name__ = f"{noun} list"
    return convert


def int_list(option: str, **kw: Any):
    """A comma-separated list of integers, e.g. ``--pyramid 100,70``.

    Parameters
    ----------
    option : str
        The option's name, for the message.
    **kw
        Count, bounds, example, ... as for :func:`value_list`.

    Returns
    -------
    callable
        ``text -> list of int`` (:func:`value_list` with ``kind=int``).
    """
    return value_list(option, int, **kw)


def float_list(option: str, **kw: Any):
    """A comma-separated list of finite floats, e.g. ``--box 2.5,7,0,4,0,4`` (um).

    See :func:`int_list`; ``text -> list of float`` (:func:`value_list` with
    ``kind=float``).
    """
    return value_list(option, float, **kw)


def int_value(option: str, low: float | None = None, example: str = "1", **kw: Any):
    """One integer, e.g. ``--node-spacing 35``.

    Parameters
    ----------
    option : str
        The option's name, for the message.
    low : float, optional
        Smallest value allowed (with ``above=True`` in ``kw``: values must exceed it).
    example : str
        A valid value for the fix.
    **kw
        Further limits of :func:`value_list` (``above``, ``high``).

    Returns
    -------
    callable
        ``text -> int``.
    """
    return value_list(option, int, n=1, low=low, example=example, single=True, **kw)


def float_value(option: str, low: float | None = None, example: str = "1", **kw: Any):
    """One finite float, e.g. ``--sigma 2``: as :func:`int_value`, ``text -> float``."""
    return value_list(option, float, n=1, low=low, example=example, single=True, **kw)


def jobs_value(option: str = "--jobs"):
    """Parallel jobs: N >= 1, or -1 for all cores (scikit-learn's convention).

    Parameters
    ----------
    option : str
        The option's name, for the message.

    Returns
    -------
    callable
        ``text -> int`` (N >= 1 or -1); 0 and other values are refused in one line.
    """
    base = int_value(option, low=-1, example="4 (or -1: all cores)")

    def convert(text: str) -> int:
        v = base(text)
        if v == 0:
            raise argparse.ArgumentTypeError(f"{option} {text}: no job would run; give N >= 1, "
                                             f"or -1 for all cores, e.g. {option} 4")
        return v

    convert.__name__ = "jobs"
    return convert


def all_cores() -> int:
    """Cores this process may use (its CPU affinity)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def workers_value(option: str = "--workers", zero: str | None = "cores"):
    """Workers: N >= 1, or 0 for all cores (as ``[resources] workers`` in a run file).

    Parameters
    ----------
    option : str
        The option's name, for the message.
    zero : "cores" or None
        What 0 becomes: the number of cores this process may use (:func:`all_cores`), or
        None (the command's own all-cores default).

    Returns
    -------
    callable
        ``text -> int`` (or None for 0 with ``zero=None``); negative values are refused in
        one line.
    """
    base = int_value(option, low=0, example="2 (or 0: all cores)")

    def convert(text: str) -> int | None:
        v = base(text)
        if v == 0:
            return all_cores() if zero == "cores" else None
        return v

    convert.__name__ = "workers"
    return convert


def voxel_size_value(option: str = "--voxel-size"):
    """A voxel size in um: one value (isotropic) or Z,Y,X (per axis), all positive.

    ``option`` names the option in messages. Returns the converter ``text -> float`` (one
    value) or ``list`` of 3 floats (z, y, x), in um.
    """
    return value_list(option, float, n=(1, 3), low=0, above=True,
                      example="0.05 (or 0.1,0.05,0.05 for z, y, x)", single=True)


def roi_value(text: str) -> str:
    """A region of interest ``Z0:Z1,Y0:Y1,X0:X1``, checked here (not empty, three parts of
    start:stop) and passed on as text; the volume's reader checks that it lies inside.

    Parameters
    ----------
    text : str
        The value given to ``--roi`` (voxels, end exclusive; ``:`` for a whole axis).

    Returns
    -------
    str
        ``text`` unchanged.

    Raises
    ------
    argparse.ArgumentTypeError
        An empty or malformed region, in one line naming ``--roi`` and the fix.
    """
    from anodetwin.errors import ParameterError
    from anodetwin.io import parse_roi

    if not str(text).strip():
        raise argparse.ArgumentTypeError(f"--roi {text!r}: empty; give Z0:Z1,Y0:Y1,X0:X1 "
                                         "(':' for a whole axis), e.g. --roi 0:200,:,:, or "
                                         "leave --roi out for the whole volume")
    try:
        parse_roi(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: {exc}") from None
    return text


# --------------------------------------------------------------------------------------------
# option groups

def add_verbosity(p: argparse.ArgumentParser, top: bool) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` (mutually exclusive) to a parser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The top parser or a subcommand's.
    top : bool
        The top parser: the options get their defaults (0, False). On subcommands they have
        none, so that ``anodetwin -v dvc ...`` is not reset by the subcommand.
    """
    d = None if top else argparse.SUPPRESS
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0 if top else d,
                   help="more output (debug logging, tracebacks on errors)")
    g.add_argument("-q", "--quiet", action="store_true", default=False if top else d,
                   help="only warnings and errors, no progress bars")


def add_command(sub: Any, name: str, help: str, func: Callable[[argparse.Namespace], int],
                inputs: dict[str, str] | None = None, many: bool = False,
                out: str | None = None) -> argparse.ArgumentParser:
    """Register a subcommand on the subparsers ``sub``.

    Parameters
    ----------
    sub : argparse subparsers
        Where the subcommand goes (``parser.add_subparsers()``).
    name : str
        The subcommand, e.g. ``"dvc-series"``.
    help : str
        What it does (its line in ``anodetwin --help`` and its description).
    func : callable
        ``args -> exit status``, run by :func:`anodetwin.cli.main` (``args.func``).
    inputs : dict of str to str, optional
        Its positional arguments, name -> help, in order.
    many : bool
        The last input takes one or more values (``nargs="+"``).
    out : str, optional
        Help of a required ``--out`` option, added after the inputs.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, with the verbosity options, to add its own options to.
    """
    p = sub.add_parser(name, help=help, description=help)
    add_verbosity(p, top=False)
    names = list(inputs or {})
    for arg in names:
        p.add_argument(arg, help=inputs[arg], **({"nargs": "+"} if many and arg == names[-1]
                                                 else {}))
    if out is not None:
        p.add_argument("--out", required=True, help=out)
    p.set_defaults(func=func)
    return p


VOXEL_SIZE_HELP = ("voxel size in um, one value or Z,Y,X, for every input of the command: "
                   "their files' voxel sizes and origins are then not compared (a mismatch "
                   "is logged)")


def voxel_size_option(p: argparse.ArgumentParser) -> None:
    """Add ``--voxel-size UM or Z,Y,X`` to ``p``: the voxel size in um of every input of the
    command, instead of their files' (``args.voxel_size``: None, a float or a list of 3
    floats, z, y, x)."""
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)


def volume_options(p: argparse.ArgumentParser) -> None:
    """Add ``--roi`` (``args.roi``: text or None), ``--bin`` (``args.binning``: int >= 1) and
    ``--voxel-size`` to ``p``, for the commands that read volumes lazily
    (:meth:`anodetwin.io.VolumeSource.lazy`)."""
    p.add_argument("--roi", type=roi_value, metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="region of interest in voxels of the input (end exclusive), e.g. 0:200,:,:")
    p.add_argument("--bin", dest="binning", type=int_value("--bin", low=1, example="2"),
                   default=1, metavar="N",
                   help="mean-bin by N along each axis after cropping (dtype kept)")
    voxel_size_option(p)


def memory_value(option: str = "--memory-limit"):
    """A memory size (``4GB``, ``512MiB``; :func:`anodetwin.io.blocks.parse_memory`).

    Parameters
    ----------
    option : str
        The option's name, for the message.
    """
    def parse(text: str) -> str:
        from anodetwin.errors import AnodetwinError
        from anodetwin.io.blocks import parse_memory

        try:
            parse_memory(text)
        except AnodetwinError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def block_options(p: argparse.ArgumentParser) -> None:
    """``--memory-limit`` and ``--workers`` of the block-wise image stages."""
    p.add_argument("--memory-limit", type=memory_value(), metavar="SIZE",
                   help="process the volume block by block within this memory (e.g. 4GB); "
                        "taken by itself (4GB) when the in-memory route would need more "
                        "than half of this machine's memory")
    p.add_argument("--workers", type=workers_value(), default=1,
                   help="blocks processed at once (threads; 1); more than 1 works block by "
                        "block (within 4GB without --memory-limit); 0: all cores")


def flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    """Add an on/off option to a parser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    name : str
        The option, e.g. ``"--json"`` (``args.json``: False unless given).
    help : str
        Its line in ``--help``.
    """
    p.add_argument(name, action="store_true", help=help)


def print_json(obj: Any) -> None:
    """Print ``obj`` (dicts, lists, numbers, NumPy values, paths) as indented JSON on stdout."""
    from anodetwin.io.atomic import json_default

    print(json.dumps(obj, indent=2, default=json_default))

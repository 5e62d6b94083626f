"""The ``anodetwin`` command line.

Every subcommand is a thin layer over library functions. User errors
(:class:`~anodetwin.errors.AnodetwinError`) print one line ``anodetwin: error: ...`` and exit
with status 2, without a traceback unless ``--verbose`` is given; output piped into a reader
that stops early (``| head``) ends with status 141, quietly; SIGTERM (``kill``, a batch
system's stop) ends with status 143 after removing unfinished outputs, as Ctrl-C does.

One module per stage registers its subcommands (``add_parsers``) and holds their ``cmd_*``
functions:

=================================  =============================================================
:mod:`anodetwin.cli.run`           ``init``, ``run``
:mod:`anodetwin.cli.info`          ``info``
:mod:`anodetwin.cli.io`            ``convert``, ``inspect``
:mod:`anodetwin.cli.dvc`           ``noise-floor``, ``dvc``, ``dvc-series``, ``dvc-regions``,
                                   ``dvc-residual``
:mod:`anodetwin.cli.segment`       ``segment``, ``segment-train``, ``morphology``
:mod:`anodetwin.cli.mesh`          ``mesh``, ``mesh-packing``
:mod:`anodetwin.cli.simulate`      ``simulate``
:mod:`anodetwin.cli.study`         ``study``, ``study-case``
:mod:`anodetwin.cli.validate`      ``validate``
:mod:`anodetwin.cli.phantom`       ``phantom``
:mod:`anodetwin.cli.demo`          ``demo``
=================================  =============================================================

:mod:`anodetwin.cli.options` holds what they share: the parser class, typed converters for
numbers and lists, and the common option groups.

The contract of a stage module: ``add_parsers(sub)`` registers its subcommands on the
subparsers ``sub`` with :func:`anodetwin.cli.options.add_command`, each bound to its
``cmd_<name>(args)``; that function takes the parsed :class:`argparse.Namespace`, calls the
library (importing it inside, so that ``--help`` stays fast), prints the path or report it
made, and returns the exit status (0). Result files are written by the library, whose
modules document their layouts. A new subcommand goes into its stage's module; a new stage
module into :data:`STAGES`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from anodetwin._version import __version__
from anodetwin.cli import (demo, dvc, info, io, mesh, phantom, run, segment, simulate, study,
                           validate)
from anodetwin.cli.options import EXIT_USER_ERROR, Parser, add_verbosity
from anodetwin.errors import AnodetwinError
from anodetwin.log import configure_logging

__all__ = ["main", "build_parser", "EXIT_USER_ERROR"]

#: The stage modules, in the order their subcommands are listed by ``anodetwin --help``.
STAGES = (run, info, io, dvc, segment, mesh, simulate, study, validate, phantom, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``anodetwin`` with all subcommands."""
    parser = Parser(
        prog="anodetwin",
        description="Digital twin and measurement comparison for silicon-rich Li-ion anodes "
                    "imaged by in situ X-ray tomography. Arrays are (z, y, x), lengths in um.")
    parser.add_argument("--version", action="version", version=f"anodetwin {__version__}")
    add_verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for stage in STAGES:
        stage.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 interrupted,
    141 output pipe closed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else min(int(args.verbose or 0), 1)
    configure_logging(verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    previous = _terminate_as_exception()
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print("anodetwin: terminated", file=sys.stderr)
        return 143
    except AnodetwinError as exc:
        if verbosity > 0:
            traceback.print_exc()
        print(f"anodetwin: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("anodetwin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 141
    except Exception:
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
            traceback.print_exc()  # the other ranks would wait for this one for ever
            sys.stderr.flush()
            mpi.COMM_WORLD.Abort(1)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM (a batch system's stop, ``kill``) raised in the main thread, so that the
    temporary files of unfinished outputs are removed as for Ctrl-C (exit status 143)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _terminate_as_exception() -> Any:
    """Install the SIGTERM handler (main thread only); the previous handler, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)

"""``anodetwin simulate``: the chemo-mechanical simulation of a meshed electrode through the
cell protocol (:mod:`anodetwin.simulate`); runs under ``mpiexec``, rank 0 prints and logs."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, flag, int_value, log

__all__ = ["add_parsers", "cmd_simulate"]


def add_parsers(sub: Any) -> None:
    """Register ``simulate`` on the subparsers ``sub``."""
    p = add_command(sub, "simulate", "chemo-mechanical simulation of a meshed electrode through "
                                     "the cell protocol (run under mpiexec -n N for MPI)",
                    cmd_simulate, {"case": "case file (TOML): mesh, materials, cell, lithiation, "
                                           "boundary, solver, output"}, out="output folder")
    flag(p, "--resume", "continue a stopped or killed run from its checkpoint (same case: "
                        "a changed case is refused, except [solver] linear and dt_min_s; a "
                        "run with no finished step starts afresh with or without it)")
    flag(p, "--allow-case-change", "with --resume: continue although the case changed (the "
                                   "changes are recorded in run.json's case_history)")
    p.add_argument("--max-steps", type=int_value("--max-steps", low=1, example="100"), default=None,
                   help="stop (resumable) after this many steps, e.g. for batch time limits")
    flag(p, "--check", "validate the case and its cell protocol, run nothing")


def _check(case: Any, args: argparse.Namespace, comm: Any) -> int:
    """``--check``: everything the run checks before its work, writing nothing; rank 0 prints
    the scans of the protocol."""
    from anodetwin.simulate.run import check_case

    setup = check_case(case, args.out, resume=args.resume, comm=comm,
                       allow_case_change=args.allow_case_change)
    hist = setup.history
    if comm.rank == 0:
        for name, t in hist.scans.items():
            print(f"{name}: t = {t / 3600:.3f} h, SoC {hist.soc_at(t):.3f}, "
                  f"mean theta {hist.theta_mean_at(t):.4f}")
        if setup.restart:
            print(f"'{args.out}' holds a run with no finished step: it starts afresh")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run (or ``--check``, or ``--resume``) a case into ``--out``."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import run_case

    if args.allow_case_change and not args.resume:
        from anodetwin.errors import ParameterError

        raise ParameterError("--allow-case-change without --resume",
                             "give it with --resume (a new run takes any case)")
    case = load_case(args.case)
    comm = MPI.COMM_WORLD
    if args.check:
        return _check(case, args, comm)
    rows = run_case(case, args.out, resume=args.resume, max_steps=args.max_steps, comm=comm,
                    allow_case_change=args.allow_case_change)
    if comm.rank == 0:
        last = rows[-1]
        log.info("%d steps; t = %.2f h, thickness %.2f um, volumetric strain %.4f",
                 int(last["step"]), last["time_h"], last["thickness_um"],
                 last["volumetric_strain"])
        print(args.out)
    return 0

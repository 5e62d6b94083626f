"""The what-if study on the command line (:mod:`anodetwin.study`): ``study`` (many twins on
Dask, resumable) and ``study-case`` (one prepared case: what each study task runs)."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, flag, int_value, log

__all__ = ["add_parsers", "cmd_study", "cmd_study_case"]


def add_parsers(sub: Any) -> None:
    """Register ``study`` and ``study-case`` on the subparsers ``sub``."""
    p = add_command(sub, "study", "design what-if study: many twins (phantom -> mesh -> "
                                  "simulation) over particle size, porosity, pressure, ... on "
                                  "Dask; resumable", cmd_study,
                    {"study": "study file (TOML): parameters, design, replicates, base phantom "
                              "and simulation"},
                    out="output folder (results.csv, designs.csv, main_effects.png, "
                        "summary.html, cases/)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler "
                                       "(default: a local cluster)")
    p.add_argument("--workers", type=int_value("--workers", low=1, example="4"),
                   help="local workers, cases at a time (default: cores // ranks per case)")
    flag(p, "--retry-failed", "run the cases whose last attempt failed again")
    flag(p, "--check", "validate the study and list its cases, run nothing")

    p = add_command(sub, "study-case", "mesh and simulate one prepared case folder of a study "
                                       "(what each study task runs under mpiexec)", cmd_study_case,
                    {"folder": "case folder with labels.h5 and case.toml"})
    p.add_argument("--coarsen", type=int_value("--coarsen", low=1, example="2"),
                   default=2, metavar="K", help="mesh coarsening (2)")


def cmd_study(args: argparse.Namespace) -> int:
    """Run a study (or list its cases with ``--check``); prints its summary page."""
    from anodetwin.study import load_study, run_study

    study = load_study(args.study)  # every case checked before anything runs
    if args.check:
        for c in study.cases:
            print(f"{c.key}  {c.label}")
        return 0
    res = run_study(study, args.out, scheduler=args.scheduler, workers=args.workers,
                    retry_failed=args.retry_failed)
    log.info("%d cases: %d run now, %d finished earlier, %d failed", len(res.rows), res.ran,
             res.skipped, res.failed)
    print(res.summary_html)
    return 0


def cmd_study_case(args: argparse.Namespace) -> int:
    """Mesh and simulate one case folder of a study."""
    from anodetwin.study.execute import mesh_and_simulate

    mesh_and_simulate(args.folder, args.coarsen)
    return 0

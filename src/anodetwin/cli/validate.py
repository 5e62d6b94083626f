"""``anodetwin validate``: model versus DVC on one grid, with metrics, pass/fail checks and
an HTML report (:mod:`anodetwin.validate`)."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, log

__all__ = ["add_parsers", "cmd_validate"]


def add_parsers(sub: Any) -> None:
    """Register ``validate`` on the subparsers ``sub``."""
    p = add_command(sub, "validate", "model versus DVC: the simulated and measured fields on "
                                     "one grid, metrics, pass/fail table and an HTML report",
                    cmd_validate)
    p.add_argument("--sim", required=True, help="folder of 'anodetwin simulate'")
    p.add_argument("--dvc", required=True, help="folder of 'anodetwin dvc-series'")
    p.add_argument("--out", required=True, help="report folder (report.html, metrics.json, "
                                                "metrics.csv, checks.csv, figures/)")
    p.add_argument("--config", help="validate.toml: frame, steps, nodes, regions, tolerances")


def cmd_validate(args: argparse.Namespace) -> int:
    """Compare a simulation with a DVC series; prints the report's path."""
    from anodetwin.validate import load_config, validate_run

    cfg = load_config(args.config)
    res = validate_run(args.sim, args.dvc, args.out, cfg)
    failed = [c for c in res.checks if not c["passed"]]
    log.info("%d steps, %d of %d checks passed%s", len(res.metrics),
             len(res.checks) - len(failed), len(res.checks),
             "" if not failed else "; failed: " + ", ".join(
                 sorted({f"{c['check']} ({c['region']})" for c in failed})))
    print(res.report)
    return 0

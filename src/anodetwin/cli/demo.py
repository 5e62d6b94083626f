"""``anodetwin demo``: the main job on built-in data (:mod:`anodetwin.demo`): ``anodetwin run``
on the reference phantom's in situ series, scored against its truth."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, int_value

__all__ = ["add_parsers", "cmd_demo"]


def add_parsers(sub: Any) -> None:
    """Register ``demo`` on the subparsers ``sub``."""
    p = add_command(sub, "demo", "the main job on built-in data: 'anodetwin run' on the "
                                 "reference phantom's series, scored against its truth; "
                                 "prints the report's path", cmd_demo)
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output; "
                                                        "a second run resumes)")
    p.add_argument("--ranks", type=int_value("--ranks", low=1, example="2"), default=None,
                   help="MPI ranks and DVC processes (default: all cores)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; prints the score's criteria and the report's path."""
    from anodetwin.demo import run_demo

    result = run_demo(args.out, ranks=args.ranks)
    for c in result.summary.get("criteria") or []:
        v = c.get("value")
        print(f"{'met' if c['passed'] else 'NOT met':8s} {c['name']}: "
              f"{'-' if v is None else f'{v:.3f}'} (limit {c['limit']})")
    print(f"report: {result.report}")
    return 0

"""``anodetwin demo``: the main job end to end on built-in data (:mod:`anodetwin.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command

__all__ = ["add_parsers", "cmd_demo"]


def add_parsers(sub: Any) -> None:
    """Register ``demo`` on the subparsers ``sub``."""
    p = add_command(sub, "demo", "the main job end to end on built-in data; prints where its "
                                 "output is", cmd_demo)
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; prints its output folder, summary and report."""
    from anodetwin.demo import run_demo

    result = run_demo(args.out)
    print(f"demo output: {result.out_dir}")
    print(f"summary:     {result.summary_path}")
    if "report" in result.summary.get("validation", {}):
        print(f"report:      {result.out_dir / result.summary['validation']['report']}")
    return 0

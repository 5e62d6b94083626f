"""``anodetwin phantom``: a synthetic Si anode and its in situ tomogram series with exact
ground truth (:mod:`anodetwin.phantom`)."""

from __future__ import annotations

import argparse
from typing import Any

from anodetwin.cli.options import add_command, flag, int_value

__all__ = ["add_parsers", "cmd_phantom"]


def add_parsers(sub: Any) -> None:
    """Register ``phantom`` on the subparsers ``sub``."""
    p = add_command(sub, "phantom", "synthetic Si anode and in situ tomogram series with exact "
                                    "ground truth", cmd_phantom,
                    {"out": "output folder: series.h5, summary.json, preview.png "
                            "(and tiff/T<n>.tif with --tiff)"})
    p.add_argument("--config", help="phantom TOML (defaults: the reference electrode)")
    p.add_argument("--seed", type=int_value("--seed", low=0, example="2"),
                   help="random seed (overrides the config's)")
    flag(p, "--tiff", "also export every step as TIFF")


def cmd_phantom(args: argparse.Namespace) -> int:
    """Write a phantom series; prints its folder."""
    from anodetwin.phantom import load_config
    from anodetwin.phantom.report import write_phantom

    cfg = load_config(args.config, seed=args.seed)  # validated before any work
    res = write_phantom(cfg, args.out, tiff=args.tiff)
    print(res.path)
    return 0

"""The main job on the command line (:mod:`anodetwin.pipeline`): ``init`` writes a commented
run file, ``run`` takes an in situ series from its scans to the report, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anodetwin.cli.options import add_command, flag, log

__all__ = ["add_parsers", "cmd_init", "cmd_run"]


def add_parsers(sub: Any) -> None:
    """Register ``init`` and ``run`` on the subparsers ``sub``."""
    p = add_command(sub, "init", "write a commented run file (run.toml) for 'anodetwin run' "
                                 "into a folder", cmd_init, {"folder": "where run.toml goes "
                                                                       "(created)"})
    flag(p, "--force", "replace an existing run.toml")
    p = add_command(sub, "run", "an in situ series from its scans to the model-versus-DVC "
                                "report: segment, morphology, DVC, residuals, mesh, simulate, "
                                "validate, report; resumable, re-runs only what changed",
                    cmd_run, {"run_file": "run file (TOML; 'anodetwin init' writes one)"})
    p.add_argument("--out", help="output folder (layout: anodetwin.pipeline); required but "
                                 "with --check")
    flag(p, "--status", "list the stages of --out and their state; run nothing")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    flag(p, "--check", "check the run file and its scans, run nothing")


def cmd_init(args: argparse.Namespace) -> int:
    """Write ``FOLDER/run.toml`` from :data:`anodetwin.pipeline.TEMPLATE`."""
    from anodetwin.errors import OutputError
    from anodetwin.io import atomic_write_text
    from anodetwin.pipeline import TEMPLATE

    path = Path(args.folder) / "run.toml"
    if path.exists() and not args.force:
        raise OutputError(f"'{path}' exists", "give --force to replace it, or another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, TEMPLATE)
    print(path)
    return 0


def _print_status(states: list) -> None:
    print(f"{'stage':<11}{'state':<9}{'seconds':>9}{'peak MB':>9}  key")
    for s in states:
        sec = f"{s.seconds:.1f}" if s.seconds is not None else "-"
        mem = f"{s.peak_rss_mb:.0f}" if s.peak_rss_mb is not None else "-"
        extra = f"  ({s.error})" if s.error else ""
        print(f"{s.stage:<11}{s.state:<9}{sec:>9}{mem:>9}  {s.key[8:20]}{extra}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run, ``--check`` or ``--status`` a run file."""
    from anodetwin.pipeline import load_run, pipeline_status, run_pipeline

    if not args.out and not args.check:
        from anodetwin.errors import ParameterError

        raise ParameterError("no --out folder", "give --out DIR (the run's output folder)")
    if args.status:
        _print_status(pipeline_status(args.out, args.run_file))
        return 0
    if args.check:
        cfg = load_run(args.run_file)
        print(f"{args.run_file}: {len(cfg.names)} scans ({', '.join(cfg.names)}), ok")
        return 0
    res = run_pipeline(args.run_file, args.out, until=args.until)
    log.info("%d stages done", sum(s.state == "done" for s in res.stages))
    print(res.report or res.out_dir)
    return 0

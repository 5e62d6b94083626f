"""Reference validation case, closed loop: the reference phantom's tomograms deformed by the
simulated displacement of the reference run, measured by spam DVC with the reference's final
window (3.5 um) and validated against that run (anodetwin.validate), next to the
publication's numbers (loop.md).

    python validation/reference_electrode/closed_loop.py [--outputs T0 T1 ...] [--tables-only]

Needs the run of run.py (out/run); writes out/loop (series, DVC, report) and copies the
report (HTML, metrics JSON and CSV, paths relative to the repository) to report/ beside
this file.
"""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5)
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def loop_table(metrics: list[dict], summary: list[dict], expected: dict) -> str:
    """Markdown table per scan: the publication's mean volumetric strain (where it reports
    one), the simulated and the DVC-measured mean J - 1 of the electrode and its halves,
    and the Pearson correlation of the nodal volumetric strain."""
    pub = {e["scan"]: f"{e['value']:g} ± {e['band']:g}" for e in expected.values()
           if e["column"] == "volumetric_strain" and "max" not in e}
    soc = {r["output"]: r["soc"] for r in summary if r["output"]}
    lines = ["| scan | SoC | publication J−1 | twin J−1 (nodes) | DVC J−1 | collector half "
             "twin / DVC | separator half twin / DVC | Pearson (nodes) | displacement RMSE "
             "(um) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in metrics:
        r = m["regions"]
        e, c, s = (r[k]["volumetric"] for k in ("electrode", "collector_half",
                                                 "separator_half"))
        lines.append(
            f"| {m['output']} | {soc.get(m['output'], float('nan')):.2f} | "
            f"{pub.get(m['output'], '-')} | {e['sim_mean']:.3f} | {e['dvc_mean']:.3f} | "
            f"{c['sim_mean']:.3f} / {c['dvc_mean']:.3f} | "
            f"{s['sim_mean']:.3f} / {s['dvc_mean']:.3f} | {e['pearson']:.3f} | "
            f"{m['displacement_rmse_um']:.3f} |")
    return "\n".join(lines)


def failed_checks(checks: list[dict]) -> str:
    """Markdown table of the failed checks, one row per check and region."""
    groups: dict = {}
    for c in checks:
        if not c["passed"]:
            groups.setdefault((c["check"], c["region"]), []).append(c)
    if not groups:
        return "All checks passed."
    lines = ["| check | region | scans failing | worst value | limit |", "|---|---|---|---|---|"]
    for (check, region), cs in groups.items():
        worst = max(cs, key=lambda c: abs(c["value"]))
        lines.append(f"| {check.replace('|', chr(92) + '|')} | {region} | {', '.join(c['output'] for c in cs)} | "
                     f"{worst['value']:.4f} | {worst['limit']:g} |")
    return "\n".join(lines)


def main() -> int:
    import tomllib

    from anodetwin.log import configure_logging
    from anodetwin.phantom.config import load_config
    from anodetwin.simulate.run import read_summary
    from anodetwin.validate.loop import closed_loop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", nargs="+", help="scans to use (default: all simulated)")
    ap.add_argument("--node-spacing-um", type=float, default=2.4)
    ap.add_argument("--hws-um", type=float, default=2.0, help="DVC half-window (um)")
    ap.add_argument("--tables-only", action="store_true",
                    help="rewrite loop.md and report/ from out/loop, run nothing")
    args = ap.parse_args()
    configure_logging(0)
    os.chdir(ROOT)  # relative paths in the report's provenance
    here = HERE.relative_to(ROOT)
    run, folder = here / "out" / "run", here / "out" / "loop"
    summary = read_summary(run / "summary.csv")
    if not args.tables_only:
        outputs = tuple(args.outputs or [r["output"] for r in summary if r["output"]])
        cfg = load_config(ROOT / "validation" / "phantom" / "reference.toml")
        shutil.rmtree(folder, ignore_errors=True)
        # whole grid (separator included): the electrode top rises by up to ~9 um
        closed_loop(run, cfg, folder, outputs, node_spacing_um=args.node_spacing_um,
                    hws_um=args.hws_um, search_range=(8, 3, 3), above_um=None)
    report = here / "report"
    report.mkdir(exist_ok=True)
    for name in ("report.html", "metrics.json", "metrics.csv"):
        text = (folder / "report" / name).read_text()
        (report / name).write_text(text.replace(str(ROOT) + os.sep, ""))
    expected = tomllib.loads((here / "expected.toml").read_text())["metrics"]
    result = json.loads((folder / "report" / "metrics.json").read_text())
    text = ((here / "loop_head.md").read_text() + "\n"
            + loop_table(result["steps"], summary, expected) + "\n\n"
            + f"Checks ({sum(c['passed'] for c in result['checks'])} of "
            f"{len(result['checks'])} passed; tolerances of anodetwin.validate's defaults):"
            + "\n\n" + failed_checks(result["checks"]) + "\n")
    tail = here / "loop_tail.md"
    if tail.is_file():
        text += tail.read_text()
    (here / "loop.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reference validation case, closed loop: the reference phantom's tomograms deformed by the
simulated displacement of the reference run, measured by spam DVC with the reference's final
window (3.5 um) and validated against that run (anodetwin.validate), next to the
publication's numbers (loop.md).

    python validation/reference_electrode/closed_loop.py [--outputs T0 T1 ...]

Needs the run of run.py (out/run); writes out/loop (series, DVC, report) and copies the
report (HTML, metrics JSON and CSV) to report/ beside this file.
"""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5)
import argparse
import json
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
    args = ap.parse_args()
    configure_logging(0)
    run = HERE / "out" / "run"
    summary = read_summary(run / "summary.csv")
    outputs = tuple(args.outputs or [r["output"] for r in summary if r["output"]])
    cfg = load_config(ROOT / "validation" / "phantom" / "reference.toml")
    folder = HERE / "out" / "loop"
    shutil.rmtree(folder, ignore_errors=True)
    # whole grid (separator included): the electrode top rises by up to ~9 um
    _, res = closed_loop(run, cfg, folder, outputs, node_spacing_um=args.node_spacing_um,
                         hws_um=args.hws_um,
                         search_range=(8, 3, 3), above_um=None)
    report = HERE / "report"
    report.mkdir(exist_ok=True)
    for name in ("report.html", "metrics.json", "metrics.csv"):
        if (folder / "report" / name).is_file():
            shutil.copy2(folder / "report" / name, report / name)
    expected = tomllib.loads((HERE / "expected.toml").read_text())["metrics"]
    metrics = json.loads((folder / "report" / "metrics.json").read_text())["steps"]
    text = ((HERE / "loop_head.md").read_text() + "\n" + loop_table(metrics, summary, expected)
            + "\n\nChecks failed: " + ("; ".join(f"{c['output']} {c['check']} ({c['region']})"
                                              for c in res.checks if not c["passed"])
                                       or "none") + "\n")
    (HERE / "loop.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

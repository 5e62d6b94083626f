"""The validation report: figures (PNG), metrics (JSON, CSV) and one self-contained HTML
file with the figures embedded (no network needed).

Report folder::

    report.html              pass/fail table, time series, histograms, slices, scatter,
                             parameters and provenance of both inputs (figures embedded)
    metrics.json             settings, per-step metrics (compare.py / metrics.py), checks,
                             the frame transform, inputs and provenance
    metrics.csv              one row per step, region and measure
    checks.csv               the pass/fail table
    figures/timeseries.png   mean J-1 of the electrode and its halves, sim vs DVC, per step
    figures/hist_<T>.png     J-1 distributions of the halves, sim vs DVC
    figures/slices_<T>.png   x-z mid-slices of J-1 and e_zz: DVC, simulation, difference
    figures/scatter_<T>.png  cell values of J-1, simulation against DVC
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from anodetwin.io import atomic_write_text
from anodetwin.plotting import pyplot, save_png
from anodetwin.validate.compare import StepPair
from anodetwin.validate.metrics import MEASURES, REGIONS, region_masks

__all__ = ["write_figures", "write_tables", "write_html"]

COLORS = {"sim": "tab:orange", "dvc": "tab:blue"}
HALF_STYLE = {"electrode": "-", "collector_half": ":", "separator_half": "--"}


def _timeseries(path: Path, metrics: list[dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = [m["time_s"] / 3600 for m in metrics]
    for region in REGIONS:
        for who in ("sim", "dvc"):
            y = [m["regions"][region]["volumetric"][f"{who}_mean"] for m in metrics]
            ax.plot(t, y, HALF_STYLE[region], marker="o", color=COLORS[who],
                    label=f"{who} {region.replace('_', ' ')}")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("mean volumetric strain J-1")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def _histograms(path: Path, p: StepPair) -> None:
    plt = pyplot()
    masks = region_masks(p)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, region in zip(axes, ("collector_half", "separator_half")):
        m = masks[region]
        vals = [p.strain_sim.volumetric[m], p.strain_dvc.volumetric[m]]
        lo = min((v.min() for v in vals if v.size), default=0.0)
        hi = max((v.max() for v in vals if v.size), default=1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 40)
        for who, v in zip(("sim", "dvc"), vals):
            ax.hist(v, bins=bins, histtype="step", color=COLORS[who], label=who,
                    density=True, lw=1.5)
        ax.set_title(f"{p.output}: {region.replace('_', ' ')}", fontsize=9)
        ax.set_xlabel("J-1")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def _slices(path: Path, p: StepPair) -> None:
    plt = pyplot()
    j = p.valid.shape[1] // 2
    ext = None
    c = p.cells_um
    if c.shape[0] > 1 and c.shape[2] > 1:
        ext = [c[0, j, 0, 2], c[0, j, -1, 2], c[0, j, 0, 0], c[-1, j, 0, 0]]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5))
    for row, meas in enumerate(MEASURES):
        d = np.where(p.valid, p.strain_dvc.volumetric if meas == "volumetric"
                     else p.strain_dvc.small[meas], np.nan)[:, j, :]
        s = np.where(p.valid, p.strain_sim.volumetric if meas == "volumetric"
                     else p.strain_sim.small[meas], np.nan)[:, j, :]
        f = np.abs(np.concatenate([d[np.isfinite(d)], s[np.isfinite(s)]]))
        lim = float(np.percentile(f, 99)) if f.size and np.percentile(f, 99) > 0 else 1e-3
        for col, (name, a) in enumerate((("DVC", d), ("simulation", s), ("sim - DVC", s - d))):
            im = axes[row, col].imshow(a, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                       extent=ext, aspect="auto")
            axes[row, col].set_title(f"{meas} {name}", fontsize=9)
            fig.colorbar(im, ax=axes[row, col], shrink=0.8)
        axes[row, 0].set_ylabel("z (um)")
    for ax in axes[-1]:
        ax.set_xlabel("x (um)")
    fig.suptitle(f"{p.output}: x-z mid-slice of the DVC cells", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def _scatter(path: Path, p: StepPair, m: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    a = p.strain_dvc.volumetric[p.valid]
    b = p.strain_sim.volumetric[p.valid]
    ax.plot(a, b, ".", ms=3, alpha=0.5, color="k")
    if a.size:
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([lo, hi], [lo, hi], "r-", lw=1)
    e = m["regions"]["electrode"]["volumetric"]
    ax.set_title(f"{p.output}: J-1 per cell, Pearson {e['pearson']:.3f}", fontsize=9)
    ax.set_xlabel("DVC")
    ax.set_ylabel("simulation")
    fig.tight_layout()
    save_png(fig, path)


def write_figures(out: Path, pairs: list[StepPair], metrics: list[dict]) -> list[Path]:
    """All figures of the report (module notes); returns their paths."""
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = [fig_dir / "timeseries.png"]
    _timeseries(paths[0], metrics)
    for p, m in zip(pairs, metrics):
        for kind, fn in (("hist", lambda q: _histograms(q, p)),
                         ("slices", lambda q: _slices(q, p)),
                         ("scatter", lambda q: _scatter(q, p, m))):
            q = fig_dir / f"{kind}_{p.output}.png"
            fn(q)
            paths.append(q)
    return paths


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def metric_rows(metrics: list[dict]) -> list[dict]:
    """Flat rows: step, output, time, region, measure and every statistic."""
    rows = []
    for m in metrics:
        for region, per in m["regions"].items():
            for meas, st in per.items():
                rows.append({"step": m["step"], "output": m["output"], "time_s": m["time_s"],
                             "region": region, "measure": meas, **st})
    return rows


def write_tables(out: Path, metrics: list[dict], checks: list[dict], extra: dict) -> None:
    """metrics.json, metrics.csv and checks.csv (atomic)."""
    from anodetwin.io import atomic_write_json

    atomic_write_json(out / "metrics.json", {**extra, "steps": metrics, "checks": checks,
                                             "passed": all(c["passed"] for c in checks)})
    atomic_write_text(out / "metrics.csv", _csv(metric_rows(metrics)))
    atomic_write_text(out / "checks.csv", _csv(checks))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_html(out: Path, metrics: list[dict], checks: list[dict], figures: list[Path],
               extra: dict) -> Path:
    """report.html with the figures embedded."""
    ok = all(c["passed"] for c in checks)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>anodetwin validation"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:2px 6px}.fail{background:#fdd}.pass{background:#dfd}img{max-width:100%}"
        "</style></head><body>",
        f"<h1>Model versus DVC: {'PASSED' if ok else 'FAILED'}</h1>",
        f"<p>simulation <code>{e(str(extra['inputs']['simulation']))}</code>, DVC "
        f"<code>{e(str(extra['inputs']['dvc']))}</code>; {len(metrics)} steps; "
        f"{sum(c['passed'] for c in checks)} of {len(checks)} checks passed.</p>",
        "<h2>Checks</h2><table><tr><th>step</th><th>check</th><th>region</th><th>value</th>"
        "<th>limit</th><th></th></tr>"]
    for c in checks:
        cls = "pass" if c["passed"] else "fail"
        parts.append(f"<tr class='{cls}'><td>{e(c['output'])}</td><td>{e(c['check'])}</td>"
                     f"<td>{e(c['region'])}</td><td>{c['value']:.4g}</td>"
                     f"<td>{c['limit']:.4g}</td><td>{'pass' if c['passed'] else 'FAIL'}</td>"
                     "</tr>")
    parts.append("</table><h2>Per step (electrode)</h2><table><tr><th>step</th>"
                 "<th>time (h)</th><th>J-1 sim</th><th>J-1 DVC</th><th>e_zz sim</th>"
                 "<th>e_zz DVC</th><th>Pearson</th><th>Spearman</th><th>Wasserstein</th>"
                 "<th>KS</th><th>u RMSE (um)</th><th>asymmetry sim / DVC</th>"
                 "<th>axial share sim / DVC</th></tr>")
    for m in metrics:
        v, z = m["regions"]["electrode"]["volumetric"], m["regions"]["electrode"]["ezz"]
        d = m["derived"]
        parts.append(
            f"<tr><td>{e(m['output'])}</td><td>{m['time_s'] / 3600:.2f}</td>"
            f"<td>{v['sim_mean']:.4f}</td><td>{v['dvc_mean']:.4f}</td>"
            f"<td>{z['sim_mean']:.4f}</td><td>{z['dvc_mean']:.4f}</td>"
            f"<td>{v['pearson']:.3f}</td><td>{v['spearman']:.3f}</td>"
            f"<td>{v['wasserstein']:.4f}</td><td>{v['ks']:.3f}</td>"
            f"<td>{m['displacement_rmse_um']:.4f}</td>"
            f"<td>{d['sim']['asymmetry']:.3f} / {d['dvc']['asymmetry']:.3f}</td>"
            f"<td>{d['sim']['axial_share']:.3f} / {d['dvc']['axial_share']:.3f}</td></tr>")
    parts.append("</table><h2>Figures</h2>")
    for f in figures:
        parts.append(f"<h3>{e(f.stem)}</h3>{_img(f)}")
    parts.append("<h2>Frame, settings and provenance</h2><pre>"
                 + e(json.dumps({k: extra[k] for k in ("frame", "settings", "inputs",
                                                        "simulation_case", "dvc_parameters",
                                                        "provenance") if k in extra},
                                indent=1, default=str)) + "</pre></body></html>")
    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path

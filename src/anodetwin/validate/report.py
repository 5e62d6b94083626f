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
    figures/particles_<T>.png  mean J-1 per particle-centred VOI, simulation against DVC
                             (with [microstructure] labels)
    figures/particle3d_<T>.png 3D view (pyvista, off-screen) of the measured and the
                             simulated J-1 of the DVC cells around the particle whose VOI
                             holds the most cells, with its surface (last step)
    particles.csv            the VOIs per step: particle, cells, sim and DVC mean J-1
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anodetwin.io import atomic_write_text
from anodetwin.io.table import csv_text
from anodetwin.plotting import img_tag, pyplot, save_png
from anodetwin.validate.compare import StepPair
from anodetwin.validate.metrics import (MEASURES, REGIONS, SIDES, Check, StepMetrics,
                                        region_masks)

__all__ = ["write_figures", "write_tables", "write_html", "metric_rows"]

COLORS = {"sim": "tab:orange", "dvc": "tab:blue"}
HALF_STYLE = {"electrode": "-", "collector_half": ":", "separator_half": "--"}


def _timeseries(path: Path, metrics: Sequence[StepMetrics]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = [m.time_s / 3600 for m in metrics]
    for region in REGIONS:
        for who in SIDES:
            y = [getattr(m.regions[region]["volumetric"], f"{who}_mean") for m in metrics]
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


def _scatter(path: Path, p: StepPair, m: StepMetrics) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    a = p.strain_dvc.volumetric[p.valid]
    b = p.strain_sim.volumetric[p.valid]
    ax.plot(a, b, ".", ms=3, alpha=0.5, color="k")
    if a.size:
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([lo, hi], [lo, hi], "r-", lw=1)
    e = m.regions["electrode"]["volumetric"]
    ax.set_title(f"{p.output}: J-1 per cell, Pearson {e.pearson:.3f}", fontsize=9)
    ax.set_xlabel("DVC")
    ax.set_ylabel("simulation")
    fig.tight_layout()
    save_png(fig, path)


def _particles(path: Path, m: StepMetrics) -> None:
    plt = pyplot()
    pm = m.particles
    fig, ax = plt.subplots(figsize=(4.2, 4))
    a = np.array([v.dvc_mean for v in pm.vois])
    b = np.array([v.sim_mean for v in pm.vois])
    r = np.array([v.radius_um for v in pm.vois])
    sc = ax.scatter(a, b, s=8 + 6 * r ** 2, c=r, cmap="viridis", alpha=0.8)
    fig.colorbar(sc, ax=ax, shrink=0.8, label="particle radius (um)")
    if a.size:
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([lo, hi], [lo, hi], "r-", lw=1)
    ax.set_title(f"{m.output}: J-1 per particle VOI ({pm.count}), Pearson "
                 f"{pm.pearson:.3f}", fontsize=9)
    ax.set_xlabel("DVC")
    ax.set_ylabel("simulation")
    fig.tight_layout()
    save_png(fig, path)


def _particle3d(path: Path, p: StepPair, m: StepMetrics, labels) -> None:
    """The DVC cells (electrode, valid) around the particle whose VOI holds the most cells,
    coloured by J-1 (translucent), measured beside simulated, with the particle's
    surface."""
    import pyvista as pv
    import vtk

    from anodetwin.io import atomic_path

    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # no X server: fine
    q = max(m.particles.vois, key=lambda v: (v.cells, v.dvc_mean))
    c = np.asarray(q.centre_um)
    half = 2.0 * q.radius_um + 1e-9
    cu = p.cells_um
    step = [(cu[1, 0, 0, 0] - cu[0, 0, 0, 0]) if cu.shape[0] > 1 else 1.0,
            (cu[0, 1, 0, 1] - cu[0, 0, 0, 1]) if cu.shape[1] > 1 else 1.0,
            (cu[0, 0, 1, 2] - cu[0, 0, 0, 2]) if cu.shape[2] > 1 else 1.0]
    gz, gy, gx = p.valid.shape
    grid = pv.ImageData(dimensions=(gx + 1, gy + 1, gz + 1), spacing=step[::-1],
                        origin=(cu[0, 0, 0, 2] - step[2] / 2, cu[0, 0, 0, 1] - step[1] / 2,
                                cu[0, 0, 0, 0] - step[0] / 2))
    for who, st in (("DVC", p.strain_dvc), ("simulation", p.strain_sim)):
        grid.cell_data[who] = np.where(p.valid, st.volumetric, np.nan).ravel()
    # the cells within `half` of the centre (an index box: the subset stays a grid)
    first = cu[0, 0, 0]
    lo_i = [int(np.clip(np.floor((c[a] - half - first[a]) / step[a]), 0, n - 1))
            for a, n in zip(range(3), (gz, gy, gx))]
    hi_i = [int(np.clip(np.ceil((c[a] + half - first[a]) / step[a]) + 1, lo_i[a] + 1, n))
            for a, n in zip(range(3), (gz, gy, gx))]
    sub = grid.extract_subset((lo_i[2], hi_i[2], lo_i[1], hi_i[1], lo_i[0], hi_i[0]))
    vals = np.concatenate([np.asarray(sub.cell_data[w]) for w in ("DVC", "simulation")])
    vals = vals[np.isfinite(vals)]
    clim = (float(np.percentile(vals, 2)), float(np.percentile(vals, 98))) if vals.size \
        else (0.0, 1.0)
    # the particle's surface from the labels (um, x y z), cropped around it
    vs = np.asarray(labels.voxel_size_um, float)
    org = np.asarray(labels.origin_um, float)
    lo = np.maximum(np.floor((c - half - org) / vs).astype(int), 0)
    hi = np.minimum(np.ceil((c + half - org) / vs).astype(int) + 1, labels.particles.shape)
    crop = (labels.particles[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == q.particle)
    img = pv.ImageData(dimensions=crop.shape[::-1], spacing=vs[::-1],
                       origin=tuple((org + lo * vs)[::-1]))
    img.point_data["inside"] = crop.astype(np.float32).ravel()
    surface = img.contour([0.5], scalars="inside")
    pl = pv.Plotter(off_screen=True, shape=(1, 2), window_size=(1200, 560))
    for col, who in enumerate(("DVC", "simulation")):
        pl.subplot(0, col)
        valid = np.flatnonzero(np.isfinite(np.asarray(sub.cell_data[who])))
        if valid.size:
            pl.add_mesh(sub.extract_cells(valid), scalars=who, cmap="viridis", clim=clim,
                        opacity=0.55, show_edges=True, edge_color="grey",
                        scalar_bar_args={"title": f"J-1 {who}", "fmt": "%.2f"})
        if surface.n_points:
            pl.add_mesh(surface, color="white", opacity=1.0)
        pl.add_text(f"{p.output} {who}: particle {q.particle} "
                    f"(r = {q.radius_um:.1f} um)", font_size=9)
        pl.camera_position = "iso"
    with atomic_path(path) as tmp:
        pl.screenshot(str(tmp))
    pl.close()


def write_figures(out: Path, pairs: Sequence[StepPair], metrics: Sequence[StepMetrics],
                  labels=None) -> list[Path]:
    """All figures of the report (module notes).

    Parameters
    ----------
    out : Path
        Report folder; the figures go to ``out/figures``.
    pairs : sequence of StepPair
        The steps on the DVC grid (:func:`anodetwin.validate.compare.pair_steps`).
    metrics : sequence of StepMetrics
        Their metrics, same order.
    labels : anodetwin.mesh.voxel.Labels, optional
        Labels with particle ids: adds the 3D view of the last step.

    Returns
    -------
    list of Path
        The PNG files written, in report order.
    """
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = [fig_dir / "timeseries.png"]
    _timeseries(paths[0], metrics)
    for p, m in zip(pairs, metrics):
        figs = [("hist", lambda q: _histograms(q, p)), ("slices", lambda q: _slices(q, p)),
                ("scatter", lambda q: _scatter(q, p, m))]
        if m.particles is not None and m.particles.count:
            figs.append(("particles", lambda q: _particles(q, m)))
            if labels is not None and p is pairs[-1]:
                figs.append(("particle3d", lambda q: _particle3d(q, p, m, labels)))
        for kind, fn in figs:
            q = fig_dir / f"{kind}_{p.output}.png"
            fn(q)
            paths.append(q)
    return paths


def metric_rows(metrics: Sequence[StepMetrics]) -> list[dict]:
    """The rows of ``metrics.csv``.

    Parameters
    ----------
    metrics : sequence of StepMetrics
        Per step.

    Returns
    -------
    list of dict
        One per step, region and measure: step, output, time_s, region, measure and every
        field of :class:`~anodetwin.validate.metrics.RegionStatistics`.
    """
    return [{"step": m.step, "output": m.output, "time_s": m.time_s, "region": region,
             "measure": meas, **st}
            for m in metrics for region, per in m.regions.items() for meas, st in per.items()]


def _voi_rows(metrics: Sequence[StepMetrics]) -> list[dict]:
    """The rows of ``particles.csv``: step, output, the VOI's fields, centre per axis."""
    return [{"step": m.step, "output": m.output,
             **{k: v for k, v in voi.items() if k != "centre_um"},
             **{f"centre_{a}_um": c for a, c in zip("zyx", voi.centre_um)}}
            for m in metrics if m.particles is not None for voi in m.particles.vois]


def write_tables(out: Path, metrics: Sequence[StepMetrics], checks: Sequence[Check],
                 extra: dict) -> None:
    """Write metrics.json, metrics.csv, checks.csv and (with VOIs) particles.csv, atomically.

    Parameters
    ----------
    out : Path
        Report folder.
    metrics : sequence of StepMetrics
        Per step.
    checks : sequence of Check
        The pass/fail table.
    extra : dict
        JSON-ready entries of metrics.json before ``steps`` (inputs, frame, settings,
        provenance, ...).
    """
    from anodetwin.io import atomic_write_json

    atomic_write_json(out / "metrics.json", {
        **extra, "steps": [m.as_dict() for m in metrics],
        "checks": [c.as_dict() for c in checks], "passed": all(c.passed for c in checks)})
    atomic_write_text(out / "metrics.csv", csv_text(metric_rows(metrics)))
    atomic_write_text(out / "checks.csv", csv_text(checks))
    vois = _voi_rows(metrics)
    if vois:
        atomic_write_text(out / "particles.csv", csv_text(vois))


def _step_row(m: StepMetrics) -> str:
    """The row of the per-step table of report.html."""
    v, z = m.regions["electrode"]["volumetric"], m.regions["electrode"]["ezz"]
    d = m.derived
    return (f"<tr><td>{html.escape(m.output)}</td><td>{m.time_s / 3600:.2f}</td>"
            f"<td>{v.sim_mean:.4f}</td><td>{v.dvc_mean:.4f}</td>"
            f"<td>{z.sim_mean:.4f}</td><td>{z.dvc_mean:.4f}</td>"
            f"<td>{v.pearson:.3f}</td><td>{v.spearman:.3f}</td>"
            f"<td>{v.wasserstein:.4f}</td><td>{v.ks:.3f}</td>"
            f"<td>{m.displacement_rmse_um:.4f}</td>"
            f"<td>{d['sim'].asymmetry:.3f} / {d['dvc'].asymmetry:.3f}</td>"
            f"<td>{d['sim'].axial_share:.3f} / {d['dvc'].axial_share:.3f}</td>"
            + (f"<td>{m.particles.count}, {m.particles.pearson:.3f}</td>"
               if m.particles is not None else "<td>-</td>") + "</tr>")


def write_html(out: Path, metrics: Sequence[StepMetrics], checks: Sequence[Check],
               figures: Sequence[Path], extra: dict) -> Path:
    """Write report.html with the figures embedded (no network needed to view it).

    Parameters
    ----------
    out, metrics, checks : Path, sequence of StepMetrics, sequence of Check
        As :func:`write_tables`.
    figures : sequence of Path
        PNG files to embed (:func:`write_figures`), in order.
    extra : dict
        ``inputs`` (simulation and DVC folders), and the ``frame``, ``settings``,
        ``simulation_case``, ``dvc_parameters`` and ``provenance`` shown at the end.

    Returns
    -------
    Path
        ``out/report.html``.
    """
    ok = all(c.passed for c in checks)
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
        f"{sum(c.passed for c in checks)} of {len(checks)} checks passed.</p>",
        "<h2>Checks</h2><table><tr><th>step</th><th>check</th><th>region</th><th>value</th>"
        "<th>limit</th><th></th></tr>"]
    for c in checks:
        cls = "pass" if c.passed else "fail"
        parts.append(f"<tr class='{cls}'><td>{e(c.output)}</td><td>{e(c.check)}</td>"
                     f"<td>{e(c.region)}</td><td>{c.value:.4g}</td>"
                     f"<td>{c.limit:.4g}</td><td>{'pass' if c.passed else 'FAIL'}</td>"
                     "</tr>")
    parts.append("</table><h2>Per step (electrode)</h2><table><tr><th>step</th>"
                 "<th>time (h)</th><th>J-1 sim</th><th>J-1 DVC</th><th>e_zz sim</th>"
                 "<th>e_zz DVC</th><th>Pearson</th><th>Spearman</th><th>Wasserstein</th>"
                 "<th>KS</th><th>u RMSE (um)</th><th>asymmetry sim / DVC</th>"
                 "<th>axial share sim / DVC</th><th>particle VOIs: n, Pearson</th></tr>")
    parts.extend(_step_row(m) for m in metrics)
    parts.append("</table><h2>Figures</h2>")
    for f in figures:
        parts.append(f"<h3>{e(f.stem)}</h3>{img_tag(f)}")
    parts.append("<h2>Frame, settings and provenance</h2><pre>"
                 + e(json.dumps({k: extra[k] for k in ("frame", "settings", "inputs",
                                                        "simulation_case", "dvc_parameters",
                                                        "provenance") if k in extra},
                                indent=1, default=str)) + "</pre></body></html>")
    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path

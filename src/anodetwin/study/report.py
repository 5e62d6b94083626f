"""Study outputs for people: design ranking, main effects, plots and an HTML summary.

Main effect of a parameter on a metric: the change of the metric across the studied range of
the parameter, from a least-squares linear model of the metric in all varied parameters
(the others held at their means). For a two-level full factorial it is exactly the
difference of the level means; for a Latin hypercube it separates the levers that were
varied together.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

from anodetwin.io import atomic_write_json, atomic_write_text
from anodetwin.io.table import csv_text
from anodetwin.plotting import img_tag, pyplot, save_png
from anodetwin.study.metrics import METRICS

__all__ = ["write_report", "main_effects", "design_table", "KEY_METRICS"]

#: Metrics shown in the plots and the ranking table.
KEY_METRICS = ("volumetric_strain_p95", "volumetric_strain_max", "heterogeneity_p95_p5",
               "asymmetry", "thickness_growth", "max_principal_si_mpa",
               "si_fraction_above_threshold", "stack_pressure_end_mpa")


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _done(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "done"]


def main_effects(rows: list[dict], params: list[str], metrics=METRICS) -> dict:
    """Main effects of the varied parameters on the metrics (module notes).

    Parameters
    ----------
    rows : list of dict
        Rows of ``results.csv`` (``status``, the parameters, the metrics); only the finished
        cases (``status == "done"``) count.
    params : list of str
        The parameter columns; those with a single value among the finished cases are left
        out.
    metrics : iterable of str
        The metric columns (default: all of :data:`~anodetwin.study.metrics.METRICS`); a
        metric with no more finished values than varied parameters is left out.

    Returns
    -------
    dict
        ``{metric: {parameter: effect}}``, each effect in the metric's unit: the change of
        the metric across the parameter's studied range.
    """
    done = _done(rows)
    varied = [p for p in params if len({r[p] for r in done}) > 1]
    out: dict[str, dict] = {}
    if not varied:
        return out
    X = np.array([[_num(r[p]) for p in varied] for r in done])
    span = X.max(axis=0) - X.min(axis=0)
    for m in metrics:
        y = np.array([_num(r[m]) for r in done])
        ok = np.isfinite(y)
        if ok.sum() <= len(varied):
            continue
        A = np.column_stack([np.ones(ok.sum()), X[ok]])
        coef = np.linalg.lstsq(A, y[ok], rcond=None)[0]
        out[m] = {p: float(coef[i + 1] * span[i]) for i, p in enumerate(varied)}
    return out


def design_table(rows: list[dict], params: list[str], rank_by: str) -> list[dict]:
    """The design points of a study, ranked (``designs.csv``).

    Parameters
    ----------
    rows : list of dict
        One per case (``results.csv``), with its ``point`` and ``status``.
    params : list of str
        The parameter columns, copied from each point's first case.
    rank_by : str
        The metric whose mean over the finished replicates orders the points.

    Returns
    -------
    list of dict
        One row per design point, in point order: ``point``, the parameter values,
        ``replicates_done``, ``replicates``, ``<metric>_mean`` and ``<metric>_std`` of every
        metric (None without a finished replicate) and ``rank`` (1 = lowest mean of
        ``rank_by``; None when unranked).
    """
    points: dict[int, list[dict]] = {}
    for r in rows:
        points.setdefault(int(r["point"]), []).append(r)
    out = []
    for pt, rs in sorted(points.items()):
        d = _done(rs)
        row = {"point": pt, **{p: rs[0][p] for p in params}, "replicates_done": len(d),
               "replicates": len(rs)}
        for m in METRICS:
            v = [_num(r[m]) for r in d if r[m] is not None]
            row[f"{m}_mean"] = float(np.mean(v)) if v else None
            row[f"{m}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else (0.0 if v else None)
        out.append(row)
    ranked = sorted((r for r in out if r[f"{rank_by}_mean"] is not None),
                    key=lambda r: r[f"{rank_by}_mean"])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    for r in out:
        r.setdefault("rank", None)
    return out


def _plot(path: Path, rows: list[dict], params: list[str], metrics: list[str]) -> None:
    plt = pyplot()
    done = _done(rows)
    fig, axes = plt.subplots(len(metrics), len(params), squeeze=False,
                             figsize=(2.9 * len(params) + 0.6, 2.0 * len(metrics) + 0.6),
                             constrained_layout=True)
    for i, m in enumerate(metrics):
        for j, p in enumerate(params):
            ax = axes[i][j]
            x = np.array([_num(r[p]) for r in done])
            y = np.array([_num(r[m]) for r in done])
            ax.plot(x, y, "o", color="0.6", ms=4, label="cases")
            levels = np.unique(x[np.isfinite(y)])
            if 1 < levels.size <= 8:
                ax.plot(levels, [np.nanmean(y[x == v]) for v in levels], "-s", color="C0",
                        ms=5, label="level mean")
            elif levels.size > 8:
                k = np.isfinite(y)
                c = np.polyfit(x[k], y[k], 1)
                ax.plot(levels, np.polyval(c, levels), "-", color="C0", label="linear fit")
            if i == len(metrics) - 1:
                ax.set_xlabel(f"{p}")
            if j == 0:
                ax.set_ylabel(m.replace("_", " "), fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Main effects: each metric against each parameter (end of charge)")
    save_png(fig, path, dpi=80)


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _largest(effects: dict) -> dict:
    """metric -> (parameter, effect) of its largest main effect."""
    return {m: max(e.items(), key=lambda kv: abs(kv[1])) for m, e in effects.items() if e}


def _summary(study, rows: list[dict], designs: list[dict], effects: dict, params: list[str],
             extra: dict) -> dict:
    """The content of ``summary.json``."""
    done = _done(rows)
    return {"name": study.name, "design": study.design, "cases": len(rows),
            "done": len(done), "failed": sum(r["status"] == "failed" for r in rows),
            "pending": sum(r["status"] == "pending" for r in rows),
            "ran_this_time": extra["ran"], "skipped_finished": extra["skipped"],
            "rank_by": study.rank_by, "main_effects": effects,
            "largest_main_effect": {m: {"parameter": p, "effect": e}
                                    for m, (p, e) in _largest(effects).items()},
            "best_design": next(({p: d[p] for p in params} for d in designs
                                 if d["rank"] == 1), None),
            "files": ["results.csv", "designs.csv", "summary.html"]
            + (["main_effects.png"] if done else []),
            "provenance": extra["provenance"]}


def _tables_html(designs: list[dict], effects: dict, params: list[str], metrics: list[str],
                 rank_by: str) -> list[str]:
    """The ranking and the main-effects tables."""
    e = html.escape
    parts = [f"<h2>Designs ranked by {e(rank_by)} (lowest first; mean &plusmn; "
             "std over replicates)</h2><table><tr><th>rank</th>"
             + "".join(f"<th>{e(p)}</th>" for p in params)
             + "".join(f"<th>{e(m)}</th>" for m in metrics) + "<th>done</th></tr>"]
    for d in sorted(designs, key=lambda d: (d["rank"] is None, d["rank"] or 0)):
        parts.append("<tr><td>" + _fmt(d["rank"]) + "</td>"
                     + "".join(f"<td>{_fmt(d[p])}</td>" for p in params)
                     + "".join(f"<td>{_fmt(d[f'{m}_mean'])} &plusmn; {_fmt(d[f'{m}_std'], 2)}"
                               "</td>" for m in metrics)
                     + f"<td>{d['replicates_done']}/{d['replicates']}</td></tr>")
    parts.append("</table><h2>Main effects (change across each parameter's range)</h2>"
                 "<table><tr><th>metric</th><th>unit</th>"
                 + "".join(f"<th>{e(p)}</th>" for p in params) + "</tr>")
    for m, eff in effects.items():
        parts.append(f"<tr><td title='{e(METRICS[m][1])}'>{e(m)}</td><td>{METRICS[m][0]}</td>"
                     + "".join(f"<td>{_fmt(eff.get(p))}</td>" for p in params) + "</tr>")
    parts.append("</table>")
    return parts


def write_report(out: Path, study, rows: list[dict], extra: dict) -> Path:
    """Write ``designs.csv``, ``main_effects.png``, ``summary.json`` and ``summary.html``
    (module notes of :mod:`anodetwin.study.run`).

    Parameters
    ----------
    out : Path
        The study's output folder.
    study : anodetwin.study.Study
        The study (its points, ``rank_by``, name).
    rows : list of dict
        One row per case, as in ``results.csv``.
    extra : dict
        ``ran``, ``skipped`` (case counts) and ``provenance`` for the summary.

    Returns
    -------
    Path
        ``summary.html``.
    """
    params = list(study.points[0])
    designs = design_table(rows, params, study.rank_by)
    atomic_write_text(out / "designs.csv", csv_text(designs))
    effects = main_effects(rows, params)
    metrics = [study.rank_by] + [m for m in KEY_METRICS if m != study.rank_by]
    fig = out / "main_effects.png"
    done = _done(rows)
    if done:
        _plot(fig, rows, params, metrics)
    largest = _largest(effects)
    failed = [r for r in rows if r["status"] == "failed"]
    summary = _summary(study, rows, designs, effects, params, extra)
    atomic_write_json(out / "summary.json", summary)
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>anodetwin study "
             f"{e(study.name)}</title><style>body{{font-family:sans-serif;max-width:1200px;"
             "margin:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px "
             "solid #ccc;padding:2px 6px}.fail{background:#fdd}img{max-width:100%}</style>"
             "</head><body>",
             f"<h1>Design study: {e(study.name)}</h1>",
             f"<p>{study.design} design over {', '.join(e(p) for p in params)}; "
             f"{len(study.points)} design points x {study.replicates} replicate(s) = "
             f"{len(rows)} cases: {len(done)} done, {len(failed)} failed, "
             f"{summary['pending']} pending ({extra['ran']} run now, {extra['skipped']} "
             f"finished earlier). Every design charged at constant current to SoC "
             f"{study.charge_soc:g}; metrics at the end of the charge.</p>"]
    if study.rank_by in largest:
        p, v = largest[study.rank_by]
        parts.append(f"<p><b>Largest lever on {e(study.rank_by)}</b>: {e(p)} (a change of "
                     f"{v:+.4g} across its range).</p>")
    parts += _tables_html(designs, effects, params, metrics, study.rank_by)
    if done:
        parts.append(f"<h2>Main-effect plots</h2>{img_tag(fig)}")
    if failed:
        parts.append("<h2>Failed cases</h2><table><tr><th>case</th><th>key</th><th>stage"
                     "</th><th>reason</th></tr>")
        for r in failed:
            parts.append(f"<tr class='fail'><td>{_fmt(r['case'])}</td><td>{e(r['key'])}</td>"
                         f"<td>{e(r['stage'] or '')}</td><td>{e(r['reason'] or '')}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Metrics</h2><table>" + "".join(
        f"<tr><td>{e(k)}</td><td>{u}</td><td>{e(d)}</td></tr>" for k, (u, d) in METRICS.items())
        + "</table><h2>Study file and provenance</h2><pre>"
        + e(json.dumps({"study": study.raw, "provenance": extra["provenance"]}, indent=1,
                       default=str)) + "</pre></body></html>")
    path = out / "summary.html"
    atomic_write_text(path, "\n".join(parts))
    return path

"""The report of a run folder: the measured story of an in situ series next to the twin.

:func:`write_report` reads the folder written by ``anodetwin run`` (``run.json`` and one
folder per stage, each in the layout of the module that writes it) and writes::

    DIR/report/report.html            one self-contained page (figures embedded as PNG)
    DIR/report/figures/thickness_rnl.png   electrode thickness (mean +- std, um) and relative
                                      non-lithiated (RNL) Si volume against state of charge
    DIR/report/figures/strain_time.png     mean volumetric strain J-1 of the electrode and its
                                      collector/separator halves per scan, DVC and twin
    DIR/report/figures/hist_halves.png     distributions of J-1 in each half, per scan
    DIR/report/figures/components.png      mean small-strain e_zz, e_yy, e_xx per scan
    DIR/report/figures/strain_map_T<k>.png x-z section of J-1 and e_zz of the last
                                      cumulative DVC field T0 -> Tk
    DIR/report/figures/residual_classes.png particles per lithiation pattern per scan

Sections and what each reads (relative to DIR):

1. thickness and RNL: ``morphology/morphology.csv``; the x axis is the scans' state of
   charge from ``run.json`` (the scan index where one is unknown); the twin's thickness from
   ``simulate/run/summary.csv`` where it exists;
2. mean J-1 of the electrode and its halves per scan: ``dvc/regions.h5``; the twin's from
   ``validate/metrics.json``; the x axis is the scans' time (the scan index where one is
   unknown);
3. histograms of J-1 per half and scan: ``dvc/regions.h5`` (``/hist``);
4. small-strain components per scan: ``dvc/regions.h5`` (``ezz``, ``eyy``, ``exx``,
   ``deviatoric``, ``hencky_volumetric``);
5. x-z section of the last ``dvc/cumulative_0_<k>.h5``, its strain from the displacement by
   the one strain operator (:func:`anodetwin.dvc.pair.read_pair`), drawn by
   :func:`anodetwin.dvc.quicklook.pair_quicklook`;
6. particles per lithiation pattern: ``residuals/residual_0_<k>.h5`` (per-particle table)
   and ``residuals/noise_floor.json``;
7. twin versus DVC metrics and the pass/fail table: ``validate/metrics.json`` (linked:
   ``validate/report.html``);
8. scoring against a phantom's truth: ``score/score.json``, rendered generically (lists of
   mappings as tables, nested mappings flattened to ``a.b`` columns);
9. every stage of ``run.json`` with its state, time, peak memory, key and the parameters of
   ``<stage>/stage.json``.

A section whose input is missing says so in one line, naming the stage and its state; a
section whose stage is not ``done`` but whose files exist notes that. Figures older than the
report (of sections that now have no input) are removed from ``report/figures``.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import AnodetwinError, CorruptFileError, InputNotFoundError
from anodetwin.io import atomic_write_text
from anodetwin.plotting import img_tag, pyplot, save_png

__all__ = ["write_report", "STRAIN_LABELS"]

#: How figures and tables name the strain measures of the DVC region statistics.
STRAIN_LABELS = {"volumetric": "volumetric strain J-1",
                 "ezz": "small-strain e_zz (axial)", "eyy": "small-strain e_yy",
                 "exx": "small-strain e_xx", "deviatoric": "deviatoric small-strain norm",
                 "hencky_volumetric": "Hencky volumetric strain log J"}
HALVES = ("collector_half", "separator_half")
REGIONS = ("electrode", *HALVES)
_STYLE = {"electrode": ("k", "o"), "collector_half": ("tab:blue", "v"),
          "separator_half": ("tab:red", "^")}
# what a section may meet in a damaged or foreign file: it then says so in one line
_READ_ERRORS = (AnodetwinError, OSError, KeyError, ValueError, IndexError, TypeError)
_CSS = ("body{font-family:sans-serif;max-width:1150px;margin:auto}table{border-collapse:"
        "collapse;font-size:13px;margin:4px 0}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".fail{background:#fdd}.pass{background:#dfd}.warn{background:#ffd}"
        ".pending{color:#888}.missing{color:#a40}.note{color:#555}img{max-width:100%}"
        "code{font-size:12px}")


class _Missing(Exception):
    """A section's input file is absent (message: what is missing)."""


@dataclass
class _Run:
    """The run folder being reported: its ``run.json`` and the figures drawn so far."""

    out: Path
    fig_dir: Path
    record: dict
    figures: list = field(default_factory=list)
    _regions: Any = None

    @property
    def scans(self) -> list[dict]:
        """The scans of ``run.json`` (name, file, soc, time_s)."""
        return list(self.record.get("scans") or [])

    def stage(self, name: str) -> dict | None:
        """The stage's entry of ``run.json`` (None: not listed)."""
        return next((s for s in self.record.get("stages") or [] if s.get("stage") == name),
                    None)

    def scan_name(self, k: int) -> str:
        """Name of scan k (``T<k>`` where ``run.json`` does not say)."""
        s = self.scans
        return str(s[k].get("name") or f"T{k}") if 0 <= k < len(s) else f"T{k}"

    def figure(self, name: str, draw: Callable[[Path], None]) -> str:
        """Draw ``figures/<name>`` with ``draw(path)`` and return its embedded ``<img>``."""
        path = self.fig_dir / name
        draw(path)
        self.figures.append(path)
        return img_tag(path)

    def regions(self):
        """``dvc/regions.h5`` (read once)."""
        if self._regions is None:
            self._regions = _read_regions(self.out / "dvc" / "regions.h5")
        return self._regions


# --------------------------------------------------------------------------------------------
# small helpers: numbers, tables, axes

def _fmt(v: Any, digits: int = 4) -> str:
    """A cell's text: ``-`` for None/NaN, floats to ``digits`` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v)
    return str(v)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
           classes: Sequence[str] | None = None) -> str:
    """An HTML table; values through :func:`_fmt` and escaped."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = f" class='{classes[i]}'" if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in r) + "</tr>")
    return f"<table><tr>{head}</tr>" + "".join(body) + "</table>"


def _name(region: str) -> str:
    """A region name for people: ``collector_half`` -> ``collector half``."""
    return region.replace("_", " ")


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested mappings flattened to ``a.b`` keys."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _scan_axis(run: _Run, ks: Sequence[int], key: str) -> tuple[np.ndarray, str, bool]:
    """x values of scans ``ks``: their ``key`` (``soc`` or ``time_s``) where every one is
    known, else the scan index; returns (x, axis label, known)."""
    vals = [run.scans[k].get(key) if k < len(run.scans) else None for k in ks]
    if ks and all(isinstance(v, (int, float)) for v in vals):
        if key == "time_s":
            return np.array(vals, float) / 3600.0, "time (h)", True
        return np.array(vals, float), "state of charge (-)", True
    return np.array(ks, float), "scan index k (scan Tk)", False


def _label_points(ax: Any, x: Sequence[float], y: Sequence[float], names: Sequence[str]) -> None:
    """Write the scan names beside the points of a curve."""
    for xi, yi, n in zip(x, y, names, strict=True):
        if np.isfinite(yi):
            ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)


def _read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file, numbers as float (empty cells None)."""
    if not path.is_file():
        raise _Missing(f"{path.parent.name}/{path.name}")

    def num(v: str) -> Any:
        if v == "":
            return None
        try:
            return float(v)
        except ValueError:
            return v
    with open(path, newline="") as fh:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _read_json(path: Path) -> Any:
    """A JSON file's content (:class:`_Missing` without the file)."""
    if not path.is_file():
        raise _Missing(f"{path.parent.name}/{path.name}")
    return json.loads(path.read_text())


def _read_regions(path: Path, wanted: Sequence[str] = REGIONS):
    """The regions ``wanted`` of a ``regions.h5`` file (layout of
    :mod:`anodetwin.dvc.regions`) as a RegionStats: their statistics and their J-1
    histograms only (a file with thousands of cubes stays small in memory), no particles."""
    import h5py

    from anodetwin.dvc.regions import FORMAT, RegionStats

    if not path.is_file():
        raise _Missing(f"{path.parent.name}/{path.name}")
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise CorruptFileError(f"'{path}' is not an anodetwin region file",
                                   "run the dvc stage again")
        names = [n.decode() for n in f["regions/name"][...]]
        absent = [w for w in wanted if w not in names]
        if absent:
            raise KeyError(f"'{path}' has no region {', '.join(absent)}")
        idx = sorted(names.index(w) for w in wanted)  # h5py selects in increasing order
        steps = [int(s) for s in f["steps"][...]]
        n = len(steps)
        return RegionStats(
            steps, [names[i] for i in idx],
            [f["regions/kind"][i].decode() for i in idx], f["regions/bounds_voxels"][idx],
            {m: f[f"stats/{m}"][:, idx] for m in f["stats"]},
            {"volumetric": f["hist/volumetric"][:, idx]}, f["hist/edges"][...],
            f["volumetric_of_mean_F"][:, idx], np.zeros(0, int), np.zeros((0, 3)),
            np.zeros((n, 0, 3)), np.zeros((n, 0, 2, 3)), tuple(f.attrs["interfaces_voxels"]),
            np.asarray(f.attrs["voxel_size_um"]), json.loads(f.attrs["params"]))


# --------------------------------------------------------------------------------------------
# 1. thickness and RNL

def _twin_thickness(run: _Run) -> list[dict]:
    """Rows (soc, thickness_um) of the twin's ``summary.csv``; empty without one."""
    from anodetwin.simulate import read_summary

    p = run.out / "simulate" / "run" / "summary.csv"
    if not p.is_file():
        return []
    return [r for r in read_summary(p) if np.isfinite(r.get("thickness_um", np.nan))]


def _draw_thickness(path: Path, x, xlabel: str, rows: list[dict], names: list[str],
                    twin: list[dict], soc_known: bool) -> None:
    """Thickness (mean +- std) and RNL against SoC (or scan), the twin's thickness."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    th = [r["thickness_mean_um"] for r in rows]
    ax.errorbar(x, th, yerr=[r["thickness_std_um"] or 0.0 for r in rows], fmt="o-",
                capsize=3, color="k", label="measured thickness (mean +- std over columns)")
    _label_points(ax, x, th, names)
    if twin and soc_known:
        ax.plot([r["soc"] for r in twin], [r["thickness_um"] for r in twin], "--",
                color="tab:orange", label="twin thickness (simulation)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("electrode thickness (um)")
    ax2 = ax.twinx()
    ax2.plot(x, [r["rnl"] for r in rows], "s:", color="tab:red", label="RNL volume")
    ax2.set_ylabel("relative non-lithiated Si volume RNL (-)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title("electrode thickness and relative non-lithiated (RNL) Si volume", fontsize=9)
    save_png(fig, path)


def _thickness(run: _Run) -> list[str]:
    """Section 1: thickness and RNL per scan (morphology.csv)."""
    rows = _read_csv(run.out / "morphology" / "morphology.csv")
    if not rows:
        raise _Missing("morphology/morphology.csv rows")
    ks = [int(r["step"]) for r in rows]
    names = [run.scan_name(k) for k in ks]
    x, xlabel, known = _scan_axis(run, ks, "soc")
    twin = _twin_thickness(run)
    img = run.figure("thickness_rnl.png", lambda p: _draw_thickness(
        p, x, xlabel, rows, names, twin, known))
    t0 = rows[0]["thickness_mean_um"]
    table = _table(["scan", "state of charge", "thickness mean (um)", "thickness std (um)",
                    "change vs first scan (%)", "RNL volume", "Si particles"],
                   [[n, xi if known else None, r["thickness_mean_um"], r["thickness_std_um"],
                     100 * (r["thickness_mean_um"] / t0 - 1) if t0 else None, r["rnl"],
                     r.get("particles")] for n, xi, r in zip(names, x, rows, strict=True)])
    note = [] if known else ["<p class='note'>The state of charge of some scans is unknown "
                             "(run file): the x axis is the scan index.</p>"]
    return note + [img, table]


# --------------------------------------------------------------------------------------------
# 2. mean strain of the electrode and its halves

def _twin_means(run: _Run) -> dict[int, dict[str, float]]:
    """{DVC step: {region: twin mean J-1}} from ``validate/metrics.json`` (empty without)."""
    p = run.out / "validate" / "metrics.json"
    if not p.is_file():
        return {}
    steps = json.loads(p.read_text()).get("steps", [])
    return {int(s["step"]): {r: s["regions"][r]["volumetric"]["sim_mean"] for r in REGIONS
                             if r in s.get("regions", {})} for s in steps}


def _draw_strain_time(path: Path, x, xlabel: str, rs, twin: dict, names: list[str]) -> None:
    """Mean J-1 of the electrode and its halves per scan, DVC and twin."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for region in REGIONS:
        colour, marker = _STYLE[region]
        y = [rs.value(k, region) for k in rs.steps]
        ax.plot(x, y, "-", marker=marker, color=colour, label=f"DVC {_name(region)}")
        if twin:
            yt = [twin.get(k, {}).get(region, np.nan) for k in rs.steps]
            ax.plot(x, yt, "--", marker=marker, mfc="none", color=colour,
                    label=f"twin {_name(region)}")
    _label_points(ax, x, [rs.value(k, "electrode") for k in rs.steps], names)
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean volumetric strain J-1 (-), T0 -> Tk")
    ax.set_title("cumulative volumetric strain J-1 = det F - 1 of the electrode and its halves",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save_png(fig, path)


def _strain_time(run: _Run) -> list[str]:
    """Section 2: mean J-1 of the electrode and its halves per scan (regions.h5)."""
    rs = run.regions()
    names = [run.scan_name(k) for k in rs.steps]
    x, xlabel, known = _scan_axis(run, rs.steps, "time_s")
    twin = _twin_means(run)
    img = run.figure("strain_time.png", lambda p: _draw_strain_time(p, x, xlabel, rs, twin,
                                                                    names))
    cols = ["scan", "time (h)"] + [f"DVC {_name(r)} J-1" for r in REGIONS]
    cols += [f"twin {_name(r)} J-1" for r in REGIONS] if twin else []
    rows = []
    for k, n, xi in zip(rs.steps, names, x, strict=True):
        row = [n, xi if known else None] + [rs.value(k, r) for r in REGIONS]
        rows.append(row + ([twin.get(k, {}).get(r) for r in REGIONS] if twin else []))
    note = ("<p class='note'>Twin values from the validation (simulation on the DVC grid, "
            "same strain operator).</p>" if twin else
            "<p class='note'>" + html.escape(_absent(run, "validate", "validate/metrics.json"))
            + " (no twin values).</p>")
    return [img, note, _table(cols, rows)]


# --------------------------------------------------------------------------------------------
# 3. histograms of the halves

def _draw_histograms(path: Path, rs, names: list[str]) -> None:
    """J-1 distributions of the two halves, one curve per scan."""
    plt = pyplot()
    edges = rs.edges
    h = rs.hist["volumetric"]
    used = np.flatnonzero(h[:, [rs.names.index(r) for r in HALVES]].sum(axis=(0, 1)))
    lo = edges[max(used[0] - 1, 0)] if used.size else edges[0]
    hi = edges[min(used[-1] + 2, len(edges) - 1)] if used.size else edges[-1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, constrained_layout=True)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(rs.steps), 1)))
    for ax, region in zip(axes, HALVES, strict=True):
        r = rs.names.index(region)
        for s, (n, c) in enumerate(zip(names, colours, strict=False)):
            counts = h[s, r].astype(float)
            total = counts.sum()
            if total:
                ax.stairs(counts / total, edges, color=c,
                          label=f"T0 -> {n} (mean {rs.value(rs.steps[s], region):.3f})")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("volumetric strain J-1 (-)")
        ax.set_title(_name(region), fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction of the half's DVC cells")
    fig.suptitle("distribution of the cumulative volumetric strain J-1 per electrode half",
                 fontsize=10)
    save_png(fig, path)


def _histograms(run: _Run) -> list[str]:
    """Section 3: J-1 distributions of the halves per scan (regions.h5)."""
    rs = run.regions()
    names = [run.scan_name(k) for k in rs.steps]
    img = run.figure("hist_halves.png", lambda p: _draw_histograms(p, rs, names))
    rows = [[n, _name(region), rs.value(k, region, stat="n"), rs.value(k, region, stat="p5"),
             rs.value(k, region, stat="p50"), rs.value(k, region, stat="p95"),
             rs.value(k, region, stat="max")]
            for k, n in zip(rs.steps, names, strict=True) for region in HALVES]
    return [img, _table(["scan", "half", "cells", "J-1 p5", "J-1 median", "J-1 p95",
                         "J-1 max"], rows)]


# --------------------------------------------------------------------------------------------
# 4. strain components

def _draw_components(path: Path, x, xlabel: str, rs) -> None:
    """Mean small-strain components of the electrode, and e_zz per region."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4), constrained_layout=True)
    r = rs.names.index("electrode")
    for m, c in (("ezz", "tab:red"), ("eyy", "tab:green"), ("exx", "tab:blue")):
        s = rs.stats[m][:, r]
        axes[0].plot(x, s[:, 1], "o-", color=c, label=f"{STRAIN_LABELS[m]} mean")
        if m == "ezz":
            axes[0].fill_between(x, s[:, 4], s[:, 8], color=c, alpha=0.15,
                                 label="e_zz 5-95% of cells")
    axes[0].set_title("electrode: small-strain components (sym grad u)", fontsize=9)
    for region in REGIONS:
        colour, marker = _STYLE[region]
        axes[1].plot(x, rs.stats["ezz"][:, rs.names.index(region), 1], "-", marker=marker,
                     color=colour, label=_name(region))
    axes[1].set_title("mean axial small-strain e_zz per region", fontsize=9)
    for ax, ylabel in zip(axes, ("mean small strain (-)", "mean e_zz (-)"), strict=True):
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_png(fig, path)


def _components(run: _Run) -> list[str]:
    """Section 4: small-strain components per scan (regions.h5)."""
    rs = run.regions()
    names = [run.scan_name(k) for k in rs.steps]
    x, xlabel, _ = _scan_axis(run, rs.steps, "time_s")
    img = run.figure("components.png", lambda p: _draw_components(p, x, xlabel, rs))
    measures = [m for m in STRAIN_LABELS if m in rs.stats]
    rows = []
    for k, n in zip(rs.steps, names, strict=True):
        jv = rs.value(k, "electrode")
        ezz = rs.value(k, "electrode", "ezz") if "ezz" in rs.stats else np.nan
        rows.append([n, *(rs.value(k, "electrode", m) for m in measures),
                     ezz / jv if jv else None])
    return [img, "<p class='note'>Electrode means of the DVC cells; the axial share is "
                 "mean e_zz / mean J-1.</p>",
            _table(["scan", *(STRAIN_LABELS[m] for m in measures), "axial share"], rows)]


# --------------------------------------------------------------------------------------------
# 5. strain map of the last cumulative field

def _last_cumulative(dvc: Path) -> tuple[int, Path]:
    """The last cumulative field T0 -> Tk of a DVC series folder: (k, file)."""
    from anodetwin.errors import InputError
    from anodetwin.validate.compare import dvc_steps

    try:
        found = dvc_steps(dvc)
    except InputError:
        raise _Missing("dvc/cumulative_0_<k>.h5") from None
    k = max(found)
    return k, found[k]


def _strain_map(run: _Run) -> list[str]:
    """Section 5: x-z section of J-1 and e_zz of the last cumulative field."""
    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.quicklook import pair_quicklook

    k, path = _last_cumulative(run.out / "dvc")
    result = read_pair(path)  # strain from the displacement by the one strain operator
    try:
        rs = run.regions()
        index = rs.steps.index(k)
    except (_Missing, ValueError, *_READ_ERRORS):
        rs, index = None, 0
    name = run.scan_name(k)
    title = (f"T0 -> {name}: volumetric strain J-1 and axial small-strain e_zz (-) on the "
             "x-z section through the middle of the DVC cells")
    img = run.figure(f"strain_map_T{k}.png", lambda p: pair_quicklook(
        p, result, rs, index, title))
    valid = np.isfinite(result.strain.volumetric)
    return [f"<p>From <code>dvc/{html.escape(path.name)}</code>: {int(valid.sum())} of "
            f"{valid.size} cells with a strain; z grows from the current collector (bottom) "
            "to the separator.</p>", img]


# --------------------------------------------------------------------------------------------
# 6. residual maps

def _residual_files(folder: Path) -> dict[int, Path]:
    """{k: file} of the residual maps T0 -> Tk of a folder, in step order."""
    found = {int(m.group(1)): p for p in folder.glob("residual_0_*.h5")
             if (m := re.fullmatch(r"residual_0_(\d+)\.h5", p.name))}
    if not found:
        raise _Missing("residuals/residual_0_<k>.h5")
    return dict(sorted(found.items()))


def _residual_counts(path: Path) -> dict:
    """Particles of one residual map by pattern, and its noise floor (grey levels)."""
    import h5py

    with h5py.File(path, "r") as f:
        floor = float(f.attrs["floor"])
        if "particles" not in f:
            return {"floor": floor, "particles": 0}
        t = f["particles"][...]
    judged = np.isfinite(t["interior_fraction_above"]) & (t["fraction_above"] > 0)
    cs = t["core_shell_like"].astype(bool)
    return {"floor": floor, "particles": len(t), "core_shell": int((cs & judged).sum()),
            "network": int((~cs & judged).sum()), "unclassified": int((~judged).sum()),
            "shell": float(np.nanmean(t["shell_fraction_above"])) if len(t) else None,
            "interior": float(np.nanmean(t["interior_fraction_above"])) if len(t) else None}


def _draw_residuals(path: Path, names: list[str], counts: list[dict]) -> None:
    """Particles per lithiation pattern per scan (stacked bars)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    bottom = np.zeros(len(names))
    for key, label, c in (("core_shell", "core-shell-like", "tab:orange"),
                          ("network", "network-like", "tab:blue"),
                          ("unclassified", "not classifiable", "0.75")):
        v = np.array([d.get(key, 0) for d in counts], float)
        ax.bar(names, v, bottom=bottom, color=c, label=label)
        bottom += v
    ax.set_xlabel("scan (residual map T0 -> Tk)")
    ax.set_ylabel("particles (count)")
    ax.set_title("lithiation pattern of the T0 particles from residual maps\n"
                 "(|grey residual| above the noise floor: shell only or also the interior)",
                 fontsize=9)
    ax.legend(fontsize=7)
    save_png(fig, path)


def _residuals(run: _Run) -> list[str]:
    """Section 6: particles by lithiation pattern per residual map."""
    folder = run.out / "residuals"
    files = _residual_files(folder)
    names = [run.scan_name(k) for k in files]
    counts = [_residual_counts(p) for p in files.values()]
    img = run.figure("residual_classes.png", lambda p: _draw_residuals(p, names, counts))
    rows = [[n, d["floor"], d["particles"], d.get("core_shell"), d.get("network"),
             d.get("unclassified"), d.get("shell"), d.get("interior")]
            for n, d in zip(names, counts, strict=True)]
    parts = [img, _table(["scan", "noise floor (grey levels)", "particles", "core-shell-like",
                          "network-like", "not classifiable", "mean shell fraction above floor",
                          "mean interior fraction above floor"], rows),
             "<p class='note'>Not classifiable: no interior voxels or no residual above the "
             "floor.</p>"]
    nf = folder / "noise_floor.json"
    if nf.is_file():
        d = json.loads(nf.read_text())
        ds = run.record.get("double_scan")
        src = f" from the double scan {ds[0]} / {ds[1]}" if ds else ""
        parts.append(f"<p>Noise floor{html.escape(src)} (grey levels):</p>" + _table(
            ["noise std", "drift", "residual threshold", "blur sigma (voxels)", "percentile"],
            [[d.get("noise_std"), d.get("drift"), d.get("residual_threshold"), d.get("sigma"),
              d.get("percentile")]]))
    return parts


# --------------------------------------------------------------------------------------------
# 7. validation

def _validation(run: _Run) -> list[str]:
    """Section 7: twin versus DVC per step and the pass/fail table (metrics.json)."""
    m = _read_json(run.out / "validate" / "metrics.json")
    checks = m.get("checks", [])
    ok = m.get("passed", all(c.get("passed") for c in checks))
    link = "../validate/report.html"
    n_ok = sum(bool(c.get("passed")) for c in checks)
    parts = [f"<p><b>{'PASSED' if ok else 'FAILED'}</b>: {n_ok} of {len(checks)} checks "
             f"passed. Full validation report: <a href='{link}'>validate/report.html</a>.</p>"]
    rows = []
    for s in m.get("steps", []):
        reg = s["regions"]
        rows.append([s.get("output"), s.get("step"), (s.get("time_s") or 0) / 3600]
                    + [reg[r]["volumetric"][f"{w}_mean"] for r in REGIONS
                       for w in ("sim", "dvc")]
                    + [reg["electrode"]["ezz"]["sim_mean"],
                       reg["electrode"]["ezz"]["dvc_mean"],
                       reg["electrode"]["volumetric"]["pearson"],
                       s.get("displacement_rmse_um")])
    cols = ["output", "DVC step", "time (h)"] + [f"J-1 {_name(r)} {w}" for r in REGIONS
                                                 for w in ("twin", "DVC")]
    parts.append(_table(cols + ["e_zz electrode twin", "e_zz electrode DVC",
                                "Pearson J-1 (cells)", "displacement RMSE (um)"], rows))
    parts.append("<h3>Checks</h3>" + _table(
        ["output", "check", "region", "value", "limit", "result"],
        [[c.get("output"), c.get("check"), c.get("region"), c.get("value"), c.get("limit"),
          "pass" if c.get("passed") else "FAIL"] for c in checks],
        ["pass" if c.get("passed") else "fail" for c in checks]))
    return parts


# --------------------------------------------------------------------------------------------
# 8. scoring

def _generic(name: str, value: Any) -> list[str]:
    """A JSON value as tables: a list of mappings one row each, a mapping as key/value."""
    e = html.escape
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        rows = [_flatten(r) for r in value]
        cols = list(dict.fromkeys(k for r in rows for k in r))
        cls = [("pass" if r["passed"] else "fail") if isinstance(r.get("passed"), bool)
               else "" for r in rows]
        return [f"<h3>{e(name)}</h3>", _table(cols, [[r.get(c) for c in cols] for r in rows],
                                              cls)]
    if isinstance(value, dict):
        return [f"<h3>{e(name)}</h3>", _table(["entry", "value"],
                                              list(_flatten(value).items()))]
    return []


def _score(run: _Run) -> list[str]:
    """Section 8: score.json as tables (criteria first)."""
    if not (run.out / "score" / "score.json").is_file():
        raise _Missing("score/score.json (only runs on built-in phantom data are scored)")
    score = _read_json(run.out / "score" / "score.json")
    if not isinstance(score, dict):
        raise CorruptFileError("score/score.json is not a mapping", "run the score stage again")
    crit = score.get("criteria")
    parts = []
    if isinstance(crit, list) and crit:
        n = sum(bool(c.get("passed")) for c in crit if isinstance(c, dict))
        parts.append(f"<p><b>{n} of {len(crit)} criteria met</b> (against the phantom's "
                     "exact truth).</p>")
    flat = [(k, v) for k, v in score.items() if not isinstance(v, (dict, list))
            or (isinstance(v, list) and not all(isinstance(r, dict) for r in v))]
    if flat:
        parts.append(_table(["entry", "value"], flat))
    for k, v in score.items():
        parts += _generic(k, v)
    return parts


# --------------------------------------------------------------------------------------------
# 9. stages, header, missing inputs

def _stage_params(run: _Run, name: str) -> str:
    """The parameters of ``<stage>/stage.json`` as ``key = value`` text."""
    p = run.out / name / "stage.json"
    try:
        params = json.loads(p.read_text()).get("params") if p.is_file() else None
    except (OSError, ValueError):
        return "(stage.json unreadable)"
    if not params:
        return "-"
    return "; ".join(f"{k} = {_fmt(v)}" for k, v in _flatten(params).items())


def _stages(run: _Run) -> list[str]:
    """Section 9: every stage of run.json."""
    stages = run.record.get("stages")
    if not stages:
        return ["<p class='missing'>Not available: run.json holds no stage record.</p>"]
    cls = {"failed": "fail", "stale": "warn", "partial": "warn", "pending": "pending"}
    rows = [[s.get("stage"), s.get("state"), s.get("seconds"), s.get("peak_rss_mb"),
             str(s.get("key") or "")[:12] or None, _stage_params(run, str(s.get("stage"))),
             s.get("error")] for s in stages]
    return [_table(["stage", "state", "time (s)", "peak memory (MB)", "key", "parameters",
                    "error"], rows, [cls.get(str(s.get("state")), "") for s in stages])]


def _absent(run: _Run, stage: str, what: str) -> str:
    """One sentence: ``what`` is missing, and why as far as ``run.json`` says."""
    s = run.stage(stage)
    if s is None:
        why = f"the {stage} stage was not run"
    elif s.get("state") == "failed":
        why = f"the {stage} stage failed" + (f": {s['error']}" if s.get("error") else "")
    else:
        why = f"the {stage} stage is {s.get('state')}"
    return f"Not available: {what} is missing ({why})"


def _section(run: _Run, title: str, stage: str, draw: Callable[[_Run], list[str]]) -> list[str]:
    """A section's HTML: its content, or one line saying why it has none."""
    e = html.escape
    head = [f"<h2>{e(title)}</h2>"]
    try:
        body = draw(run)
    except _Missing as m:
        return head + [f"<p class='missing'>{e(_absent(run, stage, str(m)))}.</p>"]
    except _READ_ERRORS as exc:
        return head + [f"<p class='missing'>Not shown: the {e(stage)} output could not be "
                       f"read ({e(type(exc).__name__)}: {e(str(exc))}).</p>"]
    s = run.stage(stage)
    if s is not None and s.get("state") not in (None, "done"):
        head.append(f"<p class='warn'>The {e(stage)} stage is {e(str(s.get('state')))}: what "
                    "follows is the output it left.</p>")
    return head + body


def _header(run: _Run) -> list[str]:
    """Page head, run file, scans and double scan."""
    e = html.escape
    rec = run.record
    stages = rec.get("stages") or []
    states = {}
    for s in stages:
        states[s.get("state")] = states.get(s.get("state"), 0) + 1
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>anodetwin run report"
             f"</title><style>{_CSS}</style></head><body>",
             "<h1>In situ series: measurement and twin</h1>",
             f"<p>Run folder <code>{e(str(run.out))}</code>, run file "
             f"<code>{e(str(rec.get('run_file', '-')))}</code>; {len(run.scans)} scans; "
             f"{len(stages)} stages (" + ", ".join(f"{n} {e(str(k))}" for k, n in
                                                  states.items()) + ").</p>"]
    if not rec:
        parts.append("<p class='missing'>Not available: run.json is missing (no scan or stage "
                     "record).</p>")
    if run.scans:
        parts.append(_table(["scan", "file", "state of charge", "time (h)"], [
            [s.get("name"), s.get("file"), s.get("soc"),
             s["time_s"] / 3600 if isinstance(s.get("time_s"), (int, float)) else None]
            for s in run.scans]))
    if rec.get("double_scan"):
        parts.append(f"<p>Double scan (noise floor): {e(' / '.join(rec['double_scan']))}.</p>")
    return parts


#: The sections of the report: title, the stage whose output it shows, how it is drawn.
_SECTIONS = (
    ("1. Electrode thickness and relative non-lithiated volume", "morphology", _thickness),
    ("2. Volumetric strain of the electrode and its halves", "dvc", _strain_time),
    ("3. Strain distributions of the electrode halves", "dvc", _histograms),
    ("4. Strain components", "dvc", _components),
    ("5. Strain map of the last scan", "dvc", _strain_map),
    ("6. Lithiation patterns from residual maps", "residuals", _residuals),
    ("7. Twin versus DVC", "validate", _validation),
    ("8. Scoring against the phantom's truth", "score", _score),
    ("9. Stages", "run", _stages),
)


def write_report(out_dir: str | os.PathLike) -> Path:
    """Write ``report/report.html`` and ``report/figures/*.png`` of a run folder.

    Parameters
    ----------
    out_dir : path-like
        The folder of ``anodetwin run`` (``run.json`` and the stage folders; module notes).
        Any stage may be missing, failed or stale: its sections then say so in one line.

    Returns
    -------
    Path
        ``out_dir/report/report.html`` (self-contained: figures embedded as PNG).

    Raises
    ------
    InputNotFoundError
        ``out_dir`` is not a folder.
    CorruptFileError
        ``run.json`` is not JSON.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputNotFoundError(out, "run folder", "give the --out folder of 'anodetwin run'")
    rec_path = out / "run.json"
    try:
        record = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    except ValueError as exc:
        raise CorruptFileError(f"'{rec_path}' is not JSON ({exc})",
                               "run 'anodetwin run' again to rewrite it") from None
    fig_dir = out / "report" / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(out, fig_dir, record)
    parts = _header(run)
    for title, stage, draw in _SECTIONS:
        parts += _section(run, title, stage, draw)
    parts.append("</body></html>")
    for old in fig_dir.glob("*.png"):  # figures of sections that now have no input
        if old not in run.figures:
            old.unlink()
    path = out / "report" / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path

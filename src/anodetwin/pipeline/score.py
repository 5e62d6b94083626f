"""Score a run against the ground truth of a phantom series: ``DIR/score/score.json``.

The pipeline never sees the truth; this stage reads what the stages of a run folder wrote
and compares it with the truth of the phantom series the scans came from
(:mod:`anodetwin.phantom.generate`). Per scan ``T<k>`` (the k-th scan of the run, T0 first):

* ``dice``: Dice overlap (:func:`anodetwin.segment.metrics.dice`) of the classes that phase
  contrast can tell apart, by the phase names of :mod:`anodetwin.phases`: ``copper``,
  ``si`` (non-lithiated Si), ``cbd`` (the merged "CBD+E" class: binder, electrolyte, pores
  and lithiated Si, which the image cannot separate from them) and ``separator`` (the
  separator layer: the solid and its pores, as the segmentation labels everything beyond
  the electrode top). Lithiated Si gets no Dice of its own: the segmentation cannot see it.
  The truth phases of a step lie in the frame of that step's tomogram; the labels are
  aligned on T0's copper foil, so the truth is moved by the collector's true displacement
  (zero for the phantom's own swelling, whose foil does not move) before the comparison.
* ``thickness_um``: mean electrode thickness of ``morphology/morphology.csv`` against the
  truth (``steps/T<k>`` attribute ``thickness_um``); ``error`` = pipeline - truth (um).
* ``rnl``: the relative non-lithiated Si volume of the morphology (Si volume of the step
  over that of the run's first scan) against the truth's non-lithiated core volume
  (``core_volume_um3`` summed over the particles, relative to the first scan), and against
  the truth's visible Si (phase 2 voxels of the step's truth phases, relative likewise:
  what a perfect segmentation would give, ``truth_image``).
* ``dvc_displacement_error_um``: the cumulative DVC field T0 -> Tk
  (``dvc/cumulative_0_<k>.h5``) at its measured nodes (flag 0 of :mod:`anodetwin.dvc.pair`)
  against the truth displacement sampled there (trilinear): median and 95th percentile of
  the error magnitude in um and in voxels, the measured fraction of the electrode's nodes,
  and the Pearson correlation of the cell J - 1 of both fields on the DVC grid
  (:func:`anodetwin.strain.cell_strain`, the one strain operator).
* ``twin_displacement_error_um``: the same for the twin's displacement on the DVC grid
  (``simulate/run/dvc/T<k>.h5``; its nodes inside the mesh).
* ``twin_dvc_pearson_j``: the electrode-region Pearson correlation of J - 1, twin against
  DVC, from ``validate/metrics.json`` (step k).

Node positions of the pair files are voxel indices of their grid (z, y, x), displacements
voxels of that grid; both are brought to um with the file's voxel size and to truth voxel
indices by voxel centres (``(i + 0.5) * v_file / v_truth - 0.5``), so a binned run is
scored on the same points. The electrode is the truth's coating layer of the reference grid
(``layers["anode"]``), for nodes and cells alike.

A stage that did not run (its file is absent) gives null entries, never zeros; T0 has no
cumulative DVC field. ``criteria`` holds the acceptance checks (:data:`LIMITS`):

* ``si_dice_min``: the worst scan's Si Dice >= 0.95;
* ``thickness_error_max_um``: |thickness error| <= 0.5 um at every scan;
* ``twin_dvc_pearson_j_min``: twin-versus-DVC Pearson of J - 1 >= 0.9 at every scan after
  T0.

A criterion whose value is missing at a scan it needs fails. ``passed`` is true when every
criterion passed.

Score file (JSON, ``anodetwin-score`` v1)::

    {"format", "format_version", "truth", "run",
     "scans": [{"scan", "step", "dice": {"copper", "si", "cbd", "separator"} | null,
                "alignment_voxels": {"truth", "segmentation"} | null,
                "thickness_um": {"pipeline", "truth", "error"},
                "rnl": {"pipeline", "truth", "error", "truth_image", "error_image",
                        "pipeline_si_volume_um3", "truth_core_volume_um3"},
                "dvc_displacement_error_um": {"median", "p95", "median_voxels",
                        "p95_voxels", "nodes", "measured_fraction", "pearson_j"} | null,
                "twin_displacement_error_um": {same} | null,
                "twin_dvc_pearson_j": float | null}, ...],
     "criteria": [{"name", "value", "limit", "comparison", "passed"}, ...],
     "passed": bool, "provenance": {...}}
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import CorruptFileError, InputNotFoundError, ParameterError
from anodetwin.phases import PHASE

__all__ = ["LIMITS", "DICE_CLASSES", "dice_classes", "score_run", "write_score", "criteria",
           "truth_at_points"]

FORMAT = "anodetwin-score"
FORMAT_VERSION = 1

#: Acceptance limits of the criteria (name -> (limit, comparison)).
LIMITS = {"si_dice_min": (0.95, ">="), "thickness_error_max_um": (0.5, "<="),
          "twin_dvc_pearson_j_min": (0.9, ">=")}

#: Classes scored by Dice: phase name -> the phase codes merged into it (module notes), for
#: phase contrast (lithiated Si about as grey as the CBD+E); :func:`dice_classes` moves it
#: to the Si class where the series renders it closer to the Si.
DICE_CLASSES = {
    "copper": (PHASE["copper"],),
    "si": (PHASE["si"],),
    "cbd": (PHASE["pore"], PHASE["cbd"], PHASE["lithiated"]),
    "separator": (PHASE["separator"],),
}


def dice_classes(render: dict | None) -> dict[str, tuple[int, ...]]:
    """The classes a segmentation can tell apart in a rendered series: lithiated Si joins
    whichever of Si and CBD+E its grey value is nearer.

    Parameters
    ----------
    render : dict, optional
        The series' render settings (``grey_si``, ``grey_cbd``, ``grey_lithiated``); None:
        :data:`DICE_CLASSES`.

    Returns
    -------
    dict
        Class name -> phase codes.
    """
    if not render or not {"grey_si", "grey_cbd", "grey_lithiated"} <= set(render):
        return DICE_CLASSES
    li = render["grey_lithiated"]
    if abs(li - render["grey_si"]) >= abs(li - render["grey_cbd"]):
        return DICE_CLASSES
    return {**DICE_CLASSES, "si": (PHASE["si"], PHASE["lithiated"]),
            "cbd": (PHASE["pore"], PHASE["cbd"])}


def _num(x: Any) -> float | None:
    """``x`` as a float, None when missing or not finite (JSON has no NaN)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class _Truth:
    """The open truth series: voxel size (z, y, x, um) and layers (z ranges, voxels)."""

    def __init__(self, f: Any, path: Path):
        self.f, self.path = f, path
        try:
            self.vs = np.broadcast_to(np.asarray(f.attrs["voxel_size_um"], float), (3,)).copy()
            self.layers = json.loads(f.attrs["layers"])
            render = json.loads(f.attrs["config"]).get("render") if "config" in f.attrs \
                else None
            self.classes = dice_classes(render)
        except KeyError as exc:
            raise CorruptFileError(f"truth series '{path}' lacks {exc}",
                                   "give a series.h5 written by 'anodetwin phantom'") from None

    def step(self, name: str) -> Any:
        """The group ``steps/<name>``."""
        return self.f[f"steps/{name}"]

    def anode(self) -> tuple[float, float]:
        """z range (truth voxel indices, continuous) of the reference coating layer."""
        a0, a1 = self.layers["anode"]
        return a0 - 0.5, a1 - 0.5


def score_run(out_dir: str | os.PathLike, truth_series: str | os.PathLike,
              scans: Sequence[str] | None = None) -> dict:
    """Score the outputs of a run folder against the truth of its phantom series.

    Parameters
    ----------
    out_dir : path-like
        The run folder (``segment/``, ``morphology/``, ``dvc/``, ``simulate/run/``,
        ``validate/``; any may be missing).
    truth_series : path-like
        The phantom's ``series.h5`` (:mod:`anodetwin.phantom.generate`).
    scans : sequence of str, optional
        Scan names T0..Tn the run used, in order, each a ``steps/<name>`` of the truth;
        default: the names in ``out_dir/run.json``.

    Returns
    -------
    dict
        The score (layout in the module notes): per-scan entries, ``criteria`` and
        ``passed``; lengths in um, null where a stage's output is missing.

    Raises
    ------
    InputNotFoundError
        The truth series (or, without ``scans``, ``run.json``) does not exist.
    CorruptFileError
        The truth series is not a phantom series.
    ParameterError
        No scans, or a scan that the truth series does not hold.
    """
    import h5py

    from anodetwin.io import make_provenance

    out, tpath = Path(out_dir), Path(truth_series)
    if not tpath.is_file():
        raise InputNotFoundError(tpath, "truth series", "give the phantom's series.h5")
    names = list(scans) if scans is not None else _run_scans(out)
    if not names:
        raise ParameterError("no scans to score", "give the scan names T0..Tn of the run")
    with h5py.File(tpath, "r") as f:
        truth = _Truth(f, tpath)
        missing = [n for n in names if f"steps/{n}" not in f]
        if missing:
            raise ParameterError(f"truth series '{tpath}' has no step {missing[0]}",
                                 "give the scan names of the series (steps/T<k>)")
        morph = _read_morphology(out / "morphology" / "morphology.csv")
        valid = _read_validate(out / "validate" / "metrics.json")
        rows = [_scan_score(out, truth, n, k, morph, valid) for k, n in enumerate(names)]
        _relative_rnl(rows, truth, names)
    crit = criteria(rows)
    inputs = [tpath] + [p for p in _inputs(out, names) if p.exists()]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "truth": str(tpath.resolve()),
            "run": str(out.resolve()), "scans": rows, "criteria": crit,
            "passed": all(c["passed"] for c in crit),
            "provenance": make_provenance("score", inputs, {"scans": names,
                                                            "limits": LIMITS})}


def write_score(out_dir: str | os.PathLike, score: dict) -> Path:
    """Write a score to ``out_dir/score/score.json`` atomically.

    Parameters
    ----------
    out_dir : path-like
        The run folder (``score/`` is created in it).
    score : dict
        What :func:`score_run` returned.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from anodetwin.io import atomic_write_json

    folder = Path(out_dir) / "score"
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(folder / "score.json", score)


def _run_scans(out: Path) -> list[str]:
    """Scan names of ``out/run.json`` (``scans[i]["name"]``)."""
    p = out / "run.json"
    if not p.is_file():
        raise InputNotFoundError(p, "run record", "give the scan names explicitly")
    try:
        return [str(s["name"]) for s in json.loads(p.read_text())["scans"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"'{p}' holds no scan names ({exc})",
                               "give the scan names explicitly") from None


def _inputs(out: Path, names: Sequence[str]) -> list[Path]:
    """The stage files a score reads."""
    paths = [out / "morphology" / "morphology.csv", out / "validate" / "metrics.json"]
    for k, n in enumerate(names):
        paths += [out / "segment" / f"{n}.h5", out / "simulate" / "run" / "dvc" / f"{n}.h5"]
        if k:
            paths.append(out / "dvc" / f"cumulative_0_{k}.h5")
    return paths


def _read_morphology(path: Path) -> dict[int, dict]:
    """Rows of ``morphology.csv`` by step (empty when the file is absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {int(float(r["step"])): r for r in csv.DictReader(fh)}


def _read_validate(path: Path) -> dict[int, float | None]:
    """Electrode-region Pearson of J - 1 per DVC step of ``metrics.json`` (empty when
    absent)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out = {}
    for s in data.get("steps", []):
        try:
            out[int(s["step"])] = _num(s["regions"]["electrode"]["volumetric"]["pearson"])
        except (KeyError, TypeError):
            out[int(s["step"])] = None
    return out


def _scan_score(out: Path, truth: _Truth, name: str, k: int, morph: dict[int, dict],
                valid: dict[int, float | None]) -> dict:
    """The entry of scan ``name`` (the run's k-th scan); ``rnl`` ratios are filled by
    :func:`_relative_rnl`."""
    g = truth.step(name)
    row = morph.get(k)
    th_p = _num(row.get("thickness_mean_um")) if row else None
    th_t = _num(g.attrs.get("thickness_um"))
    dice, align, si_voxels = _dice_scores(out / "segment" / f"{name}.h5", truth, name)
    dvc = out / "dvc" / f"cumulative_0_{k}.h5"
    twin = out / "simulate" / "run" / "dvc" / f"{name}.h5"
    return {
        "scan": name, "step": k, "dice": dice, "alignment_voxels": align,
        "thickness_um": {"pipeline": th_p, "truth": th_t, "error": _diff(th_p, th_t)},
        "rnl": {"pipeline": _num(row.get("rnl")) if row else None,
                "pipeline_si_volume_um3": _num(row.get("si_volume_um3")) if row else None,
                "truth_core_volume_um3": _num(np.sum(g["core_volume_um3"][...]))
                if "core_volume_um3" in g else None,
                "_truth_si_voxels": si_voxels},
        "dvc_displacement_error_um": _pair_errors(dvc, truth, name) if k else None,
        "twin_displacement_error_um": _pair_errors(twin, truth, name),
        "twin_dvc_pearson_j": valid.get(k) if k else None,
    }


def _relative_rnl(rows: list[dict], truth: _Truth, names: Sequence[str]) -> None:
    """Fill the truth's RNL (core volume and visible Si relative to the first scan) and the
    errors of the pipeline's RNL in ``rows``."""
    c0 = rows[0]["rnl"]["truth_core_volume_um3"]
    n0 = rows[0]["rnl"]["_truth_si_voxels"]
    for r in rows:
        q = r["rnl"]
        n = q.pop("_truth_si_voxels")
        c = q["truth_core_volume_um3"]
        q["truth"] = c / c0 if c is not None and c0 else None
        q["truth_image"] = n / n0 if n is not None and n0 else None
        q["error"] = _diff(q["pipeline"], q["truth"])
        q["error_image"] = _diff(q["pipeline"], q["truth_image"])


def _class_volume(phases: np.ndarray, classes: dict) -> np.ndarray:
    """Class index (order of ``classes``, :func:`dice_classes`) of every voxel of a phase
    volume; 255 for codes in no class."""
    lut = np.full(256, 255, np.uint8)
    for i, codes in enumerate(classes.values()):
        lut[list(codes)] = i
    return lut[np.asarray(phases, np.uint8)]


def _separator_layer(uz_top: np.ndarray, shape: tuple, truth: _Truth) -> np.ndarray:
    """Voxels of the separator layer in a step's (deformed) frame.

    Parameters
    ----------
    uz_top : numpy.ndarray, shape (ny, nx)
        Truth u_z (um) at the top of the reference coating (plane ``a1 - 0.5``).
    shape : tuple of 3 int
        The grid (nz, ny, nx).
    truth : _Truth
        The series (layers, voxel size).

    Returns
    -------
    numpy.ndarray of bool, shape (nz, ny, nx)
        True above the deformed top of the coating: per column, z beyond the reference
        plane ``a1 - 0.5`` moved by u_z (the lateral motion of that surface is neglected).
    """
    top = truth.layers["anode"][1] - 0.5 + uz_top / truth.vs[0]
    z = np.arange(shape[0], dtype=float)[:, None, None]
    return z > top[None]


def _truth_geometry(g: Any, truth: _Truth, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """u_z at the coating top (um, (ny, nx)) and the collector's displacement (voxels, z y
    x) of one step, from its ``displacement_um``."""
    d = g["displacement_um"]
    a1, nz = int(truth.layers["anode"][1]), shape[0]
    lo, hi = min(max(a1 - 1, 0), nz - 1), min(a1, nz - 1)
    uz_top = 0.5 * (d[0, lo].astype(float) + d[0, hi].astype(float))
    c0, c1 = (int(v) for v in truth.layers["copper"])
    cu = d[:, c0:c1].reshape(3, -1).mean(axis=1) if c1 > c0 else np.zeros(3)
    return uz_top, np.asarray(cu, float) / truth.vs


def _on_grid(labels: np.ndarray, vs_from: np.ndarray, shape: tuple, vs_to: Any
             ) -> np.ndarray:
    """Labels sampled (nearest voxel centre) on another grid with the same corner.

    Parameters
    ----------
    labels : numpy.ndarray, shape (nz, ny, nx)
        Labels on their grid, voxel size ``vs_from`` (um, z y x).
    shape : tuple of 3 int
        The target grid.
    vs_to : float or 3 float
        Its voxel size (um).

    Returns
    -------
    numpy.ndarray, shape ``shape``
        ``labels`` itself when the grids agree.
    """
    vs_to = np.broadcast_to(np.asarray(vs_to, float), (3,))
    if labels.shape == tuple(shape) and np.allclose(vs_from, vs_to):
        return labels
    idx = [np.clip(np.rint((np.arange(n) + 0.5) * vs_to[i] / vs_from[i] - 0.5), 0,
                   labels.shape[i] - 1).astype(np.intp) for i, n in enumerate(shape)]
    return labels[np.ix_(*idx)]


def _dice_scores(seg_path: Path, truth: _Truth, name: str
                 ) -> tuple[dict | None, dict | None, int]:
    """Dice per class (:func:`dice_classes`) of a labels file against the truth of a step.

    Parameters
    ----------
    seg_path : Path
        The labels file (:func:`anodetwin.segment.read_labels`), aligned on T0's foil.
    truth : _Truth
        The series.
    name : str
        The step (``steps/<name>``).

    Returns
    -------
    dice : dict or None
        Class name -> Dice in [0, 1]; None without the labels file.
    alignment : dict or None
        ``truth``: the collector's true displacement, ``segmentation``: the shift the labels
        were aligned by (voxels, z y x); None without the labels file.
    si_voxels : int
        Voxels of the Si class (:func:`dice_classes`) in the step's truth phases.
    """
    from scipy import ndimage

    from anodetwin.segment import dice, read_labels

    g = truth.step(name)
    phases = g["phases"][...]
    si_voxels = int(np.count_nonzero(np.isin(phases, truth.classes["si"])))
    if not seg_path.is_file():
        return None, None, si_voxels
    seg = read_labels(seg_path)
    uz_top, cu = _truth_geometry(g, truth, phases.shape)
    cls = _class_volume(phases, truth.classes)
    cls[_separator_layer(uz_top, phases.shape, truth)] = list(truth.classes).index("separator")
    if np.abs(cu).max() > 1e-3:  # into T0's frame: x_T0 = x_k - u_collector
        cls = ndimage.shift(cls, -cu, order=0, mode="nearest")
    cls = _on_grid(cls, truth.vs, seg.phases.shape, seg.voxel_size_um)
    pred = _class_volume(seg.phases, truth.classes)
    scores = {c: float(dice(pred == i, cls == i)) for i, c in enumerate(truth.classes)}
    return scores, {"truth": [float(v) for v in cu],
                    "segmentation": [float(v) for v in seg.alignment_shift]}, si_voxels


def truth_at_points(displacement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A dense displacement field sampled (trilinearly) at points.

    Parameters
    ----------
    displacement : numpy.ndarray, shape (3, nz, ny, nx)
        Components (u_z, u_y, u_x) in um on the voxel centres of the reference grid.
    points : numpy.ndarray, shape (N, 3)
        Positions (z, y, x) in voxel indices of that grid (0 = first voxel centre).

    Returns
    -------
    numpy.ndarray of float64, shape (N, 3)
        (u_z, u_y, u_x) in um; NaN at points outside the grid's voxel centres.
    """
    from anodetwin.kinematics import sample_linear

    p = np.asarray(points, float).reshape(-1, 3)
    coords = p.T
    out = np.stack([sample_linear(displacement[c], coords) for c in range(3)], axis=1)
    hi = np.asarray(displacement.shape[1:], float) - 1
    inside = ((p >= -1e-9) & (p <= hi + 1e-9)).all(axis=1)
    out = out.astype(np.float64)
    out[~inside] = np.nan
    return out


def _percentile(e: np.ndarray, p: float) -> float | None:
    """The ``p``-th percentile of ``e``; None when empty."""
    return _num(np.percentile(e, p)) if e.size else None


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two 1D samples; None with fewer than 3 values or a constant
    one."""
    from scipy import stats

    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return _num(stats.pearsonr(a, b)[0])


def _pair_errors(path: Path, truth: _Truth, name: str) -> dict | None:
    """Displacement error (um, voxels) of a pair-layout file against the truth of a step.

    Parameters
    ----------
    path : Path
        A DVC pair file (:func:`anodetwin.dvc.pair.read_pair`): a cumulative DVC field or
        the twin's displacement on the DVC grid.
    truth : _Truth
        The series.
    name : str
        The step (``steps/<name>``).

    Returns
    -------
    dict or None
        ``median``, ``p95`` (um) and ``median_voxels``, ``p95_voxels`` (voxels of the
        file's grid) of the error magnitude over the measured nodes (flag 0, inside the
        truth grid); ``nodes`` (their count); ``measured_fraction`` of the electrode's
        nodes; ``pearson_j``: correlation of cell J - 1 with the truth's on the same grid
        (electrode cells). None without the file.
    """
    from anodetwin.dvc.pair import FLAG, read_pair
    from anodetwin.strain import cell_mean, cell_strain

    if not path.is_file():
        return None
    res = read_pair(path)
    vs = truth.vs if res.voxel_size_um is None else \
        np.broadcast_to(np.asarray(res.voxel_size_um, float), (3,))
    pts = (np.asarray(res.nodes, float) + 0.5) * vs / truth.vs - 0.5  # truth voxel indices
    ut = truth_at_points(truth.step(name)["displacement_um"][...], pts)
    d = (np.asarray(res.displacement, float) * vs) - ut  # um, z y x
    ok = (res.flag == FLAG["measured"]) & np.isfinite(d).all(axis=1)
    lo, hi = truth.anode()
    el = (pts[:, 0] >= lo) & (pts[:, 0] < hi)
    e_um = np.linalg.norm(d[ok], axis=1)
    e_vx = np.linalg.norm(d[ok] / vs, axis=1)
    # J - 1 of the truth on the same node grid, through the one strain operator
    jt = cell_strain((ut / vs).reshape(*res.grid_shape, 3), res.node_spacing, vs).volumetric
    jf = res.strain.volumetric
    zc = cell_mean(pts.reshape(*res.grid_shape, 3))[..., 0]
    use = np.isfinite(jt) & np.isfinite(jf) & (zc >= lo) & (zc < hi)
    return {"median": _percentile(e_um, 50), "p95": _percentile(e_um, 95),
            "median_voxels": _percentile(e_vx, 50), "p95_voxels": _percentile(e_vx, 95),
            "nodes": int(ok.sum()),
            "measured_fraction": _num((ok & el).sum() / el.sum()) if el.any() else None,
            "pearson_j": _pearson(jf[use].ravel(), jt[use].ravel())}


def criteria(rows: Sequence[dict]) -> list[dict]:
    """The acceptance criteria (:data:`LIMITS`) of per-scan score entries.

    Parameters
    ----------
    rows : sequence of dict
        The ``scans`` entries of a score (T0 first).

    Returns
    -------
    list of dict
        ``{"name", "value", "limit", "comparison", "passed"}`` per criterion: the worst
        scan's Si Dice; the largest |thickness error| (um); the smallest twin-versus-DVC
        Pearson of J - 1 after T0. A value missing at a scan the criterion needs fails it
        (``value`` is then the worst over the scans that have one, or null).
    """
    si = [r["dice"]["si"] if r.get("dice") else None for r in rows]
    th = [abs(r["thickness_um"]["error"]) if r["thickness_um"]["error"] is not None else None
          for r in rows]
    pj = [r.get("twin_dvc_pearson_j") for r in rows[1:]]
    out = []
    for name, vals, worst in (("si_dice_min", si, min), ("thickness_error_max_um", th, max),
                              ("twin_dvc_pearson_j_min", pj, min)):
        limit, cmp = LIMITS[name]
        have = [v for v in vals if v is not None]
        value = worst(have) if have else None
        ok = bool(vals) and len(have) == len(vals) and (
            value >= limit if cmp == ">=" else value <= limit)
        out.append({"name": name, "value": value, "limit": limit, "comparison": cmp,
                    "passed": bool(ok)})
    return out

"""Heterogeneity metrics of one simulated twin at the end of its charge.

Read from the simulation's own outputs (:mod:`anodetwin.simulate.run`): ``summary.csv``
(electrode means, thickness, stack pressure) and ``heterogeneity.json`` (volume-weighted
distributions over the cells) at the scan ``charged`` against the pristine scan ``T0``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from anodetwin.errors import InputError

__all__ = ["METRICS", "case_metrics", "CHARGED"]

#: Name of the end-of-charge scan in a study case's protocol.
CHARGED = "charged"

#: metric -> (unit, description); all at the end of the charge.
METRICS = {
    "volumetric_strain_p5": ("1", "5th percentile of J - 1 over the electrode volume"),
    "volumetric_strain_p50": ("1", "median of J - 1 over the electrode volume"),
    "volumetric_strain_p95": ("1", "95th percentile of J - 1 over the electrode volume"),
    "volumetric_strain_max": ("1", "largest cell value of J - 1 in the electrode"),
    "volumetric_strain_mean": ("1", "electrode volume change (mean of J - 1)"),
    "collector_half_p5": ("1", "5th percentile of J - 1, collector-side half"),
    "collector_half_p50": ("1", "median of J - 1, collector-side half"),
    "collector_half_p95": ("1", "95th percentile of J - 1, collector-side half"),
    "collector_half_max": ("1", "largest J - 1, collector-side half"),
    "collector_half_mean": ("1", "mean J - 1, collector-side half"),
    "separator_half_p5": ("1", "5th percentile of J - 1, separator-side half"),
    "separator_half_p50": ("1", "median of J - 1, separator-side half"),
    "separator_half_p95": ("1", "95th percentile of J - 1, separator-side half"),
    "separator_half_max": ("1", "largest J - 1, separator-side half"),
    "separator_half_mean": ("1", "mean J - 1, separator-side half"),
    "asymmetry": ("1", "separator-half over collector-half mean J - 1"),
    "heterogeneity_p95_p5": ("1", "spread of J - 1: 95th minus 5th percentile"),
    "thickness_growth": ("1", "electrode thickness over its pristine value, minus 1"),
    "max_principal_si_mpa": ("MPa", "largest principal stress in the Si (cell maximum)"),
    "max_principal_si_p95_mpa": ("MPa", "95th percentile of the largest principal stress "
                                 "over the Si volume"),
    "max_hydrostatic_si_mpa": ("MPa", "largest hydrostatic (mean) stress in the Si"),
    "min_hydrostatic_si_mpa": ("MPa", "strongest hydrostatic compression in the Si"),
    "si_fraction_above_threshold": ("1", "Si volume share whose largest principal stress "
                                    "exceeds the study's threshold"),
    "stack_pressure_end_mpa": ("MPa", "stack pressure on the electrode top"),
    "theta_mean": ("1", "mean Li content of the Si (1 = Li15Si4)"),
}


def case_metrics(run_dir: str | os.PathLike) -> dict:
    """The :data:`METRICS` of a finished simulation folder.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The simulation's output folder (``summary.csv``, ``heterogeneity.json``) with the
        scans ``T0`` and :data:`CHARGED`.

    Returns
    -------
    dict
        Metric name -> value in its unit (:data:`METRICS`); ``asymmetry`` is None when the
        collector-side half does not swell.

    Raises
    ------
    InputError
        The folder lacks the pristine or the end-of-charge scan.
    """
    from anodetwin.simulate.run import read_summary

    run = Path(run_dir)
    het_path, csv_path = run / "heterogeneity.json", run / "summary.csv"
    if not (het_path.is_file() and csv_path.is_file()):
        raise InputError(f"simulation folder '{run}' has no summary.csv/heterogeneity.json",
                         "run the case to its end first")
    rows = {r["output"]: r for r in read_summary(csv_path) if r["output"]}
    het = json.loads(het_path.read_text())
    if "T0" not in rows or CHARGED not in rows or CHARGED not in het:
        raise InputError(f"simulation folder '{run}' lacks the scans T0 and '{CHARGED}'",
                         "run the case to the end of its charge")
    r0, r1, h = rows["T0"], rows[CHARGED], het[CHARGED]
    out = {}
    for prefix, key in (("volumetric_strain", "volumetric_strain"),
                        ("collector_half", "volumetric_strain_collector_half"),
                        ("separator_half", "volumetric_strain_separator_half")):
        for stat in ("p5", "p50", "p95", "max", "mean"):
            out[f"{prefix}_{stat}"] = h[key][stat]
    coll = r1["volumetric_strain_collector_half"]
    out["asymmetry"] = r1["volumetric_strain_separator_half"] / coll if coll > 0 else None
    out["heterogeneity_p95_p5"] = out["volumetric_strain_p95"] - out["volumetric_strain_p5"]
    out["thickness_growth"] = r1["thickness_um"] / r0["thickness_um"] - 1.0
    sp, hy = h["max_principal_si_mpa"], h["hydrostatic_si_mpa"]
    out["max_principal_si_mpa"] = sp["max"]
    out["max_principal_si_p95_mpa"] = sp["p95"]
    out["max_hydrostatic_si_mpa"] = hy["max"]
    out["min_hydrostatic_si_mpa"] = hy["min"]
    out["si_fraction_above_threshold"] = h["si_fraction_above_threshold"]
    out["stack_pressure_end_mpa"] = r1["stack_pressure_mpa"]
    out["theta_mean"] = r1["theta_mean"]
    assert set(out) == set(METRICS)
    return out

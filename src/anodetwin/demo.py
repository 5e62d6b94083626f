"""The main job end to end on built-in data (``anodetwin demo``, ``make demo``).

Stages that exist so far:

1. **Phantom**: the reference electrode (89 wt% Si, 21 um, 3 mg/cm2) as a synthetic in situ
   series T0..T6 with exact ground truth (:mod:`anodetwin.phantom`), and the noise floor of
   its double scan (:mod:`anodetwin.dvc.noise`) checked against the rendered noise level.
2. **Simulation**: the phantom's pristine electrode (T0 labels, cut above the electrode)
   meshed with voxel hexahedra (4x coarser) and run through a short protocol
   (``models/quick_cell.toml``: a C/3 charge of 30 min, a C/6 discharge of 20 min) with the
   finite-strain chemo-mechanical twin (:mod:`anodetwin.simulate`); checks: Li inserted
   equals the protocol's, the electrode swells on charge and recovers part of it on
   discharge.
3. **Tomogram I/O** on a real X-ray tomogram that ships with spam (snow, 100^3 voxels,
   16-bit): written in every supported format with provenance, each round trip checked voxel
   for voxel, a region read lazily with 2x binning, grey-value statistics, orthogonal slices.

Output layout::

    OUT/
      summary.json                 what was done, files, hashes, checks, statistics
      phantom/                     series.h5, summary.json, preview.png (anodetwin phantom)
      simulation/mesh/             the T0 electrode mesh (anodetwin mesh layout)
      simulation/case.toml         the case that was run
      simulation/run/              summary.csv, fields/ (ParaView), dvc/ (anodetwin simulate)
      orthoslices.png              central z, y, x slices of the full and binned volume
      volumes/snow.tif             multi-page TIFF (ImageJ hyperstack + anodetwin tag)
      volumes/snow.h5              HDF5, dataset /volume
      volumes/snow.zarr/           Zarr v3 array
      volumes/snow.npy (+ .json)   NumPy array + JSON sidecar
      volumes/snow.raw (+ .json)   raw binary + JSON sidecar
      volumes/snow_slices/         folder of 2D TIFF slices
      volumes/snow_roi_bin2.h5     region 10:90 on every axis, mean-binned by 2
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from anodetwin.io import (atomic_write_json, bin_volume, content_hash, grey_value_stats,
                          input_record, make_provenance, open_volume, read_volume,
                          write_volume)
from anodetwin.log import get_logger

__all__ = ["DemoResult", "ValidationSummary", "run_demo", "spam_tomogram_path"]

log = get_logger("demo")

_FORMATS = {
    "tiff": "snow.tif",
    "hdf5": "snow.h5:/volume",
    "zarr": "snow.zarr",
    "npy": "snow.npy",
    "raw": "snow.raw",
    "tiff-dir": "snow_slices/",
}
ROI = "10:90,10:90,10:90"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its output.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    summary_path : Path
        Its ``summary.json``.
    summary : dict
        What ``summary.json`` holds (module notes: stages, files, checks, statistics).
    """

    out_dir: Path
    summary_path: Path
    summary: dict


def spam_tomogram_path(name: str = "snow") -> Path:
    """Path of a real tomogram shipped with spam.

    Parameters
    ----------
    name : {"snow", "concrete_x-ray", "concrete_neutron"}
        The tomogram (100^3 voxels, uint16; the concrete ones binned by 16).

    Returns
    -------
    Path
        Its TIFF file inside the installed spam package.

    Raises
    ------
    KeyError
        An unknown name.
    """
    rel = {"snow": "data/snow/snow.tif",
           "concrete_x-ray": "data/concrete/concrete_x-ray-bin16.tif",
           "concrete_neutron": "data/concrete/concrete_neutron-bin16.tif"}[name]
    return Path(str(importlib.resources.files("spam").joinpath(rel)))


def _orthoslices(path: Path, full: np.ndarray, binned: np.ndarray) -> None:
    from anodetwin.plotting import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6), constrained_layout=True)
    for row, (vol, label) in enumerate(((full, "full"), (binned, "ROI 10:90, bin 2"))):
        lo, hi = np.percentile(vol, (0.5, 99.5))
        c = [s // 2 for s in vol.shape]
        for ax, img, title in zip(axes[row], (vol[c[0]], vol[:, c[1]], vol[:, :, c[2]]),
                                  (f"z = {c[0]} (y-x)", f"y = {c[1]} (z-x)", f"x = {c[2]} (z-y)"),
                                  strict=True):
            im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_title(f"{label}: {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[row], shrink=0.8, label="grey value (16-bit)")
    fig.suptitle("spam snow tomogram (real X-ray CT), orthogonal slices")
    save_png(fig, path, dpi=90)


def _phantom_stage(folder: Path) -> dict:
    """Reference-electrode phantom series and the noise floor of its double scan."""
    import h5py

    from anodetwin.dvc.noise import noise_floor
    from anodetwin.phantom import load_config
    from anodetwin.phantom.report import write_phantom

    log.info("phantom: reference electrode, in situ series T0..T6")
    res = write_phantom(load_config(seed=1), folder)
    with h5py.File(res.path, "r") as f:
        last = res.series.n_steps - 1
        a = f[f"steps/T{last}/tomogram"][...]
        b = f["double_scan/tomogram_b"][...]
        sigma = float(f.attrs["noise_sigma"])
    nf = noise_floor(a, b, sigma=2.0)
    ok = abs(nf.noise_std / sigma - 1) < 0.02
    log.info("double scan: noise %.1f grey levels (rendered %.1f), residual threshold %.1f",
             nf.noise_std, sigma, nf.residual_threshold)
    return {"folder": str(folder.relative_to(folder.parent)),
            "series": str(res.path.relative_to(folder.parent)),
            "preview": str(res.preview_path.relative_to(folder.parent)),
            "thickness_um": [row["thickness_um"] for row in res.summary["protocol"]],
            "anode_phase_fractions": res.summary["anode_phase_fractions"],
            "composition_targets": res.summary["composition_targets"],
            "noise_floor": {**nf.to_dict(), "rendered_noise_sigma": sigma,
                            "matches_rendered_noise": bool(ok)}}


DEMO_CASE = """# written by anodetwin demo
[mesh]
path = "mesh"
[cell]
model = "quick_cell"
[lithiation]
diffusivity_um2_s = 0.01
profile = "separator"
[boundary]
p0_mpa = 0.3
[solver]
plasticity = false          # elastic LixSi: the demo stays a few minutes long
compaction = false          # no compaction stiffening of the matrix (3x fewer Newton steps)
[output]
dvc_node_spacing_um = 3.5   # the simulated displacement on the reference's DVC grid
dvc_voxel_size_um = {voxel}
"""


def _simulation_stage(folder: Path, series: Path, coarsen: int = 4) -> dict:
    """Mesh the phantom's T0 electrode and run the short protocol through the twin."""
    import json
    import shutil

    import h5py
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import Labels, voxel_mesh
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.protocol import simulate_cell
    from anodetwin.simulate.run import run_case

    comm = MPI.COMM_WORLD
    with h5py.File(series, "r") as f:
        top = json.loads(f.attrs["layers"])["anode"][1]
        ph = f["steps/T0/phases"][:top]
        pa = f["steps/T0/particles"][:top]
        v = float(f["steps/T0/tomogram"].attrs["voxel_size_um"][0])
    log.info("simulation: mesh of the T0 electrode (%s voxels, %gx coarser)", ph.shape,
             coarsen)
    if comm.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    comm.barrier()
    hm = voxel_mesh(comm, Labels(ph, pa, (v, v, v)), coarsen_by=coarsen)
    write_mesh(folder / "mesh", hm)
    (folder / "case.toml").write_text(DEMO_CASE.format(voxel=v))
    case = load_case(folder / "case.toml")
    rows = run_case(case, folder / "run", comm=comm)
    hist = simulate_cell(case.cell)
    li_err = max(abs(r["theta_mean"] - hist.theta_mean_at(r["time_s"])) for r in rows)
    scans = {r["output"]: r for r in rows if r["output"]}
    th = [scans[k]["thickness_um"] for k in ("T0", "T1", "T2")]
    log.info("simulation: thickness %.2f -> %.2f (charge) -> %.2f um (discharge)", *th)
    return {"folder": str(folder.relative_to(folder.parent)), "cells": hm.summary["cells"],
            "steps": int(rows[-1]["step"]), "thickness_um": th,
            "volumetric_strain": [scans[k]["volumetric_strain"] for k in ("T0", "T1", "T2")],
            "li_conservation_error": li_err,
            "swells_and_recovers": bool(th[1] > th[2] > th[0]),
            "li_conserved": bool(li_err < 1e-8)}


class ValidationSummary(TypedDict):
    """The validation stage's entry of ``summary.json`` (paths relative to the demo folder).

    Keys: ``folder``, ``series`` (rendered tomograms), ``dvc`` (DVC series folder),
    ``report`` (report.html), ``metrics`` (metrics.json); ``electrode_volumetric``: per
    output the statistics of J - 1 on the electrode
    (:class:`anodetwin.validate.metrics.RegionStatistics` as a dict); ``passed``: every
    check passed; ``failed_checks``: the failed rows of the pass/fail table (dicts).
    """

    folder: str
    series: str
    dvc: str
    report: str
    metrics: str
    electrode_volumetric: dict[str, dict]
    passed: bool
    failed_checks: list[dict]


def _validation_stage(folder: Path, sim_dir: Path,
                      node_spacing_um: float = 2.4) -> ValidationSummary:
    """The closed loop (:func:`anodetwin.validate.loop.closed_loop`): the phantom rendered
    deformed by the simulated displacement at T0..T2, spam DVC on that series (nodes every
    ``node_spacing_um``, half-windows of 2 um) and the model-versus-DVC report against the
    same simulation."""
    import shutil

    from anodetwin.phantom import load_config
    from anodetwin.validate.loop import closed_loop

    shutil.rmtree(folder, ignore_errors=True)
    ser, res = closed_loop(sim_dir, load_config(seed=1), folder, ("T0", "T1", "T2"),
                           node_spacing_um=node_spacing_um)
    e = {m.output: m.regions["electrode"]["volumetric"].as_dict() for m in res.steps}
    log.info("validation: %s", ", ".join(f"{k} Pearson {x['pearson']:.3f}, J-1 sim "
                                         f"{x['sim_mean']:.4f} vs DVC {x['dvc_mean']:.4f}"
                                         for k, x in e.items()))
    rel = folder.parent
    return ValidationSummary(
        folder=str(folder.relative_to(rel)), series=str(Path(ser.path).relative_to(rel)),
        dvc=str((folder / "dvc").relative_to(rel)), report=str(res.report.relative_to(rel)),
        metrics=str((folder / "report" / "metrics.json").relative_to(rel)),
        electrode_volumetric=e, passed=bool(res.passed),
        failed_checks=[c.as_dict() for c in res.checks if not c.passed])


def _tomogram_io_stage(out: Path) -> dict:
    """The spam snow tomogram in every format (round trips checked), a lazy binned ROI,
    grey-value statistics and orthogonal slices: the I/O entries of ``summary.json``."""
    vols = out / "volumes"
    vols.mkdir(parents=True, exist_ok=True)
    src_path = spam_tomogram_path("snow")
    log.info("input: spam snow tomogram %s", src_path)
    source = read_volume(src_path)
    src_rec = input_record(src_path)
    files: dict[str, dict] = {}
    for kind, name in _FORMATS.items():
        target = str(vols / name)
        prov = make_provenance("demo", [src_rec], {"format": kind})
        written = write_volume(target, source, provenance=prov, fmt=kind)
        back = read_volume(target)
        same = bool(np.array_equal(back.data, source.data) and back.dtype == source.dtype
                    and back.voxel_size_um == source.voxel_size_um)
        files[kind] = {"path": str(written.relative_to(out)), "hash": content_hash(written),
                       "roundtrip_exact": same}
        log.info("%-8s %s  round trip %s", kind, written, "exact" if same else "DIFFERS")

    roi_path = vols / "snow_roi_bin2.h5"
    with open_volume(vols / "snow.h5") as src:
        lazy = src.lazy(ROI, 2)
        write_volume(roi_path, lazy, provenance=make_provenance(
            "demo", [input_record(src.path, src.dataset)], {"roi": ROI, "binning": 2}))
        stats_full = grey_value_stats(src.lazy())
    binned = read_volume(roi_path)
    r = slice(10, 90)
    lazy_ok = bool(np.array_equal(binned.data, bin_volume(source.data[r, r, r], 2)))
    log.info("lazy ROI + bin 2 equals in-memory crop + bin: %s", lazy_ok)

    png = out / "orthoslices.png"
    _orthoslices(png, source.data, binned.data)
    return {
        "input": {**src_rec, "shape": list(source.shape), "dtype": str(source.dtype),
                  "voxel_size_um": source.voxel_size_um,
                  "note": "real X-ray tomogram shipped with spam; its file records no voxel "
                          "size, so lengths here are in voxels"},
        "formats": files,
        "roi_binned": {"path": str(roi_path.relative_to(out)), "roi": ROI, "binning": 2,
                       "shape": list(binned.shape), "origin_voxels": list(binned.origin),
                       "equals_in_memory_crop_bin": lazy_ok},
        "grey_value_stats": stats_full,
        "figures": [str(png.relative_to(out))],
        "provenance": make_provenance("demo", [src_rec], {"roi": ROI, "binning": 2}),
    }


def run_demo(out_dir: str | Path = "demo-output", simulate: bool = True) -> DemoResult:
    """Run the demo and return where its output is.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created if missing; files inside are replaced atomically).
    simulate : bool
        Run the simulation and validation stages (the longest; False keeps an earlier
        run's folders).

    Returns
    -------
    DemoResult
        The folder, its ``summary.json`` and what that holds.

    Raises
    ------
    NumericalError
        A check of the demo failed (round trips, lazy binning, noise floor, Li
        conservation, swelling and recovery).
    """
    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    phantom = _phantom_stage(out / "phantom")
    simulation = _simulation_stage(out / "simulation", out / phantom["series"]) if simulate \
        else {"skipped": True, "swells_and_recovers": True, "li_conserved": True}
    validation = _validation_stage(out / "validation", out / "simulation" / "run") \
        if simulate else {"skipped": True, "passed": True}
    summary = {"phantom": phantom, "simulation": simulation, "validation": validation,
               **_tomogram_io_stage(out)}
    summary_path = atomic_write_json(out / "summary.json", summary)
    if not all(f["roundtrip_exact"] for f in summary["formats"].values()) \
            or not summary["roi_binned"]["equals_in_memory_crop_bin"] \
            or not phantom["noise_floor"]["matches_rendered_noise"] \
            or not (simulation["swells_and_recovers"] and simulation["li_conserved"]):
        from anodetwin.errors import NumericalError

        raise NumericalError(f"demo check failed; see {summary_path}",
                             "report this with the summary file")
    return DemoResult(out, summary_path, summary)

"""The stages of ``anodetwin run``, in order, each a function of the checked run file that
writes one folder of the output (layouts: :mod:`anodetwin.pipeline`).

A stage is a :class:`Stage`: its name (its folder), the stages it reads, the parameters and
input files that make its key (:mod:`anodetwin.pipeline.runner`), and ``run(cfg, out,
folder)``, which writes the stage's files into ``folder`` (``out/<name>``) and returns its
summary (a JSON dict). Each calls the library entry points the stage's own command calls;
nothing here computes what a stage module already does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.log import get_logger
from anodetwin.pipeline.runfile import RunConfig, scan_times, volume_file

__all__ = ["Stage", "STAGES", "stage_named", "read_scan", "open_scan", "cores",
           "each_job", "simulate_case"]

log = get_logger("run")


@dataclass(frozen=True)
class Stage:
    """One stage of the run (module notes).

    Attributes
    ----------
    name : str
        Its name and the folder it writes.
    needs : tuple of str
        The stages whose outputs it reads (their keys are part of its key).
    params : callable
        ``params(cfg) -> dict``: the settings it depends on (JSON values).
    inputs : callable
        ``inputs(cfg) -> list of Path``: input files whose content it depends on.
    run : callable
        ``run(cfg, out, folder) -> dict``: writes into ``folder``, returns the summary.
    resumable : bool
        Its folder is kept when it is stopped, and the stage continues from it.
    optional : callable
        ``optional(cfg) -> bool``: whether the run has this stage (default: always).
    """

    name: str
    needs: tuple[str, ...]
    params: Callable[[RunConfig], dict]
    inputs: Callable[[RunConfig], list]
    run: Callable[[RunConfig, Path, Path], dict]
    resumable: bool = False
    optional: Callable[[RunConfig], bool] | None = None


def cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def read_scan(cfg: RunConfig, path: Path):
    """A scan as the run reads it: its ``[scans]`` region, binning and voxel size."""
    from anodetwin.io import read_volume

    return read_volume(path, roi=cfg.scans.roi or None, binning=cfg.scans.binning,
                       voxel_size=cfg.scans.voxel_size_um or None)


@contextmanager
def open_scan(cfg: RunConfig, path: Path) -> Iterator[Any]:
    """A scan as the run reads it, opened lazily (a :class:`~anodetwin.io.LazyVolume` read
    block by block while the context lasts)."""
    from anodetwin.io import open_volume

    with open_volume(path, voxel_size=cfg.scans.voxel_size_um or None) as src:
        yield src.lazy(roi=cfg.scans.roi or None, binning=cfg.scans.binning, progress=False)


def _scan_params(cfg: RunConfig) -> dict:
    s = cfg.scans
    return {"names": list(s.names), "roi": s.roi, "binning": s.binning,
            "voxel_size_um": s.voxel_size_um}


# --------------------------------------------------------------------------------------------
# segment

def _classifier(cfg: RunConfig, folder: Path):
    """The pixel classifier: the given one, one trained on the annotations, or None."""
    from anodetwin.pipeline.runfile import volume_path

    s = cfg.segment
    base = cfg.path.parent
    if s.classifier:
        return volume_path(s.classifier, base)
    if not s.annotations:
        return None
    from anodetwin.io import open_volume
    from anodetwin.segment.classifier import train_classifier

    k = cfg.names.index(s.annotation_scan) if s.annotation_scan else 0
    # both read lazily: the annotated slices and their filters' halo, and a strided
    # sample of the scan for its grey range
    with open_scan(cfg, cfg.scan_files[k]) as scan, \
            open_volume(volume_path(s.annotations, base)) as ann:
        clf = train_classifier(scan, ann.lazy(progress=False),
                               slices=list(s.annotation_slices) or None, n_jobs=cores())
    path = folder / "classifier.joblib"
    clf.save(path)
    return path


def _segment(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """Every scan segmented (phases, particles), T1.. moved onto T0's collector: block by
    block within ``[resources] memory_limit`` (thresholds or the classifier, with or
    without a normalisation); one scan per Dask worker with ``[resources] scheduler``."""
    model = _classifier(cfg, folder)
    targets = [folder / f"{name}.h5" for name in cfg.names]
    jobs = [(cfg, k, t, model) for k, t in enumerate(targets)
            if not t.is_file()]  # a stopped stage continues with the scans not done
    for _ in each_job(cfg, _segment_scan, jobs, "segment"):
        pass
    return {"scans": [{"scan": n, "labels": t.name} for n, t in zip(cfg.names, targets,
                                                                     strict=True)],
            "classifier": str(model) if model else None}


def each_job(cfg: RunConfig, fn: Callable[..., Any], jobs: list[tuple], name: str
             ) -> Iterator[tuple[int, Any]]:
    """``fn(*job, threads)`` for every job: one after the other on this machine's
    ``[resources] workers`` threads, or one per Dask worker with ``[resources] scheduler``
    (:func:`anodetwin.cluster.map_per_worker`); yields (job index, result)."""
    r = cfg.resources
    if not r.scheduler:
        for k, job in enumerate(jobs):
            yield k, fn(*job, r.workers or cores())
        return
    from anodetwin.cluster import dask_client, map_per_worker

    client, cluster = dask_client(r.scheduler, r.workers or cores(), memory_limit=0,
                                  option="[resources] scheduler")
    try:
        yield from map_per_worker(client, fn, jobs, name)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _segment_scan(cfg: RunConfig, k: int, target: Path, model: Any, threads: int) -> None:
    """Scan ``k`` segmented block by block into ``target`` on ``threads`` threads, moved
    onto T0's collector for k >= 1 (a job of :func:`each_job`)."""
    from anodetwin.io import input_record, make_provenance
    from anodetwin.segment.pipeline import segment_to_file

    log.info("segment %s (%d of %d)", cfg.names[k], k + 1, len(cfg.names))
    inputs = [input_record(volume_file(cfg.scan_files[k]))]
    s = cfg.segment
    with open_scan(cfg, cfg.scan_files[k]) as vol, open_scan(cfg, cfg.scan_files[0]) as t0:
        params = {"denoise": s.denoise or None, "normalise": s.normalise or None,
                  "h": s.h, "min_particle_voxels": s.min_particle_voxels,
                  "surface_window_um": s.surface_window_um}
        segment_to_file(vol, target, model=model, align_to=None if k == 0 else t0, **params,
                        memory_limit=cfg.resources.memory_limit, workers=threads,
                        provenance=make_provenance("run: segment", inputs,
                                                   {**params, "model": model and str(model)}))


def _segment_inputs(cfg: RunConfig) -> list:
    from anodetwin.pipeline.runfile import volume_path

    extra = [volume_path(p, cfg.path.parent) for p in (cfg.segment.classifier,
                                                       cfg.segment.annotations) if p]
    return [*cfg.scan_files, *extra]


# --------------------------------------------------------------------------------------------
# morphology

def _morphology(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """Thickness, RNL volume, particles and tracks of the segmented series."""
    from anodetwin.io import make_provenance
    from anodetwin.segment.morphology import series_morphology, write_morphology

    labels = [out / "segment" / f"{n}.h5" for n in cfg.names]
    m = series_morphology(labels, prior="thickness", memory_limit=cfg.resources.memory_limit,
                          workers=cfg.resources.workers or cores())
    write_morphology(folder, m, make_provenance("run: morphology", [], {"prior": "thickness"}))
    return {"steps": [{k: r[k] for k in ("step", "thickness_mean_um", "thickness_std_um",
                                         "rnl", "particles")} for r in m.steps]}


# --------------------------------------------------------------------------------------------
# dvc

def _dvc_params(cfg: RunConfig) -> dict:
    return {**asdict(cfg.dvc), **_scan_params(cfg)}


def _dvc(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """Increments, cumulative fields and region statistics of the series; the scans and
    T0's labels are read lazily (each batch of nodes reads the region its windows touch)."""
    from contextlib import ExitStack

    import h5py

    from anodetwin.dvc.correlate import INTERPOLATION_ORDER
    from anodetwin.dvc.series import correlate_series
    from anodetwin.io import input_record

    d = cfg.dvc
    with ExitStack() as stack:
        vols = [stack.enter_context(open_scan(cfg, p)) for p in cfg.scan_files]
        labels = stack.enter_context(h5py.File(out / "segment" / f"{cfg.names[0]}.h5", "r"))
        regions = {"phases": labels["phases"], "particles": labels["particles"],
                   "cube_um": d.cube_um or "auto", "voi_um": d.voi_um or "auto"}
        summary = correlate_series(
            vols, folder, inputs=[input_record(volume_file(p)) for p in cfg.scan_files],
            refine=d.refine, regions=regions, node_spacing=d.node_spacing, hws=d.hws,
            pyramid=list(d.pyramid) or None, search_range=d.search_range,
            mask=labels["phases"] if d.mask else None,
            processes=cfg.resources.workers or cores(), progress=True,
            scheduler=cfg.resources.scheduler or None, engine=d.engine,
            criterion=d.criterion, interpolation_order=INTERPOLATION_ORDER[d.interpolation],
            robust=d.robust, shape_function=d.shape_function,
            reference_model=d.reference_model)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, list))}


# --------------------------------------------------------------------------------------------
# residuals

def _residuals(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The residual map of every cumulative field above ``[residuals] floor``, or else the
    noise floor of the double scan; one pair per Dask worker with ``[resources]
    scheduler``."""
    from anodetwin.dvc.noise import noise_floor
    from anodetwin.io import atomic_write_json

    r = cfg.residuals
    floor = r.floor or None
    if floor is None:
        names = [f"[scans] double_scan '{f}'" for f in cfg.scans.double_scan]
        with open_scan(cfg, cfg.double_scan[0]) as a, open_scan(cfg, cfg.double_scan[1]) as b:
            nf = noise_floor(a, b, sigma=r.sigma, names=names,
                             memory_limit=cfg.resources.memory_limit,
                             workers=cfg.resources.workers or cores())
        atomic_write_json(folder / "noise_floor.json", nf.to_dict())
        floor = nf.residual_threshold
    jobs = [(cfg, out, folder, k, floor) for k in range(1, len(cfg.names))]
    rows = dict(each_job(cfg, _residual_step, jobs, "residual"))
    return {"noise_floor": floor, "steps": [rows[k] for k in range(len(jobs))]}


def _residual_step(cfg: RunConfig, out: Path, folder: Path, k: int, floor: float,
                   threads: int) -> dict:
    """The residual map of T0 -> Tk into ``folder`` on ``threads`` threads (a job of
    :func:`each_job`); its summary row."""
    import h5py

    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.residual import NodeField, residual_to_file
    from anodetwin.io import make_provenance

    r = cfg.residuals
    res = read_pair(out / "dvc" / f"cumulative_0_{k}.h5")
    nodes = res.nodes + np.asarray(res.params.get("roi_origin", (0, 0, 0)), float)
    params = {"sigma": r.sigma, "floor": floor, "shell_voxels": r.shell_voxels}
    with open_scan(cfg, cfg.scan_files[0]) as ref, open_scan(cfg, cfg.scan_files[k]) as dfm, \
            h5py.File(out / "segment" / f"{cfg.names[0]}.h5", "r") as labels:
        rmap = residual_to_file(
            folder / f"residual_0_{k}.h5", ref, dfm,
            NodeField(nodes, res.grid_shape, res.displacement),
            make_provenance("run: residuals", [], params), voxel_size_um=ref.voxel_size_um,
            names=[f"[scans] scan {cfg.names[i]} '{cfg.scans.files[i]}'" for i in (0, k)],
            sigma=r.sigma, floor=floor, labels_ref=labels["particles"],
            shell_voxels=r.shell_voxels, memory_limit=cfg.resources.memory_limit,
            workers=threads)
    return {"scan": cfg.names[k], "floor": rmap.floor, "particles": int(len(rmap.particles)),
            "core_shell_like": int(rmap.particles["core_shell_like"].sum())}


# --------------------------------------------------------------------------------------------
# mesh, simulate

def _mesh(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The segmented T0 electrode (collector to separator) in voxel hexahedra."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.errors import InputError
    from anodetwin.io.blocks import parse_memory
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import coarsen_slabs, voxel_mesh
    from anodetwin.phases import PHASE
    from anodetwin.segment.pipeline import open_labels

    k = cfg.mesh.coarsen
    with open_labels(out / "segment" / f"{cfg.names[0]}.h5") as t0:  # the electrode only
        if t0.collector_face != "low":
            raise InputError(f"segmented {cfg.names[0]}: the current collector is at the "
                             f"{t0.collector_face or 'no'} z face",
                             "give scans with the collector at low z (flip them with a "
                             "[scans] roi or re-export them)")
        top = int(np.ceil(np.nanmedian(t0.separator_z)))
        fine = (tuple(t0.voxel_size_um), tuple(t0.origin_um) if t0.origin_um else (0.0,) * 3)
        labels, cut = coarsen_slabs(  # read a slab of whole blocks at a time
            t0.phases, t0.particles, k, *fine, stop=top,
            replace={PHASE["separator"]: PHASE["pore"]},
            slab_bytes=parse_memory(cfg.resources.memory_limit) // 4)
    hm = voxel_mesh(MPI.COMM_SELF, labels, min_speck_voxels=cfg.mesh.min_speck_voxels)
    hm.summary.update({"coarsen": k, "planes_cut": list(cut), "voxel_size_um": list(fine[0]),
                       "origin_um": list(fine[1])})  # of the labels it was made from
    folder.mkdir(parents=True, exist_ok=True)
    write_mesh(folder, hm)
    return {"cells": hm.summary["cells"], "top_voxel": top}


def _case_dict(cfg: RunConfig, mesh: str, voxel_um: float) -> dict:
    """The simulation's case: the run's tables, the mesh, the run's scans (the protocol is
    simulated up to the last), and the displacement on a grid of the mesh's cell size
    (validate interpolates it to the DVC nodes: independent of the DVC settings)."""
    from anodetwin.pipeline.runfile import cell_model

    cell = cell_model(cfg.cell, cfg.path.parent)
    output = {**cfg.simulation.get("output", {}), "scans": list(cfg.names),
              "dvc_node_spacing_um": cfg.mesh.coarsen * voxel_um,
              "dvc_voxel_size_um": voxel_um}
    return {**cfg.simulation, "mesh": {"path": mesh}, "cell": {"model": cell},
            "output": output}


def _voxel_um(cfg: RunConfig) -> float:
    """The scans' voxel size along z (um), as the run reads them."""
    from anodetwin.io.agree import grid_of

    if cfg.scans.voxel_size_um:
        return cfg.scans.voxel_size_um * cfg.scans.binning
    return float(grid_of(cfg.scan_files[0]).voxel_size_um[0]) * cfg.scans.binning


def _simulate_params(cfg: RunConfig) -> dict:
    from anodetwin.simulate.case import case_from_dict, case_values

    case = case_from_dict(_case_dict(cfg, ".", _voxel_um(cfg)), cfg.path.parent,
                          check_mesh=False)
    return {"case": {k: v for k, v in case_values(case).items() if k != "mesh"}}


def simulate_case(case: Path, out: Path, ranks: int) -> list[dict]:
    """``anodetwin simulate CASE --out OUT`` under ``mpiexec -n ranks`` (the venv's, else the
    first on the PATH; serial without one), resuming a stopped run in ``out``.

    Parameters
    ----------
    case : Path
        The case file.
    out : Path
        The run folder.
    ranks : int
        MPI ranks.

    Returns
    -------
    list of dict
        The rows of the run's ``summary.csv``.

    Raises
    ------
    NumericalError
        The simulation stopped (its messages are above).
    """
    import csv
    import shutil
    import subprocess
    import sys

    from anodetwin.errors import NumericalError

    cmd = [sys.executable, "-m", "anodetwin.cli", "simulate", str(case), "--out", str(out)]
    if (out / "run.json").exists() or (out / "checkpoint").exists():
        cmd.append("--resume")  # a stopped simulation continues
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) \
        or shutil.which("mpiexec")
    if ranks > 1 and mpiexec:
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    log.info("simulate on %d rank%s: %s", ranks, "s" if ranks > 1 else "", case)
    rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)  # its log is on stderr
    if rc != 0:
        raise NumericalError(f"the simulation of '{case}' stopped with exit status {rc}",
                             f"see its messages above; run again to resume from "
                             f"{out / 'checkpoint'}")
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _simulate(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The twin through the cell protocol up to the last scan (resumable)."""
    from anodetwin.io import atomic_write_text
    from anodetwin.io.tomlfile import toml_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "case.toml", "# written by anodetwin run\n"
                      + toml_text(_case_dict(cfg, "../mesh", _voxel_um(cfg))))
    ranks = cfg.resources.ranks or cores()
    rows = simulate_case(folder / "case.toml", folder / "run", ranks)
    return {"ranks": ranks, "steps": len(rows),
            "outputs": [r["output"] for r in rows if r.get("output")]}


# --------------------------------------------------------------------------------------------
# validate, score, report

def _validate(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The twin against the DVC series on the DVC grid (:func:`anodetwin.validate.validate_run`)."""
    from anodetwin.validate import config_from_dict, validate_run

    t0 = out / "segment" / f"{cfg.names[0]}.h5"
    d = {**cfg.validation,
         "steps": {str(k): n for k, n in enumerate(cfg.names) if k > 0},
         "microstructure": {"labels": str(t0), **cfg.validation.get("microstructure", {})}}
    res = validate_run(out / "simulate" / "run", out / "dvc", folder, config_from_dict(d))
    return {"passed": bool(res.passed),
            "failed": sorted({f"{c['check']} ({c['region']})" for c in res.checks
                              if not c["passed"]})}


def _score(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The pipeline scored against the phantom's truth (built-in series only)."""
    from anodetwin.pipeline.score import score_run, write_score

    s = score_run(out, cfg.truth, list(cfg.names))
    write_score(out, s)
    return {"passed": s.get("passed"), "criteria": s.get("criteria")}


def _report(cfg: RunConfig, out: Path, folder: Path) -> dict:
    """The self-contained HTML report of the run."""
    from anodetwin.pipeline.report import write_report

    path = write_report(out)
    return {"report": str(Path(path).relative_to(out))}


def _none(cfg: RunConfig) -> dict:
    return {}


def _no_files(cfg: RunConfig) -> list:
    return []


def _cell_params(cfg: RunConfig) -> dict:
    return {"scan_times_s": scan_times(cfg.cell, cfg.path.parent)}


STAGES: tuple[Stage, ...] = (
    Stage("segment", (), lambda c: {**asdict(c.segment), **_scan_params(c)}, _segment_inputs,
          _segment, resumable=True),
    Stage("morphology", ("segment",), _none, _no_files, _morphology),
    Stage("dvc", ("segment",), _dvc_params, lambda c: list(c.scan_files), _dvc),
    Stage("residuals", ("segment", "dvc"),
          lambda c: {**asdict(c.residuals), **_scan_params(c)},
          lambda c: [*c.scan_files, *c.double_scan], _residuals,
          optional=lambda c: bool(c.double_scan) or c.residuals.floor > 0),
    Stage("mesh", ("segment",), lambda c: asdict(c.mesh), _no_files, _mesh),
    Stage("simulate", ("mesh",), _simulate_params, _no_files, _simulate, resumable=True),
    Stage("validate", ("simulate", "dvc", "segment"), lambda c: {"validation": c.validation},
          _no_files, _validate),
    Stage("score", ("segment", "morphology", "dvc", "simulate", "validate"), _none,
          lambda c: [c.truth], _score, optional=lambda c: c.truth is not None),
    Stage("report", ("segment", "morphology", "dvc", "residuals", "mesh", "simulate",
                     "validate"), _cell_params, _no_files, _report),
)


def stage_named(name: str) -> Stage:
    """The stage called ``name`` (:class:`KeyError` if none)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)

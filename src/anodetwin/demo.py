"""The main job on built-in data (``anodetwin demo``, ``make demo``): ``anodetwin run`` on the
reference phantom's in situ series, scored afterwards against the phantom's truth.

1. **The built-in series** (``OUT/series/``): the reference electrode phantom (89 wt% Si,
   21 um, 3 mg/cm2, :func:`anodetwin.phantom.load_config` with seed 1). Its deformation is
   physical: the phantom's pristine electrode (its true T0 labels) is meshed in 1.6 um
   hexahedra and run by the twin through the reference cell's charge up to T6 (85% SoC),
   and the phantom is rendered at the simulated scans T0..T6 deformed by that displacement
   (:func:`anodetwin.validate.loop.render_series`), with a double scan of T6. Lithiated Si
   is rendered as bright as Si (absorption-like contrast; with the reference's phase
   contrast it looks like the carbon-binder domain and correlation loses it).
2. **The run file** (``OUT/run.toml``) for that series, as a user would write it: the scans
   as ``series.h5:/steps/T<k>/tomogram``, the reference cell, the twin's settings, the DVC
   settings, and ``[truth]`` (only the score stage reads it).
3. **``anodetwin run``** (``OUT/run/``, :mod:`anodetwin.pipeline`): segmentation of every
   scan, morphology, DVC series, residual maps, the *segmented* T0 meshed and simulated,
   validation, the score against the truth (segmentation Dice per phase, thickness, RNL,
   DVC displacement and twin errors, twin-versus-DVC Pearson of J-1) and the report.

Output layout::

    OUT/
      series/truth/          the truth twin: phases.h5, particles.h5, mesh/, case.toml, run/
      series/series.h5       the rendered series T0..T6, double scan and truth (phantom layout)
      run.toml               the run file
      run/                   the run (anodetwin.pipeline layout); run/report/report.html
      summary.json           paths, the score's criteria and the stages' times
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, replace
from pathlib import Path

from anodetwin.log import get_logger

__all__ = ["DemoResult", "run_demo", "built_in_series", "demo_run_file", "spam_tomogram_path",
           "DEMO_SCANS", "DEMO_SIMULATION"]

log = get_logger("demo")

#: The scans of the built-in series (the reference cell's charge).
DEMO_SCANS = tuple(f"T{k}" for k in range(7))

#: The twin's tables of the demo (``[simulation]`` of the run file, and the truth twin's):
#: elastic LixSi and steps of up to 0.02 in mean theta keep the demo short.
DEMO_SIMULATION = {
    "lithiation": {"diffusivity_um2_s": 0.01, "profile": "separator"},
    "boundary": {"p0_mpa": 0.3},
    "solver": {"plasticity": False, "dtheta_max": 0.02},
}

#: Mesh coarsening of the truth twin and of the run (0.2 um voxels -> 1.6 um hexahedra).
COARSEN = 8


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its output.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    run_dir : Path
        The run's folder (:mod:`anodetwin.pipeline` layout).
    report : Path
        The run's report.
    summary : dict
        What ``summary.json`` holds: paths, the score's criteria, stage times.
    """

    out_dir: Path
    run_dir: Path
    report: Path
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


def _cli(*args: str) -> None:
    """``anodetwin ARGS`` in a child process (MPI stays out of this one)."""
    import subprocess
    import sys

    from anodetwin.errors import NumericalError

    rc = subprocess.call([sys.executable, "-m", "anodetwin.cli", *args])
    if rc != 0:
        raise NumericalError(f"'anodetwin {args[0]}' of the demo stopped with exit status "
                             f"{rc}", "see its messages above")


def _truth_twin(folder: Path, cfg, ranks: int, scans: tuple) -> Path:
    """The phantom's pristine electrode meshed and simulated up to T6; its run folder."""
    from anodetwin.io import Volume, atomic_write_text, write_volume
    from anodetwin.io.tomlfile import toml_text
    from anodetwin.pipeline.stages import simulate_case
    from anodetwin.validate.loop import electrode_labels

    folder.mkdir(parents=True, exist_ok=True)
    lab = electrode_labels(cfg)
    for name, data in (("phases", lab.phases), ("particles", lab.particles)):
        write_volume(folder / f"{name}.h5", Volume(data, lab.voxel_size_um))
    if not (folder / "mesh" / "mesh.xdmf").is_file():
        _cli("mesh", str(folder / "phases.h5"), "--particles", str(folder / "particles.h5"),
             "--coarsen", str(COARSEN), "--out", str(folder / "mesh"))
    v = float(lab.voxel_size_um[0])
    case = {**DEMO_SIMULATION, "mesh": {"path": "mesh"}, "cell": {"model": "reference_cell"},
            "output": {"scans": list(scans), "dvc_node_spacing_um": COARSEN * v,
                       "dvc_voxel_size_um": v}}
    atomic_write_text(folder / "case.toml", "# the truth twin of the demo's series\n"
                      + toml_text(case))
    simulate_case(folder / "case.toml", folder / "run", ranks)
    return folder / "run"


def built_in_series(folder: str | os.PathLike, ranks: int = 1, phantom=None,
                    scans: tuple = DEMO_SCANS) -> Path:
    """The demo's series (module notes, 1): the reference phantom deformed by the truth
    twin, rendered at T0..T6 with a double scan of T6.

    Parameters
    ----------
    folder : path-like
        Where ``truth/`` and ``series.h5`` go (created).
    ranks : int
        MPI ranks of the truth twin.
    phantom : anodetwin.phantom.config.PhantomConfig, optional
        Another phantom (default: the reference electrode, seed 1).
    scans : tuple of str
        Scans of the reference cell's protocol to render, T0 first.

    Returns
    -------
    Path
        ``folder/series.h5`` (phantom layout: tomograms, double scan and truth).
    """
    from anodetwin.phantom import load_config
    from anodetwin.validate.loop import render_series

    folder = Path(folder)
    cfg = phantom or load_config(seed=1)
    sim = _truth_twin(folder / "truth", cfg, ranks, tuple(scans))
    bright = replace(cfg, render=replace(cfg.render, grey_lithiated=cfg.render.grey_si))
    log.info("series: the phantom rendered at %s deformed by the truth twin",
             ", ".join(scans))
    res = render_series(sim, bright, folder / "series.h5", outputs=tuple(scans),
                        progress=True)
    return Path(res.path)


def demo_run_file(path: str | os.PathLike, series: str | os.PathLike, ranks: int = 0,
                  scans: tuple = DEMO_SCANS, tables: dict | None = None) -> Path:
    """The run file of the built-in series (module notes, 2).

    Parameters
    ----------
    path : path-like
        The run file to write.
    series : path-like
        The series (:func:`built_in_series`).
    ranks : int
        ``[resources]`` ranks and DVC workers (0: all cores).
    scans : tuple of str
        The series' scans, T0 first.
    tables : dict, optional
        Tables replacing the demo's own (e.g. ``{"dvc": {...}}``).

    Returns
    -------
    Path
        The run file.
    """
    from anodetwin.io import atomic_write_text
    from anodetwin.io.tomlfile import toml_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = os.path.relpath(Path(series).resolve(), path.resolve().parent)
    last = scans[-1]
    run = {"scans": {"files": [f"{s}:/steps/{n}/tomogram" for n in scans],
                     "names": list(scans),
                     "double_scan": [f"{s}:/steps/{last}/tomogram",
                                     f"{s}:/double_scan/tomogram_b"]},
           "cell": {"model": "reference_cell"},
           # the electrode top as the Si envelope over 3 um (about a particle): a 10 um
           # window reads the tallest particles, 0.6-1.4 um above the mean top here
           "segment": {"surface_window_um": 3.0},
           "mesh": {"coarsen": COARSEN},
           "simulation": DEMO_SIMULATION,
           "dvc": {"node_spacing": 12, "hws": 10, "search_range": 8},
           "truth": {"series": s}, "resources": {"ranks": ranks, "workers": ranks},
           **(tables or {})}
    return atomic_write_text(path, "# anodetwin run file of the built-in series "
                                   "(anodetwin demo)\n" + toml_text(run))


def _summary(out: Path, res) -> dict:
    import json

    score = out / "run" / "score" / "score.json"
    sc = json.loads(score.read_text()) if score.is_file() else {}
    return {"series": "series/series.h5", "run_file": "run.toml", "run": "run",
            "report": os.path.relpath(res.report, out) if res.report else None,
            "criteria": sc.get("criteria"), "passed": sc.get("passed"),
            "stages": [{"stage": s.stage, "state": s.state, "seconds": s.seconds,
                        "peak_rss_mb": s.peak_rss_mb} for s in res.stages]}


def run_demo(out_dir: str | os.PathLike = "demo-output", ranks: int | None = None,
             phantom=None, scans: tuple = DEMO_SCANS, tables: dict | None = None
             ) -> DemoResult:
    """Run the demo (module notes) and return where its output is.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created); a second run resumes and skips what is done.
    ranks : int, optional
        MPI ranks of the simulations and DVC processes; default all cores.
    phantom, scans
        As :func:`built_in_series` (e.g. a small phantom and T0..T2 for a quick run).
    tables : dict, optional
        Run-file tables replacing the demo's (:func:`demo_run_file`).

    Returns
    -------
    DemoResult
        The folder, the run, its report and ``summary.json``'s content.

    Raises
    ------
    NumericalError
        A stage failed (the run keeps the finished ones; running the demo again resumes).
    """
    from anodetwin.io import atomic_write_json
    from anodetwin.pipeline import run_pipeline
    from anodetwin.pipeline.stages import cores

    out = Path(out_dir).resolve()
    ranks = ranks or cores()
    series = out / "series" / "series.h5"
    if not series.is_file():
        built_in_series(out / "series", ranks, phantom, scans)
    run_file = demo_run_file(out / "run.toml", series, ranks, scans, tables)
    res = run_pipeline(run_file, out / "run")
    summary = _summary(out, res)
    atomic_write_json(out / "summary.json", summary)
    return DemoResult(out, out / "run", res.report, summary)

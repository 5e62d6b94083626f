"""Generate a phantom series and write it to one HDF5 file.

HDF5 layout (``anodetwin-phantom-series``, version 1; lengths in um, arrays (z, y, x))::

    /                         attrs: format, format_version, voxel_size_um (z, y, x),
                              origin_um, seed, n_steps, layers (JSON: copper / anode /
                              separator z ranges in voxels), config (JSON), composition
                              (JSON), provenance (JSON)
    /particles                table, one row per particle: id, centroid_{z,y,x}_um,
                              volume_um3, equivalent_diameter_um, touching,
                              distance_to_collector_um, cracked, mode (0 core-shell,
                              1 network; attr mode_names)
    /protocol                 table per step: step, soc, theta_mean, thickness_um
    /steps/T<n>/tomogram      uint16 scan (chunked; readable as file.h5:/steps/T3/tomogram)
    /steps/T<n>/phases        uint8 phase codes (0 pore, 1 CBD, 2 Si, 3 lithiated Si,
                              4 copper, 5 separator)
    /steps/T<n>/particles     int32 particle ids (0 = none); both with attr voxel_size_um
    /steps/T<n>/displacement_um   float32 (3, z, y, x): u_z, u_y, u_x on the T0 grid
    /steps/T<n>/strain/<name>     float32: volumetric (J - 1), ezz, eyy, exx, eyz, exz, exy
    /steps/T<n>/lithiated         uint8 (0/1) on the T0 grid: the voxels lithiated at Tn
    /steps/T<n>/theta             float64 per particle (rows of /particles): Li content
    /steps/T<n>/core_volume_um3   float64 per particle: non-lithiated volume
    /double_scan/tomogram_b   uint16: a second scan of the last step, independent noise
                              (attr step); scan A is /steps/T<last>/tomogram

Same configuration and seed give bit-identical arrays.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import atomic_path, input_record, make_provenance, write_volume
from anodetwin.io.volume import Volume
from anodetwin.log import get_logger, progress_bar
from anodetwin.phantom.config import LITHIATION_MODES, PhantomConfig
from anodetwin.phantom.microstructure import PHASE, Microstructure, make_microstructure
from anodetwin.phantom.render import add_noise, clean_image, noise_sigma
from anodetwin.kinematics import inverse_coordinates, sample_nearest
from anodetwin.phantom.series import (
    StepTruth,
    lithiated_mask,
    lithiation_scores,
    particle_modes,
    particle_theta,
    swelling_displacement,
)
from anodetwin.strain import strain_fields

__all__ = ["SeriesResult", "generate_series", "FORMAT", "FORMAT_VERSION"]

log = get_logger("phantom")
FORMAT = "anodetwin-phantom-series"
FORMAT_VERSION = 1
_LZF = {"compression": "lzf", "shuffle": True}


@dataclass(frozen=True)
class SeriesResult:
    """What :func:`generate_series` wrote."""

    path: Path
    shape: tuple[int, int, int]
    voxel_size_um: float
    n_steps: int
    n_particles: int
    protocol: np.ndarray
    tiff_paths: tuple[Path, ...]


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(64, s) for s in shape)


def _external_displacement(cfg: PhantomConfig, step: int, shape: tuple[int, int, int]
                           ) -> np.ndarray | None:
    import h5py

    path = cfg.series.displacement_file
    with h5py.File(path, "r") as f:
        key = f"steps/T{step}/displacement_um"
        if key not in f:
            if step == 0:
                return np.zeros((3,) + shape, np.float32)
            raise ParameterError(f"displacement file '{path}' has no '{key}'",
                                 "give one (3, z, y, x) field in um per step")
        u = f[key][...].astype(np.float32)
    if u.shape != (3,) + shape:
        raise ShapeMismatchError(f"displacement '{path}:{key}' has shape {u.shape}, the phantom "
                                 f"grid needs {(3,) + shape}", "match the phantom geometry")
    return u


def _step_truth(ms: Microstructure, cfg: PhantomConfig, score: np.ndarray, step: int,
                soc: float) -> tuple[StepTruth, np.ndarray, np.ndarray]:
    """Truth of one step, the lithiated phases on the T0 grid and the reference coordinates
    of every deformed voxel."""
    comp = ms.composition
    theta_mean = soc * comp.si_utilisation
    theta = particle_theta(ms, cfg, theta_mean)
    lith = lithiated_mask(ms, score, theta)
    v = ms.voxel_size_um
    phases0 = ms.phases.copy()
    phases0[lith] = PHASE["lithiated"]
    n_per = np.bincount(ms.particles[lith], minlength=int(ms.particles.max()) + 1)
    core = ms.table["volume_um3"] - n_per[ms.table["id"]] * v**3
    shape = ms.phases.shape
    if cfg.series.displacement_file:
        disp = _external_displacement(cfg, step, shape)
        profile = None
    else:
        profile = swelling_displacement(ms, lith, cfg)
        disp = np.zeros((3,) + shape, np.float32)
        disp[0] = profile[:, None, None]
    coords = inverse_coordinates(disp, v, profile)
    phases = sample_nearest(phases0, coords)
    particles = sample_nearest(ms.particles, coords)
    a0, a1 = ms.layers.anode
    top = disp[0, a1 - 1].mean() + 0.5 * (disp[0, a1 - 1] - disp[0, a1 - 2]).mean()
    thickness = (a1 - a0) * v + float(top - disp[0, a0].mean())
    return StepTruth(step, soc, theta_mean, theta, core, disp, phases, particles,
                     thickness, lith), phases0, coords


def generate_series(cfg: PhantomConfig, out: str | os.PathLike, tiff_dir: str | None = None,
                    progress: bool = True) -> SeriesResult:
    """Generate the phantom series of ``cfg`` and write it to ``out`` (HDF5, atomically).

    Parameters
    ----------
    cfg : PhantomConfig
        Validated configuration (see :func:`anodetwin.phantom.load_config`).
    out : path-like
        Output ``.h5`` file (layout in the module notes).
    tiff_dir : path-like, optional
        Also export every step's tomogram as ``T<n>.tif`` (with voxel size) there.
    progress : bool
        Show a progress bar (when logging is configured).

    Returns
    -------
    SeriesResult
        What was written: path, grid shape (z, y, x), voxel size (um), steps, particles,
        the protocol table and the TIFF paths.

    Raises
    ------
    ParameterError, ShapeMismatchError
        An external displacement file without a step or on another grid.
    """
    import h5py

    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    socs = cfg.socs()
    ms = make_microstructure(cfg, rng)
    modes = particle_modes(cfg, len(ms.table), rng)
    score = lithiation_scores(ms, modes, cfg, rng)
    inputs = [input_record(cfg.series.displacement_file)] if cfg.series.displacement_file else []
    prov = make_provenance("phantom", inputs, {"seed": cfg.seed})
    table = _table_with_modes(ms.table, modes)
    proto = np.zeros(len(socs), dtype=[("step", "i4"), ("soc", "f8"), ("theta_mean", "f8"),
                                       ("thickness_um", "f8")])
    tiffs: list[Path] = []
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(_file_attrs(cfg, ms, len(socs), prov))
        pt = f.create_dataset("particles", data=table)
        pt.attrs["mode_names"] = json.dumps(list(LITHIATION_MODES))
        with progress_bar("phantom series", total=len(socs), enabled=progress,
                          min_total=0) as advance:
            for n, soc in enumerate(socs):
                truth, clean, scan = _write_step(f, ms, cfg, score, n, soc)
                proto[n] = (n, soc, truth.theta_mean, truth.thickness_um)
                if n == len(socs) - 1 and cfg.series.double_scan:
                    _write_double_scan(f, clean, cfg, n, ms.voxel_size_um)
                if tiff_dir is not None:
                    Path(tiff_dir).mkdir(parents=True, exist_ok=True)
                    tiffs.append(write_volume(Path(tiff_dir) / f"T{n}.tif",
                                              Volume(scan, ms.voxel_size_um), provenance=prov))
                log.info("T%d: SoC %.2f, theta %.3f, thickness %.2f um", n, soc,
                         truth.theta_mean, truth.thickness_um)
                advance(1)
        f.create_dataset("protocol", data=proto)
    return SeriesResult(out, ms.phases.shape, ms.voxel_size_um, len(socs), len(table), proto,
                        tuple(tiffs))


def _file_attrs(cfg: PhantomConfig, ms: Microstructure, n_steps: int, prov: dict) -> dict:
    """Attributes of the file's root (module notes)."""
    v = ms.voxel_size_um
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "voxel_size_um": [v, v, v], "origin_um": [0.0, 0.0, 0.0], "seed": cfg.seed,
            "n_steps": n_steps,
            "layers": json.dumps({"copper": ms.layers.cu, "anode": ms.layers.anode,
                                  "separator": ms.layers.separator}),
            "config": json.dumps(cfg.to_dict(), default=str),
            "composition": json.dumps(ms.composition.to_dict()),
            "noise_sigma": noise_sigma(cfg.render),
            "provenance": json.dumps(prov, default=str)}


def _write_step(f, ms: Microstructure, cfg: PhantomConfig, score: np.ndarray, n: int,
                soc: float) -> tuple[StepTruth, np.ndarray, np.ndarray]:
    """Compute, render and write step ``n`` (group ``steps/T<n>``); returns its truth, the
    noise-free image and the scan."""
    v = ms.voxel_size_um
    shape = ms.phases.shape
    truth, phases0, coords = _step_truth(ms, cfg, score, n, soc)
    clean = clean_image(phases0, cfg.render, v, ms.layers.cu[1], cfg.seed,
                        coords=None if n == 0 else coords)
    scan = add_noise(clean, cfg.render, np.random.default_rng([cfg.seed, n, 0]))
    g = f.create_group(f"steps/T{n}")
    g.attrs.update({"step": n, "soc": soc, "theta_mean": truth.theta_mean,
                    "thickness_um": truth.thickness_um})
    d = g.create_dataset("tomogram", data=scan, chunks=_chunks(shape))
    d.attrs["voxel_size_um"] = [v, v, v]
    d.attrs["element_size_um"] = [v, v, v]
    for name in ("phases", "particles"):  # with their voxel: readable alone
        d = g.create_dataset(name, data=getattr(truth, name), chunks=_chunks(shape), **_LZF)
        d.attrs["voxel_size_um"] = [v, v, v]
    g.create_dataset("displacement_um", data=truth.displacement,
                     chunks=(1,) + _chunks(shape), **_LZF)
    # the truth's strain: the one strain operator on the voxel grid
    for name, arr in strain_fields(truth.displacement, v).items():
        g.create_dataset(f"strain/{name}", data=arr, chunks=_chunks(shape), **_LZF)
    g.create_dataset("lithiated", data=truth.lithiated.view(np.uint8),
                     chunks=_chunks(shape), **_LZF)
    g.create_dataset("theta", data=truth.theta)
    g.create_dataset("core_volume_um3", data=truth.core_volume_um3)
    return truth, clean, scan


def _write_double_scan(f, clean: np.ndarray, cfg: PhantomConfig, n: int, v: float) -> None:
    """A second scan of step ``n`` with independent noise (``double_scan/tomogram_b``)."""
    b = add_noise(clean, cfg.render, np.random.default_rng([cfg.seed, n, 1]))
    ds = f.create_dataset("double_scan/tomogram_b", data=b, chunks=_chunks(clean.shape))
    ds.attrs["step"] = n
    ds.attrs["voxel_size_um"] = [v, v, v]


def _table_with_modes(table: np.ndarray, modes: np.ndarray) -> np.ndarray:
    dt = np.dtype(table.dtype.descr + [("mode", "u1")])
    t = np.zeros(len(table), dt)
    for name in table.dtype.names:
        t[name] = table[name]
    t["mode"] = modes
    return t

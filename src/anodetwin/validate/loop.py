"""Closing the loop on phantoms: a simulation of a phantom's electrode deforms the
phantom's tomograms, so DVC measures a field whose truth is that simulation.

1. :func:`electrode_labels`: the pristine phantom (its T0 labels) below the anode top, the
   microstructure the simulation meshes (same seed, same particles);
2. the simulation writes its displacement on a grid of a few phantom voxels
   (``[output] dvc_node_spacing_um``, ``dvc_voxel_size_um`` = the phantom's voxel);
3. :func:`render_series`: that displacement, interpolated trilinearly to every phantom voxel
   (constant above the electrode top: the separator rides on it), becomes the phantom's
   external displacement (``[series] displacement_file``), and the phantom renders T0..Tn
   at the states of charge of the simulated scans;
4. ``anodetwin dvc-series`` on those tomograms and :func:`anodetwin.validate.validate_run`
   against the simulation close the loop (:func:`closed_loop` does 3 and 4).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from anodetwin.dvc.pair import read_pair
from anodetwin.errors import InputError
from anodetwin.validate.compare import load_simulation, sample_grid_displacement

__all__ = ["electrode_labels", "displacement_volume", "render_series", "closed_loop"]


def electrode_labels(cfg):
    """The phantom's pristine labels from the bottom up to the anode top (copper + anode).

    Parameters
    ----------
    cfg : anodetwin.phantom.config.PhantomConfig
        The phantom.

    Returns
    -------
    anodetwin.mesh.voxel.Labels
        Phases and particle ids (z, y, x), isotropic voxel (um), origin at the centre of
        voxel 0.
    """
    from anodetwin.mesh.voxel import Labels
    from anodetwin.phantom.microstructure import make_microstructure

    ms = make_microstructure(cfg)
    top = ms.layers.anode[1]
    v = ms.voxel_size_um
    return Labels(ms.phases[:top].copy(), ms.particles[:top].copy(), (v, v, v))


def displacement_volume(sim_dir: str | os.PathLike, output: str, shape: tuple,
                        voxel_um: float, origin_um=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The simulated displacement of one output at every voxel centre of a grid.

    Parameters
    ----------
    sim_dir : path-like
        The simulation folder (``dvc/<output>.h5``).
    output : str
        The output (``T<k>``).
    shape : tuple of 3 int
        The grid (nz, ny, nx).
    voxel_um : float
        Its isotropic voxel size (um).
    origin_um : 3 floats
        Centre of its voxel 0 in the simulation frame (z, y, x, um).

    Returns
    -------
    (3, nz, ny, nx) float32 ndarray
        Displacement (um), components z, y, x; beyond the simulated grid the value at its
        nearest point.
    """
    pr = read_pair(Path(sim_dir) / "dvc" / f"{output}.h5")
    axes = [np.asarray(origin_um[i], float) + np.arange(n) * voxel_um
            for i, n in enumerate(shape)]
    out = np.empty((3, *shape), np.float32)
    zz, yy = np.meshgrid(axes[1], axes[2], indexing="ij")
    for k, z in enumerate(axes[0]):  # slab by slab: bounded memory
        pts = np.stack([np.full(zz.size, z), zz.ravel(), yy.ravel()], axis=1)
        u = sample_grid_displacement(pr, pts, clip=True)
        out[:, k] = u.T.reshape(3, shape[1], shape[2])
    return out


def render_series(sim_dir: str | os.PathLike, cfg, out_h5: str | os.PathLike,
                  outputs: tuple = ("T0", "T1", "T2"), progress: bool = False):
    """Render the phantom of ``cfg`` deformed by the simulated displacement (module notes).

    Parameters
    ----------
    sim_dir : path-like
        The simulation folder.
    cfg : anodetwin.phantom.config.PhantomConfig
        The phantom the simulation meshed.
    out_h5 : path-like
        The series file to write; the displacement file is written beside it
        (``<stem>_displacement.h5``, ``steps/T<k>/displacement_um``).
    outputs : tuple of str
        Simulation outputs rendered as the scans T0, T1, ...
    progress : bool
        Show progress.

    Returns
    -------
    anodetwin.phantom.SeriesResult
        The rendered series.

    Raises
    ------
    InputError
        An output the simulation does not have.
    """
    import h5py

    from anodetwin.io import atomic_path
    from anodetwin.phantom import generate_series
    from anodetwin.phantom.microstructure import layers_for

    sim = load_simulation(sim_dir)
    missing = [o for o in outputs if o not in sim.outputs]
    if missing:
        raise InputError(f"simulation '{sim_dir}' has no outputs {missing}",
                         f"give outputs among {sorted(sim.outputs)}")
    soc = {r["output"]: float(r["soc"]) for r in sim.summary if r["output"]}
    layers = layers_for(cfg)
    shape, v = layers.shape, layers.voxel_size_um
    out_h5 = Path(out_h5)
    disp_path = out_h5.with_name(f"{out_h5.stem}_displacement.h5")
    with atomic_path(disp_path) as tmp, h5py.File(tmp, "w") as f:
        for k, name in enumerate(outputs):
            f.create_dataset(f"steps/T{k}/displacement_um",
                             data=displacement_volume(sim_dir, name, shape, v))
    series = replace(cfg.series, soc=tuple(soc[o] for o in outputs), protocol=(),
                     displacement_file=str(disp_path))
    # the same grid as the simulated microstructure's, whatever the new states of charge
    n_sep = int(round(cfg.geometry.separator_thickness_um / v))
    head = (shape[0] - layers.anode[1] - n_sep) * v
    geometry = replace(cfg.geometry, headroom_um=head)
    return generate_series(replace(cfg, series=series, geometry=geometry), out_h5,
                           progress=progress)


def closed_loop(sim_dir: str | os.PathLike, cfg, folder: str | os.PathLike,
                outputs: tuple = ("T0", "T1", "T2"), node_spacing_um: float = 2.4,
                hws_um: float = 2.0, search_range=(8, 3, 3), above_um: float | None = 4.0,
                processes: int = 2, validate_config: dict | None = None):
    """Render the phantom deformed by a simulation, measure the series with spam DVC and
    validate the simulation against it.

    Lithiated Si is rendered brighter than in the reference scans (whose phase contrast
    makes it look like the CBD), so the swollen shells keep the texture DVC follows.

    Parameters
    ----------
    sim_dir, cfg : path-like, anodetwin.phantom.config.PhantomConfig
        As :func:`render_series`.
    folder : path-like
        Output folder: ``series.h5``, ``dvc/`` and ``report/`` are written there.
    outputs : tuple of str
        As :func:`render_series`.
    node_spacing_um, hws_um : float
        DVC node spacing and half-window (um, rounded to phantom voxels).
    search_range : tuple of 3 int
        DVC search range (voxels, z, y, x).
    above_um : float or None
        Cut the volumes this far above the pristine anode top (um); None: the whole grid,
        separator included (for large swelling).
    processes : int
        DVC worker processes.
    validate_config : dict, optional
        Further validation settings (``validate.toml`` sections).

    Returns
    -------
    series : anodetwin.phantom.SeriesResult
        The rendered series.
    result : ValidationResult
        The validation.
    """
    import json

    import h5py

    from anodetwin.dvc.series import correlate_series
    from anodetwin.log import get_logger
    from anodetwin.validate import config_from_dict, validate_run

    log = get_logger("validate")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, render=replace(cfg.render, grey_lithiated=30000.0))
    log.info("closed loop: phantom tomograms %s deformed by the simulated displacement",
             ", ".join(outputs))
    ser = render_series(sim_dir, cfg, folder / "series.h5", outputs=outputs)
    v = cfg.geometry.voxel_size_um
    with h5py.File(ser.path, "r") as f:
        top = f["steps/T0/phases"].shape[0]
        if above_um is not None:
            top = min(top, json.loads(f.attrs["layers"])["anode"][1]
                      + int(np.ceil(above_um / v)))
        vols = [f[f"steps/T{k}/tomogram"][:top].astype(np.float32)
                for k in range(len(outputs))]
        phases = f["steps/T0/phases"][:top]
    spacing = int(round(node_spacing_um / v))
    log.info("closed loop: DVC of the rendered series (node spacing %d voxels)", spacing)
    correlate_series(vols, folder / "dvc", voxel_size_um=v, node_spacing=spacing,
                     hws=int(round(hws_um / v)), search_range=search_range,
                     processes=processes, progress=True, quicklook=True,
                     regions={"phases": phases, "cube_um": None, "voi_um": None})
    res = validate_run(sim_dir, folder / "dvc", folder / "report", config_from_dict(
        {"microstructure": {"labels": f"{ser.path}:/steps/T0/phases",
                            "particles": f"{ser.path}:/steps/T0/particles"},
         **(validate_config or {})}))
    return ser, res

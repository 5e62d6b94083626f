"""A phantom series in a folder, with a summary and a preview (``anodetwin phantom OUT``).

Output layout::

    OUT/series.h5       the series (layout: anodetwin.phantom.generate)
    OUT/summary.json    composition targets and achieved phase fractions, particle
                        statistics, protocol (SoC, theta, thickness per step), provenance
    OUT/preview.png     x-z slices of the first and last step (tomogram and phases) and the
                        thickness / Li content against the state of charge
    OUT/tiff/T<n>.tif   (with --tiff) every step's tomogram as a multi-page TIFF
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anodetwin.errors import OutputError
from anodetwin.io import atomic_write_json
from anodetwin.phantom.config import PhantomConfig
from anodetwin.phantom.generate import SeriesResult, generate_series
from anodetwin.phases import PHASE

__all__ = ["PhantomOutput", "write_phantom", "phase_fractions"]


@dataclass(frozen=True)
class PhantomOutput:
    """What :func:`write_phantom` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The series file (``series.h5``).
    series : SeriesResult
        The generated series.
    summary_path, preview_path : pathlib.Path
        ``summary.json`` and ``preview.png``.
    summary : dict
        The summary's content.
    """

    path: Path
    series: SeriesResult
    summary_path: Path
    preview_path: Path
    summary: dict


def phase_fractions(phases: np.ndarray, z0: int, z1: int) -> dict[str, float]:
    """Volume fraction of each phase in a range of z planes.

    Parameters
    ----------
    phases : numpy.ndarray of int, shape (nz, ny, nx)
        Phase codes.
    z0, z1 : int
        The planes z0 <= z < z1.

    Returns
    -------
    dict
        Phase name to volume fraction (0 to 1), every phase of :data:`anodetwin.phases.PHASE`.
    """
    sub = phases[z0:z1]
    counts = np.bincount(sub.ravel(), minlength=len(PHASE))
    return {name: float(counts[code]) / sub.size for name, code in PHASE.items()}


def _preview(path: Path, f, n_last: int, layers: dict) -> None:
    import matplotlib
    from matplotlib.colors import ListedColormap

    from anodetwin.plotting import pyplot, save_png

    plt = pyplot()
    cmap = ListedColormap(["#2b6cb0", "#ed8936", "#38a169", "#e53e3e", "#805ad5", "#a0aec0"])
    fig, axes = plt.subplots(1, 5, figsize=(17, 4.6), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.3]})
    v = float(f.attrs["voxel_size_um"][0])
    for k, n in enumerate((0, n_last)):
        g = f[f"steps/T{n}"]
        y = g["tomogram"].shape[1] // 2
        tomo = g["tomogram"][:, y, :]
        ph = g["phases"][:, y, :]
        ext = (0, tomo.shape[1] * v, 0, tomo.shape[0] * v)
        axes[2 * k].imshow(tomo, cmap="gray", origin="lower", extent=ext)
        axes[2 * k].set_title(f"T{n} tomogram (x-z, y = {y * v:.1f} um)", fontsize=9)
        axes[2 * k + 1].imshow(ph, cmap=cmap, vmin=-0.5, vmax=5.5, origin="lower", extent=ext,
                               interpolation="nearest")
        axes[2 * k + 1].set_title(f"T{n} phases", fontsize=9)
        for ax in axes[2 * k: 2 * k + 2]:
            ax.set_xlabel("x (um)")
            ax.set_ylabel("z (um)")
    handles = [matplotlib.patches.Patch(color=cmap(i), label=name) for name, i in PHASE.items()]
    axes[3].legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.8)
    proto = f["protocol"][...]
    ax = axes[4]
    ax.plot(proto["soc"] * 100, proto["thickness_um"], "o-", label="electrode thickness")
    ax.set_xlabel("cell state of charge (%)")
    ax.set_ylabel("mean thickness (um)")
    ax2 = ax.twinx()
    ax2.plot(proto["soc"] * 100, proto["theta_mean"], "s--", color="C3", label="mean theta")
    ax2.set_ylabel("mean Li content theta (1 = Li15Si4)", color="C3")
    ax.set_title("swelling and Li content per step", fontsize=9)
    save_png(fig, path, dpi=80)


def write_phantom(cfg: PhantomConfig, out_dir: str | os.PathLike, tiff: bool = False,
                  progress: bool = True) -> PhantomOutput:
    """Generate the series of a configuration into a folder with a summary and a preview.

    Parameters
    ----------
    cfg : PhantomConfig
        The phantom configuration.
    out_dir : path
        The folder (created; removed again if the generation fails and it was new).
    tiff : bool
        Also write TIFF stacks under ``out_dir/tiff``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    PhantomOutput

    Raises
    ------
    OutputError
        If ``out_dir`` is a file.
    """
    import h5py

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output '{out}' is a file", "give a folder for the phantom output")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        res = generate_series(cfg, out / "series.h5", str(out / "tiff") if tiff else None,
                              progress=progress)
    except BaseException:
        if created:  # a failed run leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    with h5py.File(res.path, "r") as f:
        layers = json.loads(f.attrs["layers"])
        a0, a1 = layers["anode"]
        s0, s1 = layers["separator"]
        ph0 = f["steps/T0/phases"][...]
        table = f["particles"][...]
        comp = json.loads(f.attrs["composition"])
        achieved = phase_fractions(ph0, a0, a1)
        sep = phase_fractions(ph0, s0, s1)
        summary = {
            "series": res.path.name,
            "shape_zyx": list(res.shape),
            "voxel_size_um": res.voxel_size_um,
            "layers_voxels": layers,
            "composition_targets": {k: comp[k] for k in (
                "si_fraction", "cbd_fraction", "pore_fraction", "porosity",
                "anode_capacity_mah_cm2", "cathode_capacity_mah_cm2", "si_utilisation")},
            "anode_phase_fractions": {k: achieved[k] for k in ("si", "cbd", "pore")},
            "separator_porosity": 1.0 - sep["separator"],
            "particles": {
                "count": int(len(table)),
                "median_equivalent_diameter_um": float(np.median(table["equivalent_diameter_um"])),
                "mean_touching": float(table["touching"].mean()) if len(table) else 0.0,
                "cracked": int(table["cracked"].sum()),
                "network_mode": int((table["mode"] == 1).sum()),
            },
            "protocol": [dict(zip(res.protocol.dtype.names, map(float, row), strict=True))
                         for row in res.protocol],
            "noise_sigma": float(f.attrs["noise_sigma"]),
            "tiff": [p.name for p in res.tiff_paths],
            "provenance": json.loads(f.attrs["provenance"]),
        }
        preview = out / "preview.png"
        _preview(preview, f, res.n_steps - 1, layers)
    summary_path = atomic_write_json(out / "summary.json", summary)
    return PhantomOutput(res.path, res, summary_path, preview, summary)

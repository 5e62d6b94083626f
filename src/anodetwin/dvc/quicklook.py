"""Quick-look PNGs of DVC results: mid-slices of J-1 and e_zz, region histograms, the node
statuses and displacement uncertainty of the engine, and the mean strain of the electrode
halves over a series.

Slices are x-z planes through the middle of the cell grid (y), z up (collector at the
bottom), in um when the voxel size is known; colours are centred on zero strain and span
the 99th percentile of |strain|.
"""

from __future__ import annotations

import os

import numpy as np

from anodetwin.dvc.pair import PairResult
from anodetwin.dvc.regions import RegionStats
from anodetwin.strain import cell_mean, voxel_size_triple
from anodetwin.plotting import pyplot, save_png

__all__ = ["pair_quicklook", "series_quicklook"]


def _limit(a: np.ndarray) -> float:
    f = np.abs(a[np.isfinite(a)])
    return float(np.percentile(f, 99)) if f.size and np.percentile(f, 99) > 0 else 1e-3


def pair_quicklook(path: str | os.PathLike, result: PairResult,
                   regions: RegionStats | None = None, step_index: int = 0,
                   title: str | None = None) -> None:
    """Write a PNG with mid-slices of J-1 and e_zz and histograms of J-1.

    Parameters
    ----------
    path : path-like
        PNG to write (atomically).
    result : PairResult
        The field.
    regions : RegionStats, optional
        Histograms of the electrode and its halves at ``step_index``; without it, the
        histogram of all cells.
    step_index : int
        Row of ``regions`` that belongs to ``result``.
    title : str, optional
        Figure title.
    """
    plt = pyplot()
    vs = voxel_size_triple(result.voxel_size_um)
    unit = "um" if result.voxel_size_um is not None else "voxels"
    centres = cell_mean(np.reshape(result.nodes, (*result.grid_shape, 3)))
    y = centres.shape[1] // 2
    zc, xc = centres[:, y, 0, 0] * vs[0], centres[0, y, :, 2] * vs[2]
    dz = (zc[1] - zc[0]) / 2 if len(zc) > 1 else 0.5
    dx = (xc[1] - xc[0]) / 2 if len(xc) > 1 else 0.5
    ext = (xc[0] - dx, xc[-1] + dx, zc[0] - dz, zc[-1] + dz)
    fig, rows = plt.subplots(2, 3, figsize=(14, 8.6), constrained_layout=True)
    axes = rows[0]
    for ax, (name, a) in zip(axes[:2], (("J - 1", result.strain.volumetric),
                                        ("e_zz", result.strain.small["ezz"])), strict=True):
        lim = _limit(a)
        im = ax.imshow(a[:, y, :], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
                       extent=ext, interpolation="nearest", aspect="auto")
        ax.set_title(f"{name} (x-z slice at y = {centres[0, y, 0, 1] * vs[1]:.1f} {unit})",
                     fontsize=9)
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"z ({unit}), collector at the bottom")
        fig.colorbar(im, ax=ax, shrink=0.85, label=name)
    ax = axes[2]
    if regions is not None:
        edges = regions.edges
        for name in ("electrode", "collector_half", "separator_half"):
            r = regions.names.index(name)
            h = regions.hist["volumetric"][step_index, r]
            mean = regions.stats["volumetric"][step_index, r, 1]
            ax.stairs(h, edges, label=f"{name} (mean {mean:.3f})", fill=name == "electrode",
                      alpha=0.3 if name == "electrode" else 1.0)
        finite = np.flatnonzero(regions.hist["volumetric"][step_index].sum(axis=0))
        if finite.size:
            ax.set_xlim(edges[max(finite[0] - 1, 0)], edges[min(finite[-1] + 2, len(edges) - 1)])
    else:
        v = result.strain.volumetric[np.isfinite(result.strain.volumetric)]
        ax.hist(v, bins=60, histtype="step", label=f"all cells (mean {v.mean():.3f})"
                if v.size else "no valid cell")
    ax.set_xlabel("volumetric strain J - 1")
    ax.set_ylabel("cells")
    ax.legend(fontsize=8)
    ax.set_title("distribution of J - 1", fontsize=9)
    _status_row(fig, rows[1], result, vs, unit)
    fig.suptitle(f"{title + ' - ' if title else ''}engine: {result.matching}")
    save_png(fig, path)


def _status_row(fig, axes, result: PairResult, vs: np.ndarray, unit: str) -> None:
    """Node statuses (x: the cumulative field keeps the composed increments there) and
    displacement uncertainty on the mid x-z node slice, and the count of every status."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from anodetwin.dvc.correlate import ReturnStatus

    g = np.reshape(result.nodes, (*result.grid_shape, 3))
    y = g.shape[1] // 2
    z, x = g[:, y, 0, 0] * vs[0], g[0, y, :, 2] * vs[2]
    hz = (z[1] - z[0]) / 2 if len(z) > 1 else 0.5
    hx = (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    ext = (x[0] - hx, x[-1] + hx, z[0] - hz, z[-1] + hz)  # pixels centred on the nodes
    codes = sorted(int(c) for c in ReturnStatus)
    status = np.reshape(result.status, result.grid_shape)[:, y, :]
    cmap = ListedColormap(["#7f7f7f", "#bcbd22", "#9467bd", "#8c564b", "#e377c2", "#d62728",
                           "#ff7f0e", "#ffbb78", "#aec7e8", "#2ca02c"][:len(codes) + 1])
    norm = BoundaryNorm(np.array([*codes, codes[-1] + 1]) - 0.5, cmap.N)
    im = axes[0].imshow(status, cmap=cmap, norm=norm, origin="lower", extent=ext,
                        interpolation="nearest", aspect="auto")
    cb = fig.colorbar(im, ax=axes[0], shrink=0.85, ticks=codes)
    cb.ax.set_yticklabels([f"{c} {ReturnStatus(c).name.lower()}" for c in codes], fontsize=7)
    axes[0].set_title(f"node status (x-z slice at y = {g[0, y, 0, 1] * vs[1]:.1f} {unit})",
                      fontsize=9)
    iz, ix = np.nonzero(np.reshape(result.composed, result.grid_shape)[:, y, :])
    if len(iz):  # a cumulative field's nodes that keep the composed increments
        axes[0].plot(x[ix], z[iz], "kx", ms=4, label="composed increments")
        axes[0].legend(fontsize=7, loc="upper right")
    sigma = np.linalg.norm(np.reshape(result.uncertainty, (*result.grid_shape, 3)), axis=-1)
    im = axes[1].imshow(sigma[:, y, :], cmap="viridis", origin="lower", extent=ext,
                        interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=axes[1], shrink=0.85, label="|std of u| (voxels)")
    axes[1].set_title("displacement uncertainty (Gauss-Newton; NaN: not converged or spam)",
                      fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"z ({unit})")
    counts = [int(np.sum(result.status == c)) for c in codes]
    axes[2].barh([ReturnStatus(c).name.lower() for c in codes], counts, color="#1f77b4")
    axes[2].set_xlabel("nodes")
    n = int(np.sum(result.composed))
    axes[2].set_title(f"node statuses of {len(result.status)} nodes"
                      + (f" ({n} composed)" if n else ""), fontsize=9)


def series_quicklook(path: str | os.PathLike, regions: RegionStats) -> None:
    """Write a PNG of the mean J-1 and e_zz (with the 5-95% band) of the electrode and its
    halves per step.

    Parameters
    ----------
    path : path-like
        PNG to write (atomically).
    regions : RegionStats
        Statistics of the series (:func:`anodetwin.dvc.regions.region_statistics`).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    steps = np.array(regions.steps)
    for ax, m, label in zip(axes, ("volumetric", "ezz"), ("J - 1", "e_zz"), strict=True):
        for name in ("electrode", "collector_half", "separator_half"):
            r = regions.names.index(name)
            s = regions.stats[m][:, r]
            line, = ax.plot(steps, s[:, 1], "o-", label=name)
            ax.fill_between(steps, s[:, 4], s[:, 8], color=line.get_color(), alpha=0.15)
        ax.set_xlabel("step k (field T0 -> Tk)")
        ax.set_ylabel(f"{label}, mean and 5-95% band")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=8)
    fig.suptitle("cumulative strain of the electrode halves")
    save_png(fig, path)

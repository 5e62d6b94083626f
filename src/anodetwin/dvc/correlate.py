"""Local DVC of a pair of volumes on a regular node grid, built on spam.

For every node, the window of half-size ``hws`` around it in the reference volume is
registered (``spam.DIC.register``: Gauss-Newton on a 4x4 mapping Phi) onto the deformed
volume, starting from an initial Phi, exactly as ``spam.DIC.ldic`` does per node
(``spam.DIC.getImagettes`` extracts the windows with a search margin). The difference is how
the work is organised:

* nodes are processed in **batches**; each batch reads only the region of both volumes that
  its windows touch, from lazily opened volumes (:mod:`anodetwin.io`), so inputs larger than
  memory work;
* batches run in local worker **processes** or on a **Dask** cluster (``scheduler``), with
  results identical to a single process (each node sees the same windows);
* before the local correlation, an optional **global registration**
  (``spam.DIC.registerMultiscale`` on binned volumes) supplies the initial guess, and a
  **pyramid** of node spacings refines the field, each level starting from the previous
  level's field interpolated at its nodes.

Conventions: node positions (z, y, x) in voxels of the reference volume (spam's
``makeGrid``: first node one spacing from the origin); displacement u = Phi[:3, 3] in voxels,
so that the material at reference position X is found at X + u in the deformed volume.
Node status (:data:`STATUS`; spam's codes and two of anodetwin's): 2 converged,
1 iteration limit, -1..-3 diverged or singular, -5 window not fully inside the volume or
masked out, -6 no texture (the window's grey-value std is below ``min_texture_std``:
:data:`TEXTURE_FACTOR` times the noise level of the reference volume,
:func:`noise_level`; a window of noise alone has a std equal to it), -7 no valid start
(a NaN initial guess).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
import multiprocessing
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError
from anodetwin.log import get_logger, progress_bar

__all__ = ["DVCParams", "node_grid", "correlate_nodes", "initial_phi_field",
           "interpolate_displacement", "noise_level", "STATUS", "TEXTURE_FACTOR"]

log = get_logger("dvc")

#: Node status codes (module notes).
STATUS = {"converged": 2, "iteration_limit": 1, "outside": -5, "no_texture": -6,
          "no_start": -7}
#: A window has texture when its grey-value std is at least this many times the noise level
#: of the volume (white noise alone: 1.0; a window of noise correlated between neighbouring
#: voxels reads up to ~1.4 at correlation 0.5).
TEXTURE_FACTOR = 1.5


@dataclass(frozen=True)
class DVCParams:
    """Parameters of one local correlation level.

    Attributes
    ----------
    node_spacing : tuple of 3 int
        Node spacing (z, y, x) in voxels.
    hws : tuple of 3 int
        Half-window size (z, y, x) in voxels (window = 2 hws + 1).
    margin : int
        Search margin (voxels) added around the deformed window.
    max_iterations : int
        Gauss-Newton iterations per node.
    delta_phi_min : float
        Convergence criterion on the Phi increment.
    interpolation_order : int
        Image interpolation order in the registration (1 = trilinear).
    mask_coverage : float
        Minimum fraction of a window inside the mask for the node to be correlated.
    apply_f : str
        ``"all"`` (full Phi per window), ``"rigid"`` or ``"no"`` (translation only).
    search_range : int or 3 int
        If > 0, an integer-voxel pixel search (``spam``'s normalised cross-correlation search
        of ``getImagettes`` + ``_pixelSearch``, as ``spam.DIC.pixelSearchLocal`` does per
        node) over +-``search_range`` voxels (per axis z, y, x) around the initial guess
        comes first, for displacements larger than the window margin.
    min_texture_std : float
        A window whose grey-value std is below this (grey levels) has no texture: status -6,
        not correlated (0: only flat windows).
    """

    node_spacing: tuple = (35, 35, 35)
    hws: tuple = (35, 35, 35)
    margin: int = 3
    max_iterations: int = 50
    delta_phi_min: float = 1e-3
    interpolation_order: int = 1
    mask_coverage: float = 0.5
    apply_f: str = "all"
    search_range: tuple = (0, 0, 0)
    min_texture_std: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _triple(v: Any, name: str) -> tuple[int, int, int]:
    arr = np.broadcast_to(np.asarray(v), (3,))
    try:
        out = tuple(int(a) for a in arr)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} {v!r} is not an integer", f"give {name} in voxels") from None
    if min(out) < 1 or any(float(a) != float(b) for a, b in zip(out, arr, strict=True)):
        raise ParameterError(f"{name} {v!r} is below 1 voxel or not an integer",
                             f"give {name} >= 1 (voxels)")
    return out  # type: ignore[return-value]


def check_params(p: DVCParams, shape: tuple[int, int, int]) -> DVCParams:
    """Validate parameters against a volume shape; returns normalised parameters."""
    ns = _triple(p.node_spacing, "node spacing")
    hws = _triple(p.hws, "half-window size")
    for ax, (h, n) in enumerate(zip(hws, shape, strict=True)):
        if 2 * h + 1 > n:
            raise ParameterError(
                f"window of {2 * h + 1} voxels along {'zyx'[ax]} is larger than the volume "
                f"({n} voxels)", "use a smaller half-window size (--hws)")
    for ax, (s, n) in enumerate(zip(ns, shape, strict=True)):
        if s >= n:
            raise ParameterError(f"node spacing {s} along {'zyx'[ax]} leaves no node in a "
                                 f"volume of {n} voxels", "use a smaller node spacing")
    if p.apply_f not in ("all", "rigid", "no"):
        raise ParameterError(f"apply_f {p.apply_f!r} is unknown", "use 'all', 'rigid' or 'no'")
    sr = tuple(int(v) for v in np.broadcast_to(np.asarray(p.search_range), (3,)))
    if p.margin < 0 or p.max_iterations < 1 or min(sr) < 0:
        raise ParameterError("margin and search range must be >= 0 and max_iterations >= 1",
                             "fix the correlation parameters")
    if not (np.isfinite(p.min_texture_std) and p.min_texture_std >= 0):
        raise ParameterError(f"min_texture_std {p.min_texture_std!r}", "give a std >= 0")
    return DVCParams(ns, hws, int(p.margin), int(p.max_iterations), float(p.delta_phi_min),
                     int(p.interpolation_order), float(p.mask_coverage), p.apply_f, sr,
                     float(p.min_texture_std))


def node_grid(shape: tuple[int, int, int], node_spacing) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Regular node grid inside a volume (spam's ``makeGrid`` convention).

    Returns
    -------
    nodes : numpy.ndarray
        (N, 3) float positions (z, y, x) in voxels, z slowest.
    grid_shape : tuple of 3 int
        Nodes along z, y, x.
    """
    ns = _triple(node_spacing, "node spacing")
    axes = [np.arange(s, n, s, dtype=np.float64) for s, n in zip(ns, shape, strict=True)]
    if any(len(a) == 0 for a in axes):
        raise ParameterError(f"node spacing {ns} leaves no node in a volume of shape {shape}",
                             "use a smaller node spacing")
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return g.reshape(-1, 3), tuple(len(a) for a in axes)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# volumes for workers: an in-memory array, or a path that each worker opens lazily

@dataclass
class _Vol:
    array: np.ndarray | None = None
    path: str | None = None
    shape: tuple = ()

    def read(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        if self.array is not None:
            return np.asarray(self.array[box], dtype=np.float32)
        from anodetwin.io import open_volume

        with open_volume(self.path) as src:
            return src.read(box, progress=False).data.astype(np.float32)


def as_worker_volume(vol: Any, name: str | None = None) -> _Vol:
    """Wrap an array, a :class:`~anodetwin.io.Volume` or a path for the workers; with a
    ``name``, check that a floating-point volume is finite first (a file slab by slab)."""
    from anodetwin.io import require_finite

    if isinstance(vol, (str, os.PathLike)):
        from anodetwin.io import open_volume

        with open_volume(vol) as src:
            if name and np.issubdtype(src.dtype, np.floating):
                for block in src.lazy(progress=False).blocks():
                    require_finite(block, f"{name} '{vol}'")
            return _Vol(path=os.fspath(vol), shape=src.shape)
    arr = getattr(vol, "data", vol)
    arr = np.asarray(arr)
    if name:
        require_finite(arr, name)
    return _Vol(array=arr, shape=arr.shape)


def noise_level(vol: Any, max_slices: int = 16, per_slice: int = 200_000) -> float:
    """Grey-value noise std of a volume (z, y, x), read slice by slice.

    1.4826 times the median absolute deviation of the differences of neighbouring voxels
    along y and x, over sqrt(2), in up to ``max_slices`` evenly spaced z slices (at most
    ``per_slice`` differences each). Texture hardly moves it as long as most neighbouring
    voxels lie in one phase; a noise-free piecewise-constant volume gives 0. Noise that is
    correlated between neighbours reads lower than its std (by sqrt(1 - correlation)).

    Parameters
    ----------
    vol : numpy.ndarray, Volume or path
    """
    v = vol if isinstance(vol, _Vol) else as_worker_volume(vol)
    nz = int(v.shape[0])
    diffs = []
    for z in np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int)):
        a = v.read((slice(z, z + 1), slice(None), slice(None)))[0].astype(np.float64)
        d = np.concatenate([np.diff(a, axis=0).ravel(), np.diff(a, axis=1).ravel()])
        diffs.append(d[:: max(1, d.size // per_slice)])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


@dataclass
class _Batch:
    """Nodes to correlate together, with the region of the volumes their windows touch.

    In-memory volumes travel as that region only (pre-cut, so a worker never receives the
    whole volume); volumes on disk travel as paths and the worker reads the region."""

    index: np.ndarray
    nodes: np.ndarray
    phi: np.ndarray
    params: DVCParams
    shape: tuple
    box: tuple
    ref: _Vol | np.ndarray
    deformed: _Vol | np.ndarray
    mask: _Vol | np.ndarray | None = None

    @classmethod
    def make(cls, index, nodes, phi, params, ref: _Vol, deformed: _Vol,
             mask: _Vol | None) -> _Batch:
        box = _box(nodes, phi, params.hws, params.margin + max(params.search_range), ref.shape)

        def cut(v: _Vol | None):
            if v is None or v.array is None:
                return v
            return v.read(box)

        return cls(index, nodes, phi, params, tuple(ref.shape), box, cut(ref), cut(deformed),
                   cut(mask))

    def region(self, v: _Vol | np.ndarray) -> np.ndarray:
        return v if isinstance(v, np.ndarray) else v.read(self.box)


def _box(nodes: np.ndarray, phi: np.ndarray, hws, margin: int, shape) -> tuple[slice, ...]:
    pad = np.asarray(hws) + margin + 2  # margin: the search margin and the search range
    disp = np.nan_to_num(phi[:, :3, 3])
    lo = np.minimum(nodes - pad, nodes + np.floor(disp) - pad).min(axis=0)
    hi = np.maximum(nodes + pad, nodes + np.ceil(disp) + pad).max(axis=0) + 1
    return tuple(slice(int(max(0, a)), int(min(n, b)))
                 for a, b, n in zip(lo, hi, shape, strict=True))


@contextlib.contextmanager
def quiet_spam():
    """Silence spam's console output and its ComplexWarning chatter inside a block."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        yield


def _texture(w1: np.ndarray, min_std: float) -> tuple[bool, float]:
    """Whether a reference window has texture where ``spam.DIC.register`` compares it
    (inside its 1-voxel margin: grey-value std >= ``min_std``, and not flat), and the
    variance there."""
    v_in = float(np.nanvar(w1[1:-1, 1:-1, 1:-1]))
    return bool(np.nanvar(w1) > 0 and np.sqrt(v_in) >= min_std), v_in


def _run_batch(b: _Batch) -> tuple[np.ndarray, dict]:
    import importlib.resources  # noqa: F401  (spam.datasets needs it; harmless otherwise)

    import spam.DIC

    p = b.params
    im1 = b.region(b.ref)
    im2 = b.region(b.deformed)
    mask = b.region(b.mask) > 0 if b.mask is not None else None
    origin = np.array([s.start for s in b.box], dtype=np.float64)
    n = len(b.nodes)
    out = {"Phi": np.repeat(np.eye(4)[None], n, axis=0), "status": np.zeros(n),
           "error": np.full(n, np.inf), "iterations": np.zeros(n),
           "delta_phi_norm": np.full(n, np.inf), "residual": np.full(n, np.inf)}
    hws = np.array(p.hws)
    last = np.array(b.shape) - 1
    for k in range(n):
        phi0 = b.phi[k].copy()
        if not np.isfinite(phi0).all():
            out["Phi"][k, :3, 3] = np.nan
            out["status"][k] = STATUS["no_start"]
            continue
        if np.any(b.nodes[k] - hws < 0) or np.any(b.nodes[k] + hws > last):
            # spam would pad the window with zeros, whose edge then correlates by itself
            out["Phi"][k, :3, 3] = np.nan
            out["status"][k] = STATUS["outside"]
            continue
        if max(p.search_range) > 0:
            import spam.DIC.pixelSearch as ps

            sz, sy, sx = p.search_range
            with quiet_spam():
                ims = spam.DIC.getImagettes(im1, b.nodes[k] - origin, hws, phi0.copy(), im2,
                                            [-sz, sz, -sy, sy, -sx, sx], im1mask=mask,
                                            minMaskCoverage=p.mask_coverage, applyF="no",
                                            twoD=False)
                if ims["returnStatus"] == 1:
                    found = ps._pixelSearch(ims["imagette1"], ims["imagette2"],
                                            imagette1mask=ims["imagette1mask"],
                                            imagette2mask=ims["imagette2mask"])
                    phi0[:3, 3] = np.asarray(found[0]) + ims["pixelSearchOffset"]
        with quiet_spam():
            im = spam.DIC.getImagettes(im1, b.nodes[k] - origin, hws, phi0.copy(), im2,
                                       [-p.margin, p.margin] * 3, im1mask=mask,
                                       minMaskCoverage=p.mask_coverage, applyF="no",
                                       twoD=False)
        if im["returnStatus"] != 1:
            out["Phi"][k, :3, 3] = np.nan
            out["status"][k] = im["returnStatus"]
            continue
        w1 = np.asarray(im["imagette1"], dtype=np.float64)
        textured, v_in = _texture(w1, p.min_texture_std)
        if not textured:  # nothing to correlate
            out["Phi"][k, :3, 3] = np.nan
            out["status"][k] = STATUS["no_texture"]
            continue
        shift = np.round(phi0[:3, 3]).astype(int)
        phi0[:3, 3] -= shift
        with quiet_spam():
            r = spam.DIC.register(im["imagette1"], im["imagette2"], im1mask=im["imagette1mask"],
                                  PhiInit=phi0, margin=1, maxIterations=p.max_iterations,
                                  deltaPhiMin=p.delta_phi_min, PhiRigid=p.apply_f == "rigid",
                                  interpolationOrder=p.interpolation_order, verbose=False,
                                  imShowProgress=False)
        phi = r["Phi"]
        phi[:3, 3] += shift
        if p.apply_f == "no":
            phi[:3, :3] = np.eye(3)
        out["Phi"][k] = phi
        out["status"][k] = r["returnStatus"]
        out["error"][k] = r["error"]
        out["iterations"][k] = r["iterations"]
        out["delta_phi_norm"][k] = r["deltaPhiNorm"]
        # spam's error is SSD / sum over the window cropped by register's margin (1 voxel):
        # as mean squared residual / variance it reads like 1 - correlation, ~0 for a
        # match and ~2 for unrelated windows
        inner = w1[1:-1, 1:-1, 1:-1]
        out["residual"][k] = (float(r["error"]) * float(np.nanmean(inner)) / v_in
                              if v_in > 0 else np.inf)
    return b.index, out


def correlate_nodes(ref: Any, deformed: Any, nodes: np.ndarray, params: DVCParams,
                    phi_init: np.ndarray | None = None, mask: Any = None,
                    processes: int = 1, scheduler: str | None = None,
                    batch_size: int | None = None, progress: bool = True) -> dict:
    """Correlate the windows around ``nodes`` of ``ref`` onto ``deformed``.

    Parameters
    ----------
    ref, deformed : numpy.ndarray, Volume or path
        Volumes (z, y, x); paths are opened lazily by every worker.
    nodes : numpy.ndarray
        (N, 3) node positions in voxels of ``ref``.
    params : DVCParams
    phi_init : numpy.ndarray, optional
        (N, 4, 4) initial mappings (identity if omitted).
    mask : array, Volume or path, optional
        Labels; windows with less than ``params.mask_coverage`` of non-zero voxels are skipped.
    processes : int
        Local worker processes (1 = in this process).
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``) or ``"local"`` for a LocalCluster
        with ``processes`` workers; batches are then run there.
    batch_size : int, optional
        Nodes per batch (default: the nodes split evenly over 4 batches per worker).

    Returns
    -------
    dict
        ``Phi`` (N, 4, 4), ``status``, ``error``, ``iterations``, ``delta_phi_norm`` (N,)
        as spam returns them, and ``residual``: mean squared grey residual over the window
        variance (~0 for a good match, ~2 for unrelated windows). A flat window gets status
        -5.
    """
    r, d = as_worker_volume(ref), as_worker_volume(deformed)
    m = as_worker_volume(mask) if mask is not None else None
    n = len(nodes)
    phi = np.repeat(np.eye(4)[None], n, axis=0) if phi_init is None else np.array(phi_init, float)
    workers = max(1, int(processes))
    bs = batch_size or max(1, int(np.ceil(n / (4 * workers))))
    order = np.lexsort((nodes[:, 2], nodes[:, 1], nodes[:, 0]))  # batches are compact slabs
    batches = [_Batch.make(order[i:i + bs], nodes[order[i:i + bs]], phi[order[i:i + bs]],
                           params, r, d, m) for i in range(0, n, bs)]
    out = {"Phi": np.zeros((n, 4, 4)), "status": np.zeros(n), "error": np.zeros(n),
           "iterations": np.zeros(n), "delta_phi_norm": np.zeros(n), "residual": np.zeros(n)}

    def collect(results) -> None:
        with progress_bar("correlating nodes", total=n, enabled=progress, min_total=1) as adv:
            for idx, res in results:
                for k, v in res.items():
                    out[k][idx] = v
                adv(len(idx))

    if scheduler:
        from anodetwin.cluster import dask_client

        client, cluster = dask_client(scheduler, workers)
        try:
            with client:
                futures = client.map(_run_batch, batches, pure=False)
                collect(client.gather(futures))
        finally:
            if cluster is not None:
                cluster.close()
    elif workers == 1:
        collect(_run_batch(b) for b in batches)
    else:
        # fork is cheapest (what spam.DIC.ldic uses) but unsafe once threads run in this
        # process (e.g. after a Dask client): then start workers from a fork server
        method = "fork" if threading.active_count() == 1 else "forkserver"
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            collect(pool.map(_run_batch, batches))
    return out


def grid_index(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int],
               points: np.ndarray) -> np.ndarray:
    """Fractional node-grid indices (3, ...) of positions ``points`` (..., 3) in voxels,
    clipped to the grid (so that interpolation outside it takes the edge value)."""
    g = np.asarray(grid_nodes, float).reshape(*grid_shape, 3)
    first = g[0, 0, 0]
    step = np.array([(g[1, 0, 0, 0] - first[0]) if grid_shape[0] > 1 else 1.0,
                     (g[0, 1, 0, 1] - first[1]) if grid_shape[1] > 1 else 1.0,
                     (g[0, 0, 1, 2] - first[2]) if grid_shape[2] > 1 else 1.0])
    pts = np.asarray(points, float)
    return np.stack([np.clip((pts[..., i] - first[i]) / step[i], 0, grid_shape[i] - 1)
                     for i in range(3)])


def filled_grid(grid_shape: tuple[int, int, int], displacement: np.ndarray) -> np.ndarray:
    """Nodal displacements as a (gz, gy, gx, 3) array with NaN nodes replaced by their
    nearest valid node (all NaN if none is valid)."""
    from scipy import ndimage

    u = np.asarray(displacement, float).reshape(*grid_shape, 3).copy()
    bad = ~np.isfinite(u).all(axis=-1)
    if bad.any() and not bad.all():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        u = u[tuple(idx)]
    return u


def interpolate_displacement(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int],
                             displacement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Displacement of a regular node grid interpolated (trilinear, NaN-aware: nearest
    valid values fill NaN nodes first) at ``points`` (..., 3); outside the grid the edge
    value. Returns an array of shape (..., 3)."""
    from scipy import ndimage

    u = filled_grid(grid_shape, displacement)
    idx = grid_index(grid_nodes, grid_shape, points)
    return np.stack([ndimage.map_coordinates(u[..., c], idx, order=1) for c in range(3)],
                    axis=-1)


def initial_phi_field(nodes: np.ndarray, phi_global: np.ndarray | None,
                      centre: np.ndarray | None) -> np.ndarray:
    """Per-node initial Phi from a global mapping ``phi_global`` about ``centre`` (its
    displacement at each node, and its F), or identities."""
    n = len(nodes)
    out = np.repeat(np.eye(4)[None], n, axis=0)
    if phi_global is None:
        return out
    F = phi_global[:3, :3]
    t = phi_global[:3, 3]
    c = np.zeros(3) if centre is None else np.asarray(centre, float)
    out[:, :3, :3] = F
    out[:, :3, 3] = (nodes - c) @ (F - np.eye(3)).T + t
    return out

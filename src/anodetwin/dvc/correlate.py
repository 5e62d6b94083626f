"""Local DVC of a pair of volumes on a regular node grid, built on spam.

For every node, the window of half-size ``hws`` around it in the reference volume is
registered (``spam.DIC.register``: Gauss-Newton on a 4x4 mapping Phi) onto the deformed
volume, starting from an initial Phi, exactly as ``spam.DIC.ldic`` does per node
(``spam.DIC.getImagettes`` extracts the windows with a search margin). The difference is how
the work is organised:

* nodes are processed in **batches**, compact blocks of the node grid
  (:func:`batch_groups`); each batch reads only the box of both volumes that its windows
  touch, from volumes on disk or lazy views (:mod:`anodetwin.dvc.volumes`), so inputs larger
  than memory work with a memory use set by the window size, not the volume size;
* batches run in local worker **processes** or on a **Dask** cluster (``scheduler``), with
  results identical to a single process (each node sees the same windows);
* before the local correlation, an optional **global registration**
  (``spam.DIC.registerMultiscale`` on binned volumes) supplies the initial guess, and a
  **pyramid** of node spacings refines the field, each level starting from the previous
  level's field interpolated at its nodes.

Conventions: node positions (z, y, x) in voxels of the reference volume (spam's
``makeGrid``: first node one spacing from the origin); displacement u = Phi[:3, 3] in voxels,
so that the material at reference position X is found at X + u in the deformed volume.
Node status (:class:`ReturnStatus`; spam's codes and two of anodetwin's): 2 converged,
1 iteration limit, -1 diverging error, -2 singular system, -3 diverging volume change,
-4 singular Phi, -5 window not fully inside the volume or masked out, -6 no texture (the
window's grey-value std is below ``min_texture_std``: :data:`TEXTURE_FACTOR` times the
noise level of the reference volume, :func:`noise_level`; a window of noise alone has a std
equal to it), -7 no valid start (a NaN initial guess).
"""

from __future__ import annotations

import collections
import contextlib
import io
import sys
import threading
import warnings
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from anodetwin.dvc.volumes import WorkerVolume, as_worker_volume
from anodetwin.errors import ParameterError
from anodetwin.log import get_logger, progress_bar

__all__ = ["DVCParams", "NodeResults", "ReturnStatus", "WindowStatus", "node_grid",
           "grid_step", "correlate_nodes", "initial_phi_field", "interpolate_displacement",
           "interpolate_phi",
           "noise_level", "STATUS", "TEXTURE_FACTOR", "ENGINES", "INTERPOLATION_ORDER",
           "batch_tile", "batch_groups", "BATCH_VOXELS", "NATIVE_BATCH",
           "REFERENCE_MODELS", "SHAPE_FUNCTIONS"]

log = get_logger("dvc")


class ReturnStatus(IntEnum):
    """Status of a node's correlation: ``spam.DIC.register``'s return codes (2 .. -4), the
    window extraction's (-5) and anodetwin's own (-6, -7).

    Attributes
    ----------
    CONVERGED : 2
        The norm of the Phi increment fell below ``delta_phi_min``.
    ITERATION_LIMIT : 1
        ``max_iterations`` reached before that.
    DIVERGED : -1
        The error grew (more than 80% of the previous one) after half the iterations.
    SINGULAR : -2
        The Gauss-Newton matrix cannot be inverted (most often: too little texture).
    VOLUME_CHANGE : -3
        det U left [0.2, 3]: the iteration diverges.
    SINGULAR_PHI : -4
        Phi cannot be inverted.
    OUTSIDE : -5
        The window is not fully inside the volume, or less than ``mask_coverage`` of it is
        inside the mask (``spam.DIC.getImagettes`` refused it).
    NO_TEXTURE : -6
        The window's grey-value std is below ``min_texture_std``: not correlated.
    NO_START : -7
        The initial guess is not finite: not correlated.
    """

    CONVERGED = 2
    ITERATION_LIMIT = 1
    DIVERGED = -1
    SINGULAR = -2
    VOLUME_CHANGE = -3
    SINGULAR_PHI = -4
    OUTSIDE = -5
    NO_TEXTURE = -6
    NO_START = -7

    @classmethod
    def not_measured(cls, status: Any) -> Any:
        """Whether nodes carry no measurement at all.

        Parameters
        ----------
        status : int or array of codes
            Node statuses.

        Returns
        -------
        bool or numpy.ndarray of bool
            True for a window outside or masked, without texture or without start
            (status -5 and below).
        """
        return np.asarray(status) <= cls.OUTSIDE

    @classmethod
    def failed(cls, status: Any) -> Any:
        """Whether a registration ended in a failure.

        Parameters
        ----------
        status : int or numpy.ndarray
            What ``spam.DIC.register`` returned.

        Returns
        -------
        numpy.ndarray of bool
            True where the code is negative (0-d for one code).
        """
        return np.asarray(status) < 0


class WindowStatus(IntEnum):
    """Return status of ``spam.DIC.getImagettes`` (window extraction).

    Attributes
    ----------
    EXTRACTED : 1
        Both windows were extracted.
    REJECTED : -5
        Outside the volume or masked out (becomes :attr:`ReturnStatus.OUTSIDE`).
    """

    EXTRACTED = 1
    REJECTED = -5


#: Node status codes by name (module notes), as :class:`ReturnStatus` members.
STATUS = {"converged": ReturnStatus.CONVERGED, "iteration_limit": ReturnStatus.ITERATION_LIMIT,
          "outside": ReturnStatus.OUTSIDE, "no_texture": ReturnStatus.NO_TEXTURE,
          "no_start": ReturnStatus.NO_START}
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
        Interpolation of the deformed volume in the registration: 3 cubic B-spline
        (default; ~10x less bias than trilinear on real tomograms), 1 trilinear (spam's
        default, faster).
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
    engine : {"native", "spam"}
        ``"native"``: anodetwin's IC-GN engine (:mod:`anodetwin.dvc.native`); ``"spam"``:
        ``spam.DIC.register`` per node, as ``spam.DIC.ldic``.
    criterion : {"", "znssd", "ssd"}
        Matching criterion: ``""`` the engine's own (native ZNSSD, spam SSD); the native
        engine takes either, spam only SSD.
    robust : bool
        Native engine: after the plain match, iteratively re-weighted least squares with
        Tukey's biweight on the residual averaged over 3 x 3 x 3 voxels
        (:data:`anodetwin.dvc._icgn.TUKEY`): voxels whose grey value changed between the
        scans (lithiated Si taking the binder's grey value) stop pulling the window.
    shape_function : {"affine", "quadratic", "quadratic-z"}
        Native engine: the 12-parameter affine map (as spam), the 30-parameter
        second-order one (affine plus the displacement's second derivatives), or
        ``quadratic-z`` (affine plus the 3 second derivatives along z, d2u/dz2: a swelling
        that changes through the electrode's thickness). A second-order map removes the
        bias of an affine window in a curved field at the cost of more noise and
        iterations; the fewer its parameters, the less noise.
    reference_model : {"grey", "phases"}
        Native engine: the windows' reference, the reference scan's grey values or a model
        of it from its phases (:mod:`anodetwin.dvc.model`; the phases go to
        :func:`correlate_nodes` as ``model``), fitted to each deformed window and matched
        by SSD (criterion ``""`` or ``"ssd"``): for phases whose grey value changes between
        the scans. Use it with ``robust``: the model's grey values are fitted robustly,
        but without re-weighting the voxels that changed still pull the match.
    psf_sigma : float
        Point-spread sigma (voxels) of the phase model (:func:`anodetwin.dvc.model.fit_psf`).
    """

    node_spacing: tuple = (35, 35, 35)
    hws: tuple = (35, 35, 35)
    margin: int = 3
    max_iterations: int = 50
    delta_phi_min: float = 1e-3
    interpolation_order: int = 3
    mask_coverage: float = 0.5
    apply_f: str = "all"
    search_range: tuple = (0, 0, 0)
    min_texture_std: float = 0.0
    engine: str = "native"
    criterion: str = ""
    robust: bool = False
    shape_function: str = "affine"
    reference_model: str = "grey"
    psf_sigma: float = 0.0

    def to_dict(self) -> dict:
        """The parameters as a dict, e.g. for a result file.

        Returns
        -------
        dict
            Field name: value (spacings, half-windows and search range as given).
        """
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
    """Validate parameters against a volume shape.

    Parameters
    ----------
    p : DVCParams
        Parameters as given.
    shape : 3 int
        Shape (z, y, x) of the volumes to correlate.

    Returns
    -------
    DVCParams
        Normalised parameters (spacings, half-windows and search range as 3 ints).

    Raises
    ------
    ParameterError
        A window larger than the volume, a spacing that leaves no node, an unknown
        ``apply_f``, a negative margin or search range, no iteration, a negative texture
        threshold.
    """
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
    _check_engine(p)
    criterion = p.criterion or ("znssd" if p.engine == "native" and p.reference_model == "grey"
                                else "ssd")
    return DVCParams(ns, hws, int(p.margin), int(p.max_iterations), float(p.delta_phi_min),
                     int(p.interpolation_order), float(p.mask_coverage), p.apply_f, sr,
                     float(p.min_texture_std), p.engine, criterion, bool(p.robust),
                     p.shape_function, p.reference_model, float(p.psf_sigma))


#: Correlation engines by name.
ENGINES = ("native", "spam")
#: Shape functions of the native engine.
SHAPE_FUNCTIONS = ("affine", "quadratic", "quadratic-z")
#: References of the native engine's windows: the scan's grey values or its phases' model.
REFERENCE_MODELS = ("grey", "phases")
#: Interpolation of the deformed volume by name, as interpolation orders.
INTERPOLATION_ORDER = {"linear": 1, "cubic": 3}


def _check_engine(p: DVCParams) -> None:
    if p.engine not in ENGINES:
        raise ParameterError(f"DVC engine {p.engine!r} is unknown", "use 'native' or 'spam'")
    if p.criterion not in ("", "znssd", "ssd"):
        raise ParameterError(f"criterion {p.criterion!r} is unknown", "use 'znssd' or 'ssd'")
    if p.engine == "spam" and p.criterion == "znssd":
        raise ParameterError("criterion 'znssd' with engine 'spam' (spam minimises SSD)",
                             "use engine 'native' for ZNSSD, or criterion 'ssd'")
    if p.interpolation_order not in (1, 3):
        raise ParameterError(f"interpolation order {p.interpolation_order!r}",
                             "use 1 (trilinear) or 3 (cubic B-spline)")
    if p.shape_function not in SHAPE_FUNCTIONS:
        raise ParameterError(f"shape function {p.shape_function!r} is unknown",
                             "use 'affine', 'quadratic' or 'quadratic-z'")
    if p.engine == "spam" and (p.robust or p.shape_function != "affine"):
        what = ("robust re-weighting" if p.robust
                else f"shape function {p.shape_function!r}")
        raise ParameterError(f"{what} with engine 'spam' (spam has neither)",
                             "use engine 'native' (--engine native) for it, or leave it off")
    if p.shape_function != "affine" and p.apply_f != "all":
        raise ParameterError(f"shape function {p.shape_function!r} with apply_f {p.apply_f!r}",
                             "use apply_f 'all' with a quadratic shape function")
    if p.reference_model not in REFERENCE_MODELS:
        raise ParameterError(f"reference model {p.reference_model!r} is unknown",
                             "use 'grey' or 'phases'")
    if p.reference_model == "phases" and p.engine != "native":
        raise ParameterError("reference model 'phases' with engine 'spam' (spam has none)",
                             "use engine 'native' (--engine native) for it")
    if p.reference_model == "phases" and p.criterion == "znssd":
        raise ParameterError("criterion 'znssd' with reference model 'phases' (the model's "
                             "grey values are fitted to each window and matched by SSD)",
                             "leave the criterion out (or give 'ssd') with the phase model")
    if not (np.isfinite(p.psf_sigma) and p.psf_sigma >= 0):
        raise ParameterError(f"point-spread sigma {p.psf_sigma!r}", "give a sigma >= 0 voxels")
    if p.engine == "native" and p.apply_f == "rigid":
        raise ParameterError("apply_f 'rigid' is not available in the native engine",
                             "use apply_f 'all' or 'no', or engine 'spam'")


def node_grid(shape: tuple[int, int, int], node_spacing) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Regular node grid inside a volume (spam's ``makeGrid`` convention).

    Parameters
    ----------
    shape : 3 int
        Volume shape (z, y, x).
    node_spacing : int or 3 int
        Node spacing (voxels); the first node is one spacing from the origin.

    Returns
    -------
    nodes : numpy.ndarray
        (N, 3) float positions (z, y, x) in voxels, z slowest.
    grid_shape : tuple of 3 int
        Nodes along z, y, x.

    Raises
    ------
    ParameterError
        A spacing below 1 voxel, not an integer, or leaving no node.
    """
    ns = _triple(node_spacing, "node spacing")
    axes = [np.arange(s, n, s, dtype=np.float64) for s, n in zip(ns, shape, strict=True)]
    if any(len(a) == 0 for a in axes):
        raise ParameterError(f"node spacing {ns} leaves no node in a volume of shape {shape}",
                             "use a smaller node spacing")
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return g.reshape(-1, 3), tuple(len(a) for a in axes)  # type: ignore[return-value]


def grid_step(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int]) -> np.ndarray:
    """Node spacing of a regular node grid, read from its node positions.

    Parameters
    ----------
    grid_nodes : numpy.ndarray
        (N, 3) node positions (z, y, x; voxels), z slowest, N = prod(grid_shape).
    grid_shape : 3 int
        Nodes along z, y, x.

    Returns
    -------
    numpy.ndarray
        (3,) spacing along z, y, x in the unit of the positions (1 along an axis with a
        single node). Times the voxel size it is the spacing in um
        (:func:`anodetwin.strain.node_spacing_um`).
    """
    g = np.asarray(grid_nodes, float).reshape(*grid_shape, 3)
    first = g[0, 0, 0]
    return np.array([(g[1, 0, 0, 0] - first[0]) if grid_shape[0] > 1 else 1.0,
                     (g[0, 1, 0, 1] - first[1]) if grid_shape[1] > 1 else 1.0,
                     (g[0, 0, 1, 2] - first[2]) if grid_shape[2] > 1 else 1.0])


def noise_level(vol: Any, max_slices: int = 16, per_slice: int = 200_000) -> float:
    """Grey-value noise std of a volume (z, y, x), read slice by slice.

    1.4826 times the median absolute deviation of the differences of neighbouring voxels
    along y and x, over sqrt(2), in up to ``max_slices`` evenly spaced z slices (at most
    ``per_slice`` differences each). Texture hardly moves it as long as most neighbouring
    voxels lie in one phase; a noise-free piecewise-constant volume gives 0. Noise that is
    correlated between neighbours reads lower than its std (by sqrt(1 - correlation)).

    Parameters
    ----------
    vol : numpy.ndarray, Volume, path, LazyVolume, h5py.Dataset or WorkerVolume
        The volume (z, y, x) (:func:`anodetwin.dvc.volumes.as_worker_volume`).
    max_slices : int
        z slices read at most.
    per_slice : int
        Differences taken per slice at most.

    Returns
    -------
    float
        Noise std (grey levels); 0 when nothing finite was read.
    """
    v = as_worker_volume(vol)
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
    whole volume); volumes on disk travel as their description (path, region, binning) and
    the worker reads the box."""

    index: np.ndarray
    nodes: np.ndarray
    phi: np.ndarray
    params: DVCParams
    shape: tuple
    box: tuple
    ref: WorkerVolume | np.ndarray
    deformed: WorkerVolume | np.ndarray
    mask: WorkerVolume | np.ndarray | None = None
    model: WorkerVolume | np.ndarray | None = None

    @classmethod
    def make(cls, index, nodes, phi, params, ref: WorkerVolume, deformed: WorkerVolume,
             mask: WorkerVolume | None, model: WorkerVolume | None = None) -> _Batch:
        box = _box(nodes, phi, params.hws, _pad(params), ref.shape)

        def cut(v: WorkerVolume | None):
            if v is None or v.array is None:
                return v
            return v.read(box)

        return cls(index, nodes, phi, params, tuple(ref.shape), box, cut(ref), cut(deformed),
                   cut(mask), cut(model))

    def region(self, v: WorkerVolume | np.ndarray) -> np.ndarray:
        return v if isinstance(v, np.ndarray) else v.read(self.box)


def _pad(params: DVCParams) -> int:
    """Voxels a batch's box reaches beyond the windows: the search margin and range, and
    one more for the cubic B-spline."""
    return params.margin + max(params.search_range) + (params.interpolation_order > 1)


def _box(nodes: np.ndarray, phi: np.ndarray, hws, margin: int, shape) -> tuple[slice, ...]:
    pad = np.asarray(hws) + margin + 2  # margin: the search margin and the search range
    disp = np.nan_to_num(phi[:, :3, 3])
    lo = np.minimum(nodes - pad, nodes + np.floor(disp) - pad).min(axis=0)
    hi = np.maximum(nodes + pad, nodes + np.ceil(disp) + pad).max(axis=0) + 1
    return tuple(slice(int(max(0, a)), int(min(n, b)))
                 for a, b, n in zip(lo, hi, shape, strict=True))


#: Voxels of a batch's box at most (per volume, before the displacement widens it): the
#: native engine holds float32 copies of both regions and the B-spline coefficients,
#: ~12 bytes a voxel, so ~0.4 GB for this.
BATCH_VOXELS = 32 * 2**20


def batch_tile(params: DVCParams, max_nodes: int,
               max_voxels: int | None = None) -> tuple[int, int, int]:
    """Nodes per axis (z, y, x) of the node tiles that make the batches.

    A batch is a compact block of the node grid, so that the box of the volumes it reads
    stays small whatever the size of the volume: the tile grows one node at a time along
    x, y, z in turn while it holds at most ``max_nodes`` nodes and its box (windows and
    search margin) at most ``max_voxels`` voxels.

    Parameters
    ----------
    params : DVCParams
        Checked parameters of the level (node spacing, half-window, margins).
    max_nodes : int
        Nodes per batch at most.
    max_voxels : int, optional
        Voxels of the box at most (default :data:`BATCH_VOXELS`; one node per tile always).

    Returns
    -------
    tuple of 3 int
        Nodes per tile along z, y, x.
    """
    max_voxels = BATCH_VOXELS if max_voxels is None else int(max_voxels)
    spacing = np.broadcast_to(np.asarray(params.node_spacing, int), (3,))
    reach = 2 * (np.asarray(params.hws, int) + _pad(params) + 2) + 1
    n = np.ones(3, int)
    grown = True
    while grown:
        grown = False
        for ax in (2, 1, 0):
            m = n.copy()
            m[ax] += 1
            if np.prod(m) <= max_nodes and np.prod((m - 1) * spacing + reach) <= max_voxels:
                n, grown = m, True
    return (int(n[0]), int(n[1]), int(n[2]))


def batch_groups(nodes: np.ndarray, params: DVCParams, max_nodes: int) -> list[np.ndarray]:
    """The nodes of each batch: node tiles (:func:`batch_tile`), at most ``max_nodes``
    each, nodes in (z, y, x) order inside a tile and tiles in (z, y, x) order.

    Parameters
    ----------
    nodes : numpy.ndarray
        (N, 3) node positions (voxels).
    params : DVCParams
        Checked parameters of the level.
    max_nodes : int
        Nodes per batch at most.

    Returns
    -------
    list of numpy.ndarray
        Indices into ``nodes``, one array per batch; together every node once. They depend
        on the nodes and parameters only (not on the workers), so that results do too.
    """
    if len(nodes) == 0:
        return []
    spacing = np.broadcast_to(np.asarray(params.node_spacing, float), (3,))
    extent = np.asarray(batch_tile(params, max_nodes), float) * spacing
    key = np.floor((nodes - spacing) / extent).astype(np.int64)
    order = np.lexsort((nodes[:, 2], nodes[:, 1], nodes[:, 0], key[:, 2], key[:, 1],
                        key[:, 0]))
    k = key[order]
    cuts = np.flatnonzero(np.any(k[1:] != k[:-1], axis=1)) + 1
    return [run[i:i + max_nodes] for run in np.split(order, cuts)
            for i in range(0, len(run), max_nodes)]


@contextlib.contextmanager
def quiet_spam():
    """Silence spam's console output and its ComplexWarning chatter inside a block.

    Yields
    ------
    None
    """
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        yield


def _texture(w1: np.ndarray, min_std: float) -> tuple[bool, float]:
    """Whether a reference window has texture where ``spam.DIC.register`` compares it
    (inside its 1-voxel margin: grey-value std >= ``min_std``, and not flat), and the
    variance there."""
    v_in = float(np.nanvar(w1[1:-1, 1:-1, 1:-1]))
    return bool(np.nanvar(w1) > 0 and np.sqrt(v_in) >= min_std), v_in


@dataclass(frozen=True)
class NodeResults:
    """Per-node results of :func:`correlate_nodes` (arrays over the N nodes).

    Attributes
    ----------
    Phi : numpy.ndarray
        (N, 4, 4) measured mappings (displacement ``Phi[:, :3, 3]`` in voxels; NaN
        translation where not correlated).
    status : numpy.ndarray
        (N,) :class:`ReturnStatus` codes (as floats, spam's layout).
    error : numpy.ndarray
        (N,) spam's registration error.
    iterations : numpy.ndarray
        (N,) Gauss-Newton iterations.
    delta_phi_norm : numpy.ndarray
        (N,) norm of the last Phi increment.
    residual : numpy.ndarray
        (N,) mean squared grey residual over the window variance (~0 for a good match, ~2
        for unrelated windows; inf where not correlated).
    zncc : numpy.ndarray
        (N,) zero-normalised cross-correlation of the matched windows (native engine; NaN
        where not measured or with spam).
    uncertainty : numpy.ndarray
        (N, 3) displacement std (z, y, x; voxels) from the Gauss-Newton covariance (native
        engine; NaN where not converged or with spam).

    Items can also be read by name, ``results["Phi"]``, as from a dict.
    """

    Phi: NDArray[np.float64]
    status: NDArray[np.float64]
    error: NDArray[np.float64]
    iterations: NDArray[np.float64]
    delta_phi_norm: NDArray[np.float64]
    residual: NDArray[np.float64]
    zncc: NDArray[np.float64]
    uncertainty: NDArray[np.float64]

    @classmethod
    def unmeasured(cls, n: int) -> NodeResults:
        """Results of nodes not correlated yet.

        Parameters
        ----------
        n : int
            Number of nodes.

        Returns
        -------
        NodeResults
            Identity Phi, status 0, inf error, residual and increment norm, 0 iterations,
            NaN ZNCC and uncertainty.
        """
        return cls(np.repeat(np.eye(4)[None], n, axis=0), np.zeros(n), np.full(n, np.inf),
                   np.zeros(n), np.full(n, np.inf), np.full(n, np.inf), np.full(n, np.nan),
                   np.full((n, 3), np.nan))

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def keys(self) -> tuple[str, ...]:
        """Field names, as a dict's keys.

        Returns
        -------
        tuple of str
        """
        return tuple(f.name for f in fields(self))

    def put(self, index: np.ndarray, other: NodeResults) -> None:
        """Store the results of some nodes.

        Parameters
        ----------
        index : numpy.ndarray
            Rows to fill.
        other : NodeResults
            Results of those nodes, in the order of ``index``.
        """
        for name in self.keys():
            getattr(self, name)[index] = getattr(other, name)

    def exclude(self, k: int, status: ReturnStatus) -> None:
        """Mark a node as not correlated.

        Parameters
        ----------
        k : int
            Row of the node: its translation becomes NaN.
        status : ReturnStatus
            Why it was not correlated.
        """
        self.Phi[k, :3, 3] = np.nan
        self.status[k] = status


def _search_start(p: DVCParams, im1: np.ndarray, im2: np.ndarray, mask: np.ndarray | None,
                  position: np.ndarray, hws: np.ndarray, phi0: np.ndarray) -> None:
    """Integer pixel search around ``phi0`` (updated in place) over ``p.search_range``."""
    import spam.DIC
    import spam.DIC.pixelSearch as ps

    sz, sy, sx = p.search_range
    with quiet_spam():
        ims = spam.DIC.getImagettes(im1, position, hws, phi0.copy(), im2,
                                    [-sz, sz, -sy, sy, -sx, sx], im1mask=mask,
                                    minMaskCoverage=p.mask_coverage, applyF="no", twoD=False)
        if ims["returnStatus"] == WindowStatus.EXTRACTED:
            found = ps._pixelSearch(ims["imagette1"], ims["imagette2"],
                                    imagette1mask=ims["imagette1mask"],
                                    imagette2mask=ims["imagette2mask"])
            phi0[:3, 3] = np.asarray(found[0]) + ims["pixelSearchOffset"]


def _register(p: DVCParams, im: dict, w1: np.ndarray, v_in: float, phi0: np.ndarray,
              out: NodeResults, k: int) -> None:
    """``spam.DIC.register`` of the extracted windows ``im`` from ``phi0``; row ``k`` of
    ``out`` gets the result."""
    import spam.DIC

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
    out.Phi[k] = phi
    out.status[k] = r["returnStatus"]
    out.error[k] = r["error"]
    out.iterations[k] = r["iterations"]
    out.delta_phi_norm[k] = r["deltaPhiNorm"]
    # spam's error is SSD / sum over the window cropped by register's margin (1 voxel):
    # as mean squared residual / variance it reads like 1 - correlation, ~0 for a
    # match and ~2 for unrelated windows
    inner = w1[1:-1, 1:-1, 1:-1]
    out.residual[k] = (float(r["error"]) * float(np.nanmean(inner)) / v_in
                       if v_in > 0 else np.inf)


def window_inside(nodes: np.ndarray, hws: Any, shape: tuple) -> np.ndarray:
    """Share of each node's window inside the volume.

    The native engine registers a window at the volume's faces on the voxels inside it
    when that share reaches ``mask_coverage``; spam would pad the window with zeros (whose
    edge then correlates by itself), so its windows must lie inside.

    Parameters
    ----------
    nodes : numpy.ndarray
        (N, 3) node positions (voxels).
    hws : 3 int
        Half-window size (voxels).
    shape : 3 int
        Volume shape (z, y, x).

    Returns
    -------
    numpy.ndarray
        (N,) share in [0, 1].
    """
    c, h = np.round(np.asarray(nodes)).astype(int), np.asarray(hws, int)
    lo = np.maximum(c - h, 0)
    hi = np.minimum(c + h, np.asarray(shape) - 1)
    return np.prod(np.clip(hi - lo + 1, 0, None) / (2 * h + 1), axis=1)


def _excluded_before(b: _Batch, out: NodeResults) -> np.ndarray:
    """Nodes without a finite start (-7) or whose window leaves the volume (-5), marked in
    ``out``; returns the others' mask."""
    hws = np.array(b.params.hws)
    no_start = ~np.isfinite(b.phi).all(axis=(1, 2))
    outside = ~no_start & (window_inside(b.nodes, hws, b.shape)
                           < (b.params.mask_coverage if b.params.engine == "native" else 1.0))
    for k in np.flatnonzero(no_start):
        out.exclude(k, ReturnStatus.NO_START)
    for k in np.flatnonzero(outside):
        out.exclude(k, ReturnStatus.OUTSIDE)
    return ~no_start & ~outside


def _run_native(b: _Batch) -> tuple[np.ndarray, NodeResults]:
    """A batch through the native engine (:mod:`anodetwin.dvc.native`)."""
    from anodetwin.dvc.model import phase_channels
    from anodetwin.dvc.native import ROBUST, integer_search, register_windows

    p = b.params
    im1, im2 = b.region(b.ref), b.region(b.deformed)
    basis = None if b.model is None else phase_channels(b.region(b.model), p.psf_sigma)
    mask = b.region(b.mask) > 0 if b.mask is not None else None
    origin = np.array([s.start for s in b.box])
    out = NodeResults.unmeasured(len(b.nodes))
    todo = np.flatnonzero(_excluded_before(b, out))
    centres = np.round(b.nodes[todo]).astype(np.int64) - origin
    phi0 = b.phi[todo]
    if max(p.search_range) > 0:
        phi0 = integer_search(im1, im2, mask, centres, phi0, p.hws, p.search_range)
    r = register_windows(im1, im2, mask, centres, phi0, p.hws, order=p.interpolation_order,
                         criterion=p.criterion or "znssd", max_iterations=p.max_iterations,
                         delta_min=p.delta_phi_min, min_std=p.min_texture_std,
                         mask_coverage=p.mask_coverage, translation_only=p.apply_f == "no",
                         slack=p.margin, origin=origin, volume_shape=b.shape,
                         robust=ROBUST if p.robust else 0.0,
                         shape_function=p.shape_function, basis=basis)
    for name in out.keys():
        if name in r:
            getattr(out, name)[todo] = r[name]
    unmeasured = ReturnStatus.not_measured(r["status"])
    out.Phi[todo[unmeasured], :3, 3] = np.nan
    return b.index, out


def _run_batch(b: _Batch) -> tuple[np.ndarray, NodeResults]:
    if b.params.engine == "native":
        return _run_native(b)
    import importlib.resources  # noqa: F401  (spam.datasets needs it; harmless otherwise)

    import spam.DIC

    p = b.params
    im1 = b.region(b.ref)
    im2 = b.region(b.deformed)
    mask = b.region(b.mask) > 0 if b.mask is not None else None
    origin = np.array([s.start for s in b.box], dtype=np.float64)
    out = NodeResults.unmeasured(len(b.nodes))
    hws = np.array(p.hws)
    for k in np.flatnonzero(_excluded_before(b, out)):
        phi0 = b.phi[k].copy()
        if max(p.search_range) > 0:
            _search_start(p, im1, im2, mask, b.nodes[k] - origin, hws, phi0)
        with quiet_spam():
            im = spam.DIC.getImagettes(im1, b.nodes[k] - origin, hws, phi0.copy(), im2,
                                       [-p.margin, p.margin] * 3, im1mask=mask,
                                       minMaskCoverage=p.mask_coverage, applyF="no",
                                       twoD=False)
        if im["returnStatus"] != WindowStatus.EXTRACTED:
            out.exclude(k, ReturnStatus.OUTSIDE)
            continue
        w1 = np.asarray(im["imagette1"], dtype=np.float64)
        textured, v_in = _texture(w1, p.min_texture_std)
        if not textured:  # nothing to correlate
            out.exclude(k, ReturnStatus.NO_TEXTURE)
            continue
        _register(p, im, w1, v_in, phi0, out, k)
    return b.index, out


def _bounded(submit: Any, batches: Iterator[_Batch], limit: int) -> Iterator[tuple]:
    """Results of ``submit(batch).result()`` with at most ``limit`` batches in flight, so
    that only those are cut from in-memory volumes at a time."""
    pending: collections.deque = collections.deque()
    for b in batches:
        pending.append(submit(b))
        if len(pending) >= limit:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _run_batches(batches: Iterator[_Batch], engine: str, out: NodeResults, workers: int,
                 scheduler: str | None, progress: bool) -> None:
    """Run ``batches`` (made as they are needed) in this process, local worker processes
    or on a Dask cluster and store their results in ``out``."""
    n = len(out.status)

    def collect(results) -> None:
        with progress_bar("correlating nodes", total=n, enabled=progress, min_total=1) as adv:
            for idx, res in results:
                out.put(idx, res)
                adv(len(idx))

    if scheduler:
        from anodetwin.cluster import dask_client

        client, cluster = dask_client(scheduler, workers)
        try:
            with client:
                slots = max(workers, sum(client.nthreads().values()))
                collect(_bounded(lambda b: client.submit(_run_batch, b, pure=False),
                                 batches, 2 * slots))
        finally:
            if cluster is not None:
                cluster.close()
    elif workers == 1 or engine == "native":
        with _compiled_threads(workers):
            collect(_run_batch(b) for b in batches)
    else:
        # fork is cheapest (what spam.DIC.ldic uses) but unsafe once threads run in this
        # process (e.g. after a Dask client): then start workers from a fork server
        # (the native engine's compiled threads too)
        threads = threading.active_count() > 1 or "anodetwin.dvc._icgn" in sys.modules
        method = "forkserver" if threads else "fork"
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            collect(_bounded(lambda b: pool.submit(_run_batch, b), batches, 2 * workers))


@contextlib.contextmanager
def _compiled_threads(workers: int):
    """The native engine's kernels run on ``workers`` threads inside the block."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(workers, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


#: Nodes per batch of the native engine at most: fixed, so that results do not depend on the
#: number of workers (cubic B-spline coefficients are computed per batch box).
NATIVE_BATCH = 128


def correlate_nodes(ref: Any, deformed: Any, nodes: np.ndarray, params: DVCParams,
                    phi_init: np.ndarray | None = None, mask: Any = None,
                    processes: int = 1, scheduler: str | None = None,
                    batch_size: int | None = None, progress: bool = True,
                    model: Any = None) -> NodeResults:
    """Correlate the windows around ``nodes`` of ``ref`` onto ``deformed``.

    Parameters
    ----------
    ref, deformed : numpy.ndarray, Volume, path, LazyVolume, h5py.Dataset or WorkerVolume
        Volumes (z, y, x) (:func:`anodetwin.dvc.volumes.as_worker_volume`); those on disk
        are never read whole: every batch reads the box its windows touch.
    nodes : numpy.ndarray
        (N, 3) node positions in voxels of ``ref``.
    params : DVCParams
        Checked parameters of the level (:func:`check_params`).
    phi_init : numpy.ndarray, optional
        (N, 4, 4) initial mappings (identity if omitted).
    mask : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Labels; windows with less than ``params.mask_coverage`` of non-zero voxels are skipped.
    processes : int
        Local worker processes (1 = in this process); the native engine runs its batches
        in this process on as many threads instead.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``) or ``"local"`` for a LocalCluster
        with ``processes`` workers; batches are then run there.
    batch_size : int, optional
        Nodes per batch at most (default: spam, the nodes split evenly over 4 batches per
        worker; native, :data:`NATIVE_BATCH`); a batch is a block of neighbouring nodes
        whose box holds about :data:`BATCH_VOXELS` voxels at most (:func:`batch_groups`).
    progress : bool
        Show a progress bar (when logging is configured).
    model : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Phase codes of ``ref`` (its grid), for ``params.reference_model == "phases"``.

    Returns
    -------
    NodeResults
        ``Phi`` (N, 4, 4), ``status`` (:class:`ReturnStatus` codes), ``error``,
        ``iterations``, ``delta_phi_norm`` (N,) as the engine returns them, ``residual``:
        mean squared grey residual over the window variance (~0 for a good match, ~2 for
        unrelated windows), ``zncc`` and ``uncertainty`` (native engine).
    """
    r, d = as_worker_volume(ref), as_worker_volume(deformed)
    m = as_worker_volume(mask) if mask is not None else None
    if (model is None) == (params.reference_model == "phases"):
        raise ParameterError(f"reference model {params.reference_model!r} with"
                             f"{'out' if model is None else ''} the reference's phases",
                             "give the phases (model=...) with reference model 'phases' only")
    ph = as_worker_volume(model) if model is not None else None
    n = len(nodes)
    phi = np.repeat(np.eye(4)[None], n, axis=0) if phi_init is None else np.array(phi_init, float)
    workers = max(1, int(processes))
    bs = batch_size or (NATIVE_BATCH if params.engine == "native"
                        else max(1, int(np.ceil(n / (4 * workers)))))
    batches = (_Batch.make(g, nodes[g], phi[g], params, r, d, m, ph)
               for g in batch_groups(nodes, params, bs))
    out = NodeResults.unmeasured(n)
    _run_batches(batches, params.engine, out, workers, scheduler, progress)
    return out


def grid_index(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int],
               points: np.ndarray) -> np.ndarray:
    """Fractional node-grid indices of positions.

    Parameters
    ----------
    grid_nodes : numpy.ndarray
        (N, 3) node positions (voxels), z slowest.
    grid_shape : 3 int
        Nodes along z, y, x.
    points : numpy.ndarray
        (..., 3) positions (voxels).

    Returns
    -------
    numpy.ndarray
        (3, ...) indices, clipped to the grid (so that interpolation outside it takes the
        edge value).
    """
    first = np.asarray(grid_nodes, float).reshape(-1, 3)[0]
    step = grid_step(grid_nodes, grid_shape)
    pts = np.asarray(points, float)
    return np.stack([np.clip((pts[..., i] - first[i]) / step[i], 0, grid_shape[i] - 1)
                     for i in range(3)])


def filled_grid(grid_shape: tuple[int, int, int], displacement: np.ndarray) -> np.ndarray:
    """Nodal displacements on their grid with NaN nodes filled.

    Parameters
    ----------
    grid_shape : 3 int
        Nodes along z, y, x.
    displacement : numpy.ndarray
        (N, 3) nodal displacements.

    Returns
    -------
    numpy.ndarray
        (gz, gy, gx, 3), NaN nodes replaced by their nearest valid node (all NaN if none
        is valid).
    """
    from scipy import ndimage

    u = np.asarray(displacement, float).reshape(*grid_shape, 3).copy()
    bad = ~np.isfinite(u).all(axis=-1)
    if bad.any() and not bad.all():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        u = u[tuple(idx)]
    return u


def interpolate_displacement(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int],
                             displacement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Displacement of a regular node grid interpolated at positions.

    Parameters
    ----------
    grid_nodes, grid_shape
        The node grid, as for :func:`grid_index`.
    displacement : numpy.ndarray
        (N, 3) nodal displacements (voxels); NaN nodes are filled from the nearest valid
        ones first (:func:`filled_grid`).
    points : numpy.ndarray
        (..., 3) positions (voxels).

    Returns
    -------
    numpy.ndarray
        (..., 3) trilinear interpolation; outside the grid the edge value.
    """
    from scipy import ndimage

    u = filled_grid(grid_shape, displacement)
    idx = grid_index(grid_nodes, grid_shape, points)
    return np.stack([ndimage.map_coordinates(u[..., c], idx, order=1) for c in range(3)],
                    axis=-1)


def interpolate_phi(grid_nodes: np.ndarray, grid_shape: tuple[int, int, int],
                    displacement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mappings Phi of a regular node grid's displacement field at positions: the start of a
    finer level or of a direct correlation from a previous field.

    Parameters
    ----------
    grid_nodes, grid_shape, displacement, points
        As for :func:`interpolate_displacement`.

    Returns
    -------
    numpy.ndarray
        (..., 4, 4): translation u interpolated at the points, F = I + grad u with grad u
        from central differences on the grid (:func:`anodetwin.strain.voxel_gradient`,
        one-sided at its faces, 0 along an axis with one node), interpolated trilinearly.
        Where F is not finite or det F is not in [0.2, 5] (a gradient across a hole or a
        fold of the field) F = I, as a start without a previous field.
    """
    from scipy import ndimage

    from anodetwin.strain import voxel_gradient

    u = np.moveaxis(filled_grid(grid_shape, displacement), -1, 0)
    single = [n < 2 for n in grid_shape]
    u = np.pad(u, [(0, 0)] + [(0, 1 if s else 0) for s in single], mode="edge")
    grad = voxel_gradient(u, grid_step(grid_nodes, grid_shape))
    grad = grad[tuple(slice(0, 1) if s else slice(None) for s in single)]
    idx = grid_index(grid_nodes, grid_shape, points)
    pts = idx.shape[1:]
    out = np.zeros(pts + (4, 4))
    out[..., 3, 3] = 1.0
    out[..., :3, 3] = interpolate_displacement(grid_nodes, grid_shape, displacement, points)
    for i in range(3):
        for j in range(3):
            out[..., i, j] = (i == j) + ndimage.map_coordinates(
                np.ascontiguousarray(grad[..., i, j], np.float64), idx, order=1)
    with np.errstate(invalid="ignore"):
        det = np.linalg.det(out[..., :3, :3])
    bad = ~np.isfinite(out[..., :3, :3]).all(axis=(-2, -1)) | ~(det >= 0.2) | ~(det <= 5.0)
    out[bad, :3, :3] = np.eye(3)
    return out


def initial_phi_field(nodes: np.ndarray, phi_global: np.ndarray | None,
                      centre: np.ndarray | None) -> np.ndarray:
    """Per-node initial mappings from a global one.

    Parameters
    ----------
    nodes : numpy.ndarray
        (N, 3) node positions (voxels).
    phi_global : numpy.ndarray or None
        4x4 global mapping (None: identities).
    centre : numpy.ndarray or None
        (3,) point (voxels) about which ``phi_global`` applies (None: the origin).

    Returns
    -------
    numpy.ndarray
        (N, 4, 4): the global F and its displacement at each node.
    """
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

"""Pair correlation: global registration, pyramid of local DVC levels, bad-node repair,
strain, and the result file.

Node flags (``flag``): 0 measured (converged, coherent), 1 repaired (replaced by the
inverse-distance mean of its valid neighbours among the 26 around it), 2 excluded (NaN:
window outside the volume or mask, no texture (status -6: grey-value std below
``TEXTURE_FACTOR`` times the reference's noise level, ``params["noise_std"]``), or no valid
neighbours to repair from). Excluded nodes are never repaired; cells touching them get NaN
strain.
A node is bad when spam's return status is not 2 (converged), or its normalised residual
(mean squared grey residual / window variance; ~0 matched, ~2 unrelated) is above
``max_residual``, or its displacement departs from the median of its valid neighbours by
more than ``coherence`` voxels.
The native engine measures a node whose window the volume's faces cut on the part inside
(at least ``mask_coverage`` of it, less the interpolation margin along the faces);
:attr:`PairResult.window_share` gives each node's share (``params["correlated_shape"]``),
which the validation uses to leave those off-centre fits out.

Result file (HDF5, ``anodetwin-dvc-pair`` v1; positions and displacements in voxels of REF,
z, y, x)::

    /                  attrs: format, format_version, voxel_size_um, params (JSON),
                       global_phi (4x4), global_centre, provenance (JSON), engine
                       ("native" or "spam")
    /nodes             (N, 3) node positions
    /grid_shape        (3,) nodes along z, y, x (N = product)
    /displacement      (N, 3) after repair (NaN where excluded)
    /displacement_raw  (N, 3) as measured
    /Phi               (N, 4, 4) measured mappings
    /status, /error, /iterations, /delta_phi_norm   (N,) the engine's per-node results
    /residual          (N,) normalised residual (see above)
    /zncc              (N,) zero-normalised cross-correlation of the matched windows
                       (native engine; NaN with spam)
    /uncertainty       (N, 3) displacement std z, y, x (voxels) from the Gauss-Newton
                       covariance (native engine; NaN where not converged or with spam)
    /flag              (N,) 0 measured, 1 repaired, 2 excluded
    /composed          (N,) uint8, 1 where the displacement is the composition of a series'
                       increments rather than a correlation of this pair (cumulative fields
                       only, anodetwin.dvc.series; 0 in a pair's own file)
    /cells/centres     (gz-1, gy-1, gx-1, 3) cell centres
    /strain/<name>     on cells: volumetric (J-1), ezz, eyy, exx, eyz, exz, exy, deviatoric,
                       principal (.., 3), hencky (.., 6: zz yy xx yz xz xy),
                       hencky_volumetric (log J), green_lagrange (.., 6); group attrs
                       components, length_unit, operator

Strain is computed from displacements in um over node spacings in um *per axis* (voxel
counts times ``voxel_size_um[axis]``; :func:`pair_strain`), so anisotropic voxels give the
right shear, principal and finite strains; without a voxel size both stay in voxels
(isotropic voxels assumed, ``length_unit = "voxels"``). Components are named by axis
letters: ``eyz`` is entry (0, 1) (z with y), ``exz`` (0, 2), ``exy`` (1, 2) (y with x).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.dvc.correlate import (
    TEXTURE_FACTOR,
    DVCParams,
    NodeResults,
    ReturnStatus,
    check_params,
    correlate_nodes,
    grid_step,
    initial_phi_field,
    interpolate_phi,
    node_grid,
    noise_level,
    quiet_spam,
    window_inside,
)
from anodetwin.dvc.volumes import WorkerVolume, as_worker_volume
from anodetwin.strain import (
    COMPONENTS,
    CellStrain,
    cell_mean,
    cell_strain,
    node_spacing_um,
    voxel_size_triple,
)
from anodetwin.errors import NumericalError, ParameterError
from anodetwin.io import atomic_path, require_same_shape
from anodetwin.io.agree import input_name, require_same_grid
from anodetwin.log import get_logger

__all__ = ["PairResult", "correlate_pair", "repair_nodes", "write_pair", "write_pair_vtk",
           "read_pair", "pair_strain", "strain_datasets", "correlation_levels", "FLAG"]

log = get_logger("dvc")
FLAG = {"measured": 0, "repaired": 1, "excluded": 2}
FORMAT = "anodetwin-dvc-pair"


@dataclass
class PairResult:
    """Result of :func:`correlate_pair` (see the module notes for the fields)."""

    nodes: np.ndarray
    grid_shape: tuple[int, int, int]
    displacement: np.ndarray
    displacement_raw: np.ndarray
    Phi: np.ndarray
    status: np.ndarray
    error: np.ndarray
    iterations: np.ndarray
    delta_phi_norm: np.ndarray
    residual: np.ndarray
    flag: np.ndarray
    strain: CellStrain
    params: dict
    global_phi: np.ndarray
    global_centre: np.ndarray
    voxel_size_um: np.ndarray | None = None
    zncc: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    composed: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.nodes)
        if self.zncc is None:
            self.zncc = np.full(n, np.nan)
        if self.uncertainty is None:
            self.uncertainty = np.full((n, 3), np.nan)
        if self.composed is None:
            self.composed = np.zeros(n, bool)

    @property
    def engine(self) -> str:
        """The correlation engine of the last level (``"spam"`` for results written before
        there was a choice).

        Returns
        -------
        str
        """
        return str(self.params["levels"][-1].get("engine", "spam"))

    @property
    def matching(self) -> str:
        """The last level's engine with its criterion, interpolation, shape function and
        re-weighting and reference model, e.g. ``"native, znssd, cubic, quadratic, robust"``
        or ``"native, ssd, cubic, robust, phase model"``.

        Returns
        -------
        str
        """
        lv = self.params["levels"][-1]
        phases = lv.get("reference_model") == "phases"  # matched by SSD on the model
        parts = [self.engine, "ssd" if phases else lv.get("criterion") or "ssd",
                 {1: "linear", 3: "cubic"}.get(lv.get("interpolation_order", 1), "")]
        parts += [lv["shape_function"]] if lv.get("shape_function", "affine") != "affine" else []
        parts += ["robust"] if lv.get("robust") else []
        return ", ".join(parts + (["phase model"] if phases else []))

    @property
    def node_spacing(self) -> tuple:
        """Node spacing (z, y, x; voxels) of the last correlation level.

        Returns
        -------
        tuple of 3 int
        """
        return tuple(self.params["levels"][-1]["node_spacing"])

    @property
    def window_share(self) -> np.ndarray:
        """Share of each node's last-level window inside the volume it was correlated in.

        Returns
        -------
        numpy.ndarray
            (N,) in [0, 1]: 1 for a whole window; below 1 for a window the volume's faces
            cut, which the native engine registers on its part inside (an affine fit of
            an off-centre region). Counted in the volume the nodes were correlated in
            (``params["correlated_shape"]``: the ROI of ``anodetwin dvc --roi``), whole
            voxels only (the engine also leaves out the ones within its interpolation
            margin of the faces). Ones where the file records no volume shape.
        """
        shape = self.params.get("correlated_shape",
                                self.params.get("reference_grid", {}).get("shape"))
        if shape is None:
            return np.ones(len(self.nodes))
        return window_inside(self.nodes, self.params["levels"][-1]["hws"], tuple(shape))


def pair_strain(result: PairResult, voxel_size_um: Any = None) -> CellStrain:
    """Strain of a pair result with its displacements and node spacing in um per axis.

    Parameters
    ----------
    result : PairResult
        Displacements and node spacing in voxels (z, y, x).
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x); default: the result's own (None: isotropic voxels).

    Returns
    -------
    CellStrain
        Recomputed from ``result.displacement`` with the Q8 operator of
        :func:`anodetwin.dvc.strain.cell_strain` (so a file's strain always matches its
        displacement and voxel size, whatever ``result.strain`` holds).
    """
    vs = result.voxel_size_um if voxel_size_um is None else voxel_size_um
    return cell_strain(np.reshape(result.displacement, (*result.grid_shape, 3)),
                       result.node_spacing, voxel_size_um=vs)


def _neighbour_offsets() -> np.ndarray:
    o = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    return o[np.any(o != 0, axis=1)]


def _affine_centre(neigh: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Value at the centre of a least-squares affine fit ``u(o) = a + G o`` to the valid
    neighbours (``neigh``: (..., 26, 3), NaN where invalid; ``offs``: (26, 3) grid offsets);
    NaN where the valid neighbours do not determine the fit."""
    valid = np.isfinite(neigh).all(axis=-1).astype(float)
    A = np.concatenate([np.ones((len(offs), 1)), offs], axis=1)
    normal = np.einsum("...j,jk,jl->...kl", valid, A, A)
    rhs = np.einsum("...j,jk,...jc->...kc", valid, A,
                    np.where(valid[..., None] > 0, neigh, 0.0))
    ok = np.linalg.eigvalsh(normal)[..., 0] > 0.5  # neighbours span all three axes
    out = np.full(neigh.shape[:-2] + (3,), np.nan)
    out[ok] = np.linalg.solve(normal[ok], rhs[ok])[:, 0, :]
    return out


def repair_nodes(displacement: np.ndarray, grid_shape: tuple[int, int, int],
                 bad: np.ndarray, excluded: np.ndarray, coherence: float | None = 1.0,
                 min_neighbours: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Flag incoherent nodes and repair bad ones from their neighbours.

    Parameters
    ----------
    displacement : numpy.ndarray
        (N, 3) nodal displacements (voxels) on a regular grid of ``grid_shape``.
    bad : numpy.ndarray of bool
        Nodes already known bad (not converged, error too high): to repair.
    excluded : numpy.ndarray of bool
        Nodes that carry no measurement (outside, masked, no texture): never repaired.
    coherence : float or None
        A measured node whose displacement differs by more than this (voxels) both from
        the median of its valid neighbours and from an affine fit to them is bad too (the
        fit keeps nodes at the edge of a steep but smooth field, e.g. where a swelling
        electrode ends; the median keeps those next to an outlier).
    min_neighbours : int
        Valid neighbours (of 26) needed to repair a node.

    Returns
    -------
    displacement : numpy.ndarray
        Repaired copy (NaN where not repairable or excluded).
    flag : numpy.ndarray of uint8
        0 measured, 1 repaired, 2 excluded.
    """
    gz, gy, gx = grid_shape
    u = displacement.reshape(gz, gy, gx, 3).astype(np.float64)
    ok = (~bad & ~excluded & np.isfinite(displacement).all(axis=1)).reshape(gz, gy, gx)
    offs = _neighbour_offsets()

    def neighbours(valid: np.ndarray) -> np.ndarray:  # (gz, gy, gx, 26, 3), NaN if invalid
        pad = np.pad(np.where(valid[..., None], u, np.nan), ((1, 1), (1, 1), (1, 1), (0, 0)),
                     constant_values=np.nan)
        return np.stack([pad[1 + a: 1 + a + gz, 1 + b: 1 + b + gy, 1 + c: 1 + c + gx]
                         for a, b, c in offs], axis=-2)

    neigh = neighbours(ok)
    if coherence is not None:
        with warnings.catch_warnings():  # all-NaN neighbourhoods give NaN, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(neigh, axis=-2)
        dev = np.linalg.norm(u - med, axis=-1)
        fit = np.linalg.norm(u - _affine_centre(neigh, offs), axis=-1)
        dev = np.where(np.isfinite(fit), np.minimum(dev, fit), dev)
        incoherent = ok & np.isfinite(dev) & (dev > coherence)
        ok &= ~incoherent
        neigh = neighbours(ok)
    w = 1.0 / np.linalg.norm(offs, axis=1)
    valid = np.isfinite(neigh).all(axis=-1)
    count = valid.sum(axis=-1)
    num = np.nansum(np.where(valid[..., None], neigh * w[:, None], 0.0), axis=-2)
    den = (valid * w).sum(axis=-1)
    excl = excluded.reshape(gz, gy, gx)
    to_fix = ~ok & ~excl
    fixable = to_fix & (count >= min_neighbours)
    out = np.where(ok[..., None], u, np.nan)
    out[fixable] = num[fixable] / den[fixable][:, None]
    flag = np.full((gz, gy, gx), FLAG["excluded"], np.uint8)
    flag[ok] = FLAG["measured"]
    flag[fixable] = FLAG["repaired"]
    return out.reshape(-1, 3), flag.reshape(-1)


#: Normalised residual of the global registration (0: the scans match, ~2: unrelated) above
#: which the drift between the scans is likely more than it found.
REGISTRATION_RESIDUAL_WARN = 0.5


def coarse_translation(im1: np.ndarray, im2: np.ndarray) -> np.ndarray:
    """Rigid translation that moves ``im1`` onto ``im2``, by phase correlation.

    The mean-free, Hann-windowed volumes are correlated to a quarter voxel; shifts up to
    half the size along each axis are found.

    Parameters
    ----------
    im1, im2 : numpy.ndarray
        (z, y, x) volumes of one shape.

    Returns
    -------
    numpy.ndarray
        (3,) translation t (z, y, x; voxels): the material at X in ``im1`` is near X + t
        in ``im2``; zeros for volumes under 8 voxels along an axis or no finite result.
    """
    from skimage.registration import phase_cross_correlation

    a = np.asarray(im1, np.float64)
    b = np.asarray(im2, np.float64)
    if min(a.shape) < 8:
        return np.zeros(3)
    w = np.ones(a.shape)
    for ax, n in enumerate(a.shape):
        w = w * np.hanning(n).reshape([n if i == ax else 1 for i in range(3)])
    shift, _, _ = phase_cross_correlation((a - a.mean()) * w, (b - b.mean()) * w,
                                          normalization="phase", upsample_factor=4)
    t = -np.asarray(shift, float)
    return t if np.isfinite(t).all() else np.zeros(3)


def registration_residual(im1: np.ndarray, im2: np.ndarray, phi: np.ndarray) -> float:
    """How well a global mapping matches two volumes.

    Parameters
    ----------
    im1, im2 : numpy.ndarray
        (z, y, x) volumes of one shape.
    phi : numpy.ndarray
        4x4 mapping about the volume centre (spam's convention), voxels.

    Returns
    -------
    float
        Mean squared grey residual between ``im1`` deformed by ``phi`` and ``im2``, over
        the variance of ``im2``, inside a margin that the mapping keeps in the volume: ~0
        when ``phi`` matches, ~2 for unrelated volumes (inf for a flat ``im2``).
    """
    import spam.DIC

    with quiet_spam():
        d = spam.DIC.applyPhi(np.asarray(im1, np.float32), Phi=phi, interpolationOrder=1)
    m = min(int(np.ceil(np.abs(phi[:3, 3]).max())) + 2, min(im1.shape) // 4)
    inner = tuple(slice(m, n - m) for n in im1.shape)
    ref = np.asarray(im2, np.float64)[inner]
    var = float(ref.var())
    return float(np.mean((d[inner] - ref) ** 2) / var) if var > 0 else float("inf")


def _require_contrast(volumes: tuple) -> None:
    """Refuse a volume with one grey value everywhere (a blank export): no drift, window
    or residual can be measured on it. ``volumes``: (role, volume as given, binned)."""
    for what, vol, binned in volumes:
        if np.ptp(binned) > 0:
            continue
        path = getattr(vol, "path", None) or vol
        raise ParameterError(f"{input_name(what, path)} has one grey value "
                             f"({float(binned.flat[0]):g}) everywhere: nothing to correlate",
                             "check that the file holds the scan, not a blank or failed "
                             "export")


def _global_registration(ref: Any, deformed: Any, shape: tuple, max_voxels: int = 96**3
                         ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Affine registration of the whole volumes (binned to at most ``max_voxels``), started
    from no motion and from the phase-correlation translation; the candidate (these two
    and the registrations from them) with the smallest residual wins. Returns Phi, its
    centre (voxels) and what was measured (``coarse_shift``, ``residual``)."""
    import spam.DIC

    b = max(1, int(np.ceil((np.prod(shape) / max_voxels) ** (1 / 3))))
    # binned slab by slab from volumes on disk: equal to binning the whole arrays
    im1, im2 = as_worker_volume(ref).binned(b), as_worker_volume(deformed).binned(b)
    _require_contrast((("reference volume", ref, im1), ("deformed volume", deformed, im2)))
    coarse = np.eye(4)
    coarse[:3, 3] = coarse_translation(im1, im2)
    candidates = [np.eye(4), coarse]
    for start in (np.eye(4), coarse) if coarse[:3, 3].any() else (np.eye(4),):
        with quiet_spam():
            r = spam.DIC.registerMultiscale(im1, im2, 2 if min(im1.shape) >= 32 else 1,
                                            PhiInit=start, margin=2, maxIterations=50,
                                            deltaPhiMin=1e-4, verbose=False)
        phi = np.array(r["Phi"], dtype=np.float64)
        if not ReturnStatus.failed(r.get("returnStatus", ReturnStatus.CONVERGED)) \
                and np.isfinite(phi).all():
            candidates.append(phi)
    residuals = [registration_residual(im1, im2, c) for c in candidates]
    best = int(np.argmin(residuals))
    phi = candidates[best].copy()
    phi[:3, 3] *= b
    centre = (np.array(im1.shape) - 1) / 2.0 * b + (b - 1) / 2.0
    info = {"coarse_shift": (coarse[:3, 3] * b).tolist(), "residual": residuals[best],
            "binning": b}
    return phi, centre, info


def _listed(v: Any) -> list | None:
    return None if v is None else [float(x) for x in v]


#: Normalised residual at or above which two volumes look unrelated (0: the scans match, ~2:
#: unrelated grey values).
UNRELATED_RESIDUAL = 1.5


def _report_registration(phi: np.ndarray, reg: dict) -> None:
    """Log the global registration; warn when its residual says it missed the drift or the
    volumes look unrelated."""
    log.info("global registration: translation %s voxels (phase correlation %s), "
             "residual %.3f", np.round(phi[:3, 3], 3), np.round(reg["coarse_shift"], 2),
             reg["residual"])
    if reg["residual"] >= UNRELATED_RESIDUAL:
        log.warning("the global registration left a normalised residual of %.2f (0: the "
                    "scans match, ~2: unrelated): the volumes may not show the same sample "
                    "or region; if they do, they drift by more than half the volume: give "
                    "--search-range N (voxels; library: search_range=N)", reg["residual"])
    elif reg["residual"] > REGISTRATION_RESIDUAL_WARN:
        log.warning("the global registration left a normalised residual of %.2f (0: the "
                    "scans match, ~2: unrelated): the drift between the scans is likely "
                    "larger than it found; if nodes fail, give --search-range N (voxels, "
                    "above the drift; library: search_range=N)", reg["residual"])


def _measured_residual(reg: dict | None, status: np.ndarray, residual: Any) -> tuple:
    """(text naming the residuals measured, the residual that judges the match: the global
    registration's, else the median of the correlated windows', else None)."""
    parts, judge = [], None
    if reg is not None:
        judge = float(reg["residual"])
        parts.append(f"global registration residual {judge:.2f}")
    if residual is not None:
        r = np.asarray(residual, float)[~ReturnStatus.not_measured(status)]
        r = r[np.isfinite(r)]
        if r.size:
            parts.append(f"median window residual {np.median(r):.2f}")
            judge = float(np.median(r)) if judge is None else judge
    text = (", ".join(parts) + " (0: the scans match, ~2: unrelated)") if parts else \
        "no residual measured (no window was correlated)"
    return text, judge


def no_node_cause(reg: dict | None, status: np.ndarray, first: DVCParams,
                  from_field: bool = False, residual: Any = None) -> tuple[str, str]:
    """Message and fix when no node could be measured, naming the likely cause.

    The cause comes from what was measured, strongest evidence first: windows without
    texture (status -6), a residual near 2 after the registration (and the search, if
    any: the volumes do not show the same sample or region), no registration or search at
    all, a moderate registration residual (drift: ``--search-range``).

    Parameters
    ----------
    reg : dict or None
        What the global registration measured (None when it did not run).
    status : numpy.ndarray
        (N,) :class:`~anodetwin.dvc.correlate.ReturnStatus` codes of the nodes.
    first : DVCParams
        Parameters of the first level (margin, search range).
    from_field : bool
        The nodes started from a given field.
    residual : numpy.ndarray, optional
        (N,) the windows' normalised residuals.

    Returns
    -------
    (str, str)
        The message (always with the node statuses and the residual measured) and the
        fix.
    """
    st = np.asarray(status)
    flat = int((st == ReturnStatus.NO_TEXTURE).sum())
    outside = int((ReturnStatus.not_measured(st) & (st != ReturnStatus.NO_TEXTURE)).sum())
    failed = st.size - flat - outside
    measured, judge = _measured_residual(reg, st, residual)
    what = (f"no node could be measured (of {st.size} windows: {flat} without texture, "
            f"{outside} outside the volume or masked, {failed} not converged or correlated "
            f"poorly; {measured})")
    searched = max(first.search_range) > 0
    search = "give --search-range N (voxels, above the drift; library: search_range=N)"
    if flat and flat >= 0.5 * (st.size - outside):
        return what, ("the windows show no grey-value texture above the noise: correlate a "
                      "textured region (--roi, --mask) or use larger windows (--hws)")
    if judge is not None and judge >= UNRELATED_RESIDUAL and (reg is not None or searched
                                                               or from_field):
        return (what + "; the volumes do not show the same sample or region",
                "check that both are scans of the same sample and region (same --roi)"
                + ("" if searched or from_field else
                   "; if they are, they drift by more than half the volume: " + search))
    if reg is None and not from_field and not searched:
        return (what + f"; without the global registration a drift beyond the search "
                       f"margin ({first.margin} voxels) loses every window",
                search + ", or leave the global registration on")
    if searched:
        return what, (f"the drift may exceed the search range {first.search_range}: give a "
                      "larger --search-range, or check the mask, the region of interest and "
                      "the window size")
    if reg is not None and reg["residual"] > REGISTRATION_RESIDUAL_WARN:
        return (what + "; the drift between the scans is likely larger than the global "
                       "registration found", search + ", or check that both volumes show "
                                                      "the same sample")
    return what, ("check the mask, the region of interest and the window size; if the scans "
                  "drift by more than " f"{first.margin} voxels locally, " + search)


def correlation_levels(shape: tuple, node_spacing, hws, pyramid, margin: int, search_range,
                       min_texture_std: float, engine: dict) -> list[DVCParams]:
    """The checked parameters of every correlation level of a pair, coarse to final.

    Parameters
    ----------
    shape : 3 int
        Shape (z, y, x) of the volumes.
    node_spacing, hws, pyramid, margin, search_range
        As :func:`correlate_pair` (the search on the first level).
    min_texture_std : float
        Texture threshold (grey levels).
    engine : dict
        ``engine``, ``criterion`` and ``interpolation_order`` (:class:`DVCParams` fields).

    Returns
    -------
    list of DVCParams
        One per level, the final last.

    Raises
    ------
    ParameterError
        A window larger than the volume, a spacing that leaves no node, pyramid levels not
        coarser than the node spacing, an unknown engine or criterion.
    """
    final = check_params(DVCParams(node_spacing=node_spacing,
                                   hws=hws if hws is not None else node_spacing,
                                   margin=margin, min_texture_std=min_texture_std, **engine),
                         shape)
    fine = [int(s) for s in (pyramid or ()) if int(s) <= max(final.node_spacing)]
    if fine:
        raise ParameterError(f"pyramid level(s) {fine} are not coarser than the node spacing "
                             f"{max(final.node_spacing)} voxels",
                             "list only coarser spacings, run first, e.g. --pyramid 100,70 "
                             "with --node-spacing 35")
    levels = [check_params(DVCParams(node_spacing=s, hws=s, margin=margin,
                                     min_texture_std=min_texture_std, **engine), shape)
              for s in (pyramid or ())] + [final]
    if np.any(np.asarray(search_range) > 0):
        levels[0] = check_params(DVCParams(**{**levels[0].to_dict(),
                                              "search_range": search_range}), shape)
    return levels


def _check_mask(ref: Any, mask: Any, voxel_size_um: Any) -> WorkerVolume | None:
    """A mask on the reference's grid that holds material (read slab by slab up to the
    first non-zero voxel), for the workers."""
    if mask is None:
        return None
    m = as_worker_volume(mask)
    require_same_grid(ref, mask, input_name("reference volume", ref),
                      input_name("mask", mask), voxel_size=voxel_size_um)
    if not m.any_nonzero():
        raise ParameterError("the mask holds no material (all zero)",
                             "give labels with non-zero material or no mask")
    return m


def _phase_model(ref: Any, phases: Any, psf_sigma: Any, voxel_size_um: Any,
                 robust: bool) -> tuple[WorkerVolume | None, dict]:
    """The reference's phases for the workers and the phase model's record (point-spread
    sigma, fitted unless given, with the fit's R^2 and residual); (None, {}) without
    phases."""
    if phases is None:
        return None, {}
    from anodetwin.dvc.model import PSFFit, fit_psf

    name = input_name("reference phases", phases)
    require_same_grid(ref, phases, input_name("reference volume", ref), name,
                      voxel_size=voxel_size_um)
    if isinstance(psf_sigma, PSFFit):  # fitted before (a series fits T0's once)
        record = {**psf_sigma.to_dict(), "fitted": True}
    elif psf_sigma is not None:
        if not (np.isfinite(psf_sigma) and psf_sigma >= 0):
            raise ParameterError(f"point-spread sigma {psf_sigma!r}", "give a sigma >= 0 voxels")
        record = {"psf_sigma": float(psf_sigma), "fitted": False}
    else:
        fit = fit_psf(ref, phases, name=name)
        log.info("phase model of the reference: point-spread sigma %.2f voxels, R^2 %.2f",
                 fit.sigma, fit.r2)
        record = {**fit.to_dict(), "fitted": True}
    if not robust:
        log.warning("phase model without robust re-weighting: the voxels whose grey value "
                    "changed still pull the windows; give robust=True (--robust)")
    return as_worker_volume(phases), record


@dataclass(frozen=True)
class _Level:
    """The last correlated level: its parameters, node grid, spam's results, the measured
    and repaired displacements (voxels) and the node flags."""

    params: DVCParams
    nodes: np.ndarray
    grid_shape: tuple
    results: NodeResults
    raw: np.ndarray
    repaired: np.ndarray
    flag: np.ndarray


def _judge(res: NodeResults, gshape: tuple, max_residual, coherence) -> tuple:
    """Measured displacement, repaired displacement and flags of a level's results."""
    u = res.Phi[:, :3, 3].copy()
    excluded = ReturnStatus.not_measured(res.status) | ~np.isfinite(u).all(axis=1)
    bad = (res.status != ReturnStatus.CONVERGED) & ~excluded
    if max_residual is not None:
        bad |= res.residual > max_residual
    u_fixed, flag = repair_nodes(u, gshape, bad, excluded, coherence)
    return u, u_fixed, flag


def _retry_from_neighbours(ref: Any, deformed: Any, nodes: np.ndarray, lv: DVCParams,
                           phi0: np.ndarray, res: NodeResults, u_fixed: np.ndarray,
                           flag: np.ndarray, kw: dict, max_residual) -> int:
    """Correlate the repaired nodes again, started from the displacement their converged
    neighbours give them; a retry that converges (with a residual within
    ``max_residual``) replaces the node's result in ``res``. Returns how many did."""
    idx = np.flatnonzero(flag == FLAG["repaired"])
    if idx.size == 0:
        return 0
    start = phi0[idx].copy()
    start[:, :3, 3] = u_fixed[idx]
    again = correlate_nodes(ref, deformed, nodes[idx], lv, start, **{**kw, "progress": False})
    ok = again.status == ReturnStatus.CONVERGED
    if max_residual is not None:
        ok &= again.residual <= max_residual
    res.put(idx[ok], NodeResults(**{k: getattr(again, k)[ok] for k in again.keys()}))
    return int(ok.sum())


def _correlate_levels(ref: Any, deformed: Any, shape: tuple, levels: list, prev, gphi,
                      gcentre, kw: dict, max_residual, coherence) -> _Level:
    """Every level, each started from the previous level's field (or ``prev``); returns
    the last one. With the native engine, nodes to repair are first correlated again from
    their neighbours' field (propagation from converged neighbours)."""
    for lv in levels:
        nodes, gshape = node_grid(shape, lv.node_spacing)
        phi0 = (initial_phi_field(nodes, gphi, gcentre) if prev is None
                else interpolate_phi(*prev, nodes))
        res = correlate_nodes(ref, deformed, nodes, lv, phi0, **kw)
        u, u_fixed, flag = _judge(res, gshape, max_residual, coherence)
        if lv.engine == "native" and _retry_from_neighbours(
                ref, deformed, nodes, lv, phi0, res, u_fixed, flag, kw, max_residual):
            u, u_fixed, flag = _judge(res, gshape, max_residual, coherence)
        log.info("level spacing %s: %d nodes, %d measured, %d repaired, %d excluded "
                 "(%d without texture)", lv.node_spacing, len(nodes),
                 (flag == FLAG["measured"]).sum(), (flag == FLAG["repaired"]).sum(),
                 (flag == FLAG["excluded"]).sum(),
                 (res.status == ReturnStatus.NO_TEXTURE).sum())
        prev = (nodes, gshape, u_fixed)
    return _Level(lv, nodes, gshape, res, u, u_fixed, flag)


def _pair_inputs(ref: Any, deformed: Any, voxel_size_um: Any) -> tuple:
    """Check that both volumes lie on one grid and are finite; returns the grid, both
    volumes for the workers and the reference's noise level."""
    grid = require_same_grid(ref, deformed, input_name("reference volume", ref),
                             input_name("deformed volume", deformed), voxel_size=voxel_size_um)
    r = as_worker_volume(ref, "reference volume")
    d = as_worker_volume(deformed, "deformed volume")
    require_same_shape(r.shape, d.shape, "reference volume", "deformed volume")
    return grid, r, d, noise_level(r)


def _start(ref: Any, deformed: Any, shape: tuple, register: bool) -> tuple:
    """Initial mapping: the global registration (reported) or none; returns Phi, its
    centre (voxels) and what the registration measured (None without it)."""
    if not register:
        return np.eye(4), (np.array(shape) - 1) / 2.0, None
    gphi, gcentre, reg = _global_registration(ref, deformed, shape)
    _report_registration(gphi, reg)
    return gphi, gcentre, reg


def _pair_result(last: _Level, levels: list, settings: dict, grid: Any, shape: tuple,
                 noise: float, gphi: np.ndarray, gcentre: Any) -> PairResult:
    """The :class:`PairResult` of the last level, with its strain and parameters."""
    vs = grid.voxel_size_um  # the explicit voxel size, else the volumes' (None: unknown)
    strain = cell_strain(last.repaired.reshape(*last.grid_shape, 3), last.params.node_spacing,
                         voxel_size_um=vs)
    params = {"levels": [lvl.to_dict() for lvl in levels], **settings, "noise_std": noise,
              "texture_factor": TEXTURE_FACTOR, "correlated_shape": list(shape),
              "reference_grid": {"shape": list(shape), "origin_um": _listed(grid.origin),
                                 "voxel_size_um": _listed(grid.voxel_size_um)}}
    res = last.results
    return PairResult(last.nodes, last.grid_shape, last.repaired, last.raw, res.Phi,
                      res.status, res.error, res.iterations, res.delta_phi_norm,
                      res.residual, last.flag, strain, params, gphi,
                      np.asarray(gcentre, float),
                      None if vs is None else voxel_size_triple(vs), res.zncc,
                      res.uncertainty)


def correlate_pair(ref: Any, deformed: Any, node_spacing=35, hws=None, pyramid=None,
                   mask: Any = None, processes: int = 1, scheduler: str | None = None,
                   global_registration: bool = True, margin: int = 3, search_range=0,
                   coherence: float | None = 1.0, max_residual: float | None = 1.0,
                   initial: tuple | None = None, progress: bool = True,
                   voxel_size_um: Any = None, engine: str = "native",
                   interpolation_order: int = 3, criterion: str = "", robust: bool = False,
                   shape_function: str = "affine", reference_phases: Any = None,
                   psf_sigma: Any = None) -> PairResult:
    """Measure the displacement and strain fields between two volumes.

    Parameters
    ----------
    ref, deformed : numpy.ndarray, Volume, path, LazyVolume or h5py.Dataset
        Reference and deformed volumes (same shape). Volumes on disk (paths, lazy views
        with their region of interest and binning, datasets) are never read whole: every
        batch of nodes reads the box its windows touch, the whole-volume passes go slab by
        slab (:mod:`anodetwin.dvc.volumes`); the results equal those of the same voxels in
        memory.
    node_spacing : int or 3 int
        Final node spacing (voxels).
    hws : int or 3 int, optional
        Final half-window size (default: the node spacing, i.e. 50% window overlap).
    pyramid : sequence of int, optional
        Spacings of coarser levels run first (e.g. ``(100, 70)``), half-window = spacing.
    mask : array, path, LazyVolume or h5py.Dataset, optional
        Labels, non-zero where material is; windows mostly outside it are excluded.
    processes, scheduler, progress
        As :func:`~anodetwin.dvc.correlate.correlate_nodes`.
    global_registration : bool
        Start from an affine registration of the whole volumes.
    margin : int
        Search margin (voxels) of every window.
    search_range : int or 3 int
        Integer pixel search of +- this many voxels (z, y, x) around the initial guess
        before the first level's registration, for displacements beyond the margin.
    coherence : float or None
        Neighbour-coherence threshold (voxels) for bad-node detection.
    max_residual : float or None
        Normalised residual above which a node is bad (1.0: worse than half-correlated).
    initial : (nodes, grid_shape, displacement), optional
        A displacement field (e.g. composed increments) to start from: its value and
        gradient at the nodes (:func:`~anodetwin.dvc.correlate.interpolate_phi`); replaces
        the global registration and the pyramid.
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x) for the strain (um over um per axis), stored with the result;
        default: the reference volume's, else isotropic voxels. Given, it states the grid
        of both volumes: a difference of their own voxel sizes or origins is then logged,
        not refused (else they must agree: :func:`anodetwin.io.agree.require_same_grid`).
    engine : {"native", "spam"}
        Per-node registration: anodetwin's IC-GN engine (:mod:`anodetwin.dvc.native`) or
        ``spam.DIC.register`` as ``spam.DIC.ldic`` runs it.
    interpolation_order, criterion, robust, shape_function
        As :class:`~anodetwin.dvc.correlate.DVCParams`: cubic B-spline (3, default) or
        trilinear (1); ``""`` the engine's own criterion (native ZNSSD, spam SSD); the
        native engine's re-weighting for grey values that change (lithiated Si) and its
        window map (``"affine"``, ``"quadratic"`` or ``"quadratic-z"``).
    reference_phases : array, Volume, path, LazyVolume or h5py.Dataset, optional
        Phase codes of ``ref`` (its grid): the native engine then matches a model of the
        reference made from them (:mod:`anodetwin.dvc.model`) instead of its grey values,
        for phases whose grey value changes between the scans (lithiating Si).
    psf_sigma : float or PSFFit, optional
        Point-spread sigma (voxels) of that model, or a fit of it
        (:func:`anodetwin.dvc.model.fit_psf`; default: fitted to ``ref``);
        ``params["reference_model"]`` records it.

    Returns
    -------
    PairResult
        Nodes, measured and repaired displacements (voxels), spam's per-node results,
        flags, strain on the cells, parameters and the global mapping (module notes).

    Raises
    ------
    GridMismatchError, ShapeMismatchError
        Volumes (or the mask) on different grids.
    ParameterError
        Bad parameters, pyramid levels not coarser than the node spacing, an empty mask.
    NumericalError
        No node could be measured (the message names the likely cause).

    Notes
    -----
    Windows without texture (std below ``TEXTURE_FACTOR`` times the reference's noise
    level, ``params["noise_std"]``) are excluded (status -6, flag 2, NaN), never repaired,
    and the cells touching them get NaN strain.
    """
    grid, r, d, noise = _pair_inputs(ref, deformed, voxel_size_um)
    shape = tuple(r.shape)
    levels = correlation_levels(shape, node_spacing, hws, pyramid, margin, search_range,
                                TEXTURE_FACTOR * noise,
                                {"engine": engine, "criterion": criterion,
                                 "interpolation_order": interpolation_order,
                                 "robust": robust, "shape_function": shape_function,
                                 "reference_model": ("grey" if reference_phases is None
                                                     else "phases")})
    m = _check_mask(ref, mask, voxel_size_um)
    phases, model = _phase_model(ref, reference_phases, psf_sigma, voxel_size_um, robust)
    levels = [replace(lv, psf_sigma=model.get("psf_sigma", 0.0)) for lv in levels]
    levels, prev = (levels, None) if initial is None else ([levels[-1]], tuple(initial))
    gphi, gcentre, reg = _start(r, d, shape, global_registration and initial is None)
    kw = {"mask": m, "processes": processes, "scheduler": scheduler, "progress": progress,
          "model": phases}
    last = _correlate_levels(r, d, shape, levels, prev, gphi, gcentre, kw,
                             max_residual, coherence)
    if np.all(last.flag == FLAG["excluded"]):
        raise NumericalError(*no_node_cause(reg, last.results.status, levels[0],
                                            from_field=initial is not None,
                                            residual=last.results.residual))
    settings = {"coherence": coherence, "max_residual": max_residual,
                "global_registration": global_registration, "processes": processes,
                "scheduler": scheduler, "registration": reg, "reference_model": model or None}
    return _pair_result(last, levels, settings, grid, shape, noise, gphi, gcentre)


def write_pair(path: str | os.PathLike, result: PairResult, voxel_size_um: Any = None,
               provenance: dict | None = None) -> Path:
    """Write a :class:`PairResult` to HDF5 atomically (layout in the module notes).

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file.
    result : PairResult
        The result.
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x) written with it (default: the result's); the strain written
        is :func:`pair_strain` with it, so it matches what :func:`read_pair` recomputes.
    provenance : dict, optional
        Provenance record (default: one made for this call).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import h5py

    from anodetwin.io import make_provenance

    prov = provenance or make_provenance("dvc", [], result.params)
    if voxel_size_um is None:
        voxel_size_um = result.voxel_size_um
    s = pair_strain(result, voxel_size_um)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 1
        if voxel_size_um is not None:
            f.attrs["voxel_size_um"] = np.broadcast_to(np.asarray(voxel_size_um, float), (3,))
        f.attrs["params"] = json.dumps(result.params, default=str)
        f.attrs["global_phi"] = result.global_phi
        f.attrs["global_centre"] = result.global_centre
        f.attrs["provenance"] = json.dumps(prov, default=str)
        f.attrs["engine"] = result.engine
        for name in ("nodes", "displacement", "displacement_raw", "Phi", "status", "error",
                     "iterations", "delta_phi_norm", "residual", "flag", "zncc",
                     "uncertainty"):
            f.create_dataset(name, data=getattr(result, name))
        f.create_dataset("composed", data=np.asarray(result.composed, np.uint8))
        f.create_dataset("grid_shape", data=np.array(result.grid_shape))
        f.create_dataset("cells/centres",
                         data=cell_mean(np.reshape(result.nodes, (*result.grid_shape, 3))))
        _strain_attrs(f.create_group("strain"), voxel_size_um)
        for name, data in strain_datasets(s).items():
            f.create_dataset(f"strain/{name}", data=data)
    return Path(path)


def strain_datasets(s: CellStrain) -> dict[str, np.ndarray]:
    """The ``/strain`` datasets of a pair result file, in the order they are written.

    Parameters
    ----------
    s : CellStrain
        Strain on the cells of the node grid.

    Returns
    -------
    dict
        ``volumetric``, the small-strain components by name, ``deviatoric``, ``principal``,
        ``hencky``, ``hencky_volumetric``, ``green_lagrange`` and ``F`` (module notes).
    """
    return {"volumetric": s.volumetric, **s.small, "deviatoric": s.deviatoric,
            "principal": s.principal, "hencky": s.hencky,
            "hencky_volumetric": s.hencky_volumetric, "green_lagrange": s.green_lagrange,
            "F": s.F}


def _strain_attrs(group: Any, voxel_size_um: Any) -> None:
    """Units and component names of the strain datasets (HDF5 group attributes)."""
    group.attrs["components"] = " ".join(COMPONENTS)
    group.attrs["component_entries"] = "zz (0,0) yy (1,1) xx (2,2) yz (0,1) xz (0,2) xy (1,2)"
    group.attrs["length_unit"] = "voxels" if voxel_size_um is None else "um"
    group.attrs["operator"] = ("Q8 cell gradient: displacement (z, y, x) in length_unit over "
                               "node spacing in length_unit per axis")


def read_pair(path: str | os.PathLike) -> PairResult:
    """Read a result written by :func:`write_pair`.

    Parameters
    ----------
    path : path-like
        An ``anodetwin-dvc-pair`` HDF5 file.

    Returns
    -------
    PairResult
        With the strain recomputed from the displacement with the same operator.

    Raises
    ------
    InputNotFoundError
        No such file.
    CorruptFileError
        Not an anodetwin DVC result, or unreadable.
    """
    import h5py

    from anodetwin.errors import CorruptFileError, InputNotFoundError

    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(p, "DVC result",
                                 "give a file written by 'anodetwin dvc' or 'dvc-series'")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise CorruptFileError(f"'{p}' is not an anodetwin DVC result",
                                       "give a file written by 'anodetwin dvc' or 'dvc-series'")
            d = {k: f[k][...] for k in ("nodes", "displacement", "displacement_raw", "Phi",
                                        "status", "error", "iterations", "delta_phi_norm",
                                        "residual", "flag")}
            d.update({k: f[k][...] for k in ("zncc", "uncertainty") if k in f})
            if "composed" in f:  # files written before the field existed: none composed
                d["composed"] = f["composed"][...].astype(bool)
            gshape = tuple(int(v) for v in f["grid_shape"][...])
            params = json.loads(f.attrs["params"])
            vs = f.attrs.get("voxel_size_um")
            gphi, gcentre = f.attrs["global_phi"], f.attrs["global_centre"]
    except OSError as exc:
        raise CorruptFileError(f"'{p}' is not an anodetwin DVC result ({exc})",
                               "give a file written by 'anodetwin dvc' or 'dvc-series'"
                               ) from None
    spacing = params["levels"][-1]["node_spacing"]
    strain = cell_strain(d["displacement"].reshape(*gshape, 3), spacing, voxel_size_um=vs)
    return PairResult(grid_shape=gshape, strain=strain, params=params, global_phi=gphi,
                      global_centre=gcentre, voxel_size_um=vs, **d)


def write_pair_vtk(path: str | os.PathLike, result: PairResult,
                   voxel_size_um: Any = None) -> Path:
    """Write the node grid as VTK ImageData (``.vti``) for ParaView, atomically.

    Parameters
    ----------
    path, result
        The ``.vti`` file to write and the :class:`PairResult` to write there.
    voxel_size_um : float or 3 floats, optional
        Voxel size (z, y, x); default the result's, else voxels.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----

    Points are the nodes (x, y, z in um when the voxel size is known: ``voxel_size_um``,
    default the result's; else voxels) with point data ``displacement`` (u_x, u_y, u_z, same
    unit), ``uncertainty`` (std of u_x, u_y, u_z, same unit), ``flag``, ``status``,
    ``zncc``, ``residual`` and ``composed`` (1: the composition of a series'
    increments); cells carry every strain measure (``volumetric``, ``ezz`` ...,
    ``eyz`` (z with y), ``exz``, ``exy`` (y with x), ``deviatoric``, ``hencky_*``,
    ``green_lagrange_*``), computed from that displacement over the node
    spacing in the same unit per axis (:func:`pair_strain`). Field data ``length_unit``
    names the unit.
    """
    import pyvista as pv

    if voxel_size_um is None:
        voxel_size_um = result.voxel_size_um
    vs = voxel_size_triple(voxel_size_um)
    gz, gy, gx = result.grid_shape
    first = np.asarray(result.nodes, float).reshape(-1, 3)[0]
    spacing = node_spacing_um(grid_step(result.nodes, result.grid_shape), vs)
    img = pv.ImageData(dimensions=(gx, gy, gz), spacing=tuple(spacing[::-1]),
                       origin=tuple((first * vs)[::-1]))

    def pts(a: np.ndarray) -> np.ndarray:  # (gz, gy, gx, ...) -> VTK order, x fastest
        return np.asarray(a).reshape(gz, gy, gx, -1).reshape(gz * gy * gx, -1).squeeze()

    u = np.asarray(result.displacement).reshape(gz, gy, gx, 3)[..., ::-1] * vs[::-1]
    img.point_data["displacement"] = pts(u)
    img.point_data["flag"] = pts(result.flag)
    img.point_data["residual"] = pts(result.residual)
    img.point_data["status"] = pts(result.status)
    img.point_data["zncc"] = pts(result.zncc)
    img.point_data["composed"] = pts(np.asarray(result.composed, np.uint8))
    img.point_data["uncertainty"] = pts(  # (x, y, z) in um, as the displacement
        np.asarray(result.uncertainty).reshape(gz, gy, gx, 3)[..., ::-1] * vs[::-1])
    st = pair_strain(result, voxel_size_um)
    cells = {"volumetric": st.volumetric, "deviatoric": st.deviatoric, **st.small,
             "hencky_volumetric": st.hencky_volumetric}
    img.field_data["length_unit"] = ["voxels" if voxel_size_um is None else "um"]
    for i, c in enumerate(COMPONENTS):
        cells[f"hencky_{c}"] = st.hencky[..., i]
        cells[f"green_lagrange_{c}"] = st.green_lagrange[..., i]
    for name, a in cells.items():
        img.cell_data[name] = np.asarray(a).reshape(-1)
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.unlink()
        img.save(str(tmp.with_suffix(".vti")))
        tmp.with_suffix(".vti").rename(tmp)
    return p

"""The one strain operator of anodetwin: gradients of a displacement field on a grid and the
strain measures of a deformation gradient.

The validation compares measured, simulated and phantom strain on the same grid with the
same operator; this module is that operator, used by the DVC (:mod:`anodetwin.dvc`), the
phantom truth (:mod:`anodetwin.phantom`, through :func:`strain_fields`) and the simulation's
output (its Hencky strain and its fields on the DVC node grid).

Gradients (``grad u``, entry ``[..., i, j] = d u_i / d x_j``, axes (z, y, x) = (0, 1, 2)):

* :func:`displacement_gradient_q8`: a regular grid of nodes whose cells are trilinear (Q8)
  hexahedra; the gradient at the centre of every cell is the average of the four edge
  differences along each axis over the node spacing (the scheme of
  ``spam.deformation.FfieldRegularQ8``); :func:`deformation_gradient_q8` is ``I + grad u``;
* :func:`voxel_gradient`: a dense field on voxel centres, central differences inside and
  one-sided differences at the faces (:func:`numpy.gradient`), in the input's precision.

Measures of ``F = I + grad u`` (:func:`strain_from_F` gives them all as a
:class:`CellStrain`):

* :func:`volumetric_strain`: J - 1 = det F - 1 (the determinant expanded by cofactors);
* :func:`small_strain`: ``eps = sym(grad u)`` by component name ``ezz, eyy, exx, eyz, exz,
  exy``: names are axis letters, never index positions (``eyz`` is entry (0, 1), z with y;
  ``exz`` entry (0, 2); ``exy`` entry (1, 2), y with x);
* ``deviatoric``: sqrt(dev(eps) : dev(eps)); ``principal``: the eigenvalues of eps,
  ascending;
* :func:`green_lagrange`: E = (F^T F - I) / 2;
* :func:`hencky_strain`: H = log U = log(F^T F) / 2, the log of the right stretch (its trace
  is log J).

Six-component arrays are ordered ``zz, yy, xx, yz, xz, xy`` (:data:`COMPONENTS`, entries
:data:`COMPONENT_INDEX`).

Units: ``grad u`` is a length over a length, so displacements and spacings must be in one
length unit *per axis*. DVC displacements and node spacings are in voxels, which differ
between axes when the voxels are anisotropic; :func:`cell_strain` with ``voxel_size_um``
converts both to um per axis first (``u_i * voxel_size_um[i]`` over ``spacing_j *
voxel_size_um[j]``, :func:`node_spacing_um`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodetwin.errors import ParameterError, ShapeMismatchError

__all__ = ["COMPONENTS", "COMPONENT_INDEX", "SMALL_STRAIN_NAMES", "CellStrain",
           "voxel_size_triple", "node_spacing_um", "node_spacing_voxels",
           "displacement_gradient_q8",
           "deformation_gradient_q8", "voxel_gradient", "small_strain", "small_strain_tensor",
           "volumetric_strain",
           "green_lagrange", "hencky_strain", "strain_from_F", "cell_mean", "cell_strain",
           "strain_fields"]

#: Six-component order of every published symmetric tensor (z, y, x axes).
COMPONENTS = ("zz", "yy", "xx", "yz", "xz", "xy")
#: Array entry (i, j), axes (z, y, x) = (0, 1, 2), of each of :data:`COMPONENTS`:
#: ``yz`` is z with y (0, 1), ``xz`` is z with x (0, 2), ``xy`` is y with x (1, 2).
COMPONENT_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
#: Names of the small-strain components, in :data:`COMPONENTS` order.
SMALL_STRAIN_NAMES = tuple(f"e{c}" for c in COMPONENTS)


@dataclass
class CellStrain:
    """Strain measures on the cells of a grid (arrays of shape ``cells``).

    Attributes
    ----------
    F : numpy.ndarray
        (..., 3, 3) deformation gradient per cell.
    volumetric : numpy.ndarray
        J - 1.
    small : dict
        Small-strain components by name ``ezz, eyy, exx, eyz, exz, exy`` (``eyz``: entry
        (0, 1), z with y; ``exz``: (0, 2); ``exy``: (1, 2), y with x).
    deviatoric : numpy.ndarray
        Norm of the deviatoric small strain.
    principal : numpy.ndarray
        (..., 3) principal small strains, ascending.
    green_lagrange : numpy.ndarray
        (..., 6) components zz, yy, xx, yz, xz, xy.
    hencky : numpy.ndarray
        (..., 6) components zz, yy, xx, yz, xz, xy.
    """

    F: np.ndarray
    volumetric: np.ndarray
    small: dict
    deviatoric: np.ndarray
    principal: np.ndarray
    green_lagrange: np.ndarray
    hencky: np.ndarray

    @property
    def hencky_volumetric(self) -> np.ndarray:
        """Trace of the Hencky strain (= log J).

        Returns
        -------
        numpy.ndarray
            Shape ``cells``: ``hencky_zz + hencky_yy + hencky_xx``.
        """
        return self.hencky[..., 0] + self.hencky[..., 1] + self.hencky[..., 2]


# --------------------------------------------------------------------------------------------
# grids and units

def voxel_size_triple(voxel_size_um) -> np.ndarray:
    """A voxel size as a (z, y, x) array.

    Parameters
    ----------
    voxel_size_um : float, 3 floats or None
        One size for all axes, or one per axis (z, y, x), in um; None stands for 1.

    Returns
    -------
    numpy.ndarray
        (3,) float64 voxel size (um).

    Raises
    ------
    ParameterError
        When a size is not positive and finite.
    """
    v = np.broadcast_to(np.asarray(1.0 if voxel_size_um is None else voxel_size_um,
                                   dtype=np.float64), (3,)).copy()
    if not (np.isfinite(v).all() and np.all(v > 0)):
        raise ParameterError(f"voxel size {voxel_size_um} is not positive",
                             "give a voxel size > 0 um (one value or z, y, x)")
    return v


def node_spacing_um(node_spacing, voxel_size_um=None) -> np.ndarray:
    """The spacing of a node grid in um per axis, from its spacing in voxels.

    Parameters
    ----------
    node_spacing : float or 3 floats
        Node spacing along z, y, x (voxels).
    voxel_size_um : float, 3 floats or None
        Voxel size (um, z, y, x); None: isotropic voxels of unit size (the result stays in
        voxels).

    Returns
    -------
    numpy.ndarray
        (3,) float64 spacing ``node_spacing[j] * voxel_size_um[j]``.

    Raises
    ------
    ParameterError
        When a voxel size is not positive and finite.
    """
    return np.broadcast_to(np.asarray(node_spacing, dtype=np.float64), (3,)) \
        * voxel_size_triple(voxel_size_um)


def node_spacing_voxels(spacing_um, voxel_size_um=None) -> np.ndarray:
    """The spacing of a node grid in whole voxels per axis, from a spacing in um (the
    inverse of :func:`node_spacing_um`, rounded).

    Parameters
    ----------
    spacing_um : float or 3 floats
        Wanted spacing along z, y, x (um).
    voxel_size_um : float, 3 floats or None
        Voxel size (um, z, y, x); None: the spacing is already in voxels.

    Returns
    -------
    numpy.ndarray
        (3,) int spacing ``round(spacing_um[j] / voxel_size_um[j])``, at least 1.

    Raises
    ------
    ParameterError
        When a voxel size is not positive and finite.
    """
    ratio = np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (3,)) \
        / voxel_size_triple(voxel_size_um)
    return np.maximum(1, np.round(ratio)).astype(int)


# --------------------------------------------------------------------------------------------
# gradients

def displacement_gradient_q8(displacement: np.ndarray, node_spacing) -> np.ndarray:
    """Displacement gradient at the centre of every cell of a regular node grid (Q8 cells).

    Parameters
    ----------
    displacement : numpy.ndarray
        (gz, gy, gx, 3) nodal displacements (z, y, x components), same length unit as
        ``node_spacing``.
    node_spacing : float or 3 floats
        Node spacing along z, y, x.

    Returns
    -------
    numpy.ndarray
        (gz - 1, gy - 1, gx - 1, 3, 3) float64 ``grad u``, entry ``[..., i, j] = d u_i /
        d x_j``; NaN in a cell with a NaN corner.

    Raises
    ------
    ShapeMismatchError
        When ``displacement`` is not (gz, gy, gx, 3).
    ParameterError
        When an axis has fewer than 2 nodes or a spacing is not positive.
    """
    u = np.asarray(displacement, dtype=np.float64)
    if u.ndim != 4 or u.shape[-1] != 3:
        raise ShapeMismatchError(f"displacement has shape {u.shape}",
                                 "give a (gz, gy, gx, 3) array of nodal displacements")
    if min(u.shape[:3]) < 2:
        raise ParameterError(f"node grid {u.shape[:3]} has fewer than 2 nodes along an axis",
                             "use a smaller node spacing or a larger region")
    s = np.broadcast_to(np.asarray(node_spacing, dtype=np.float64), (3,))
    if np.any(s <= 0):
        raise ParameterError(f"node spacing {node_spacing} is not positive", "give spacing > 0")
    # the 8 corners of each cell
    c = {(a, b, d): u[a: u.shape[0] - 1 + a, b: u.shape[1] - 1 + b, d: u.shape[2] - 1 + d]
         for a in (0, 1) for b in (0, 1) for d in (0, 1)}
    dz = sum(c[1, b, d] - c[0, b, d] for b in (0, 1) for d in (0, 1)) / (4 * s[0])
    dy = sum(c[a, 1, d] - c[a, 0, d] for a in (0, 1) for d in (0, 1)) / (4 * s[1])
    dx = sum(c[a, b, 1] - c[a, b, 0] for a in (0, 1) for b in (0, 1)) / (4 * s[2])
    return np.stack([dz, dy, dx], axis=-1)


def deformation_gradient_q8(displacement: np.ndarray, node_spacing) -> np.ndarray:
    """Deformation gradient ``F = I + grad u`` at the centre of every cell of a node grid.

    Parameters
    ----------
    displacement, node_spacing
        As :func:`displacement_gradient_q8`: (gz, gy, gx, 3) nodal displacements and the
        node spacing (z, y, x) in the same length unit.

    Returns
    -------
    numpy.ndarray
        (gz - 1, gy - 1, gx - 1, 3, 3) deformation gradients
        (:func:`displacement_gradient_q8` plus the identity).

    Raises
    ------
    ShapeMismatchError, ParameterError
        As :func:`displacement_gradient_q8`.
    """
    return displacement_gradient_q8(displacement, node_spacing) + np.eye(3)


def voxel_gradient(displacement: np.ndarray, voxel_size_um) -> np.ndarray:
    """Displacement gradient of a dense field on voxel centres by central differences.

    Parameters
    ----------
    displacement : numpy.ndarray
        (3, z, y, x) components (u_z, u_y, u_x) in um.
    voxel_size_um : float or 3 floats
        Voxel size (um), one value or per axis (z, y, x): the difference along axis j is
        divided by ``voxel_size_um[j]``.

    Returns
    -------
    numpy.ndarray
        (z, y, x, 3, 3) float32 ``grad u`` (entry ``[..., i, j] = d u_i / d x_j``):
        central differences inside, one-sided at the faces (:func:`numpy.gradient`).

    Raises
    ------
    ParameterError
        When a voxel size is not positive and finite.
    """
    vs = voxel_size_triple(voxel_size_um)
    u = np.asarray(displacement)
    # each entry contiguous in memory (the result is a view with the (3, 3) axes last), so
    # the measures read whole blocks rather than every ninth value
    grad = np.empty((3, 3) + u.shape[1:], dtype=np.float32)
    for i in range(3):
        for j in range(3):
            grad[i, j] = np.gradient(u[i], vs[j], axis=j)
    return np.moveaxis(grad, (0, 1), (-2, -1))


# --------------------------------------------------------------------------------------------
# measures

def small_strain(grad: np.ndarray) -> dict[str, np.ndarray]:
    """Small-strain components ``sym(grad u)`` by name.

    Parameters
    ----------
    grad : numpy.ndarray
        (..., 3, 3) displacement gradient ``F - I``.

    Returns
    -------
    dict
        ``ezz, eyy, exx`` (the diagonal of ``grad``) and ``eyz`` = (du_z/dy + du_y/dz) / 2
        (entry (0, 1)), ``exz`` = (du_z/dx + du_x/dz) / 2 (entry (0, 2)), ``exy`` =
        (du_y/dx + du_x/dy) / 2 (entry (1, 2)); arrays of shape ``...`` and the dtype of
        ``grad``.
    """
    g = np.asarray(grad)
    out = {}
    for name, (i, j) in zip(SMALL_STRAIN_NAMES, COMPONENT_INDEX, strict=True):
        out[name] = g[..., i, i].copy() if i == j else 0.5 * (g[..., i, j] + g[..., j, i])
    return out


def small_strain_tensor(grad: np.ndarray) -> np.ndarray:
    """The small-strain tensor as a matrix (:func:`small_strain` gives its components).

    Parameters
    ----------
    grad : numpy.ndarray
        (..., 3, 3) displacement gradient, e.g. ``F - I``.

    Returns
    -------
    numpy.ndarray
        (..., 3, 3) symmetric ``eps = (grad u + grad u^T) / 2``.
    """
    g = np.asarray(grad)
    return 0.5 * (g + np.swapaxes(g, -1, -2))


def volumetric_strain(grad: np.ndarray) -> np.ndarray:
    """Volumetric strain ``J - 1 = det(I + grad u) - 1``.

    Parameters
    ----------
    grad : numpy.ndarray
        Displacement gradients ``F - I``, shape (..., 3, 3).

    Returns
    -------
    numpy.ndarray
        Shape ``...``, the dtype of ``grad``: the determinant expanded by cofactors of the
        first row, so no 3x3 field is copied.
    """
    g = np.asarray(grad)
    a, b, c = g[..., 0, 0] + 1, g[..., 0, 1], g[..., 0, 2]
    d, e, f = g[..., 1, 0], g[..., 1, 1] + 1, g[..., 1, 2]
    gg, hh, ii = g[..., 2, 0], g[..., 2, 1], g[..., 2, 2] + 1
    det = a * (e * ii - f * hh) - b * (d * ii - f * gg) + c * (d * hh - e * gg)
    return det - 1.0


def _deviatoric_norm(eps: np.ndarray) -> np.ndarray:
    """``sqrt(dev(eps) : dev(eps))`` of (..., 3, 3) small-strain tensors."""
    tr = np.trace(eps, axis1=-2, axis2=-1)
    dev = eps - tr[..., None, None] / 3 * np.eye(3)
    return np.sqrt(np.sum(dev * dev, axis=(-2, -1)))


def green_lagrange(F: np.ndarray) -> np.ndarray:
    """Green-Lagrange strain.

    Parameters
    ----------
    F : numpy.ndarray
        (..., 3, 3) deformation gradients.

    Returns
    -------
    numpy.ndarray
        (..., 3, 3) ``E = (F^T F - I) / 2``.
    """
    F = np.asarray(F)
    return 0.5 * (np.swapaxes(F, -1, -2) @ F - np.eye(3))


def hencky_strain(F: np.ndarray) -> np.ndarray:
    """Lagrangian Hencky (log) strain ``H = log U = log(F^T F) / 2``.

    Parameters
    ----------
    F : numpy.ndarray
        (..., 3, 3) deformation gradients (any axis order: H follows F's).

    Returns
    -------
    numpy.ndarray
        (..., 3, 3) tensors from the eigen-decomposition of ``C = F^T F``: ``V diag(log(w)
        / 2) V^T``; its trace is log J.
    """
    F = np.asarray(F)
    w, V = np.linalg.eigh(np.swapaxes(F, -1, -2) @ F)
    with np.errstate(divide="ignore", invalid="ignore"):
        half_log = 0.5 * np.log(w)
    return (V * half_log[..., None, :]) @ np.swapaxes(V, -1, -2)


def _six(t: np.ndarray) -> np.ndarray:
    """The (..., 6) components of (..., 3, 3) symmetric tensors in :data:`COMPONENTS`
    order."""
    return np.stack([t[..., i, j] for i, j in COMPONENT_INDEX], axis=-1)


def strain_from_F(F: np.ndarray) -> CellStrain:
    """All strain measures of deformation gradients.

    Parameters
    ----------
    F : numpy.ndarray
        (..., 3, 3) deformation gradients; one with a non-finite entry gives NaN in every
        measure.

    Returns
    -------
    CellStrain
        Volumetric, small (by name), deviatoric, principal, Green-Lagrange and Hencky
        strain (module notes), float64.
    """
    F = np.asarray(F, dtype=np.float64)
    bad = ~np.isfinite(F).all(axis=(-2, -1))
    Fs = np.where(bad[..., None, None], np.eye(3), F)
    grad = Fs - np.eye(3)
    eps = small_strain_tensor(grad)
    out = CellStrain(F=F, volumetric=volumetric_strain(grad), small=small_strain(grad),
                     deviatoric=_deviatoric_norm(eps), principal=np.linalg.eigvalsh(eps),
                     green_lagrange=_six(green_lagrange(Fs)), hencky=_six(hencky_strain(Fs)))
    if bad.any():
        for a in (out.volumetric, out.deviatoric, out.principal, out.green_lagrange,
                  out.hencky, *out.small.values()):
            a[bad] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# fields on grids

def cell_mean(a: np.ndarray) -> np.ndarray:
    """Mean of the 8 corner values of every cell of a nodal grid array.

    Parameters
    ----------
    a : numpy.ndarray
        (gz, gy, gx, ...) values at the nodes (e.g. node positions or displacements).

    Returns
    -------
    numpy.ndarray
        (gz - 1, gy - 1, gx - 1, ...) float64: cell centres from node positions, cell
        displacements from nodal ones.
    """
    a = np.asarray(a, float)
    gz, gy, gx = a.shape[:3]
    return 0.125 * sum(a[i: gz - 1 + i, j: gy - 1 + j, k: gx - 1 + k]
                       for i in (0, 1) for j in (0, 1) for k in (0, 1))


def cell_strain(displacement: np.ndarray, node_spacing, voxel_size_um=None) -> CellStrain:
    """Strain measures on the cells of a regular node grid (Q8 cell-centre gradient).

    Parameters
    ----------
    displacement : numpy.ndarray
        (gz, gy, gx, 3) nodal displacements, components (z, y, x).
    node_spacing : float or 3 floats
        Node spacing along z, y, x, in the unit of ``displacement``.
    voxel_size_um : float or 3 floats, optional
        When given, ``displacement`` and ``node_spacing`` are in voxels and are converted to
        um per axis (component i times ``voxel_size_um[i]``, spacing along j times
        ``voxel_size_um[j]``) before the gradient: required for anisotropic voxels.

    Returns
    -------
    CellStrain
        On the (gz - 1, gy - 1, gx - 1) cells.

    Raises
    ------
    ShapeMismatchError, ParameterError
        As :func:`displacement_gradient_q8`; a voxel size that is not positive.
    """
    if voxel_size_um is None:
        return strain_from_F(deformation_gradient_q8(displacement, node_spacing))
    vs = voxel_size_triple(voxel_size_um)
    u = np.asarray(displacement, dtype=np.float64)
    u = u * vs if u.shape[-1:] == (3,) else u  # a wrong shape is reported below
    return strain_from_F(deformation_gradient_q8(u, node_spacing_um(node_spacing, vs)))


def strain_fields(displacement: np.ndarray, voxel_size_um) -> dict[str, np.ndarray]:
    """Volumetric and small strain of a dense displacement field on the voxel grid.

    Parameters
    ----------
    displacement : numpy.ndarray
        (3, z, y, x) components (u_z, u_y, u_x) in um on voxel centres.
    voxel_size_um : float or 3 floats
        Voxel size (um), one value or per axis (z, y, x).

    Returns
    -------
    dict
        (z, y, x) float32 arrays: ``volumetric`` (:func:`volumetric_strain`) and the
        small-strain components ``ezz, eyy, exx, eyz, exz, exy`` (:func:`small_strain`) of
        the central-difference gradient (:func:`voxel_gradient`).

    Raises
    ------
    ParameterError
        When a voxel size is not positive and finite.
    """
    grad = voxel_gradient(displacement, voxel_size_um)
    return {"volumetric": volumetric_strain(grad), **small_strain(grad)}

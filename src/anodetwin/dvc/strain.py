"""Strain from a displacement field on a regular grid of nodes.

Each cell of the node grid is a trilinear (Q8) hexahedron; its deformation gradient is
evaluated at the cell centre, ``F = I + grad u``, with ``grad u`` the average of the four
edge differences along each axis divided by the node spacing — the scheme of
``spam.deformation.FfieldRegularQ8``. From F the module derives, per cell:

* ``volumetric``: J - 1 = det F - 1;
* the small-strain tensor ``eps = sym(F - I)``: ``ezz, eyy, exx, eyz, exz, exy`` (z, y, x);
  components are named by axis letters, never by index position: with arrays indexed
  (z, y, x) = (0, 1, 2), ``eyz`` is entry (0, 1) (z with y), ``exz`` entry (0, 2) and
  ``exy`` entry (1, 2) (y with x);
* ``deviatoric``: the norm of the deviatoric small strain, sqrt(dev(eps) : dev(eps));
* ``principal``: eigenvalues of eps, ascending;
* ``green_lagrange``: E = (F^T F - I) / 2, six components;
* ``hencky``: log strain H = log(U) = log(F^T F) / 2, six components and its trace (which
  equals log J).

Cells with a NaN corner give NaN everywhere. Components are stored in the order
``zz, yy, xx, yz, xz, xy`` (:data:`COMPONENTS`, entries :data:`COMPONENT_INDEX`).

Units: ``grad u`` is a length over a length, so the displacement and the node spacing must
be in one length unit *per axis*. DVC displacements and node spacings are in voxels, which
differ between axes when the voxels are anisotropic; give ``voxel_size_um`` to
:func:`cell_strain` and both are converted to um per axis first (``u_i * voxel_size_um[i]``
over ``spacing_j * voxel_size_um[j]``), or pass displacements and spacings already in um.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.kinematics import voxel_size_triple

__all__ = ["CellStrain", "cell_mean", "deformation_gradient_q8", "strain_from_F", "cell_strain",
           "COMPONENTS", "COMPONENT_INDEX"]

#: Six-component order of every published symmetric tensor (DESIGN.md section 2).
COMPONENTS = ("zz", "yy", "xx", "yz", "xz", "xy")
#: Array entry (i, j), axes (z, y, x) = (0, 1, 2), of each of :data:`COMPONENTS`:
#: ``yz`` is z with y (0, 1), ``xz`` is z with x (0, 2), ``xy`` is y with x (1, 2).
COMPONENT_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclass
class CellStrain:
    """Strain measures on the cells of a node grid (arrays of shape ``cells``).

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
        """Trace of the Hencky strain (= log J)."""
        return self.hencky[..., 0] + self.hencky[..., 1] + self.hencky[..., 2]


def deformation_gradient_q8(displacement: np.ndarray, node_spacing) -> np.ndarray:
    """Deformation gradient at the centre of every cell of a regular node grid.

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
        (gz - 1, gy - 1, gx - 1, 3, 3) deformation gradients.
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
    grad = np.stack([dz, dy, dx], axis=-1)  # [..., i, j] = d u_i / d x_j
    return grad + np.eye(3)


def _sym6(t: np.ndarray) -> np.ndarray:
    return np.stack([t[..., i, j] for i, j in COMPONENT_INDEX], axis=-1)


def strain_from_F(F: np.ndarray) -> CellStrain:
    """All strain measures of deformation gradients ``F`` (..., 3, 3)."""
    F = np.asarray(F, dtype=np.float64)
    bad = ~np.isfinite(F).all(axis=(-2, -1))
    Fs = np.where(bad[..., None, None], np.eye(3), F)
    eye = np.eye(3)
    eps = 0.5 * (Fs + np.swapaxes(Fs, -1, -2)) - eye
    tr = np.trace(eps, axis1=-2, axis2=-1)
    dev = eps - tr[..., None, None] / 3 * eye
    C = np.swapaxes(Fs, -1, -2) @ Fs
    w, V = np.linalg.eigh(C)
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = np.log(w)
    H = (V * (0.5 * logw)[..., None, :]) @ np.swapaxes(V, -1, -2)
    out = CellStrain(
        F=F,
        volumetric=np.linalg.det(Fs) - 1.0,
        small={f"e{n}": eps[..., i, j]
               for n, (i, j) in zip(COMPONENTS, COMPONENT_INDEX, strict=True)},
        deviatoric=np.sqrt(np.sum(dev * dev, axis=(-2, -1))),
        principal=np.linalg.eigvalsh(eps),
        green_lagrange=_sym6(0.5 * (C - eye)),
        hencky=_sym6(H),
    )
    if bad.any():
        out.volumetric[bad] = np.nan
        out.deviatoric[bad] = np.nan
        out.principal[bad] = np.nan
        out.green_lagrange[bad] = np.nan
        out.hencky[bad] = np.nan
        for v in out.small.values():
            v[bad] = np.nan
    return out


def cell_mean(a: np.ndarray) -> np.ndarray:
    """Mean of the 8 corner values of every cell of a nodal grid array (gz, gy, gx, ...):
    cell centres from node positions, cell displacements from nodal ones."""
    a = np.asarray(a, float)
    gz, gy, gx = a.shape[:3]
    return 0.125 * sum(a[i: gz - 1 + i, j: gy - 1 + j, k: gx - 1 + k]
                       for i in (0, 1) for j in (0, 1) for k in (0, 1))


def cell_strain(displacement: np.ndarray, node_spacing, voxel_size_um=None) -> CellStrain:
    """Strain measures on the cells of a regular node grid (see the module notes).

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
    """
    if voxel_size_um is None:
        return strain_from_F(deformation_gradient_q8(displacement, node_spacing))
    vs = voxel_size_triple(voxel_size_um)
    u = np.asarray(displacement, dtype=np.float64)
    u = u * vs if u.shape[-1:] == (3,) else u  # a wrong shape is reported below
    s = np.broadcast_to(np.asarray(node_spacing, dtype=np.float64), (3,)) * vs
    return strain_from_F(deformation_gradient_q8(u, s))

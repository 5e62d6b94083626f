"""Strain from a displacement field on a regular grid of nodes: the DVC stage's view of the
one strain operator, :mod:`anodetwin.strain` (re-exported here).

Each cell of the node grid is a trilinear (Q8) hexahedron; its deformation gradient is
evaluated at the cell centre (:func:`deformation_gradient_q8`) and every strain measure
(J - 1, small strain ``ezz, eyy, exx, eyz, exz, exy``, deviatoric norm, principal values,
Green-Lagrange, Hencky) comes from :func:`strain_from_F`; :func:`cell_strain` converts
displacements and node spacings in voxels to um per axis first when given the voxel size.
Components are named by axis letters (``eyz``: entry (0, 1), z with y; ``exz``: (0, 2);
``exy``: (1, 2), y with x) and six-component arrays are ordered ``zz, yy, xx, yz, xz, xy``
(:data:`COMPONENTS`). Cells with a NaN corner give NaN everywhere.
"""

from __future__ import annotations

from anodetwin.strain import (
    COMPONENT_INDEX,
    COMPONENTS,
    CellStrain,
    cell_mean,
    cell_strain,
    deformation_gradient_q8,
    strain_from_F,
)

__all__ = ["CellStrain", "cell_mean", "deformation_gradient_q8", "strain_from_F", "cell_strain",
           "COMPONENTS", "COMPONENT_INDEX"]

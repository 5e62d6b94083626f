"""Meshes of segmented electrode microstructures with phase, particle and boundary tags.

Three routes, one set of tags (:data:`FACET`, cell tags ``phases`` and ``particles``):

* :func:`voxel_mesh`: one hexahedron per voxel (or per block after majority coarsening);
* :func:`conforming_mesh`: tetrahedra conforming to the phase interfaces;
* :func:`packing_mesh`: spheres (:class:`Spheres`, from :func:`spheres_from_table` or
  :func:`read_particle_source`) in a box meshed with gmsh.

In and out: :func:`read_labels_volume` gives the :class:`Labels` to mesh, :func:`write_mesh`
writes a :class:`HexMesh` (mesh, tags, summary) to a folder that :func:`read_mesh` reads back
as a :class:`TaggedMesh`; :func:`preview` renders one. DOLFINx, gmsh and pyvista are
imported only when a mesh is built, written or read, not by ``import anodetwin.mesh``.
"""

from anodetwin.mesh.conforming import conforming_mesh
from anodetwin.mesh.io import TaggedMesh, preview, read_labels_volume, read_mesh, write_mesh
from anodetwin.mesh.packing import (PARTICLE_LIMIT, Spheres, packing_mesh, read_particle_source,
                                    spheres_from_table)
from anodetwin.mesh.voxel import FACET, HexMesh, Labels, coarsen, remove_specks, voxel_mesh

__all__ = ["FACET", "Labels", "HexMesh", "TaggedMesh", "coarsen", "remove_specks",
           "voxel_mesh", "conforming_mesh", "packing_mesh", "Spheres", "spheres_from_table",
           "read_particle_source", "PARTICLE_LIMIT", "read_labels_volume", "write_mesh",
           "read_mesh", "preview"]

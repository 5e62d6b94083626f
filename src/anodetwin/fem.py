"""The import order the DOLFINx wheel needs, kept in one place.

``import anodetwin.fem`` before any ``dolfinx`` or ``petsc4py`` import:

1. ``h5py`` first: once DOLFINx has loaded its own HDF5 library, h5py fails later in the same
   process with "Not a datatype";
2. ``dolfinx_solver`` (the ``dolfinx-solver-real`` wheel) before ``dolfinx`` / ``petsc4py``:
   it puts its PETSc, SLEPc and MPICH libraries in place for them.

Importing this module does both, once per process; nothing else happens.
"""

import h5py  # noqa: F401  (1.)
import dolfinx_solver  # noqa: F401  (2.)

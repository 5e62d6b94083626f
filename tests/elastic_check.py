"""A small linear-elastic swelling solve used by the mesh tests: the mesh, its tags and the
boundary tags must give a well-posed problem that CG + GAMG solves.

Swelling is an isotropic eigenstrain ``e0`` in the particle phases; stiffness per phase
(GPa, lengths in um); the collector facets are bonded (u = 0), the lateral faces on rollers,
the top free.
"""

from __future__ import annotations

import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import numpy as np

E_GPA = {0: 0.05, 1: 0.5, 2: 150.0, 3: 30.0, 4: 110.0, 5: 0.5}
NU = 0.25


def _near_nullspace(V):
    import dolfinx.la
    from petsc4py import PETSc

    bs = V.dofmap.index_map_bs
    n = V.dofmap.index_map.size_local
    vecs = [dolfinx.la.vector(V.dofmap.index_map, bs=bs, dtype=PETSc.ScalarType)
            for _ in range(6)]
    b = [v.array for v in vecs]
    dofs = [V.sub(i).dofmap.list.flatten() for i in range(3)]
    x = V.tabulate_dof_coordinates()
    blk = V.dofmap.list.flatten()
    x0, x1, x2 = x[blk, 0], x[blk, 1], x[blk, 2]
    for i in range(3):
        b[i][dofs[i]] = 1.0
    b[3][dofs[0]], b[3][dofs[1]] = -x1, x0
    b[4][dofs[0]], b[4][dofs[2]] = x2, -x0
    b[5][dofs[2]], b[5][dofs[1]] = x1, -x2
    dolfinx.la.orthonormalize(vecs)
    basis = [PETSc.Vec().createWithArray(a[: bs * n], bsize=bs, comm=V.mesh.comm) for a in b]
    return PETSc.NullSpace().create(vectors=basis)


def swelling_solve(mesh, phases, facets, e0: float = 0.01,
                   swelling_phases=(2, 3)) -> dict:
    """Solve and return the displacement, KSP iterations and converged reason."""
    import dolfinx.fem as fem
    import dolfinx.fem.petsc
    import ufl

    from anodetwin.mesh.voxel import FACET

    tdim = 3
    Q = fem.functionspace(mesh, ("DG", 0))
    E, eig = fem.Function(Q), fem.Function(Q)
    n_local = mesh.topology.index_map(tdim).size_local
    cells_E = np.full(n_local + mesh.topology.index_map(tdim).num_ghosts, E_GPA[1])
    cells_e = np.zeros_like(cells_E)
    for code, val in E_GPA.items():
        sel = phases.indices[phases.values == code]
        cells_E[sel] = val
        if code in swelling_phases:
            cells_e[sel] = e0
    dofs = Q.dofmap.list[:n_local, 0]
    E.x.array[dofs] = cells_E[:n_local]
    eig.x.array[dofs] = cells_e[:n_local]
    E.x.scatter_forward()
    eig.x.scatter_forward()
    lam = E * NU / ((1 + NU) * (1 - 2 * NU))
    mu = E / (2 * (1 + NU))
    V = fem.functionspace(mesh, ("Lagrange", 1, (3,)))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)

    def eps(w):
        return ufl.sym(ufl.grad(w))

    def sigma(strain):
        return lam * ufl.tr(strain) * ufl.Identity(3) + 2 * mu * strain

    a = ufl.inner(sigma(eps(u)), eps(v)) * ufl.dx
    L = ufl.inner(sigma(eig * ufl.Identity(3)), eps(v)) * ufl.dx
    fdim = 2
    bcs = []
    bottom = facets.indices[facets.values == FACET["collector"]]
    bcs.append(fem.dirichletbc(np.zeros(3), fem.locate_dofs_topological(V, fdim, bottom), V))
    for names, comp in ((("x_min", "x_max"), 0), (("y_min", "y_max"), 1)):
        f = np.concatenate([facets.indices[facets.values == FACET[n]] for n in names])
        Vc = V.sub(comp)
        bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(Vc, fdim, f), Vc))
    problem = dolfinx.fem.petsc.LinearProblem(
        a, L, bcs=bcs, petsc_options_prefix="swell_",
        petsc_options={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-9,
                       "ksp_max_it": 500})
    problem.A.setNearNullSpace(_near_nullspace(V))
    uh = problem.solve()
    ksp = problem.solver
    return {"u": uh, "iterations": ksp.getIterationNumber(),
            "reason": ksp.getConvergedReason()}

"""A small linear-elastic swelling solve used by the mesh tests: the mesh, its tags and the
boundary tags must give a well-posed problem that CG + GAMG solves.

Swelling is an isotropic eigenstrain ``e0`` in the particle phases; stiffness per phase
(GPa, lengths in um); the collector facets are bonded (u = 0), the lateral faces on rollers,
the top free.
"""

from __future__ import annotations

import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import numpy as np

from anodetwin.simulate.mechanics import near_nullspace

E_GPA = {0: 0.05, 1: 0.5, 2: 150.0, 3: 30.0, 4: 110.0, 5: 0.5}
NU = 0.25


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
    problem.A.setNearNullSpace(near_nullspace(V))
    uh = problem.solve()
    ksp = problem.solver
    return {"u": uh, "iterations": ksp.getIterationNumber(),
            "reason": ksp.getConvergedReason()}


def constants(mat, theta):
    """Swelling Js, its cube root s and the Lame constants (MPa) of a material at theta."""
    Js = 1 + mat.beta * theta
    E = mat.E0_mpa + (mat.E1_mpa - mat.E0_mpa) * theta
    lam = E * mat.nu / ((1 + mat.nu) * (1 - 2 * mat.nu))
    return Js, Js ** (1 / 3), lam, E / (2 * (1 + mat.nu))


def nominal_zz(lz, mat, theta):
    """Exact first Piola-Kirchhoff P_zz of uniaxial strain F = diag(1, 1, lz), written out
    from the stored energy psi = mu/2 (I1 - 3) - mu ln Je + lam/4 (Je^2 - 1 - 2 ln Je)
    + Kc a ((Je - 1) - a ln((Je - Jmin)/a)), a = 1 - Jmin."""
    Js, s, lam, mu = constants(mat, theta)
    fz = lz / s
    je = lz / Js
    kc, jmin = mat.compaction_modulus_mpa, mat.compaction_limit
    dU = lam / 2 * (je - 1 / je) + kc * (1 - jmin) * (je - 1) / (je - jmin)  # dU/dJe
    dpsi = mu * fz - mu / fz + dU * je / fz
    return Js * dpsi / s

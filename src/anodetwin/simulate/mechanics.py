"""Finite-strain swelling mechanics of an electrode mesh (DOLFINx, MPI).

Kinematics: ``F = I + grad u = Fe Fs`` with isotropic swelling ``Fs = (1 + beta theta)^(1/3)
I`` (theta: normalised Li content, 1 = Li15Si4). Material: compressible neo-Hookean in the
elastic part, per unit intermediate volume

    psi(Fe) = mu / 2 (tr(Fe^T Fe) - 3) - mu ln Je + lambda / 2 (ln Je)^2,

stored per reference volume as ``Js psi``; Lame constants from E(theta) = E0 + (E1 - E0)
theta (lithiated Si softens) and nu, per phase (:mod:`anodetwin.simulate.materials`).
Units: um, MPa, uN.

Boundaries (facet tags of :data:`anodetwin.mesh.voxel.FACET`): the collector bonded
(u = 0) or on rollers (u_z = 0, ``collector="rollers"``, e.g. free-swelling checks); the
lateral faces on rollers (normal displacement 0) or free; the top (separator side) free, a
rigid plate (u_z = 0) or a spring with preload: the traction ``-(p0 + k u_top) e_z`` per
reference area acts on the top face, with ``u_top`` the mean axial displacement of the top,
so the spring follows the swelling. The spring is solved by a fixed-point loop around
Newton on ``u_top`` (its stiffness term is a rank-one coupling of the whole top face that a
sparse tangent cannot hold); it converges in a few passes for stack springs much softer
than the electrode.

Newton: PETSc SNES (line search), Krylov GMRES (the tangent of a swelling-prestressed
state can be indefinite, which stops CG) preconditioned by algebraic multigrid (GAMG)
with the six rigid-body modes as near-nullspace. Loads are applied in ``steps`` increments
of theta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anodetwin.errors import NumericalError, ParameterError

__all__ = ["Boundary", "SwellingResult", "near_nullspace", "solve_swelling"]


@dataclass(frozen=True)
class Boundary:
    """Boundary conditions (module notes); ``p0_mpa`` preload and ``k_mpa_per_um`` spring
    stiffness per area act when ``top == "spring"``."""

    collector: str = "bonded"        # bonded | rollers
    lateral: str = "rollers"         # rollers | free | symmetry (rollers on min faces only)
    top: str = "spring"              # spring | plate | free
    p0_mpa: float = 0.3
    k_mpa_per_um: float = 0.0

    def __post_init__(self) -> None:
        for name, val, ok in (("collector", self.collector, ("bonded", "rollers")),
                              ("lateral", self.lateral, ("rollers", "free", "symmetry")),
                              ("top", self.top, ("spring", "plate", "free"))):
            if val not in ok:
                raise ParameterError(f"boundary {name} = '{val}'", f"use one of {ok}")
        if self.p0_mpa < 0 or self.k_mpa_per_um < 0:
            raise ParameterError("spring preload and stiffness must not be negative",
                                 "give p0 >= 0 MPa and k >= 0 MPa/um")


@dataclass
class SwellingResult:
    """Displacement and derived numbers of a solve."""

    u: object
    top_displacement_um: float
    stack_pressure_mpa: float
    newton_iterations: list = field(default_factory=list)
    krylov_iterations: list = field(default_factory=list)
    spring_passes: int = 0


def near_nullspace(V):
    """The six rigid-body modes of a vector P1 space as a PETSc near-nullspace."""
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


def _cell_field(mesh, Q, phases, values: dict, default: float):
    """DG0 function with ``values[phase code]`` on the cells of each phase."""
    import dolfinx.fem as fem

    f = fem.Function(Q)
    n = mesh.topology.index_map(3).size_local
    arr = np.full(n, default, float)
    for code, v in values.items():
        sel = phases.indices[(phases.values == code) & (phases.indices < n)]
        arr[sel] = v
    f.x.array[Q.dofmap.list[:n, 0]] = arr
    f.x.scatter_forward()
    return f


def solve_swelling(mesh, phases, facets, materials: dict, theta, boundary: Boundary,
                   steps: int = 1, rtol: float = 1e-9, spring_tol: float = 1e-8,
                   max_spring_passes: int = 50, prefix: str = "swell_",
                   linear_solver: str = "iterative",
                   quadrature_degree: int = 2) -> SwellingResult:
    """Equilibrium of the swollen electrode (module notes).

    Parameters
    ----------
    mesh, phases, facets
        Mesh and tags (:mod:`anodetwin.mesh`).
    materials : dict
        Phase code -> :class:`anodetwin.simulate.materials.Material`.
    theta : float or dolfinx Function
        Li content (0..1): a constant, or a (DG0/P1) function.
    boundary : Boundary
    steps : int
        Load increments of theta.
    quadrature_degree : int
        Quadrature of the (non-polynomial) energy density.
    linear_solver : {"iterative", "direct"}
        GMRES + GAMG (large meshes), or MUMPS LU (small meshes; robust when the stiffness
        contrast between Si and the matrix makes the multigrid struggle).
    """
    import dolfinx.fem as fem
    import dolfinx.fem.petsc
    import ufl
    from mpi4py import MPI

    from anodetwin.mesh.voxel import FACET

    codes = set().union(*mesh.comm.allgather(np.unique(phases.values).tolist()))
    missing = sorted(c for c in codes if c not in materials)
    if missing:
        raise ParameterError(f"no material for phase codes {missing}",
                             "map every phase of the mesh to a material")
    Q = fem.functionspace(mesh, ("DG", 0))
    E0 = _cell_field(mesh, Q, phases, {c: m.E0_mpa for c, m in materials.items()}, 1.0)
    E1 = _cell_field(mesh, Q, phases, {c: m.E1_mpa for c, m in materials.items()}, 1.0)
    nu = _cell_field(mesh, Q, phases, {c: m.nu for c, m in materials.items()}, 0.3)
    beta = _cell_field(mesh, Q, phases, {c: m.beta for c, m in materials.items()}, 0.0)
    load = fem.Constant(mesh, 0.0)  # fraction of theta applied
    th = theta if not isinstance(theta, (int, float)) else fem.Constant(mesh, float(theta))
    th_now = load * th
    E = E0 + (E1 - E0) * th_now
    lam = E * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E / (2 * (1 + nu))
    V = fem.functionspace(mesh, ("Lagrange", 1, (3,)))
    u = fem.Function(V, name="displacement")
    v = ufl.TestFunction(V)
    du = ufl.TrialFunction(V)
    I3 = ufl.Identity(3)
    F = I3 + ufl.grad(u)
    Js = 1 + beta * th_now
    s = Js ** (1 / 3)
    Fe = F / s
    Je = ufl.det(F) / Js
    psi = mu / 2 * (ufl.tr(Fe.T * Fe) - 3) - mu * ufl.ln(Je) + lam / 2 * ufl.ln(Je) ** 2
    W = Js * psi
    p_top = fem.Constant(mesh, 0.0)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=facets)
    # the energy holds logs and powers: UFL's degree estimate would ask for huge quadrature
    # rules; 2 (exact for the P1/Q1 stiffness, Gauss 2 per direction on hexahedra) suffices
    dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})
    Pi = W * dx
    if boundary.top == "spring":
        Pi = Pi + p_top * u[2] * ds(FACET["separator"])
    R = ufl.derivative(Pi, u, v)
    Jac = ufl.derivative(R, u, du)
    fdim = 2

    def faces(*names):
        return np.concatenate([facets.indices[facets.values == FACET[n]] for n in names]
                              ).astype(np.int32)

    bcs = []
    if boundary.collector == "bonded":
        bcs.append(fem.dirichletbc(np.zeros(3), fem.locate_dofs_topological(
            V, fdim, faces("collector")), V))
    else:
        bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
            V.sub(2), fdim, faces("collector")), V.sub(2)))
    lateral = {"rollers": (("x_min", "x_max"), ("y_min", "y_max")),
               "symmetry": (("x_min",), ("y_min",)), "free": ((), ())}[boundary.lateral]
    for comp, names in enumerate(lateral):
        if names:
            bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
                V.sub(comp), fdim, faces(*names)), V.sub(comp)))
    if boundary.top == "plate":
        bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
            V.sub(2), fdim, faces("separator")), V.sub(2)))
    if linear_solver not in ("iterative", "direct"):
        raise ParameterError(f"linear solver '{linear_solver}'", "use 'iterative' or 'direct'")
    lin = ({"ksp_type": "gmres", "pc_type": "gamg", "ksp_rtol": 1e-10, "ksp_max_it": 1000}
           if linear_solver == "iterative" else
           {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
    problem = dolfinx.fem.petsc.NonlinearProblem(
        R, u, bcs=bcs, J=Jac, petsc_options_prefix=prefix,
        petsc_options={"snes_type": "newtonls", "snes_linesearch_type": "basic",
                       "snes_rtol": rtol, "snes_atol": 1e-10, "snes_max_it": 50, **lin})
    problem.A.setNearNullSpace(near_nullspace(V))
    snes = problem.solver
    top_area = mesh.comm.allreduce(fem.assemble_scalar(fem.form(
        fem.Constant(mesh, 1.0) * ds(FACET["separator"]))), op=MPI.SUM)
    uz_form = fem.form(u[2] * ds(FACET["separator"]))

    def mean_top() -> float:
        if top_area <= 0:
            return 0.0
        return mesh.comm.allreduce(fem.assemble_scalar(uz_form), op=MPI.SUM) / top_area

    newton, krylov = [], []
    passes = 0
    for k in range(1, int(steps) + 1):
        load.value = k / steps
        for _ in range(max_spring_passes):
            u_top = mean_top()
            p_top.value = boundary.p0_mpa + boundary.k_mpa_per_um * u_top
            problem.solve()
            reason = snes.getConvergedReason()
            if reason <= 0:
                raise NumericalError(f"Newton did not converge at load step {k}/{steps} "
                                     f"(SNES reason {reason})",
                                     "use more load steps or check the materials")
            newton.append(snes.getIterationNumber())
            krylov.append(snes.getLinearSolveIterations())
            passes += 1
            if boundary.top != "spring" or boundary.k_mpa_per_um == 0:
                break
            if abs(mean_top() - u_top) <= spring_tol * max(1.0, abs(u_top)):
                break
        else:
            raise NumericalError(f"the spring did not settle at load step {k}/{steps}",
                                 "lower the spring stiffness or use more load steps")
    u_top = mean_top()
    p = boundary.p0_mpa + boundary.k_mpa_per_um * u_top if boundary.top == "spring" else 0.0
    return SwellingResult(u, u_top, p, newton, krylov, passes)

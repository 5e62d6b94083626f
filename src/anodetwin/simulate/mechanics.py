"""Finite-strain swelling mechanics of an electrode mesh (DOLFINx, MPI).

Kinematics: ``F = I + grad u = Fe Fp Fs`` with isotropic swelling ``Fs = (1 + beta
theta)^(1/3) I`` (theta: normalised Li content, 1 = Li15Si4) and an isochoric plastic part
``Fp`` (identity unless plastic flow is on; one per cell, :mod:`anodetwin.simulate.plasticity`). Material: compressible neo-Hookean in the
elastic part, per unit intermediate volume

    psi(Fe) = mu / 2 (tr(Fe^T Fe) - 3) - mu ln Je + U(Je),

stored per reference volume as ``Js psi``, with the volumetric energy ``U`` of
:func:`volumetric_energy`: ``lambda / 4 (Je^2 - 1 - 2 ln Je)``, convex for every Je (the
common ``lambda / 2 (ln Je)^2`` is not beyond Je = e, where a stretched soft matrix loses
ellipticity), plus for porous materials a compaction term that stiffens without bound as
Je approaches the solid fraction ``J_min``. Lame constants from E(theta) = E0 + (E1 - E0)
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

Plastic flow (``plastic=True`` and materials with a flow stress) is staggered within each
step: Newton with ``Fp`` fixed, then every cell's backward-Euler return from the step's
starting ``Fp`` at the new ``F``, repeated until ``Fp`` changes by less than
``plastic_tol`` (Aitken's dynamic relaxation of the update between passes); the fixed point is the implicit elastic-viscoplastic solution of the step
(it satisfies equilibrium and the discrete flow rule together).

Newton: PETSc SNES (line search), Krylov GMRES (the tangent of a swelling-prestressed
state can be indefinite, which stops CG) preconditioned by algebraic multigrid (GAMG)
with the six rigid-body modes as near-nullspace. Loads are applied in ``steps`` increments
of theta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anodetwin.errors import NumericalError, ParameterError
from anodetwin.log import get_logger

log = get_logger("simulate")

__all__ = ["Boundary", "SwellingProblem", "SwellingResult", "cauchy_stress",
           "kirchhoff_pressure", "near_nullspace", "solve_swelling", "volumetric_energy"]


def volumetric_energy(Je, lam, K_c=0.0, J_min=0.0, ln=np.log):
    """Volumetric stored energy per intermediate volume (MPa).

    ``U = lam / 4 (Je^2 - 1 - 2 ln Je) + K_c a ((Je - 1) - a ln((Je - J_min) / a))`` with
    ``a = 1 - J_min``. Both terms vanish with zero slope at Je = 1 and are convex: the first
    has ``U'' = lam / 2 (1 + Je^-2)`` (bulk modulus lam + 2 mu / 3 at Je = 1 with the
    isochoric part), the second adds the compaction stiffness ``K_c (a / (Je - J_min))^2``:
    K_c at Je = 1, 100 K_c when a tenth of the pore volume is left, unbounded at J_min.

    Parameters
    ----------
    Je : array or UFL expression
        Elastic volume ratio.
    lam, K_c : array, float or UFL expression
        Lame's first constant and the compaction modulus (MPa).
    J_min : array, float or UFL expression
        Solid volume fraction, where the pores are closed (0 <= J_min < 1).
    ln : callable
        The logarithm (``numpy.log``, or ``ufl.ln`` for forms).
    """
    a = 1 - J_min
    # ln x written as 2 ln x^(1/2): its derivative (the residual) holds x^(1/2) and so is
    # NaN past the limit, where the plain 1/x would lead Newton to the energy's mirror
    # branch (J < J_min); a NaN residual makes the step control cut the step instead
    return lam / 4 * (Je ** 2 - 1 - 2 * ln(Je)) + \
        K_c * a * ((Je - 1) - 2 * a * ln(((Je - J_min) / a) ** 0.5))


def kirchhoff_pressure(Je, lam, K_c=0.0, J_min=0.0):
    """``Je dU/dJe`` (MPa) of :func:`volumetric_energy`: the volumetric part of the
    Kirchhoff stress, ``lam / 2 (Je^2 - 1) + K_c Je a (Je - 1) / (Je - J_min)``."""
    return lam / 2 * (Je ** 2 - 1) + K_c * Je * (1 - J_min) * (Je - 1) / (Je - J_min)


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


class SwellingProblem:
    """The swelling equilibrium of one mesh, built once and solved for many theta fields.

    ``theta`` is a DG0 function (one value per cell, 0 outside Si) that the caller updates
    between solves; ``load`` scales it (load stepping). Parameters as in
    :func:`solve_swelling`.
    """

    def __init__(self, mesh, phases, facets, materials: dict, boundary: Boundary,
                 theta=None, rtol: float = 1e-9, spring_tol: float = 1e-8,
                 max_spring_passes: int = 50, prefix: str = "swell_",
                 linear_solver: str = "iterative", quadrature_degree: int = 2,
                 plastic: bool = False, plastic_tol: float = 1e-6,
                 max_plastic_passes: int = 80):
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
        if linear_solver not in ("iterative", "direct"):
            raise ParameterError(f"linear solver '{linear_solver}'",
                                 "use 'iterative' or 'direct'")
        self.mesh, self.boundary = mesh, boundary
        self.linear_solver, self.direct_fallbacks = linear_solver, 0
        self.spring_tol, self.max_spring_passes = spring_tol, max_spring_passes
        Q = fem.functionspace(mesh, ("DG", 0))
        self.Q = Q
        fields = {}
        for key, attr, default in (("E0", "E0_mpa", 1.0), ("E1", "E1_mpa", 1.0),
                                   ("nu", "nu", 0.3), ("beta", "beta", 0.0),
                                   ("Kc", "compaction_mpa", 0.0),
                                   ("Jmin", "lock_volume_ratio", 0.0)):
            fields[key] = _cell_field(mesh, Q, phases, {c: getattr(m, attr) for c, m in
                                                        materials.items()}, default)
        self.cell_constants = {k: f.x.array for k, f in fields.items()}
        self.load = fem.Constant(mesh, 1.0)  # fraction of theta applied
        if theta is None:
            theta = fem.Function(Q, name="theta")
        self.theta = theta
        th_now = self.load * theta
        E = fields["E0"] + (fields["E1"] - fields["E0"]) * th_now
        nu = fields["nu"]
        lam = E * nu / ((1 + nu) * (1 - 2 * nu))
        mu = E / (2 * (1 + nu))
        V = fem.functionspace(mesh, ("Lagrange", 1, (3,)))
        self.V = V
        u = fem.Function(V, name="displacement")
        self.u = u
        v, du = ufl.TestFunction(V), ufl.TrialFunction(V)
        F = ufl.Identity(3) + ufl.grad(u)
        Js = 1 + fields["beta"] * th_now
        self.flow = None
        self.plastic_tol, self.max_plastic_passes = plastic_tol, max_plastic_passes
        if plastic and any(m.plastic for m in materials.values()):
            self._init_plastic(phases, materials)
            Fe = F * self.Fp_inv / Js ** (1 / 3)
        else:
            Fe = F / Js ** (1 / 3)
        Je = ufl.det(F) / Js
        psi = mu / 2 * (ufl.tr(Fe.T * Fe) - 3) - mu * ufl.ln(Je) + \
            volumetric_energy(Je, lam, fields["Kc"], fields["Jmin"], ln=ufl.ln)
        self.p_top = fem.Constant(mesh, 0.0)
        ds = ufl.Measure("ds", domain=mesh, subdomain_data=facets)
        # the energy holds logs and powers: UFL's degree estimate would ask for huge
        # quadrature rules; 2 (exact for the P1/Q1 stiffness, Gauss 2 per direction on
        # hexahedra) suffices
        dx = ufl.Measure("dx", domain=mesh, metadata={"quadrature_degree": quadrature_degree})
        Pi = Js * psi * dx
        if boundary.top == "spring":
            Pi = Pi + self.p_top * u[2] * ds(FACET["separator"])
        R = ufl.derivative(Pi, u, v)
        Jac = ufl.derivative(R, u, du)

        def faces(*names):
            return np.concatenate([facets.indices[facets.values == FACET[n]] for n in names]
                                  ).astype(np.int32)

        bcs = []
        if boundary.collector == "bonded":
            bcs.append(fem.dirichletbc(np.zeros(3), fem.locate_dofs_topological(
                V, 2, faces("collector")), V))
        else:
            bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
                V.sub(2), 2, faces("collector")), V.sub(2)))
        lateral = {"rollers": (("x_min", "x_max"), ("y_min", "y_max")),
                   "symmetry": (("x_min",), ("y_min",)), "free": ((), ())}[boundary.lateral]
        for comp, names in enumerate(lateral):
            if names:
                bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
                    V.sub(comp), 2, faces(*names)), V.sub(comp)))
        if boundary.top == "plate":
            bcs.append(fem.dirichletbc(0.0, fem.locate_dofs_topological(
                V.sub(2), 2, faces("separator")), V.sub(2)))
        # inexact Newton: each linear solve to 1e-6 (the Newton residual still goes to
        # rtol); tighter Krylov tolerances only cost iterations
        # (a long GMRES restart: cells near their compaction limit are stiff, the contrast
        # with the soft matrix around them slows the multigrid)
        lin = ({"ksp_type": "gmres", "ksp_gmres_restart": 150, "pc_type": "gamg",
                "ksp_rtol": 1e-6, "ksp_max_it": 1000}
               if linear_solver == "iterative" else
               {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
        self.problem = dolfinx.fem.petsc.NonlinearProblem(
            R, u, bcs=bcs, J=Jac, petsc_options_prefix=prefix,
            # full Newton steps (a step that inverts cells gives NaN and the caller retries
            # with a smaller load step; a backtracking search on the residual norm fights the
            # lagged spring pressure); convergence only by the residual: a step-length test
            # accepted a stalled iterate
            petsc_options={"snes_type": "newtonls", "snes_linesearch_type": "basic",
                           "snes_rtol": rtol, "snes_atol": 1e-8, "snes_stol": 0.0,
                           "snes_max_it": 50, **lin})
        self.problem.A.setNearNullSpace(near_nullspace(V))
        self._top_area = mesh.comm.allreduce(fem.assemble_scalar(fem.form(
            fem.Constant(mesh, 1.0) * ds(FACET["separator"]))), op=MPI.SUM)
        self._uz_form = fem.form(u[2] * ds(FACET["separator"]))
        self._ncell = mesh.topology.index_map(3).size_local
        ref = np.array([[0.5, 0.5, 0.5]] if mesh.topology.cell_type.name == "hexahedron"
                       else [[0.25, 0.25, 0.25]])
        self._F_expr = fem.Expression(F, ref)
        self._init_step_control(Je, fields["Jmin"], quadrature_degree)
        if boundary.top == "spring" and boundary.k_mpa_per_um > 0:
            # the spring follows the top inside Newton: its pressure is updated from the
            # current iterate before every iteration (a lagged rank-one term)
            self.problem.solver.setUpdate(lambda snes, it: self._set_spring())

    def _init_step_control(self, Je, Jmin, degree: int) -> None:
        """Keep Newton inside the material's domain: before each update the step is
        halved until every quadrature point keeps ``Je - J_min`` above a quarter of its
        current value (a fraction-to-the-boundary rule, as in interior-point methods),
        so no iterate inverts a cell or closes a porous cell past its solid fraction."""
        import basix
        import dolfinx.fem as fem
        import ufl
        from mpi4py import MPI

        cell = basix.CellType[self.mesh.topology.cell_type.name]
        pts, _ = basix.make_quadrature(cell, degree)
        self._u_try = fem.Function(self.V)
        Je_try = ufl.replace(Je, {self.u: self._u_try})
        self._margin = fem.Expression(Je_try - Jmin, pts)
        cells = np.arange(self._ncell, dtype=np.int32)
        nb = self.V.dofmap.index_map.size_local * self.V.dofmap.index_map_bs

        def margin(x_arr):
            self._u_try.x.array[:nb] = x_arr
            self._u_try.x.scatter_forward()
            return self._margin.eval(self.mesh, cells).ravel()

        def fraction(x_arr, dx_arr, keep=0.25):
            now = margin(x_arr)
            alpha = 1.0
            for _ in range(30):
                ok = np.array([bool(np.all(margin(x_arr + alpha * dx_arr) > keep * now))],
                              dtype=np.int32)
                self.mesh.comm.Allreduce(MPI.IN_PLACE, ok, op=MPI.MIN)
                if ok[0]:
                    return alpha
                alpha *= 0.5
            return 0.0

        def precheck(x, y):  # the update is x - y
            alpha = fraction(x.array_r, -y.array_r)
            if alpha < 1.0:
                y.scale(alpha)
                log.debug("Newton step scaled by %.3g to stay in the material's domain",
                          alpha)

        self._fraction = fraction
        self._nb = nb
        self.problem.solver.setLineSearchPreCheck(precheck)

    def admissible_fraction(self, du: np.ndarray, keep: float = 0.75) -> float:
        """The largest ``2^-k`` (k >= 0) for which ``u + alpha du`` keeps every quadrature
        point's ``Je - J_min`` above ``keep`` times its present value (0 if none): how far a
        predictor may move the displacement (owned entries of ``u.x.array``) and still
        leave Newton room near the compaction limits."""
        nb = self._nb
        return self._fraction(self.u.x.array[:nb].copy(), du[:nb], keep)

    def _init_plastic(self, phases, materials: dict) -> None:
        """Cell state of plastic flow: Fp^-1 (DG0 tensor), accumulated equivalent plastic
        strain, their values at the start of the step, and the flow parameters per cell."""
        import dolfinx.fem as fem

        from anodetwin.simulate.plasticity import FlowRule

        mesh = self.mesh
        n = mesh.topology.index_map(3).size_local
        self.Qt = fem.functionspace(mesh, ("DG", 0, (3, 3)))
        self.Fp_inv = fem.Function(self.Qt, name="Fp_inv")
        self.Fp_inv.x.array.reshape(-1, 9)[:] = np.eye(3).ravel()
        self.plastic_strain = fem.Function(self.Q, name="plastic_strain")
        self._tdof = self.Qt.dofmap.list[:n, 0]
        self._sdof = self.Q.dofmap.list[:n, 0]
        vals = {}
        for attr in ("flow_stress0_mpa", "flow_stress1_mpa", "flow_rate_per_s",
                     "flow_exponent"):
            arr = np.full(n, np.inf if attr.startswith("flow_stress") else 1.0)
            for code, m in materials.items():
                sel = phases.indices[(phases.values == code) & (phases.indices < n)]
                arr[sel] = getattr(m, attr) if m.plastic else arr[sel]
            vals[attr] = arr
        tmin = min((m.flow_theta_min for m in materials.values() if m.plastic), default=0.0)
        self.flow = FlowRule(vals["flow_stress0_mpa"], vals["flow_stress1_mpa"],
                             vals["flow_rate_per_s"], vals["flow_exponent"], tmin)
        self.commit()

    @property
    def plastic(self) -> bool:
        """Whether plastic flow is on (materials with a flow stress and ``plastic=True``)."""
        return self.flow is not None

    def commit(self) -> None:
        """Accept the current plastic state as the start of the next step."""
        if self.plastic:
            self._Fp_inv_n = self.Fp_inv.x.array.copy()
            self._eps_p_n = self.plastic_strain.x.array.copy()

    def rollback(self) -> None:
        """Back to the plastic state at the start of the step (after a failed step)."""
        if self.plastic:
            self.Fp_inv.x.array[:] = self._Fp_inv_n
            self.plastic_strain.x.array[:] = self._eps_p_n

    def cell_F(self) -> np.ndarray:
        """Deformation gradient at the centre of each owned cell, (n, 3, 3)."""
        n = self._ncell
        return self._F_expr.eval(self.mesh, np.arange(n, dtype=np.int32)).reshape(n, 3, 3)

    def cell_Fp_inv(self) -> np.ndarray | None:
        """Fp^-1 of each owned cell, (n, 3, 3); None without plastic flow."""
        if not self.plastic:
            return None
        return self.Fp_inv.x.array.reshape(-1, 3, 3)[self._tdof]

    def cell_theta(self) -> np.ndarray:
        """theta (times the load factor) of each owned cell."""
        return self.theta.x.array[self.Q.dofmap.list[:self._ncell, 0]] * \
            float(self.load.value)

    def _plastic_return(self, dt: float, state: dict) -> float:
        """Return every cell from the step's starting state at the current F and move
        Fp^-1 towards it, with Aitken's relaxation across passes (``state`` carries the
        previous residual and factor); sets the plastic strain; returns the largest
        distance of Fp^-1 from its return (all ranks)."""
        from mpi4py import MPI

        from anodetwin.simulate.plasticity import return_map

        c = {k: v[self._sdof] for k, v in self.cell_constants.items()}
        theta = self.cell_theta()
        mu = (c["E0"] + (c["E1"] - c["E0"]) * theta) / (2 * (1 + c["nu"]))
        start = self._Fp_inv_n.reshape(-1, 3, 3)[self._tdof]
        r = return_map(self.cell_F(), start, 1 + c["beta"] * theta, mu,
                       self.flow.flow_stress(theta), self.flow.rate0, self.flow.m, dt)
        cur = self.Fp_inv.x.array.reshape(-1, 3, 3)
        res = (r.Fp_inv - cur[self._tdof]).ravel()
        buf = np.array([np.abs(res).max() if res.size else 0.0])
        self.mesh.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
        change = float(buf[0])
        omega = 1.0
        prev = state.get("residual")
        if prev is not None and change > self.plastic_tol:
            d = res - prev
            dots = np.array([float(prev @ d), float(d @ d)])
            self.mesh.comm.Allreduce(MPI.IN_PLACE, dots, op=MPI.SUM)
            if dots[1] > 0:
                omega = float(np.clip(-state["omega"] * dots[0] / dots[1], 0.2, 5.0))
        state.update(residual=res, omega=omega)
        if change <= self.plastic_tol:  # converged: the returned state itself
            cur[self._tdof] = r.Fp_inv
        else:
            cur[self._tdof] += omega * res.reshape(-1, 3, 3)
        self.plastic_strain.x.array[self._sdof] = self._eps_p_n[self._sdof] + r.dgamma
        self.Fp_inv.x.scatter_forward()
        self.plastic_strain.x.scatter_forward()
        return change

    @property
    def dofs(self) -> int:
        """Global number of displacement unknowns."""
        im = self.V.dofmap.index_map
        return im.size_global * self.V.dofmap.index_map_bs

    def mean_top(self) -> float:
        """Mean axial displacement of the top face (um)."""
        import dolfinx.fem as fem
        from mpi4py import MPI

        if self._top_area <= 0:
            return 0.0
        return self.mesh.comm.allreduce(fem.assemble_scalar(self._uz_form),
                                        op=MPI.SUM) / self._top_area

    def stack_pressure(self) -> float:
        """Spring pressure on the top (MPa): p0 + k u_top, or 0 without a spring."""
        b = self.boundary
        return b.p0_mpa + b.k_mpa_per_um * self.mean_top() if b.top == "spring" else 0.0

    def _set_spring(self) -> float:
        u_top = self.mean_top()
        b = self.boundary
        self.p_top.value = b.p0_mpa + b.k_mpa_per_um * u_top
        return u_top

    def solve(self, where: str = "", dt: float = np.inf) -> tuple[list, list, int]:
        """Equilibrium at the current theta: Newton with the spring fixed point and, with
        plastic flow, the staggered return over a step of ``dt`` seconds (``inf``: rate-
        independent). Returns (Newton its, Krylov its, passes: spring passes, or plastic
        passes with plastic flow) and raises :class:`NumericalError` naming ``where`` when a
        solve fails."""
        newton, krylov, passes, atol = self._solve_elastic(where)
        if not self.plastic:
            return newton, krylov, passes
        state: dict = {}
        snes = self.problem.solver
        snes.setTolerances(atol=atol)
        try:
            # each pass: the return, then one Newton iteration; once the plastic state has
            # settled, Newton finishes the equilibrium to the step's tolerance
            for passes in range(1, self.max_plastic_passes + 1):
                change = self._plastic_return(dt, state)
                log.debug("plastic return %s: pass %d, max change of Fp^-1 %.3g (relaxation"
                          " %.2f)", where, passes, change, state["omega"])
                if change <= self.plastic_tol:
                    n, k, _, _ = self._solve_elastic(where, atol)
                    return newton + n, krylov + k, passes
                n, k = self._one_iteration(where)
                newton.append(n)
                krylov.append(k)
        finally:
            snes.setTolerances(atol=1e-8)
        raise NumericalError(f"plastic flow did not settle {where} in {passes} passes "
                             f"(Fp changed by {change:.2g})", "use smaller steps")

    def _snes_solve(self) -> None:
        """Newton from the current state; with the iterative linear solver, a Krylov
        failure (SNES reason -3: GMRES + GAMG can stall when cells near their compaction
        limit make the matrix nearly incompressible there) repeats the solve from the same
        state with a direct factorisation (MUMPS), then returns to the iterative solver."""
        snes = self.problem.solver
        start = self.u.x.array.copy()
        self.problem.solve()
        if snes.getConvergedReason() != -3 or self.linear_solver != "iterative":
            return
        its, lin = snes.getIterationNumber(), snes.getLinearSolveIterations()
        ksp = snes.getKSP()
        ksp_type, pc_type = ksp.getType(), ksp.getPC().getType()
        self.u.x.array[:] = start
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        self.direct_fallbacks += 1
        log.debug("Krylov solver failed (%d Newton, %d Krylov iterations): direct solve",
                  its, lin)
        try:
            self.problem.solve()
        finally:
            ksp.setType(ksp_type)
            ksp.getPC().setType(pc_type)

    def _one_iteration(self, where: str) -> tuple[int, int]:
        """A single Newton iteration at fixed plastic state (a plastic pass's correction);
        returns (1 or 0, Krylov iterations)."""
        snes = self.problem.solver
        snes.setTolerances(max_it=1)
        try:
            self._set_spring()
            self._snes_solve()
        finally:
            snes.setTolerances(max_it=50)
        reason = snes.getConvergedReason()
        if reason <= 0 and reason != -5:  # -5: the one iteration allowed was taken
            raise NumericalError(f"Newton did not converge {where} (SNES reason {reason})",
                                 "use smaller steps or check the materials")
        return snes.getIterationNumber(), snes.getLinearSolveIterations()

    def _solve_elastic(self, where: str, atol: float | None = None
                       ) -> tuple[list, list, int, float]:
        """Newton at fixed plastic state, with the spring fixed point; ``atol`` the
        absolute residual target of a correction within a step (None: the first solve of
        the step, whose target is rtol times its initial residual). Returns the iterations,
        passes and that target."""
        snes = self.problem.solver
        b = self.boundary
        newton, krylov = [], []
        snes.setConvergenceHistory(length=200, reset=True)
        first = atol is None
        atol = 1e-8 if first else atol
        for passes in range(1, self.max_spring_passes + 1):
            self._set_spring()
            snes.setTolerances(atol=atol)
            self._snes_solve()
            if passes == 1 and first:  # later passes only correct: same absolute target
                hist = snes.getConvergenceHistory()[0]
                atol = max(atol, snes.getTolerances()[0] * float(hist[0])) if len(hist) \
                    else atol
            u_top = float(self.p_top.value - b.p0_mpa) / b.k_mpa_per_um \
                if b.k_mpa_per_um else 0.0  # the top displacement the last pressure used
            reason = snes.getConvergedReason()
            log.debug("mechanics %s: pass %d, SNES reason %d, %d iterations, residuals %s",
                      where, passes, reason, snes.getIterationNumber(),
                      snes.getConvergenceHistory()[0][:8])
            newton.append(snes.getIterationNumber())
            krylov.append(snes.getLinearSolveIterations())
            if reason <= 0:
                raise NumericalError(f"Newton did not converge {where} (SNES reason {reason},"
                                     f" {newton[-1]} iterations)",
                                     "use smaller steps or check the materials")
            if b.top != "spring" or b.k_mpa_per_um == 0 or \
                    abs(self.mean_top() - u_top) <= self.spring_tol * max(1.0, abs(u_top)):
                snes.setTolerances(atol=1e-8)
                return newton, krylov, passes, atol
        snes.setTolerances(atol=1e-8)
        raise NumericalError(f"the spring did not settle {where}",
                             "lower the spring stiffness or use smaller steps")


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

    th = theta if not isinstance(theta, (int, float)) else fem.Constant(mesh, float(theta))
    sp = SwellingProblem(mesh, phases, facets, materials, boundary, th, rtol, spring_tol,
                         max_spring_passes, prefix, linear_solver, quadrature_degree)
    newton, krylov, passes = [], [], 0
    for k in range(1, int(steps) + 1):
        sp.load.value = k / steps
        n, kr, p = sp.solve(f"at load step {k}/{steps}")
        newton += n
        krylov += kr
        passes += p
    return SwellingResult(sp.u, sp.mean_top(), sp.stack_pressure(), newton, krylov, passes)


def cauchy_stress(F: np.ndarray, theta: np.ndarray, E0: np.ndarray, E1: np.ndarray,
                  nu: np.ndarray, beta: np.ndarray, Fp_inv: np.ndarray | None = None,
                  Kc: np.ndarray | float = 0.0, Jmin: np.ndarray | float = 0.0
                  ) -> np.ndarray:
    """Cauchy stress (MPa) of the material model at given deformation gradients.

    With ``Fe = F Fp^-1 / Js^(1/3)``, ``Je = det Fe`` and ``be = Fe Fe^T``: ``sigma = (mu (be
    - I) + p I) / Je`` with the Kirchhoff pressure ``p`` of :func:`kirchhoff_pressure`.
    Arrays: F and Fp_inv (n, 3, 3; Fp_inv None: no plastic flow); theta and the cell
    constants (n,) (compaction modulus ``Kc``, MPa, and limit ``Jmin``). Returns (n, 3, 3).
    """
    Js = 1 + beta * theta
    Fe = F / np.cbrt(Js)[:, None, None]
    if Fp_inv is not None:
        Fe = Fe @ Fp_inv
    Je = np.linalg.det(Fe)
    E = E0 + (E1 - E0) * theta
    lam = E * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E / (2 * (1 + nu))
    eye = np.eye(3)
    B = Fe @ np.swapaxes(Fe, 1, 2)
    p = kirchhoff_pressure(Je, lam, Kc, Jmin)
    return (mu[:, None, None] * (B - eye) + p[:, None, None] * eye) / Je[:, None, None]

"""Finite-strain swelling mechanics of an electrode mesh (DOLFINx, MPI).

The material law (kinematics ``F = Fe Fp Fs`` with isotropic swelling and an isochoric
plastic part, the compressible neo-Hookean energy with the convex volumetric energy and
compaction of porous phases, Lame constants from E(theta) and nu per phase) is defined once
in :mod:`anodetwin.simulate.constitutive`; here it is integrated over the mesh: the
residual and the Newton tangent are ``ufl.derivative`` of the stored energy, the Cauchy
stress on cells a ``fem.Expression`` of its UFL derivative. Each phase's constants come
from its :class:`~anodetwin.simulate.materials.Material` as one value per cell; ``Fp``
(identity unless plastic flow is on) is one per cell (:mod:`anodetwin.simulate.plasticity`).
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

Plastic flow (``plastic=True`` and materials with a flow stress) is part of the residual:
every residual evaluation returns each cell from the step's starting ``Fp`` at the current
``F`` (backward Euler, :func:`~anodetwin.simulate.plasticity.return_map`), and the tangent
adds the derivative of the stress through that return (the consistent, or algorithmic,
tangent: ``d(Fp^-1)/dF`` of each cell by
:func:`~anodetwin.simulate.plasticity.return_tangent`). Newton's solution is the implicit
elastic-viscoplastic state of the step (equilibrium and the flow rule together), reached
at Newton's quadratic rate instead of the linear rate of staggered passes.

Newton: PETSc SNES from a tangent predictor, CG preconditioned by algebraic multigrid
(GAMG, rebuilt every few Jacobians) with the six rigid-body modes as near-nullspace, or
MUMPS LU, and a step control that keeps every iterate inside the material's domain; the
scheme, its tolerances and the measurements behind it are in
:mod:`anodetwin.simulate.solver`. Loads are applied in ``steps`` increments of theta.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from anodetwin.errors import NumericalError, ParameterError
from anodetwin.log import get_logger
from anodetwin.simulate.constitutive import (LawParameters, cauchy_stress, kinematics,
                                             kirchhoff_pressure, stored_energy,
                                             volumetric_energy)
from anodetwin.simulate.solver import (NEWTON, PreconditionerReuse, SNESReason,
                                       kernel_jit_options, nonlinear_problem)

log = get_logger("simulate")

__all__ = ["Boundary", "SwellingProblem", "SwellingResult", "kirchhoff_pressure",
           "near_nullspace", "solve_swelling", "volumetric_energy"]

# the constants of cells that no phase tag covers
_UNTAGGED = LawParameters(E0_mpa=1.0, E1_mpa=1.0, nu=0.3, beta=0.0)


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
    """The six rigid-body modes of a vector P1 space as a PETSc near-nullspace.

    Parameters
    ----------
    V : dolfinx.fem.FunctionSpace
        Vector space with three components (block size 3); its dof coordinates set the
        rotation modes (mesh units, um).

    Returns
    -------
    petsc4py.PETSc.NullSpace
        Three translations and three rotations, orthonormalised, for the GAMG
        preconditioner.
    """
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



def _check_setup(mesh, phases, materials: dict, linear_solver: str) -> None:
    """A material for every phase of the mesh (all ranks) and a known linear solver."""
    codes = set().union(*mesh.comm.allgather(np.unique(phases.values).tolist()))
    missing = sorted(c for c in codes if c not in materials)
    if missing:
        raise ParameterError(f"no material for phase codes {missing}",
                             "map every phase of the mesh to a material")
    if linear_solver not in ("iterative", "direct"):
        raise ParameterError(f"linear solver '{linear_solver}'",
                             "use 'iterative' or 'direct'")


class SwellingProblem:
    """The swelling equilibrium of one mesh, built once and solved for many theta fields.

    ``theta`` is a DG0 function (one value per cell, 0 outside Si) that the caller updates
    between solves; ``load`` scales it (load stepping). Parameters as in
    :func:`solve_swelling`; ``plastic`` turns plastic flow on for the materials with a
    flow stress (module notes); ``petsc_options`` override those of
    :data:`anodetwin.simulate.solver.NEWTON`.

    After a change of state other than a solve (a start, a restore, a rollback) the caller
    calls :meth:`refresh_tangent`: the next solve's predictor uses that tangent.

    Attributes
    ----------
    u : dolfinx Function
        Displacement (um, P1).
    theta : dolfinx Function or Constant
        Li content per cell (1).
    load : dolfinx Constant
        Fraction of ``theta`` applied.
    law : LawParameters
        The material constants as DG0 functions (one value per cell).
    F : UFL
        The deformation gradient ``I + grad u`` (a ``ufl.variable``).
    energy : UFL form
        The stored energy of the mesh (uJ).
    """

    def __init__(self, mesh, phases, facets, materials: dict, boundary: Boundary,
                 theta=None, rtol: float = NEWTON.rtol,
                 spring_tol: float = NEWTON.spring_tol,
                 max_spring_passes: int = NEWTON.max_spring_passes, prefix: str = "swell_",
                 linear_solver: str = "iterative", quadrature_degree: int = 2,
                 plastic: bool = False, petsc_options: dict | None = None):
        import dolfinx.fem as fem

        _check_setup(mesh, phases, materials, linear_solver)
        self.mesh, self.boundary = mesh, boundary
        self.linear_solver, self._tangent_ready = linear_solver, False
        self.spring_tol, self.max_spring_passes = spring_tol, max_spring_passes
        self._ncell = mesh.topology.index_map(3).size_local
        self.Q = fem.functionspace(mesh, ("DG", 0))
        self.V = fem.functionspace(mesh, ("Lagrange", 1, (3,)))
        self.u = fem.Function(self.V, name="displacement")
        self.load = fem.Constant(mesh, 1.0)  # fraction of theta applied
        self.theta = fem.Function(self.Q, name="theta") if theta is None else theta
        self._sdof = self.Q.dofmap.list[:self._ncell, 0]
        self.law = self._cell_constants(phases, materials)
        self.flow = None
        if plastic and any(m.plastic for m in materials.values()):
            self._init_plastic(phases, materials)
        R, Jac = self._forms(facets, quadrature_degree)
        self._init_solver(R, Jac, self._boundary_conditions(facets), prefix,
                          {**NEWTON.petsc_options(rtol, linear_solver, self.plastic),
                           **(petsc_options or {})})
        self._init_probes(facets)
        self._init_step_control(quadrature_degree)
        if boundary.top == "spring" and boundary.k_mpa_per_um > 0:
            # the spring follows the top inside Newton: its pressure is updated from the
            # current iterate before every iteration (a lagged rank-one term)
            self.problem.solver.setUpdate(lambda snes, it: self._set_spring())

    def _cell_constants(self, phases, materials: dict) -> LawParameters:
        """The material constants as DG0 functions: each phase's values on its cells."""
        laws = {c: LawParameters.of(m) for c, m in materials.items()}
        return LawParameters(**{
            f.name: _cell_field(self.mesh, self.Q, phases,
                                {c: getattr(p, f.name) for c, p in laws.items()},
                                getattr(_UNTAGGED, f.name))
            for f in fields(LawParameters)})

    def _forms(self, facets, degree: int):
        """Stored energy, residual and tangent; sets ``F``, ``energy`` and the spring
        pressure ``p_top`` (a constant the fixed point updates)."""
        import dolfinx.fem as fem
        import ufl

        from anodetwin.mesh.voxel import FACET

        self.F = ufl.variable(ufl.Identity(3) + ufl.grad(self.u))
        W = stored_energy(self.F, self.law, self.load * self.theta, self._Fp_inv_ufl())
        # the energy holds logs and powers: UFL's degree estimate would ask for huge
        # quadrature rules; 2 (exact for the P1/Q1 stiffness, Gauss 2 per direction on
        # hexahedra) suffices
        dx = ufl.Measure("dx", domain=self.mesh, metadata={"quadrature_degree": degree})
        self.energy = W * dx
        self._energy_form = None
        self.p_top = fem.Constant(self.mesh, 0.0)
        Pi = self.energy
        if self.boundary.top == "spring":
            ds = ufl.Measure("ds", domain=self.mesh, subdomain_data=facets)
            Pi = Pi + self.p_top * self.u[2] * ds(FACET["separator"])
        R = ufl.derivative(Pi, self.u, ufl.TestFunction(self.V))
        du = ufl.TrialFunction(self.V)
        Jac = ufl.derivative(R, self.u, du)
        if self.plastic:  # the consistent tangent: Fp^-1 follows F through the return
            # the return sees F at the cell centre: that term is integrated by the centre
            # point (exact for the cell average of grad v on boxes)
            centre = ufl.Measure("dx", domain=self.mesh, metadata={"quadrature_degree": 1})
            i, j, k, l = ufl.indices(4)
            dFp_inv = ufl.as_tensor(self.dFp_inv[i, j, k, l] * ufl.grad(du)[k, l], (i, j))
            R_c = ufl.derivative(W * centre, self.u, ufl.TestFunction(self.V))
            Jac = Jac + ufl.derivative(R_c, self.Fp_inv, dFp_inv)
        return R, Jac

    def _Fp_inv_ufl(self):
        """Fp^-1 in the forms (None without plastic flow)."""
        return self.Fp_inv if self.plastic else None

    def _boundary_conditions(self, facets) -> list:
        """Dirichlet conditions of the collector, lateral faces and plate (module notes)."""
        import dolfinx.fem as fem

        from anodetwin.mesh.voxel import FACET

        V, b = self.V, self.boundary

        def faces(*names):
            return np.concatenate([facets.indices[facets.values == FACET[n]] for n in names]
                                  ).astype(np.int32)

        def normal(comp: int, *names):  # rollers: one displacement component fixed
            return fem.dirichletbc(0.0, fem.locate_dofs_topological(
                V.sub(comp), 2, faces(*names)), V.sub(comp))

        if b.collector == "bonded":
            bcs = [fem.dirichletbc(np.zeros(3), fem.locate_dofs_topological(
                V, 2, faces("collector")), V)]
        else:
            bcs = [normal(2, "collector")]
        lateral = {"rollers": (("x_min", "x_max"), ("y_min", "y_max")),
                   "symmetry": (("x_min",), ("y_min",)), "free": ((), ())}[b.lateral]
        bcs += [normal(comp, *names) for comp, names in enumerate(lateral) if names]
        if b.top == "plate":
            bcs.append(normal(2, "separator"))
        return bcs

    def _init_solver(self, R, Jac, bcs: list, prefix: str, options: dict) -> None:
        """The SNES of the residual with PETSc ``options``, the rigid-body modes as
        near-nullspace, and the residual assembled without lifting (the Dirichlet values are
        0, and each iterate satisfies them)."""
        import dolfinx.fem.petsc as fp
        from petsc4py import PETSc

        self.problem = nonlinear_problem(R, self.u, bcs, prefix, options, J=Jac)
        self.problem.A.setNearNullSpace(near_nullspace(self.V))
        form, u = self.problem.F, self.u
        fwd, rev = PETSc.ScatterMode.FORWARD, PETSc.ScatterMode.REVERSE

        def residual(snes, x, b):
            x.ghostUpdate(PETSc.InsertMode.INSERT, fwd)
            fp.assign(x, u)
            if self.plastic:
                self._plastic_return()
            with b.localForm() as loc:
                loc.set(0.0)
            fp.assemble_vector(b, form)
            b.ghostUpdate(PETSc.InsertMode.ADD, rev)
            fp.set_bc(b, bcs, x0=x, alpha=-1.0)
            b.ghostUpdate(PETSc.InsertMode.INSERT, fwd)

        self.problem.solver.setFunction(residual, self.problem.b)
        self._du = self.problem.b.duplicate()
        snes = self.problem.solver
        # an LU factorisation is redone at every Jacobian (reused, Newton is a chord
        # method); a lag in the case's options replaces the adaptive rebuild
        self.pc_reuse = None
        if self.linear_solver == "iterative" and "snes_lag_preconditioner" not in options:
            self.pc_reuse = PreconditionerReuse(NEWTON.pc_rebuild_ratio)
            self.pc_reuse.attach(snes.getKSP())
        if self.plastic:
            A, P, (jac, args, kwargs) = snes.getJacobian()

            def jacobian(snes, x, J, Pm):
                x.ghostUpdate(PETSc.InsertMode.INSERT, fwd)
                fp.assign(x, u)
                self._plastic_return(tangent=True)
                jac(snes, x, J, Pm, *args, **kwargs)

            snes.setJacobian(jacobian, A, P)

    def _init_probes(self, facets) -> None:
        """Forms and expressions of the outputs: the top face's area and mean axial
        displacement, F (and, on first use, the Cauchy stress) at cell centres."""
        import dolfinx.fem as fem
        import ufl
        from mpi4py import MPI

        from anodetwin.mesh.voxel import FACET

        mesh = self.mesh
        ds = ufl.Measure("ds", domain=mesh, subdomain_data=facets)
        self._top_area = mesh.comm.allreduce(fem.assemble_scalar(fem.form(
            fem.Constant(mesh, 1.0) * ds(FACET["separator"]))), op=MPI.SUM)
        self._uz_form = fem.form(self.u[2] * ds(FACET["separator"]))
        self._centre = np.array([[0.5, 0.5, 0.5]] if mesh.topology.cell_type.name ==
                                "hexahedron" else [[0.25, 0.25, 0.25]])
        self._F_expr = fem.Expression(self.F, self._centre, jit_options=kernel_jit_options())
        self._stress_expr = None  # compiled on first use

    def _init_step_control(self, degree: int) -> None:
        """Keep Newton inside the material's domain: before each update the step is
        scaled by :meth:`_fraction` so that every quadrature point keeps ``Je - J_min``
        above ``NEWTON.keep`` times its current value (a fraction-to-the-boundary rule, as
        in interior-point methods), so no iterate inverts a cell or closes a porous cell
        past its solid fraction."""
        import basix
        import dolfinx.fem as fem
        import ufl

        cell = basix.CellType[self.mesh.topology.cell_type.name]
        pts, wts = basix.make_quadrature(cell, degree)
        self._qpts, self._qwts = pts, wts / wts.sum()
        self._u_try = fem.Function(self.V)
        _, _, Je_try = kinematics(ufl.Identity(3) + ufl.grad(self._u_try), self.law,
                                  self.load * self.theta, self._Fp_inv_ufl())
        self._margin = fem.Expression(Je_try - self.law.compaction_limit, pts,
                                      jit_options=kernel_jit_options())
        self._cells = np.arange(self._ncell, dtype=np.int32)
        self._nb = self.V.dofmap.index_map.size_local * self.V.dofmap.index_map_bs
        # with plastic flow the critical-point line search picks the length inside the
        # admissible step; refining its end there cost Newton iterations (solver notes)
        self._bisections = 0 if self.plastic else NEWTON.bisections

        def precheck(x, y):  # the update is x - y
            alpha = self._fraction(x.array_r, -y.array_r)
            if alpha < 1.0:
                y.scale(alpha)
                log.debug("Newton step scaled by %.3g to stay in the material's domain",
                          alpha)

        self.problem.solver.setLineSearchPreCheck(precheck)

    def _margins(self, x_arr: np.ndarray) -> np.ndarray:
        """``Je - J_min`` at every quadrature point of the owned cells for the owned
        displacement entries ``x_arr``."""
        self._u_try.x.array[:self._nb] = x_arr
        self._u_try.x.scatter_forward()
        return self._margin.eval(self.mesh, self._cells).ravel()

    def _fraction(self, x_arr: np.ndarray, dx_arr: np.ndarray, keep: float = NEWTON.keep
                  ) -> float:
        """The largest ``alpha`` in (0, 1] for which ``x + alpha dx`` keeps every
        quadrature point's ``Je - J_min`` above ``keep`` times its value at ``x``: 1, or
        found by halving (at most ``NEWTON.halvings`` times; 0 if none is admissible),
        then ``_bisections`` bisections between the last admissible and inadmissible
        fractions."""
        from mpi4py import MPI

        floor = keep * self._margins(x_arr)

        def admissible(alpha):
            ok = np.array([bool(np.all(self._margins(x_arr + alpha * dx_arr) > floor))],
                          dtype=np.int32)
            self.mesh.comm.Allreduce(MPI.IN_PLACE, ok, op=MPI.MIN)
            return bool(ok[0])

        alpha = 1.0
        for _ in range(NEWTON.halvings):
            if admissible(alpha):
                break
            alpha *= 0.5
        else:
            return 0.0
        if alpha < 1.0:
            lo, hi = alpha, 2 * alpha
            for _ in range(self._bisections):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if admissible(mid) else (lo, mid)
            alpha = lo
        return alpha

    def admissible_fraction(self, du: np.ndarray, keep: float = NEWTON.predictor_keep
                            ) -> float:
        """How far a predictor may move the displacement and still leave Newton room near
        the compaction limits.

        Parameters
        ----------
        du : array
            Displacement increment (um; owned entries of ``u.x.array`` are used).
        keep : float
            Fraction of ``Je - J_min`` each quadrature point keeps.

        Returns
        -------
        float
            The largest ``alpha`` in (0, 1] for which ``u + alpha du`` keeps every
            quadrature point's ``Je - J_min`` above ``keep`` times its present value, to
            the resolution of :meth:`_fraction` (``2^-k``, refined by bisection without
            plastic flow); 0 if none.
        """
        nb = self._nb
        return self._fraction(self.u.x.array[:nb].copy(), du[:nb], keep)

    def refresh_tangent(self) -> None:
        """Assemble the tangent at the current state: the operator of the next solve's
        predictor (call after a start, a restore or a rollback)."""
        import dolfinx.fem.petsc as fp

        p = self.problem
        self._set_spring()
        fp.assign(self.u, p.x)
        # the Jacobian's return (at the last step's dt) must not change the plastic state
        kept = [f.x.array.copy() for f in (self.Fp_inv, self.plastic_strain)] \
            if self.plastic else []
        if self.pc_reuse is not None:  # the state may have jumped (restore, rollback)
            self.pc_reuse.rebuild_next()
        p.solver.computeJacobian(p.x, p.A)
        for f, a in zip((self.Fp_inv, self.plastic_strain) if kept else (), kept):
            f.x.array[:] = a
        p.solver.getKSP().setOperators(p.A, p.A)
        self._tangent_ready = True

    def _predict(self) -> tuple[float, int]:
        """Tangent predictor (:mod:`anodetwin.simulate.solver`): ``u += alpha du`` with ``K
        du = -R(u)``, K the last tangent (assembled at the last converged state or by
        :meth:`refresh_tangent`) and ``alpha`` the :meth:`admissible_fraction`; returns the
        norm of ``R(u)`` before the predictor (the out-of-balance force of the step) and the
        Krylov iterations (0 without a tangent)."""
        import dolfinx.fem.petsc as fp

        p = self.problem
        snes, du = p.solver, self._du
        self._set_spring()
        fp.assign(self.u, p.x)
        snes.computeFunction(p.x, p.b)
        r_ref = p.b.norm()
        if not self._tangent_ready or not np.isfinite(r_ref) or r_ref <= NEWTON.atol:
            return r_ref, 0  # no tangent yet, a broken state, or in equilibrium (a rest)
        ksp = snes.getKSP()
        ksp.solve(p.b, du)
        du.scale(-1.0)
        p.x.axpy(self.admissible_fraction(du.array_r), du)
        fp.assign(p.x, self.u)
        self.u.x.scatter_forward()
        return r_ref, ksp.getIterationNumber()

    def _init_plastic(self, phases, materials: dict) -> None:
        """Cell state of plastic flow: Fp^-1 (DG0 tensor), accumulated equivalent plastic
        strain, their values at the start of the step, d(Fp^-1)/dF of the consistent tangent
        (DG0, (3, 3, 3, 3)) and the flow parameters per cell."""
        import dolfinx.fem as fem

        from anodetwin.simulate.plasticity import FlowRule

        mesh = self.mesh
        n = mesh.topology.index_map(3).size_local
        self.Qt = fem.functionspace(mesh, ("DG", 0, (3, 3)))
        self.Fp_inv = fem.Function(self.Qt, name="Fp_inv")
        self.Fp_inv.x.array.reshape(-1, 9)[:] = np.eye(3).ravel()
        Qd = fem.functionspace(mesh, ("DG", 0, (3, 3, 3, 3)))
        self.dFp_inv = fem.Function(Qd, name="dFp_inv_dF")
        self._ddof = Qd.dofmap.list[:n, 0]
        self._dt = np.inf
        self.plastic_strain = fem.Function(self.Q, name="plastic_strain")
        self._tdof = self.Qt.dofmap.list[:n, 0]
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
        """Back to the plastic state at the start of the step (after a failed step; the
        caller has restored ``u`` and theta) and the tangent there."""
        if self.plastic:
            self.Fp_inv.x.array[:] = self._Fp_inv_n
            self.plastic_strain.x.array[:] = self._eps_p_n
        self.refresh_tangent()

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
        """theta (times the load factor) of each owned cell, (n,)."""
        return self.theta.x.array[self._sdof] * float(self.load.value)

    def cell_parameters(self) -> LawParameters:
        """The material constants of each owned cell (arrays (n,))."""
        return LawParameters(**{f.name: getattr(self.law, f.name).x.array[self._sdof]
                                for f in fields(LawParameters)})

    def cell_stress(self) -> np.ndarray:
        """Cauchy stress (MPa) of each owned cell, (n, 3, 3) in the mesh's (x, y, z) order:
        the UFL derivative of the stored energy
        (:func:`anodetwin.simulate.constitutive.cauchy_stress`), averaged over the cell's
        quadrature points (the cell average on boxes). Those are the points the step
        control keeps inside the material's domain; the centre of a compacted cell may lie
        past the compaction limit, where the energy is not defined."""
        import dolfinx.fem as fem

        if self._stress_expr is None:
            self._stress_expr = fem.Expression(cauchy_stress(
                self.F, self.law, self.load * self.theta, self._Fp_inv_ufl()), self._qpts,
                jit_options=kernel_jit_options())
        n = self._ncell
        sig = self._stress_expr.eval(self.mesh, np.arange(n, dtype=np.int32))
        return np.einsum("q,nqij->nij", self._qwts, sig.reshape(n, -1, 3, 3))

    def _plastic_return(self, tangent: bool = False) -> None:
        """Return every cell from the step's starting state at the current F over the step
        ``self._dt``: sets Fp^-1 and the plastic strain and, with ``tangent``, the
        derivative of Fp^-1 by F that the consistent tangent uses."""
        from anodetwin.simulate.plasticity import return_map, return_tangent

        p, theta = self.cell_parameters(), self.cell_theta()
        start = self._Fp_inv_n.reshape(-1, 3, 3)[self._tdof]
        args = (self.cell_F(), start, p, theta, self.flow.flow_stress(theta),
                self.flow.rate0, self.flow.m, self._dt)
        if tangent:
            r, D = return_tangent(*args)
            self.dFp_inv.x.array.reshape(-1, 81)[self._ddof] = D.reshape(-1, 81)
            self.dFp_inv.x.scatter_forward()
        else:
            r = return_map(*args)
        self.Fp_inv.x.array.reshape(-1, 3, 3)[self._tdof] = r.Fp_inv
        self.plastic_strain.x.array[self._sdof] = self._eps_p_n[self._sdof] + r.dgamma
        self.Fp_inv.x.scatter_forward()
        self.plastic_strain.x.scatter_forward()

    def total_energy(self) -> float:
        """The stored energy of the mesh at the current state (uJ = MPa um^3, all ranks;
        the spring's work not included)."""
        import dolfinx.fem as fem
        from mpi4py import MPI

        if self._energy_form is None:  # compiled on first use
            self._energy_form = fem.form(self.energy)
        return self.mesh.comm.allreduce(fem.assemble_scalar(self._energy_form), op=MPI.SUM)

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
        """Equilibrium at the current theta.

        The tangent predictor, then Newton (with plastic flow, the return over a step of
        ``dt`` in every residual) inside the spring fixed point; Newton's target is
        ``rtol`` times the out-of-balance force before the predictor.

        Parameters
        ----------
        where : str, optional
            Where in the run this solve is (step, time); used in log and error messages.
        dt : float, optional
            Length of the step, s; ``inf`` makes the plastic flow rate-independent.

        Returns
        -------
        tuple of (list, list, int)
            Newton iterations and Krylov iterations per solve (the predictor's Krylov
            iterations in the first), and the spring's fixed-point passes.

        Raises
        ------
        NumericalError
            Newton or the spring fixed point fails; the message names ``where``.
        """
        self._dt = dt
        r_ref, k_pred = self._predict()
        atol = max(NEWTON.atol, self.problem.solver.getTolerances()[0] * r_ref)
        newton, krylov, passes = self._solve_equilibrium(where, atol)
        krylov[0] += k_pred
        if self.plastic:  # the plastic state of the solution (a line search may have
            self._plastic_return()  # evaluated the residual elsewhere last)
        self._tangent_ready = True
        return newton, krylov, passes

    def _solve_equilibrium(self, where: str, atol: float) -> tuple[list, list, int]:
        """Newton to the absolute residual ``atol`` inside the spring fixed point. Returns
        the Newton and Krylov iterations per pass and the passes."""
        snes = self.problem.solver
        b = self.boundary
        newton, krylov = [], []
        snes.setConvergenceHistory(length=NEWTON.history, reset=True)
        try:
            for passes in range(1, self.max_spring_passes + 1):
                self._set_spring()
                snes.setTolerances(atol=atol)
                self.problem.solve()
                u_top = float(self.p_top.value - b.p0_mpa) / b.k_mpa_per_um \
                    if b.k_mpa_per_um else 0.0  # the top displacement the last pressure used
                reason = SNESReason.of(snes.getConvergedReason())
                log.debug("mechanics %s: pass %d, SNES reason %s, %d iterations, residuals "
                          "%s", where, passes, reason.describe(), snes.getIterationNumber(),
                          snes.getConvergenceHistory()[0][:8])
                newton.append(snes.getIterationNumber())
                krylov.append(snes.getLinearSolveIterations())
                if not reason.converged:
                    raise NumericalError(f"Newton did not converge {where} (SNES reason "
                                         f"{reason.describe()}, {newton[-1]} iterations)",
                                         "use smaller steps or check the materials")
                if b.top != "spring" or b.k_mpa_per_um == 0 or abs(
                        self.mean_top() - u_top) <= self.spring_tol * max(1.0, abs(u_top)):
                    return newton, krylov, passes
        finally:
            snes.setTolerances(atol=NEWTON.atol)
        raise NumericalError(f"the spring did not settle {where}",
                             "lower the spring stiffness or use smaller steps")


def solve_swelling(mesh, phases, facets, materials: dict, theta, boundary: Boundary,
                   steps: int = 1, rtol: float = NEWTON.rtol,
                   spring_tol: float = NEWTON.spring_tol,
                   max_spring_passes: int = NEWTON.max_spring_passes, prefix: str = "swell_",
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
    rtol : float
        Relative residual tolerance of Newton.
    spring_tol, max_spring_passes : float, int
        Relative change of the top displacement at which the spring fixed point stops,
        and its pass limit.
    prefix : str
        PETSc options prefix.
    linear_solver : {"iterative", "direct"}
        CG + GAMG (large meshes), or MUMPS LU (small meshes).
    quadrature_degree : int
        Quadrature of the (non-polynomial) energy density.

    Returns
    -------
    SwellingResult
        Displacement (um), mean top displacement (um), stack pressure (MPa) and the
        solver's iteration counts.

    Raises
    ------
    ParameterError
        A phase of the mesh without material, an unknown linear solver.
    NumericalError
        Newton or the spring fixed point fails at a load step.
    """
    import dolfinx.fem as fem

    th = theta if not isinstance(theta, (int, float)) else fem.Constant(mesh, float(theta))
    sp = SwellingProblem(mesh, phases, facets, materials, boundary, th, rtol, spring_tol,
                         max_spring_passes, prefix, linear_solver, quadrature_degree)
    sp.load.value = 0.0
    sp.refresh_tangent()  # the predictor of the first load step starts from the unloaded state
    newton, krylov, passes = [], [], 0
    for k in range(1, int(steps) + 1):
        sp.load.value = k / steps
        n, kr, p = sp.solve(f"at load step {k}/{steps}")
        newton += n
        krylov += kr
        passes += p
    return SwellingResult(sp.u, sp.mean_top(), sp.stack_pressure(), newton, krylov, passes)

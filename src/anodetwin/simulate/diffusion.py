"""Lithium transport inside the Si particles: nonlinear diffusion of theta on a submesh.

``d theta / dt = div(D grad theta)`` in the particle cells (a submesh of the electrode
mesh), with theta the normalised Li content (0 crystalline Si, 1 Li15Si4) and
``D = m D0 exp(a theta)``: a concentration-dependent diffusivity makes the front sharp when
the crystalline core diffuses far slower than the lithiated shell (core-shell lithiation);
the cell multiplier ``m`` (1 by default) marks fast-diffusion defect pathways (network-like
lithiation). Li enters through the particle surface (the Si/matrix interface): either a
prescribed concentration (``mode="concentration"``) or a prescribed inward flux (``"flux"``,
um/s of theta) with a spatial weight (a reaction profile through the thickness). Every other
boundary (symmetry planes, box faces) is insulated.

With a supply rate ``Q`` (um3/s of theta, :meth:`LithiumTransport.step`), the flux density is
``Q w(x) (1 - theta_old) / int w (1 - theta_old) dA`` (``theta_old`` instead of
``1 - theta_old`` when Li leaves, Q < 0): the reaction prefers the weighted surfaces, a full
surface (theta = 1) takes no more Li, an empty one gives none, and the Li inserted over a
step is exactly ``Q dt`` (backward Euler conserves it).

Stress coupling (optional, ``stress_factor`` kappa > 0): the chemical potential ``mu = mu0 +
RT ln(theta / (1 - theta)) - Omega sigma_h`` adds a drift up the hydrostatic stress
gradient, ``J = -D grad theta + D kappa theta (1 - theta) grad sigma_h`` with ``kappa =
Omega / (R T)`` (1/MPa): Li moves towards tensile regions. At rest (J = 0) the Li follows
``ln(theta / (1 - theta)) - kappa sigma_h = const``. ``sigma_h`` is a P1 field on the
particles (:meth:`LithiumTransport.set_hydrostatic`: from cell values of the mechanics),
held fixed over a step.

Time stepping: backward Euler, Newton (SNES) with CG + algebraic multigrid (GMRES with the
stress drift, which makes the tangent non-symmetric); P1 elements; the tolerances are
:data:`TRANSPORT_SOLVER`. Units: um, s, MPa.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from anodetwin.errors import NumericalError, ParameterError
from anodetwin.simulate.solver import SNESReason, nonlinear_problem

__all__ = ["DiffusionResult", "LithiumTransport", "solve_diffusion", "TransportSolver",
           "TRANSPORT_SOLVER"]


@dataclass(frozen=True)
class TransportSolver:
    """Tolerances of the Li transport's Newton solve (PETSc SNES ``newtonls``).

    Attributes
    ----------
    rtol, atol : float
        Relative and absolute residual tolerance of Newton (atol in um3/s of theta).
    ksp_rtol : float
        Relative tolerance of each linear solve (CG, or GMRES with the stress drift; both
        with algebraic multigrid).
    quadrature_degree : int
        Quadrature degree of the volume and surface integrals (``exp(a theta)``).
    """

    rtol: float = 1e-10
    atol: float = 1e-12
    ksp_rtol: float = 1e-12
    quadrature_degree: int = 2

    def petsc_options(self, symmetric: bool) -> dict:
        """PETSc options of the SNES.

        Parameters
        ----------
        symmetric : bool
            The tangent is symmetric (no stress drift): CG, else GMRES.

        Returns
        -------
        dict
            Option name (without prefix) -> value.
        """
        return {"snes_type": "newtonls", "snes_rtol": self.rtol, "snes_atol": self.atol,
                "ksp_type": "cg" if symmetric else "gmres", "pc_type": "gamg",
                "ksp_rtol": self.ksp_rtol}


#: The options every transport solve uses.
TRANSPORT_SOLVER = TransportSolver()


@dataclass
class DiffusionResult:
    """theta at the end, the times and the mean theta of the particles at each time."""

    theta: object
    times: np.ndarray
    mean_theta: np.ndarray
    volume_um3: float


class LithiumTransport:
    """Diffusion of theta in the particle cells of ``mesh`` (module notes).

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        Electrode mesh (um).
    cell_tags : dolfinx.mesh.MeshTags
        Its phase code per cell; cells with a code in ``particle_codes`` form the particles.
    particle_codes : sequence of int
        Phase codes of the particles.
    surface : callable
        ``surface(x) -> bool`` for points x (3, n) on the particle surface where Li enters
        (exterior facets of the particle submesh that satisfy it).
    D0_um2_s, a : float
        ``D(theta) = D0 exp(a theta)`` in um2/s.
    mode : {"concentration", "flux"}
        Surface condition: theta = ``value``, or an inward flux (``value`` um/s, or the
        supply of :meth:`step` when ``supply=True``).
    value : float
        Surface theta, or flux (um/s), or initial supply (um3/s of theta).
    theta0 : float
        Initial theta everywhere.
    supply : bool
        With ``mode="flux"``: the rate of :meth:`step` is the Li inserted per second (um3/s
        of theta), spread over the inlet by ``weight`` and the free sites.
    weight : callable, optional
        ``weight(x)`` UFL expression of the coordinates: the reaction profile of the supply.
    multiplier : ndarray, optional
        Diffusivity multiplier per local cell of ``mesh`` (defect pathways).
    prefix : str
        PETSc options prefix of the solver.
    stress_factor : float
        ``kappa = Omega / (R T)`` (1/MPa) of the stress drift; 0: no stress coupling.

    Raises
    ------
    ParameterError
        Unknown ``mode``, ``D0_um2_s`` not positive, no cell of ``particle_codes``.
    """

    def __init__(self, mesh, cell_tags, particle_codes: Sequence[int], surface: Callable,
                 D0_um2_s: float, a: float = 0.0, mode: str = "concentration",
                 value: float = 1.0, theta0: float = 0.0, supply: bool = False,
                 weight: Callable | None = None, multiplier: np.ndarray | None = None,
                 prefix: str = "diff_", stress_factor: float = 0.0):
        import dolfinx.fem as fem
        import ufl

        if mode not in ("concentration", "flux"):
            raise ParameterError(f"surface mode '{mode}'", "use 'concentration' or 'flux'")
        if not D0_um2_s > 0:
            raise ParameterError(f"diffusivity {D0_um2_s} um2/s is not positive",
                                 "give D0 > 0")
        sub, inlet = self._particles(mesh, cell_tags, particle_codes, surface)
        V = fem.functionspace(sub, ("Lagrange", 1))
        self.V = V
        th = fem.Function(V, name="theta")
        th.x.array[:] = theta0
        self.theta = th
        self.theta_old = fem.Function(V)
        self.theta_old.x.array[:] = theta0
        w = ufl.TestFunction(V)
        self.dt = fem.Constant(sub, 1.0)
        D = D0_um2_s * ufl.exp(a * th)
        if multiplier is not None:
            m = fem.Function(fem.functionspace(sub, ("DG", 0)))
            m.x.array[:] = np.asarray(multiplier, float)[self.parent_cells]
            D = m * D
        q = TRANSPORT_SOLVER.quadrature_degree  # exp(a theta)
        dx = ufl.Measure("dx", domain=sub, metadata={"quadrature_degree": q})
        R = ((th - self.theta_old) / self.dt * w + D * ufl.dot(ufl.grad(th), ufl.grad(w))) * dx
        drift = self._stress_drift(stress_factor, D, w, dx)
        if drift is not None:
            R = R - drift
        R, bcs = self._surface_condition(R, w, inlet, mode, value, supply, weight)
        self.problem = nonlinear_problem(
            R, th, bcs, prefix, TRANSPORT_SOLVER.petsc_options(symmetric=not self.stress_factor))
        self.volume_um3 = self._integral(fem.Constant(sub, 1.0) * ufl.dx)
        self._total = fem.form(th * ufl.dx)
        self._mid = fem.Expression(th, np.array([[0.5, 0.5, 0.5]]) if
                                   sub.topology.cell_type.name == "hexahedron" else
                                   np.array([[0.25, 0.25, 0.25]]))

    def _particles(self, mesh, cell_tags, particle_codes: Sequence[int], surface: Callable):
        """The particle submesh (``self.sub``, its parent cells) and its inlet facets: the
        exterior facets whose midpoints satisfy ``surface``."""
        import dolfinx.mesh as dmesh
        from mpi4py import MPI

        n = mesh.topology.index_map(3).size_local
        cells = cell_tags.indices[np.isin(cell_tags.values, particle_codes)
                                  & (cell_tags.indices < n)].astype(np.int32)
        if mesh.comm.allreduce(cells.size, op=MPI.SUM) == 0:
            raise ParameterError(f"the mesh has no cells of phases {list(particle_codes)}",
                                 "give a mesh with Si particles")
        sub, cmap, *_ = dmesh.create_submesh(mesh, 3, cells)
        self.sub, self.parent = sub, mesh
        sub.topology.create_connectivity(2, 3)
        ns = sub.topology.index_map(3).size_local + sub.topology.index_map(3).num_ghosts
        self.parent_cells = cmap.sub_topology_to_topology(np.arange(ns, dtype=np.int32),
                                                          False)
        ext = dmesh.exterior_facet_indices(sub.topology)
        mid = dmesh.compute_midpoints(sub, 2, ext) if ext.size else np.zeros((0, 3))
        inlet = ext[np.asarray(surface(mid.T), bool)] if ext.size else ext
        return sub, inlet

    def _integral(self, integrand) -> float:
        """The integral of a UFL form over all ranks."""
        import dolfinx.fem as fem
        from mpi4py import MPI

        return self.sub.comm.allreduce(fem.assemble_scalar(fem.form(integrand)), op=MPI.SUM)

    def _stress_drift(self, kappa: float, D, w, dx):
        """The residual of the stress drift (None without coupling) and the forms of the
        lumped projection of the hydrostatic stress (:meth:`set_hydrostatic`)."""
        import dolfinx.fem as fem
        import ufl

        self.sigma_h = fem.Function(self.V, name="hydrostatic")  # MPa, P1 on the particles
        self.stress_factor = float(kappa)
        if not self.stress_factor:
            return None
        th = self.theta
        self._cell_sigma = fem.Function(fem.functionspace(self.sub, ("DG", 0)))
        self._lumped = fem.form(w * ufl.dx)
        self._sigma_rhs = fem.form(self._cell_sigma * w * ufl.dx)
        return D * self.stress_factor * th * (1 - th) * ufl.dot(
            ufl.grad(self.sigma_h), ufl.grad(w)) * dx

    def _surface_condition(self, R, w, inlet: np.ndarray, mode: str, value: float,
                           supply: bool, weight: Callable | None):
        """The residual with the inlet's flux term, or the Dirichlet conditions of a
        prescribed concentration; also the inlet area and the supply's forms."""
        import dolfinx.fem as fem
        import dolfinx.mesh as dmesh
        import ufl

        sub, bcs = self.sub, []
        tags = dmesh.meshtags(sub, 2, np.sort(inlet).astype(np.int32),
                              np.ones(inlet.size, np.int32))
        ds = ufl.Measure("ds", domain=sub, subdomain_data=tags,
                         metadata={"quadrature_degree": TRANSPORT_SOLVER.quadrature_degree})
        self._area = self._integral(fem.Constant(sub, 1.0) * ds(1))
        self.rate = fem.Constant(sub, float(value))  # flux (um/s) or supply (um3/s)
        self.supply = supply and mode == "flux"
        if mode == "flux":
            flux = self.rate
            if self.supply:
                wx = weight(ufl.SpatialCoordinate(sub)) if weight else 1.0
                # free sites (1 - theta) when inserting, Li (theta) when extracting
                self._sites = fem.Constant(sub, (1.0, -1.0))
                avail = wx * (self._sites[0] + self._sites[1] * self.theta_old)
                self._avail_form = fem.form(avail * ds(1))
                self.norm = fem.Constant(sub, 1.0)
                flux = self.rate * avail / self.norm
            R = R - flux * w * ds(1)
        else:
            dofs = fem.locate_dofs_topological(self.V, 2, inlet)
            bcs.append(fem.dirichletbc(fem.Constant(sub, float(value)), dofs, self.V))
        return R, bcs

    @property
    def inlet_area_um2(self) -> float:
        """Area of the surface where Li enters (um2)."""
        return self._area

    def mean_theta(self) -> float:
        """Volume-mean theta of the particles."""
        import dolfinx.fem as fem
        from mpi4py import MPI

        return self.sub.comm.allreduce(fem.assemble_scalar(self._total),
                                       op=MPI.SUM) / self.volume_um3

    def step(self, dt_s: float, rate: float | None = None, where: str = "") -> int:
        """One backward-Euler step.

        Parameters
        ----------
        dt_s : float
            Step, s.
        rate : float, optional
            The flux (um/s) or, with a supply, the Li inserted per second (um3/s of theta);
            default: as before.
        where : str
            Where the step is, for the error message.

        Returns
        -------
        int
            Newton iterations.

        Raises
        ------
        NumericalError
            Newton did not converge (theta is reset to the start of the step), or no surface
            can take (give) the supply.
        """
        import dolfinx.fem as fem
        from mpi4py import MPI

        self.dt.value = dt_s
        if rate is not None:
            self.rate.value = rate
        if self.supply:
            self._sites.value = (1.0, -1.0) if self.rate.value >= 0 else (0.0, 1.0)
            avail = self.sub.comm.allreduce(fem.assemble_scalar(self._avail_form), op=MPI.SUM)
            if avail <= 0 and self.rate.value:
                raise NumericalError(f"no particle surface can take or give Li {where}",
                                     "lower the supply or check the capacity")
            self.norm.value = avail if avail > 0 else 1.0
        self.problem.solve()
        snes = self.problem.solver
        reason = SNESReason.of(snes.getConvergedReason())
        if not reason.converged:
            self.theta.x.array[:] = self.theta_old.x.array
            raise NumericalError(f"diffusion did not converge {where} (SNES reason "
                                 f"{reason.describe()})", "use smaller time steps")
        self.theta_old.x.array[:] = self.theta.x.array
        return snes.getIterationNumber()

    def set_hydrostatic(self, parent_values: np.ndarray) -> None:
        """Set the hydrostatic stress that drives the stress drift (no-op without it).

        The lumped L2 projection onto P1 of the particles: the volume-weighted mean of the
        cells around each vertex.

        Parameters
        ----------
        parent_values : ndarray, shape (n_local_cells,)
            Hydrostatic stress (MPa) on the owned cells of the parent mesh.
        """
        import dolfinx.fem as fem
        from dolfinx.la import InsertMode

        if not self.stress_factor:
            return
        ns = self.sub.topology.index_map(3).size_local
        cs = self._cell_sigma
        dofs = cs.function_space.dofmap.list[:ns, 0]
        cs.x.array[dofs] = np.asarray(parent_values, float)[self.parent_cells[:ns]]
        cs.x.scatter_forward()
        vecs = []
        for form in (self._sigma_rhs, self._lumped):
            b = fem.assemble_vector(form)
            b.scatter_reverse(InsertMode.add)
            vecs.append(b.array.copy())
        n = self.V.dofmap.index_map.size_local
        self.sigma_h.x.array[:n] = vecs[0][:n] / vecs[1][:n]
        self.sigma_h.x.scatter_forward()

    def to_parent_cells(self, out) -> None:
        """Write the cell means of theta into a cell function of the parent mesh.

        Parameters
        ----------
        out : dolfinx.fem.Function
            DG0 function on the parent mesh; 0 outside the particles.
        """
        ns = self.sub.topology.index_map(3).size_local
        vals = self._mid.eval(self.sub, np.arange(ns, dtype=np.int32)).ravel()
        dofs = out.function_space.dofmap.list[:, 0]
        out.x.array[:] = 0.0
        out.x.array[dofs[self.parent_cells[:ns]]] = vals
        out.x.scatter_forward()


def solve_diffusion(mesh, cell_tags, particle_codes: Sequence[int], surface: Callable,
                    times: Sequence[float], D0_um2_s: float, a: float = 0.0,
                    mode: str = "concentration", value: float = 1.0, theta0: float = 0.0,
                    prefix: str = "diff_") -> DiffusionResult:
    """Diffusion of theta in the particle cells of ``mesh`` at a constant surface
    concentration or flux ``value`` (:class:`LithiumTransport`).

    Parameters
    ----------
    mesh, cell_tags, particle_codes, surface, D0_um2_s, a, mode, value, theta0, prefix
        As for :class:`LithiumTransport`.
    times : sequence of float
        Times to step through, s (increasing, after 0; each one backward-Euler step: give
        a fine sequence for accuracy).

    Returns
    -------
    DiffusionResult
        theta at the end, ``times`` (shape (n,)) and the mean theta at each (shape (n,)).

    Raises
    ------
    ParameterError
        Times not positive and increasing; the parameters of :class:`LithiumTransport`.
    NumericalError
        A step did not converge.
    """
    t = np.asarray(times, float)
    if t.size == 0 or t[0] <= 0 or np.any(np.diff(t) <= 0):
        raise ParameterError("output times must be positive and increasing",
                             "give e.g. times = numpy.linspace(dt, t_end, n)")
    tr = LithiumTransport(mesh, cell_tags, particle_codes, surface, D0_um2_s, a, mode, value,
                          theta0, prefix=prefix)
    means, t_prev = [], 0.0
    for k, tk in enumerate(t):
        tr.step(tk - t_prev, where=f"at step {k} (t = {tk:g} s)")
        means.append(tr.mean_theta())
        t_prev = tk
    return DiffusionResult(tr.theta, t, np.array(means), tr.volume_um3)

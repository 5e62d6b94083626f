"""Lithium transport inside the Si particles: nonlinear diffusion of theta on a submesh.

``d theta / dt = div(D(theta) grad theta)`` in the particle cells (a submesh of the
electrode mesh), with theta the normalised Li content (0 crystalline Si, 1 Li15Si4). The
particle surface (the Si/matrix interface, where Li enters) receives either a prescribed
concentration (``surface="concentration"``) or a prescribed inward flux in um/s of theta
(``surface="flux"``); every other boundary (symmetry planes, box faces) is insulated.
A concentration-dependent ``D(theta) = D0 exp(a theta)`` makes the front sharp when the
crystalline core diffuses far slower than the lithiated shell (core-shell lithiation).

Time stepping: backward Euler, Newton (SNES) with CG + algebraic multigrid; P1 elements.
Units: um, s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from anodetwin.errors import NumericalError, ParameterError

__all__ = ["DiffusionResult", "solve_diffusion"]


@dataclass
class DiffusionResult:
    """theta at the end, the times and the mean theta of the particles at each time."""

    theta: object
    times: np.ndarray
    mean_theta: np.ndarray
    volume_um3: float


def solve_diffusion(mesh, cell_tags, particle_codes: Sequence[int], surface: Callable,
                    times: Sequence[float], D0_um2_s: float, a: float = 0.0,
                    mode: str = "concentration", value: float = 1.0, theta0: float = 0.0,
                    prefix: str = "diff_") -> DiffusionResult:
    """Diffusion of theta in the particle cells of ``mesh`` (module notes).

    Parameters
    ----------
    cell_tags : MeshTags
        Phase tags; cells with a code in ``particle_codes`` form the particles.
    surface : callable
        ``surface(x) -> bool`` for points x (3, n) on the particle surface where Li enters
        (exterior facets of the particle submesh that satisfy it).
    times : sequence of float
        Output times (s), increasing, starting after 0; each is one backward-Euler step
        (give a fine sequence for accuracy).
    D0_um2_s, a : float
        Diffusivity D(theta) = D0 exp(a theta) in um2/s.
    mode : {"concentration", "flux"}
        Surface condition: theta = value, or inward flux value (um/s).
    """
    import dolfinx.fem as fem
    import dolfinx.fem.petsc
    import dolfinx.mesh as dmesh
    import ufl
    from mpi4py import MPI

    if mode not in ("concentration", "flux"):
        raise ParameterError(f"surface mode '{mode}'", "use 'concentration' or 'flux'")
    if D0_um2_s <= 0:
        raise ParameterError(f"diffusivity {D0_um2_s} um2/s is not positive", "give D0 > 0")
    t = np.asarray(times, float)
    if t.size == 0 or t[0] <= 0 or np.any(np.diff(t) <= 0):
        raise ParameterError("output times must be positive and increasing",
                             "give e.g. times = numpy.linspace(dt, t_end, n)")
    n = mesh.topology.index_map(3).size_local
    cells = cell_tags.indices[np.isin(cell_tags.values, particle_codes)
                              & (cell_tags.indices < n)].astype(np.int32)
    sub, *_ = dmesh.create_submesh(mesh, 3, cells)
    sub.topology.create_connectivity(2, 3)
    ext = dmesh.exterior_facet_indices(sub.topology)
    mid = dmesh.compute_midpoints(sub, 2, ext) if ext.size else np.zeros((0, 3))
    inlet = ext[np.asarray(surface(mid.T), bool)] if ext.size else ext
    V = fem.functionspace(sub, ("Lagrange", 1))
    th = fem.Function(V, name="theta")
    th.x.array[:] = theta0
    th_old = fem.Function(V)
    th_old.x.array[:] = theta0
    w = ufl.TestFunction(V)
    dt = fem.Constant(sub, 1.0)
    D = D0_um2_s * ufl.exp(a * th)
    dx = ufl.Measure("dx", domain=sub, metadata={"quadrature_degree": 2})  # exp(a theta)
    R = ((th - th_old) / dt * w + D * ufl.dot(ufl.grad(th), ufl.grad(w))) * dx
    bcs = []
    if mode == "flux":
        tags = dmesh.meshtags(sub, 2, np.sort(inlet).astype(np.int32),
                              np.ones(inlet.size, np.int32))
        ds = ufl.Measure("ds", domain=sub, subdomain_data=tags)
        R = R - value * w * ds(1)
    else:
        dofs = fem.locate_dofs_topological(V, 2, inlet)
        bcs.append(fem.dirichletbc(fem.Constant(sub, float(value)), dofs, V))
    problem = dolfinx.fem.petsc.NonlinearProblem(
        R, th, bcs=bcs, petsc_options_prefix=prefix,
        petsc_options={"snes_type": "newtonls", "snes_rtol": 1e-10, "snes_atol": 1e-12,
                       "ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12})
    one = fem.form(fem.Constant(sub, 1.0) * ufl.dx)
    volume = sub.comm.allreduce(fem.assemble_scalar(one), op=MPI.SUM)
    total = fem.form(th * ufl.dx)
    means, t_prev = [], 0.0
    for k, tk in enumerate(t):
        dt.value = tk - t_prev
        problem.solve()
        reason = problem.solver.getConvergedReason()
        if reason <= 0:
            raise NumericalError(f"diffusion step {k} (t = {tk:g} s) did not converge "
                                 f"(SNES reason {reason})", "use smaller time steps")
        th_old.x.array[:] = th.x.array
        means.append(sub.comm.allreduce(fem.assemble_scalar(total), op=MPI.SUM) / volume)
        t_prev = tk
    return DiffusionResult(th, t, np.array(means), volume)

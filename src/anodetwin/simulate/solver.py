"""Options of the nonlinear mechanics solve, in one place, and PETSc's SNES outcomes by name.

The scheme (:class:`~anodetwin.simulate.mechanics.SwellingProblem` applies it; each choice
was measured on the demo electrode, 58,812 DOFs, with the compacting matrix, in units of
one homogeneous linear-elastic solve of the same mesh: assembly + GAMG set-up + CG to 1e-8,
~1.6 s on one core):

* **Tangent predictor.** A step starts from ``u_n + alpha du`` with ``K(u_n, theta_n) du =
  -R(u_n, theta_n+1)``: the tangent of the converged state (positive definite there) and
  its preconditioner, both already built, so the predictor costs one Krylov solve; the
  tangent at ``(u_n, theta_n+1)`` that Newton's first iteration would use instead is
  indefinite (the swelling increment compresses the Si against its neighbours), which
  cost 3-16 Newton iterations per step. ``alpha`` keeps every quadrature point inside the
  material's domain (``predictor_keep``).
* **Newton's tolerance** is ``rtol`` times the norm of the out-of-balance force
  ``R(u_n, theta_n+1)`` before the predictor (relative to the residual the predictor
  leaves it would ask more of a better predictor: one more iteration per step).
* **Step control** (fraction to the boundary, as in interior-point methods): the Newton
  step is halved (at most ``halvings`` times) until every quadrature point keeps ``Je -
  J_min`` above ``keep`` times its current value, so no iterate inverts a cell or closes a
  porous cell past its solid fraction; then ``bisections`` bisections between the last
  admissible and the first inadmissible fraction take the step to within 1/8 of the
  boundary's fraction instead of up to half of it (each costs one evaluation of ``Je``
  at the quadrature points, ~3 ms on the demo electrode). On the demo's first five
  charging steps: 26 -> 22 Newton iterations (the fifth step 11 -> 9). With plastic flow
  the critical-point line search chooses the length inside the admissible step, and
  there the bisections cost iterations (the validation case's first five charging steps
  67.8 -> 75.4 s): they are off. Full steps otherwise (``basic`` line search; a
  backtracking search on the residual norm diverged, one on the energy stalls near the
  solution, where the energy's change falls below its round-off).
* **CG + GAMG.** The tangent is symmetric (the spring pressure is lagged) and positive
  definite near a solution; where an iterate far from it has an indefinite tangent, CG
  stops at the negative curvature and Newton takes the direction found so far (a
  truncated Newton-CG step; ``snes_max_linear_solve_fail`` keeps SNES going). GAMG with the
  rigid-body near-nullspace and a drop threshold of 0.02 (half the CG iterations of the
  default, -1, against the stiffness contrast of Cu and Si to the soft matrix, for a
  set-up of 1.3 s instead of 0.8 s). GMRES(150) before cost more per iteration and its
  basis 1.2 kB per DOF. MUMPS LU (``linear = "direct"``) remains for small meshes.
* **Gauss-Seidel smoothing.** The multigrid levels are smoothed by one symmetric
  Gauss-Seidel sweep (``sor``, local to each rank) as a Richardson iteration, not by
  PETSc's default Chebyshev-Jacobi: where the matrix has compacted (its volumetric
  stiffness grown 100-fold over its shear stiffness, as in the validation run's charging
  steps past 50% SoC) Jacobi smoothing needed 150-250 CG iterations per Newton iteration
  and Gauss-Seidel 60-65; a step took 12 s instead of 33 s on 2 ranks (steps 37-38 of the
  validation run; two sweeps: 13.5 s, Chebyshev over Gauss-Seidel: 13.3 s).
* **Inexact Newton.** Each linear solve stops at ``ksp_rtol`` = 1e-3 of its right-hand
  side: the same Newton iterations as at 1e-6 on the demo and the validation steps, with
  a third of the CG iterations (validation steps 37-38: 7.5 s instead of 12 s per step).
  With plastic flow the first plastic steps take a few more Newton iterations (the
  validation case's first five charging steps 70 instead of 56) and still less time
  (85.8 s instead of 121.3 s). Eisenstat-Walker forcing terms (looser still early in a
  step) cost Newton iterations.
* **Preconditioner reuse** (:class:`PreconditionerReuse`): GAMG's set-up (its Galerkin
  products; the aggregation and interpolation are kept) is redone only when a linear
  solve needs more than ``pc_rebuild_ratio`` times the CG iterations of the first solve
  after the last set-up, across Newton iterations and steps; a fixed lag of 3 Jacobians
  rebuilt it 10 times in the demo's first five charging steps, this rule twice (22.6 ->
  17.1 units).
* **Plastic flow: the consistent tangent.** Every residual returns the cells from the
  step's start at the current ``F``; the tangent adds the stress's derivative through that
  return, ``d(Fp^-1)/dF`` per cell (forward differences of the return, nine more returns
  per Jacobian), integrated at the cell centre where the return takes ``F``. Newton then
  solves equilibrium and flow rule together at its own rate; the staggered passes before
  (return, one Newton iteration, Aitken-relaxed, 11-16 passes per step) converged
  linearly. The full Newton step across the onset of flow overshoots (cells that flow at
  one iterate unload at the next): with plastic flow the line search is PETSc's
  critical-point search ``cp`` (on the residual as the gradient of an energy). On the
  reference case's first charging steps it took 8-14 Newton iterations per step where
  the staggered scheme took 19-34; ``basic`` did not converge the first plastic step,
  ``bt`` took 18-20.
* The residual is assembled without the lifting of the Dirichlet values (they are 0 and
  every iterate satisfies them: the lifting added nothing and cost 5% of an iteration).
* **Compiled kernels** (:func:`kernel_jit_options`): the element kernels of the residuals,
  tangents and cell expressions are compiled with ``-O3`` and the floating-point
  reassociation that lets the C compiler vectorise their sums over quadrature points and
  basis functions (``-fassociative-math`` and the flags it needs, ``-freciprocal-math``;
  NaN and infinities are still honoured: the step control relies on a NaN past the
  compaction limit), plus AVX2/FMA where the CPU has them. The tangent of the demo
  electrode (17,500 hexahedra) assembles in 0.19 s instead of 0.39 s with DOLFINx's
  default ``-O2``; the results differ by round-off.

Measured on the first five charging steps of the demo electrode with the compacting
matrix (1 rank): 52 units before, 27 with the predictor, CG and the step control, 17 with
Gauss-Seidel smoothing, inexact Newton and the adaptive rebuild, 12 with the compiled
kernels and the bisections (the unit compiled alike), with the same solution (thickness to
1e-7 um); 0.55 units per Newton iteration (``benchmarks/RESULTS.md``, mechanics solver).
The options are PETSc's (under the problem's prefix, ``mech_`` in runs); a case overrides
them with ``[solver] petsc_options`` (a ``snes_lag_preconditioner`` there replaces the
adaptive rebuild).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

__all__ = ["NEWTON", "NewtonOptions", "PreconditionerReuse", "SNESReason",
           "kernel_jit_options", "nonlinear_problem"]

#: C compiler flags of the element kernels (module notes): reassociation without giving up
#: NaN and infinities (not -ffast-math: it assumes finite values)
KERNEL_CFLAGS = ("-O3", "-g0", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
                 "-fassociative-math", "-freciprocal-math")


@functools.cache
def kernel_jit_options() -> dict:
    """DOLFINx JIT options of the solver's element kernels (module notes).

    The instruction-set flags are named explicitly (``-mavx2 -mfma`` on an x86-64 CPU that
    has both), not ``-march=native``: they are part of the JIT cache's key, so a cache
    shared by machines of different CPUs never hands one a kernel it cannot run. They take
    precedence over compiler flags in a ``dolfinx_jit_options.json`` for these kernels.

    Returns
    -------
    dict
        ``{"cffi_extra_compile_args": [...]}`` for ``jit_options`` of ``dolfinx.fem.form``,
        ``dolfinx.fem.Expression`` and ``NonlinearProblem``.
    """
    flags = list(KERNEL_CFLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        try:
            cpu = Path("/proc/cpuinfo").read_text().split()
        except OSError:  # not Linux: the portable flags only
            cpu = []
        if {"avx2", "fma"} <= set(cpu):
            flags += ["-mavx2", "-mfma"]
    return {"cffi_extra_compile_args": flags}


class SNESReason(IntEnum):
    """PETSc's ``SNESConvergedReason``: positive converged, negative diverged."""

    CONVERGED_ITERATING = 0
    CONVERGED_FNORM_ABS = 2
    CONVERGED_FNORM_RELATIVE = 3
    CONVERGED_SNORM_RELATIVE = 4
    CONVERGED_ITS = 5
    DIVERGED_FUNCTION_DOMAIN = -1
    DIVERGED_FUNCTION_COUNT = -2
    DIVERGED_LINEAR_SOLVE = -3
    DIVERGED_FUNCTION_NANORINF = -4
    DIVERGED_MAX_IT = -5
    DIVERGED_LINE_SEARCH = -6
    DIVERGED_INNER = -7
    DIVERGED_LOCAL_MIN = -8
    DIVERGED_DTOL = -9
    DIVERGED_JACOBIAN_DOMAIN = -10
    DIVERGED_TR_DELTA = -11
    DIVERGED_OBJECTIVE_DOMAIN = -13
    DIVERGED_OBJECTIVE_NANORINF = -14

    @classmethod
    def _missing_(cls, value):  # a code this list lacks (another PETSc version): kept
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_, member._value_ = f"REASON_{value}", value
        return member

    @classmethod
    def of(cls, value: int) -> SNESReason:
        """The reason of a ``snes.getConvergedReason()`` value.

        Parameters
        ----------
        value : int
            PETSc converged-reason code; a code this enum lacks becomes ``REASON_<code>``.

        Returns
        -------
        SNESReason
            The member for ``value``.
        """
        return cls(int(value))

    @property
    def converged(self) -> bool:
        """Whether SNES stopped on a convergence test (a positive reason)."""
        return self > 0

    def describe(self) -> str:
        """Name and PETSc code, e.g. ``DIVERGED_LINEAR_SOLVE (-3)``."""
        return f"{self.name} ({int(self)})"


@dataclass(frozen=True)
class NewtonOptions:
    """Tolerances, limits and linear algebra of the mechanics Newton solve (module notes).

    Attributes
    ----------
    rtol : float
        Default relative residual tolerance of Newton, relative to the out-of-balance force
        at the start of the step (the caller may give another).
    atol : float
        Absolute residual norm at which Newton stops (uN).
    max_it : int
        Newton iterations per solve.
    ksp_type : str
        Krylov method (PETSc name).
    ksp_rtol : float
        Relative tolerance of each linear solve (inexact Newton).
    ksp_max_it : int
        Krylov iterations per linear solve.
    gamg_threshold : float
        GAMG's drop threshold of weak couplings in the aggregation graph.
    pc_rebuild_ratio : float
        The preconditioner is kept across Newton iterations and steps until a linear solve
        needs more than ``pc_rebuild_ratio`` times the Krylov iterations of the first solve
        after its last build (:class:`PreconditionerReuse`).
    smoother : str
        Smoother of GAMG's levels: ``mg_levels_pc_type`` (PETSc name) as a Richardson
        iteration.
    smooth_its : int
        Smoothing sweeps before and after each coarse-grid correction.
    line_search : str
        SNES line search (PETSc name).
    keep : float
        Fraction of ``Je - J_min`` every quadrature point keeps in a Newton update.
    predictor_keep : float
        The same for the tangent predictor.
    halvings : int
        Halvings of a step before the step control gives up (fraction 0).
    bisections : int
        Bisections that refine the admissible fraction after the halvings (elastic
        solves; module notes).
    history : int
        Residual norms kept per solve (convergence history).
    plastic_line_search : str
        SNES line search with plastic flow (PETSc name; module notes).
    spring_tol : float
        Default relative change of the top displacement at which the spring fixed point
        stops.
    max_spring_passes : int
        Default limit of spring fixed-point passes.
    """

    rtol: float = 1e-9
    atol: float = 1e-8
    max_it: int = 50
    ksp_type: str = "cg"
    ksp_rtol: float = 1e-3
    ksp_max_it: int = 1000
    gamg_threshold: float = 0.02
    pc_rebuild_ratio: float = 2.0
    smoother: str = "sor"
    smooth_its: int = 1
    line_search: str = "basic"
    keep: float = 0.25
    predictor_keep: float = 0.75
    halvings: int = 30
    bisections: int = 3
    history: int = 200
    plastic_line_search: str = "cp"
    spring_tol: float = 1e-8
    max_spring_passes: int = 50

    def petsc_options(self, rtol: float, linear_solver: str, plastic: bool = False) -> dict:
        """PETSc options of the SNES.

        Parameters
        ----------
        rtol : float
            Relative residual tolerance of Newton (SNES's own test, relative to the first
            residual of a solve; the solver adds the absolute target of the step).
        linear_solver : {"iterative", "direct"}
            CG + GAMG, or MUMPS LU.
        plastic : bool
            Plastic flow is on (the line search is ``plastic_line_search``).

        Returns
        -------
        dict
            Option name (without prefix) -> value.
        """
        lin = ({"ksp_type": self.ksp_type, "pc_type": "gamg", "ksp_rtol": self.ksp_rtol,
                "ksp_max_it": self.ksp_max_it, "pc_gamg_threshold": self.gamg_threshold,
                "pc_gamg_reuse_interpolation": True,  # a rebuild redoes the products
                "mg_levels_ksp_type": "richardson", "mg_levels_pc_type": self.smoother,
                "mg_levels_ksp_max_it": self.smooth_its}
               if linear_solver == "iterative" else
               {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
        search = self.plastic_line_search if plastic else self.line_search
        return {"snes_type": "newtonls", "snes_linesearch_type": search,
                "snes_rtol": rtol, "snes_atol": self.atol, "snes_stol": 0.0,
                "snes_max_it": self.max_it, "snes_max_linear_solve_fail": self.max_it + 1,
                **lin}


NEWTON = NewtonOptions()
"""The options every mechanics solve uses."""


_KSP_DIVERGED_INDEFINITE_MAT = -10  # PETSc's KSPConvergedReason


class PreconditionerReuse:
    """Rebuild the preconditioner when the linear solves slow down, not at every Jacobian.

    The multigrid set-up (the Galerkin products of GAMG's levels) costs about half of one
    elastic solve, and the tangent changes little from one Newton iteration or step to
    the next. The preconditioner is therefore kept while it works: before each linear
    solve it is rebuilt from the current tangent if the last solve stopped without
    converging (iteration limit, divergence; not CG's stop at negative curvature of the
    tangent) or needed more than ``ratio`` times the Krylov iterations of the first solve
    after the last build (its reference), and reused otherwise. :meth:`attach` hooks it
    to a KSP (a pre-solve callback, which runs before PETSc sets the preconditioner up;
    SNES resets the reuse flag after every Jacobian, and petsc4py has no
    ``SNESSetLagPreconditioner``); :meth:`rebuild_next` forces a rebuild where the state
    jumped (a restore, a rollback).

    Parameters
    ----------
    ratio : float
        Slow-down (last iterations / reference iterations) that triggers a rebuild.
    """

    def __init__(self, ratio: float = 2.0):
        self.ratio = float(ratio)
        self.reference: int | None = None  # Krylov iterations just after the last build
        self.builds = 0
        self._fresh = False   # the last solve ran on a new preconditioner
        self._force = True    # rebuild before the next solve

    def attach(self, ksp) -> None:
        """Decide before every solve of ``ksp`` (``petsc4py.PETSc.KSP``)."""
        ksp.setPreSolve(lambda k, b, x: self.decide(k))

    def rebuild_next(self) -> None:
        """Rebuild the preconditioner before the next solve."""
        self._force = True

    def decide(self, ksp) -> bool:
        """Whether the coming solve gets a new preconditioner; tells ``ksp``'s PC.

        Parameters
        ----------
        ksp : petsc4py.PETSc.KSP
            The linear solver; it still holds the last solve's iterations and reason.

        Returns
        -------
        bool
            True if the preconditioner is rebuilt for this solve.
        """
        its, reason = ksp.getIterationNumber(), ksp.getConvergedReason()
        if self._fresh and reason > 0:
            self.reference = max(int(its), 1)
        self._fresh = False
        # CG stopped at negative curvature (an indefinite tangent far from a solution:
        # the truncated Newton step) says nothing about the preconditioner
        failed = reason < 0 and reason != _KSP_DIVERGED_INDEFINITE_MAT
        slow = self.reference is None or failed or its > self.ratio * self.reference
        rebuild = self._force or slow
        ksp.getPC().setReusePreconditioner(not rebuild)
        if rebuild:
            self._force, self._fresh = False, True
            self.builds += 1
        return rebuild


# the option names each prefix was last given: what the next problem of it removes
_OPTIONS_SET: dict[str, set] = {}


def nonlinear_problem(F, u, bcs: list, prefix: str, options: dict, J=None):
    """DOLFINx's ``NonlinearProblem`` with PETSc ``options`` under ``prefix``, without the
    options an earlier problem of the same prefix was given and this one is not, its
    kernels compiled with :func:`kernel_jit_options`.

    DOLFINx 0.11 leaves a problem's options in PETSc's global database, and PETSc reads
    some of them only when the solver is set up (the smoothers of GAMG's levels, MUMPS's
    controls), so they stay for the problem's life; the next problem of the prefix then
    takes out those it does not set itself (a direct solve would otherwise inherit, e.g.,
    an iterative solve's preconditioner lag). Options given on the command line that no
    problem sets are left alone.

    Parameters
    ----------
    F, u, bcs, J
        Residual form, unknown, Dirichlet conditions and Jacobian form (None: derived), as
        for ``dolfinx.fem.petsc.NonlinearProblem``.
    prefix : str
        PETSc options prefix (not empty).
    options : dict
        Option name (without prefix) -> value.

    Returns
    -------
    dolfinx.fem.petsc.NonlinearProblem
    """
    import dolfinx.fem.petsc as fp
    from petsc4py import PETSc

    db = PETSc.Options()
    for key in _OPTIONS_SET.get(prefix, set()) - set(options):
        db.delValue(f"{prefix}{key}")
    _OPTIONS_SET[prefix] = set(options)
    return fp.NonlinearProblem(F, u, bcs=bcs, J=J, petsc_options_prefix=prefix,
                               petsc_options=options, jit_options=kernel_jit_options())

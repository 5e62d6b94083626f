"""Options of the nonlinear mechanics solve, in one place, and PETSc's SNES outcomes by name.

Newton (PETSc SNES ``newtonls``) takes full steps (``basic`` line search): a step that
inverts cells gives NaN and the caller retries with a smaller load step, and a backtracking
search on the residual norm fights the lagged spring pressure. Convergence is tested on the
residual only (a step-length test accepted a stalled iterate). The Krylov solver is GMRES
(the tangent of a swelling-prestressed state can be indefinite, which stops CG) with
algebraic multigrid (GAMG): inexact Newton, each linear solve to ``ksp_rtol`` (the Newton
residual still goes to its own ``rtol``; tighter Krylov tolerances only cost iterations),
and a long restart (cells near their compaction limit are stiff, the contrast with the soft
matrix around them slows the multigrid). The direct alternative is MUMPS LU.

Step control (fraction to the boundary, as in interior-point methods): before each update
the Newton step is halved (at most ``halvings`` times) until every quadrature point keeps
``Je - J_min`` above ``keep`` times its current value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["NEWTON", "NewtonOptions", "SNESReason"]


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
    """Tolerances and limits of the mechanics Newton solve (module notes).

    Attributes
    ----------
    rtol : float
        Default relative residual tolerance of Newton (the caller may give another).
    atol : float
        Absolute residual norm at which Newton stops (uN).
    max_it : int
        Newton iterations per solve.
    gmres_restart : int
        GMRES restart length.
    ksp_rtol : float
        Relative tolerance of each linear solve (inexact Newton).
    ksp_max_it : int
        Krylov iterations per linear solve.
    keep : float
        Fraction of ``Je - J_min`` every quadrature point keeps in a Newton update.
    predictor_keep : float
        The same for a predictor step of the caller
        (:meth:`~anodetwin.simulate.mechanics.SwellingProblem.admissible_fraction`).
    halvings : int
        Halvings of a step before the step control gives up (fraction 0).
    history : int
        Residual norms kept per solve (convergence history).
    relaxation : tuple of float
        Bounds of Aitken's relaxation factor of the staggered plastic passes.
    spring_tol : float
        Default relative change of the top displacement at which the spring fixed point
        stops.
    max_spring_passes : int
        Default limit of spring fixed-point passes.
    plastic_tol : float
        Default change of Fp^-1 at which the staggered plastic passes stop.
    max_plastic_passes : int
        Default limit of plastic passes per step.
    """

    rtol: float = 1e-9
    atol: float = 1e-8
    max_it: int = 50
    gmres_restart: int = 150
    ksp_rtol: float = 1e-6
    ksp_max_it: int = 1000
    keep: float = 0.25
    predictor_keep: float = 0.75
    halvings: int = 30
    history: int = 200
    relaxation: tuple = (0.2, 5.0)
    spring_tol: float = 1e-8
    max_spring_passes: int = 50
    plastic_tol: float = 1e-6
    max_plastic_passes: int = 80

    def petsc_options(self, rtol: float, linear_solver: str) -> dict:
        """PETSc options of the SNES.

        Parameters
        ----------
        rtol : float
            Relative residual tolerance of Newton.
        linear_solver : {"iterative", "direct"}
            GMRES + GAMG, or MUMPS LU.

        Returns
        -------
        dict
            Option name (without prefix) -> value.
        """
        lin = ({"ksp_type": "gmres", "ksp_gmres_restart": self.gmres_restart,
                "pc_type": "gamg", "ksp_rtol": self.ksp_rtol, "ksp_max_it": self.ksp_max_it}
               if linear_solver == "iterative" else
               {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"})
        return {"snes_type": "newtonls", "snes_linesearch_type": "basic",
                "snes_rtol": rtol, "snes_atol": self.atol, "snes_stol": 0.0,
                "snes_max_it": self.max_it, **lin}


NEWTON = NewtonOptions()
"""The options every mechanics solve uses."""

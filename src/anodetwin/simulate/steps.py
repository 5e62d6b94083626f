"""The time steps of a run: the step controller and the record of each step reached.

* :class:`StepControl`: how long the next step is. It lands on every target (protocol
  breakpoint, output time), keeps the change of the mean Li content per step below
  ``dtheta_max``, never leaves a sliver before a target, grows after a success and cuts back
  after a failed solve down to ``dt_min_s``. Every number of the rule is a named field.
* :class:`StepRecord`: one row of ``summary.csv`` (columns :data:`SUMMARY_COLUMNS`, in
  this order): the state reached, the electrode means and the solver's iteration counts.
  A record reads like a mapping (``record["soc"]``) as well as by attribute.
* :class:`SolverCounts`: the iteration counts of a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["StepControl", "StepRecord", "SolverCounts", "SUMMARY_COLUMNS"]


@dataclass(frozen=True)
class StepControl:
    """The time-step rule of a run (times in s, theta the Si's mean Li content).

    From a time ``t`` towards the next target the step is the last step grown by
    ``growth`` (at most ``dt_max_s``), cut to the target; while the protocol's mean theta
    changes by more than ``dtheta_max`` over it, it shrinks to
    ``dtheta_safety * dtheta_max / |change|`` of itself (at most ``max_dtheta_cuts`` times,
    not below ``dt_min_s``). A step that would leave less than ``sliver_fraction`` of
    itself before the target goes to the target instead. A failed solve retries with
    ``cut_back`` times the step, and the run fails once that is below ``dt_min_s``.

    Parameters
    ----------
    dt_max_s, dt_min_s : float
        Largest and smallest step, s (``[solver] dt_max_s``, ``dt_min_s``).
    dtheta_max : float
        Largest change of the mean theta per step (``[solver] dtheta_max``).
    initial_dt_s : float
        First step of a new run (capped by ``dt_max_s``), s.
    growth : float
        Factor of the step after a success.
    cut_back : float
        Factor of the step after a failed solve.
    dtheta_safety : float
        Margin below ``dtheta_max`` the step aims at when theta limits it.
    max_dtheta_cuts : int
        Most shrinkings of a step by the theta limit.
    sliver_fraction : float
        A rest before the target shorter than this share of the step is taken in the step.
    time_tol_s : float
        Times closer than this are the same (landing on targets, the end), s.
    """

    dt_max_s: float
    dt_min_s: float
    dtheta_max: float
    initial_dt_s: float = 60.0
    growth: float = 1.5
    cut_back: float = 0.5
    dtheta_safety: float = 0.95
    max_dtheta_cuts: int = 30
    sliver_fraction: float = 0.25
    time_tol_s: float = 1e-9

    @classmethod
    def from_solver(cls, solver) -> StepControl:
        """The rule of a case's ``[solver]`` section (:class:`anodetwin.simulate.case.Solver`).

        Parameters
        ----------
        solver : object
            With ``dt_max_s``, ``dt_min_s`` (s) and ``dtheta_max``.

        Returns
        -------
        StepControl
            The rule with the other fields at their defaults.
        """
        return cls(solver.dt_max_s, solver.dt_min_s, solver.dtheta_max)

    def first_step(self) -> float:
        """The first step of a new run, s."""
        return min(self.dt_max_s, self.initial_dt_s)

    def next_target(self, targets: Sequence[float], t: float) -> float:
        """The first of the increasing ``targets`` after ``t``.

        Parameters
        ----------
        targets : sequence of float
            Increasing times, s.
        t : float
            Time now, s.

        Returns
        -------
        float
            The first target more than ``time_tol_s`` after ``t``, s.

        Raises
        ------
        StopIteration
            No target after ``t``.
        """
        return next(b for b in targets if b > t + self.time_tol_s)

    def propose(self, theta_mean_at: Callable[[float], float], t: float, dt_s: float,
                target: float) -> float:
        """The step from ``t`` towards ``target`` (s), given the current step ``dt_s``.

        Parameters
        ----------
        theta_mean_at : callable
            The protocol's mean theta at a time in s
            (:meth:`anodetwin.simulate.protocol.CellHistory.theta_mean_at`).
        t, dt_s, target : float
            Time now, current step and the next target, s.

        Returns
        -------
        float
            The step, s: ``target - t`` or at most the share that leaves no sliver.
        """
        dt_try = min(dt_s, target - t, self.dt_max_s)
        th0 = theta_mean_at(t)
        for _ in range(self.max_dtheta_cuts):
            dth = abs(theta_mean_at(t + dt_try) - th0)
            if dth <= self.dtheta_max or dt_try <= self.dt_min_s:
                break
            dt_try = max(self.dt_min_s, dt_try * self.dtheta_safety * self.dtheta_max / dth)
        if target - t - dt_try < self.sliver_fraction * dt_try:
            dt_try = target - t
        return dt_try

    def grown(self, dt_taken: float, dt_s: float) -> float:
        """The step after a success.

        Parameters
        ----------
        dt_taken, dt_s : float
            The step just taken and the current step, s.

        Returns
        -------
        float
            ``growth`` times the larger of the two, at most ``dt_max_s``, s.
        """
        return min(max(dt_taken, dt_s) * self.growth, self.dt_max_s)

    def retry(self, dt_failed: float) -> float | None:
        """The step to retry with after a failed solve.

        Parameters
        ----------
        dt_failed : float
            The step that failed, s.

        Returns
        -------
        float or None
            ``cut_back`` times it, s; None when that is below ``dt_min_s`` (the run fails).
        """
        dt = dt_failed * self.cut_back
        return dt if dt >= self.dt_min_s else None

    def reached(self, t: float, target: float) -> bool:
        """Whether time ``t`` is on ``target``, within ``time_tol_s``.

        Parameters
        ----------
        t, target : float
            Current time and the time to hit (a scan or protocol breakpoint), s.

        Returns
        -------
        bool
            True when ``|t - target| < time_tol_s``.
        """
        return abs(t - target) < self.time_tol_s

    def finished(self, t: float, t_end: float) -> bool:
        """Whether time ``t`` is at or past the end ``t_end``, within ``time_tol_s``.

        Parameters
        ----------
        t : float
            Time reached, s.
        t_end : float
            End time of the run, s.

        Returns
        -------
        bool
            True when ``t >= t_end - time_tol_s``.
        """
        return t >= t_end - self.time_tol_s


@dataclass(frozen=True)
class SolverCounts:
    """Iteration counts of a step (0 for the initial state).

    Parameters
    ----------
    newton_iterations, krylov_iterations : int
        Newton and Krylov iterations of the mechanics, summed over the spring passes.
    spring_passes : int
        Fixed-point passes of the stack spring around Newton (1 when the first settles).
    diffusion_iterations : int
        Newton iterations of the Li transport.
    """

    newton_iterations: int = 0
    krylov_iterations: int = 0
    spring_passes: int = 0
    diffusion_iterations: int = 0


@dataclass(frozen=True)
class StepRecord(Mapping):
    """One step of a run: a row of ``summary.csv``.

    Reads as a mapping of :data:`SUMMARY_COLUMNS` too (``record["thickness_um"]``,
    ``dict(record)``). Times in s (``time_h`` in h), lengths in um, stresses in MPa.

    Parameters
    ----------
    step : int
        Steps finished (0: the initial state).
    output : str
        Name of the output written at this state (scan or ``t<T>s``), "" for none.
    time_s, time_h, dt_s : float
        Time reached and the step that reached it.
    soc : float
        Cell state of charge, 0..1.
    li_inserted_mah_cm2 : float
        Li inserted into the Si, ``soc`` times the cathode capacity.
    theta_mean : float
        Volume-mean Li content of the Si (1 = Li15Si4), from the transport.
    theta_si_cells : float
        The same from the cell values that drive the mechanics.
    thickness_um : float
        Electrode thickness.
    volumetric_strain, volumetric_strain_collector_half, volumetric_strain_separator_half : float
        Volume-mean ``J - 1`` of the electrode and its halves.
    exx, eyy, ezz : float
        Volume-mean normal strains of the electrode.
    stack_pressure_mpa : float
        Stack-spring pressure on the top.
    max_principal_si_mpa, max_von_mises_si_mpa : float
        Largest principal and von Mises stress in the Si.
    max_plastic_strain_si : float
        Largest equivalent plastic strain in the Si.
    newton_iterations, krylov_iterations, spring_passes, diffusion_iterations : int
        The step's :class:`SolverCounts`.
    wall_s : float
        Wall time since the start of this call, s.
    """

    step: int
    output: str
    time_s: float
    time_h: float
    dt_s: float
    soc: float
    li_inserted_mah_cm2: float
    theta_mean: float
    theta_si_cells: float
    thickness_um: float
    volumetric_strain: float
    volumetric_strain_collector_half: float
    volumetric_strain_separator_half: float
    exx: float
    eyy: float
    ezz: float
    stack_pressure_mpa: float
    max_principal_si_mpa: float
    max_von_mises_si_mpa: float
    max_plastic_strain_si: float
    newton_iterations: int
    krylov_iterations: int
    spring_passes: int
    diffusion_iterations: int
    wall_s: float

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> StepRecord:
        """A record from a mapping with (at least) the :data:`SUMMARY_COLUMNS` keys.

        Parameters
        ----------
        row : mapping
            Column -> value (a checkpoint's rows, a dict of :meth:`as_dict`); other keys
            are ignored.

        Returns
        -------
        StepRecord

        Raises
        ------
        KeyError
            A column is missing.
        """
        return cls(**{k: row[k] for k in SUMMARY_COLUMNS})

    def as_dict(self) -> dict[str, Any]:
        """The columns and values, in :data:`SUMMARY_COLUMNS` order."""
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        if key not in _COLUMN_SET:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(SUMMARY_COLUMNS)

    def __len__(self) -> int:
        return len(SUMMARY_COLUMNS)


#: The columns of ``summary.csv``, in order: the fields of :class:`StepRecord`.
SUMMARY_COLUMNS = tuple(f.name for f in fields(StepRecord))
_COLUMN_SET = frozenset(SUMMARY_COLUMNS)

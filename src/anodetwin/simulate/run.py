"""Running a simulation case: the first (de)lithiation cycle of the cell, step by step.

Scheme (staggered, per time step ``[t, t + dt]``):

1. the cell model gives the mean Li content of the Si at ``t + dt`` from the protocol
   (:mod:`anodetwin.simulate.protocol`); the difference is inserted through the particle
   surfaces with the reaction profile (:class:`~anodetwin.simulate.diffusion.
   LithiumTransport`), backward Euler, exactly conserving Li;
2. the new theta (cell means) drives the finite-strain swelling equilibrium with the stack
   spring (:class:`~anodetwin.simulate.mechanics.SwellingProblem`), Newton from the tangent
   predictor of the previous state; with plastic flow (``[solver] plasticity``, on for
   LixSi) the cells' return and Newton alternate until the plastic state settles (the
   step's implicit solution).

Staggered rather than monolithic: without the stress term in the chemical potential the
transport does not depend on the mechanics, so the staggered scheme is exact (with it,
``[lithiation] stress_coupling``, the hydrostatic stress of the previous step drives the
drift: explicit coupling, first order in dt, Li still exactly conserved), and each field
keeps the solver that suits it (CG + AMG for diffusion, CG + AMG with rigid-body modes for
mechanics). The time step adapts (:class:`~anodetwin.simulate.steps.StepControl`): it lands
on every protocol breakpoint and output time, keeps the change of mean theta below
``dtheta_max``, halves on a failed solve (down to ``dt_min_s``) and grows by 1.5 after a
success.

Parts: :func:`check_case` reads and checks everything before any work (:class:`SetUp`);
the driver steps (transport, mechanics, predictor, retry) and records a
:class:`~anodetwin.simulate.steps.StepRecord` per step; the files are written by
:class:`~anodetwin.simulate.writer.RunWriter`; the Si-specific physics (stress drift, defect
bands) is in :mod:`anodetwin.simulate.silicon`.

Output folder::

    run.json          case, mesh, cell, provenance, status ("running", "done", "failed")
    cell.csv          the protocol's time, SoC, current, voltage
    summary.csv       one row per step (columns: SUMMARY_COLUMNS)
    heterogeneity.json  per scan and output time: volume-weighted percentiles (5/50/95,
                      max, mean) of J - 1 in the electrode and its halves, of the largest
                      principal and the hydrostatic stress in the Si (MPa), and the Si
                      volume share above ``[output] stress_threshold_mpa``
    fields/<T>.xdmf   u, theta, J, von_mises, hydrostatic, max_principal, plastic_strain,
                      hencky, phase at each scan T and output time; fields/fields.xdmf:
                      all of them in time
    dvc/<T>.h5        displacement on a regular voxel grid in the DVC pair layout
                      (anodetwin.dvc.pair: nodes, displacement, strain, in voxels)
    checkpoint/       the state after the last finished step (resume)
    failure.json      where and why a run stopped (only after a failure)

Resuming (``resume=True``) continues from the checkpoint with the same number of ranks and
the same case: the checkpoint records the case's fingerprint
(:func:`anodetwin.simulate.case.case_values`), and a case that differs in anything but
:data:`~anodetwin.simulate.case.RESUMABLE_KEYS` is refused, naming the keys (old -> new),
unless ``allow_case_change=True`` (``--allow-case-change``); ``run.json`` lists every start
and resume with its case file, hash and changes (``case_history``). A folder whose run
finished no step (it stopped at T0 or before) holds nothing worth keeping: it is started
afresh, with or without ``resume``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import InputError, NumericalError, ParameterError
from anodetwin.log import get_logger
from anodetwin.phases import PHASE
from anodetwin.simulate.silicon import defect_multiplier, stress_factor
from anodetwin.simulate.steps import SUMMARY_COLUMNS, SolverCounts, StepControl, StepRecord
from anodetwin.simulate.writer import (RUN_FILES, Checkpoint, DvcGrid, RunWriter, read_summary,
                                       write_dvc_grid)

__all__ = ["run_case", "check_case", "SetUp", "SUMMARY_COLUMNS", "read_summary", "StepRecord",
           "StepControl", "defect_multiplier", "stress_factor", "MAX_DVC_NODES", "RUN_FILES"]

log = get_logger("simulate")

#: Most nodes of the DVC sampling grid ([output] dvc_node_spacing_um); the reference's 2048^3
#: scans at 35 voxels give 2e5.
MAX_DVC_NODES = 10_000_000

#: The summary columns that :meth:`anodetwin.simulate.fields.CellFields.summary` gives.
_ELECTRODE_COLUMNS = (
    "theta_si_cells", "thickness_um", "volumetric_strain", "volumetric_strain_collector_half",
    "volumetric_strain_separator_half", "exx", "eyy", "ezz", "max_principal_si_mpa",
    "max_von_mises_si_mpa", "max_plastic_strain_si")

_write_dvc = write_dvc_grid  # the former private name of the DVC-grid writer


def _bounds(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Corners (x, y, z um) of the mesh's bounding box, on all ranks."""
    from mpi4py import MPI

    x = mesh.geometry.x
    lo, hi = np.empty(3), np.empty(3)
    mesh.comm.Allreduce(np.ascontiguousarray(x.min(axis=0), float), lo, op=MPI.MIN)
    mesh.comm.Allreduce(np.ascontiguousarray(x.max(axis=0), float), hi, op=MPI.MAX)
    return lo, hi


def _dvc_spacing(o, vs: float, mesh_vs: float | None) -> int:
    """The DVC node spacing in voxels of the grid: refused below one voxel, warned when
    rounding moves it or when it is finer than the mesh's voxel."""
    um = o.dvc_node_spacing_um
    if um < vs * (1 - 1e-9):
        whose = "[output] dvc_voxel_size_um" if o.dvc_voxel_size_um else "the mesh's voxel"
        raise ParameterError(f"[output] dvc_node_spacing_um = {um:g} is below one voxel of "
                             f"the DVC grid ({vs:g} um, {whose})",
                             f"give a spacing >= {vs:g} um (e.g. {35 * vs:g} um = 35 voxels, "
                             "as the reference), or 0 for no grid")
    spacing = max(1, int(round(um / vs)))
    if abs(spacing * vs - um) > 0.05 * um:
        log.warning("[output] dvc_node_spacing_um = %g becomes %d voxels of %g um = %g um",
                    um, spacing, vs, spacing * vs)
    if mesh_vs is not None and um < mesh_vs * (1 - 1e-9):
        log.warning("[output] dvc_node_spacing_um = %g is finer than the mesh's voxel (%g um): "
                    "the nodes only interpolate within mesh cells", um, mesh_vs)
    return spacing


def _dvc_grid(case, mesh, mesh_summary: dict) -> DvcGrid | None:
    """The DVC sampling grid (spam's makeGrid convention on the mesh's box); None without
    one (``[output] dvc_node_spacing_um = 0``)."""

    from anodetwin.dvc.correlate import node_grid

    o = case.output
    if o.dvc_node_spacing_um <= 0:
        return None
    lo, hi = _bounds(mesh)
    lo, hi = lo[::-1], hi[::-1]  # z, y, x
    mesh_vs = mesh_summary.get("voxel_size_um")
    mesh_vs = float(np.min(mesh_vs)) if mesh_vs else None
    vs = o.dvc_voxel_size_um or mesh_vs or 1.0
    origin = np.array(o.dvc_origin_um) if o.dvc_origin_um else lo + vs / 2
    shape = tuple(int(v) for v in np.round((hi - lo) / vs))
    spacing = _dvc_spacing(o, vs, mesh_vs)
    gshape = tuple(len(range(spacing, n, spacing)) for n in shape)  # node_grid's nodes
    extent = " x ".join(f"{e:.3g}" for e in hi - lo)
    if min(gshape) < 2:
        raise ParameterError(f"[output] dvc_node_spacing_um = {o.dvc_node_spacing_um} leaves "
                             f"a node grid of {gshape} on the mesh of {extent} um (z, y, x)",
                             "give a smaller spacing (2 nodes per axis at least) or 0")
    if int(np.prod(gshape)) > MAX_DVC_NODES:
        raise ParameterError(f"[output] dvc_node_spacing_um = {o.dvc_node_spacing_um} gives "
                             f"{int(np.prod(gshape)):.3g} nodes on the mesh of {extent} um",
                             f"give a larger spacing (at most {MAX_DVC_NODES:.0e} nodes)")
    nodes, gshape = node_grid(shape, spacing)
    return DvcGrid(nodes, gshape, spacing, vs, origin)


@dataclass
class SetUp:
    """What :func:`check_case` read and checked.

    Attributes
    ----------
    history : CellHistory
        The cell's protocol run (:func:`anodetwin.simulate.protocol.simulate_cell`).
    mesh : tuple
        ``(mesh, phases, particles, facets)`` (:func:`anodetwin.mesh.io.read_mesh`).
    mesh_summary : dict
        The mesh's ``summary.json`` ({} without one).
    dvc_grid : DvcGrid or None
        The DVC sampling grid (None: no grid output).
    fingerprint : tuple
        The case's ``(hash, values)`` (:func:`anodetwin.simulate.case.case_values`).
    checkpoint : dict or None
        The checkpoint state to resume from (None: a new run).
    changes : dict
        The case changes accepted with it (key -> (old, new)).
    restart : bool
        The folder holds a run with no finished step, to be cleared first.
    """

    history: Any
    mesh: tuple
    mesh_summary: dict
    dvc_grid: DvcGrid | None
    fingerprint: tuple = ("", {})
    checkpoint: dict | None = None
    changes: dict = field(default_factory=dict)
    restart: bool = False


def _check_folder(case, out: Path, resume: bool, comm, values: dict,
                  allow_change: bool) -> tuple[dict | None, dict, bool]:
    """The output folder's verdict: (checkpoint state to resume or None, accepted case
    changes, restart). Every rank reads the same folder."""
    from anodetwin.simulate.case import RESUMABLE_KEYS, case_changes, format_changes

    state = Checkpoint(out, comm).state()
    finished = int(state["step"]) if state else 0
    if finished == 0:  # nothing worth keeping: started afresh, resumed or not
        holds = state is not None or (out / "run.json").exists()
        if resume and not holds:
            raise InputError(f"'{out}' holds no run to resume", "run without --resume first")
        if holds and comm.rank == 0:
            log.info("'%s' holds a run with no finished step: starting it afresh", out)
        return None, {}, holds
    if not resume:
        raise InputError(f"output folder '{out}' holds a run with {finished} finished steps",
                         "pass --resume to continue it, or choose another --out")
    if state["ranks"] != comm.size:
        raise InputError(f"checkpoint '{out / 'checkpoint'}' was written by {state['ranks']} "
                         f"ranks, not {comm.size}", f"resume with mpiexec -n {state['ranks']}")
    if "case_values" not in state:
        log.warning("checkpoint of '%s' predates case fingerprints: the case cannot be "
                    "compared with the one that ran", out)
        return state, {}, False
    changes = case_changes(state["case_values"], values)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_KEYS}
    if refused and not allow_change:
        raise InputError(f"case '{case.path}' differs from the case of the run in '{out}': "
                         f"{format_changes(refused)}",
                         "resume with the case that ran, run the changed case into a new "
                         "--out, or pass --resume --allow-case-change to continue with it "
                         "(recorded in run.json)")
    if changes and comm.rank == 0:
        log.warning("resuming '%s' with a changed case: %s", out, format_changes(changes))
    return state, changes, False


def check_case(case, out: str | os.PathLike | None = None, resume: bool = False,
               comm=None, allow_case_change: bool = False) -> SetUp:
    """Everything a run checks before any work (``anodetwin simulate --check`` runs it).

    The case's values were checked when it was loaded
    (:func:`anodetwin.simulate.case.load_case`); here the output folder (a run with
    finished steps only with ``resume``, then on the same number of ranks and with the
    same case fingerprint unless ``allow_case_change``; a run with no finished step is
    started afresh), the cell protocol, the mesh (readable, with Si) and the DVC sampling
    grid on the mesh. Writes nothing.

    Parameters
    ----------
    case : Case
        A loaded case (:func:`anodetwin.simulate.case.load_case`).
    out : str or path-like, optional
        The output folder (None: not checked).
    resume, allow_case_change : bool
        As in :func:`run_case`.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: ``COMM_WORLD``).

    Returns
    -------
    SetUp
        What was read, for the run.

    Raises
    ------
    InputError
        The folder holds a run that cannot be continued as asked, the mesh has no Si.
    ParameterError
        The DVC grid does not fit the mesh.
    InputNotFoundError, CorruptFileError
        The mesh or the checkpoint cannot be read.
    """
    from mpi4py import MPI

    from anodetwin.mesh.io import read_mesh
    from anodetwin.simulate.case import case_hash, case_values
    from anodetwin.simulate.protocol import simulate_cell

    comm = comm or MPI.COMM_WORLD
    values = case_values(case)
    state, changes, restart = None, {}, False
    if out is not None:
        state, changes, restart = _check_folder(case, Path(out), resume, comm, values,
                                                allow_case_change)
    history = simulate_cell(case.cell)
    mesh = read_mesh(case.mesh, comm)
    phases = mesh[1]
    si = np.isin(phases.values, (PHASE["si"], PHASE["lithiated"])).any()
    if not comm.allreduce(bool(si), op=MPI.LOR):
        raise InputError(f"mesh '{case.mesh}' has no Si where Li can enter",
                         "give a mesh with Si particles inside the electrode")
    mesh_summary = {}
    if (case.mesh / "summary.json").is_file():
        mesh_summary = json.loads((case.mesh / "summary.json").read_text())
    return SetUp(history, mesh, mesh_summary, _dvc_grid(case, mesh[0], mesh_summary),
                 (case_hash(values), values), state, changes, restart)


def _transport(case, mesh, phases, particles):
    """The Li transport in the Si of ``mesh`` with the case's reaction profile (Li enters
    through particle surfaces inside the box, off the copper), defect bands and stress
    coupling."""
    from mpi4py import MPI

    from anodetwin.simulate.diffusion import LithiumTransport

    lith, comm = case.lithiation, mesh.comm
    x = mesh.geometry.x
    lo, hi = _bounds(mesh)
    tol = 1e-6 * float(np.max(hi - lo))
    z_cu = -np.inf
    ncell = mesh.topology.index_map(3).size_local
    cu = phases.indices[(phases.values == PHASE["copper"]) & (phases.indices < ncell)]
    if cu.size:
        z_cu = x[mesh.geometry.dofmaps[0][cu], 2].max()
    z_cu = comm.allreduce(float(z_cu), op=MPI.MAX)

    def surface(p):  # particle surface inside the box, off the copper
        inside = np.all((p > lo[:, None] + tol) & (p < hi[:, None] - tol), axis=0)
        return inside & (p[2] > z_cu + tol)

    mult = defect_multiplier(mesh, phases, particles, lith.network_fraction,
                             lith.network_factor, lith.network_width_um, lith.seed)
    z_top_box = float(hi[2])

    def weight(X):
        import ufl

        if lith.profile == "uniform":
            return 1.0
        return ufl.exp((X[2] - z_top_box) / lith.penetration_um)

    kappa = stress_factor(case.materials[PHASE["si"]].beta, lith.temperature_k) \
        if lith.stress_coupling else 0.0
    transport = LithiumTransport(mesh, phases, (PHASE["si"], PHASE["lithiated"]), surface,
                                 lith.diffusivity_um2_s / lith.diffusivity_ratio,
                                 float(np.log(lith.diffusivity_ratio)), mode="flux",
                                 value=0.0, supply=True, weight=weight, multiplier=mult,
                                 prefix="lith_", stress_factor=kappa)
    if transport.inlet_area_um2 <= 0:
        raise InputError(f"mesh '{case.mesh}' has no Si surface where Li can enter",
                         "give a mesh with Si particles inside the electrode")
    return transport


def _mechanics(case, mesh, phases, facets):
    """The swelling problem with the stack spring, and the theta per cell driving it."""
    import dolfinx.fem as fem

    from anodetwin.simulate.mechanics import SwellingProblem

    theta_cells = fem.Function(fem.functionspace(mesh, ("DG", 0)), name="theta")
    sp = SwellingProblem(mesh, phases, facets, case.materials, case.boundary, theta_cells,
                         rtol=case.solver.rtol, prefix="mech_",
                         linear_solver=case.solver.linear, plastic=case.solver.plasticity,
                         petsc_options=case.solver.petsc_options)
    return sp, theta_cells


def _schedule(case, history) -> tuple[dict, list, float]:
    """Output name by time (scans, or those of ``[output] scans``, then ``[output]
    times_s``), the times every step lands on (outputs and protocol breakpoints) and the end
    time (the last output)."""
    keep = set(case.output.scans) or set(history.scans)
    outputs = {name: float(t) for name, t in history.scans.items() if name in keep}
    for t in case.output.times_s:
        outputs.setdefault(f"t{t:g}s", float(t))
    t_end = max(outputs.values()) if outputs else float(history.time_s[-1])
    targets = sorted(set(outputs.values()) | {float(b) for b in history.breakpoints_s
                                               if 0 < b <= t_end})
    name_at: dict[float, str] = {}
    for name, t in outputs.items():
        name_at.setdefault(t, name)
    return name_at, targets, t_end


class _Run:
    """A case running in an output folder: its fields, time, records and files (rank 0
    writes the shared ones through its :class:`RunWriter`)."""

    def __init__(self, case, out: Path, setup: SetUp, comm, t_wall: float):
        from anodetwin.simulate.fields import CellFields

        self.case, self.out, self.setup, self.comm, self.t_wall = case, out, setup, comm, t_wall
        self.history, self.grid = setup.history, setup.dvc_grid
        mesh, phases, particles, facets = setup.mesh
        self.transport = _transport(case, mesh, phases, particles)
        self.sp, self.theta_cells = _mechanics(case, mesh, phases, facets)
        self.probe = CellFields(self.sp, phases, facets)
        self.name_at, self.targets, self.t_end = _schedule(case, self.history)
        self.writer = RunWriter(out, comm)
        self.control = StepControl.from_solver(case.solver)
        self.records: list[StepRecord] = []
        self.outputs: list[str] = []
        self.dists: dict[str, dict] = {}
        self.case_history: list[dict] = []
        self.t, self.dt, self.step = 0.0, self.control.first_step(), 0

    def restore(self) -> None:
        """Continue from the checkpoint that :func:`check_case` accepted."""
        state, arrays = self.setup.checkpoint, self.writer.checkpoint.arrays()
        sp, tr = self.sp, self.transport
        if arrays["u"].shape != sp.u.x.array.shape:
            raise InputError(f"checkpoint '{self.writer.checkpoint.dir}' does not match the "
                             "mesh partition", "resume with the same mesh and number of ranks")
        sp.u.x.array[:] = arrays["u"]
        tr.theta.x.array[:] = arrays["theta"]
        tr.theta_old.x.array[:] = arrays["theta"]
        self.theta_cells.x.array[:] = arrays["theta_cells"]
        if sp.plastic and "Fp_inv" in arrays:
            sp.Fp_inv.x.array[:] = arrays["Fp_inv"]
            sp.plastic_strain.x.array[:] = arrays["plastic_strain"]
            sp.commit()
        self.t, self.dt, self.step = state["time_s"], state["dt_s"], state["step"]
        self.records = [StepRecord.from_mapping(r) for r in state["rows"]]
        self.outputs = state["outputs"]
        self.dists = state.get("heterogeneity", {})
        self.case_history = state.get("case_history", [])
        if self.comm.rank == 0:
            log.info("resuming at step %d, t = %.1f s", self.step, self.t)

    def start(self) -> None:
        """Restore or clear the folder, write run.json and cell.csv, record T0 (or take the
        stress of the checkpoint, which drives the next step)."""
        from datetime import datetime, timezone

        if self.setup.checkpoint is not None:
            self.restore()
        self.writer.prepare(self.setup.restart)  # set-up passed: only now the folders
        self.case_history.append({
            "from_step": self.step, "from_time_s": self.t,
            "case_file": str(Path(self.case.path).resolve()),
            "case_hash": self.setup.fingerprint[0],
            "changes": {k: list(v) for k, v in self.setup.changes.items()},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self.provenance("running")
        self.writer.write_cell(self.history)
        self.sp.refresh_tangent()  # the first step's predictor
        if not self.records:
            self.record(0.0, SolverCounts(), self.name_at.get(0.0, ""))
        else:
            self.transport.set_hydrostatic(self.probe.compute()["hydrostatic"])

    def provenance(self, status: str, extra: dict | None = None) -> None:
        """Write run.json (rank 0)."""
        from anodetwin.io import make_provenance

        if not self.writer.root:
            return
        case, tr, probe = self.case, self.transport, self.probe
        prov = make_provenance("simulate", [str(case.path), str(case.mesh / "mesh.xdmf")],
                               case.raw)
        self.writer.write_json("run.json", {
            "status": status, "case": case.raw, "case_hash": self.setup.fingerprint[0],
            "case_history": self.case_history, "mesh": str(case.mesh),
            "ranks": self.comm.size, "dofs": {"displacement": self.sp.dofs},
            "cell": {"model": case.cell.name, "theta_full": case.cell.theta_full,
                     "scans_s": self.history.scans},
            "si_volume_um3": tr.volume_um3, "inlet_area_um2": tr.inlet_area_um2,
            "electrode_thickness0_um": probe.thickness0,
            "electrode_z_um": [probe.z_bottom, probe.z_top],
            "outputs": self.outputs, "provenance": prov, **(extra or {})})

    def record(self, dt_s: float, counts: SolverCounts, name: str) -> None:
        """The record of the state reached, its outputs, and the checkpoint."""
        t, sp, tr = self.t, self.sp, self.transport
        f = self.probe.compute()
        tr.set_hydrostatic(f["hydrostatic"])  # drives the next step (if coupled)
        soc = float(self.history.soc_at(t))
        theta_mean = tr.mean_theta()
        electrode = self.probe.summary(f)
        rec = StepRecord(
            step=self.step, output=name, time_s=t, time_h=t / 3600, dt_s=dt_s, soc=soc,
            li_inserted_mah_cm2=soc * float(self.case.cell.cathode_capacity_mah_cm2),
            theta_mean=theta_mean, **{k: electrode[k] for k in _ELECTRODE_COLUMNS},
            stack_pressure_mpa=sp.stack_pressure(), **asdict(counts),
            wall_s=time.perf_counter() - self.t_wall)
        self.records.append(rec)
        if name:
            self._write_output(name, f, soc)
        self.writer.write_summary(self.records)
        plastic = {"Fp_inv": sp.Fp_inv.x.array, "plastic_strain": sp.plastic_strain.x.array} \
            if sp.plastic else {}
        self.writer.checkpoint.save(
            {"u": sp.u.x.array, "theta": tr.theta.x.array,
             "theta_cells": self.theta_cells.x.array, **plastic},
            {"time_s": t, "dt_s": self.dt, "step": self.step,
             "rows": [r.as_dict() for r in self.records], "outputs": self.outputs,
             "heterogeneity": self.dists, "case_hash": self.setup.fingerprint[0],
             "case_values": self.setup.fingerprint[1], "case_history": self.case_history})

    def _write_output(self, name: str, f, soc: float) -> None:
        """Fields, DVC-grid displacement and heterogeneity of an output (scan or time)."""
        t = self.t
        self.writer.write_output(name, self.probe, f, t, self.grid, self.sp.u,
                                 {"case": str(self.case.path), "output": name, "time_s": t})
        self.outputs.append(name)
        d = self.probe.distribution(f, self.case.output.stress_threshold_mpa)
        if self.comm.rank == 0:
            self.dists[name] = {"time_s": t, "soc": soc, **d}
        self.writer.write_heterogeneity(self.dists, self.outputs)

    def _solve(self, dt_try: float, th0: float) -> SolverCounts:
        """Li transport, then mechanics, over ``dt_try``; the iteration counts."""
        where = f"at step {self.step + 1} (t = {self.t + dt_try:.1f} s, dt = {dt_try:.3g} s)"
        tr = self.transport
        rate = (self.history.theta_mean_at(self.t + dt_try) - th0) * tr.volume_um3 / dt_try
        d_its = tr.step(dt_try, rate, where)
        tr.to_parent_cells(self.theta_cells)
        newton, krylov, passes = self.sp.solve(where, dt=dt_try)
        return SolverCounts(newton_iterations=int(sum(newton)),
                            krylov_iterations=int(sum(krylov)),
                            spring_passes=int(passes),
                            diffusion_iterations=int(d_its))

    def _save(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The state a failed step goes back to (u, theta, theta per cell)."""
        return (self.sp.u.x.array.copy(), self.transport.theta.x.array.copy(),
                self.theta_cells.x.array.copy())

    def _undo(self, saved: tuple) -> None:
        """Back to the state before a failed step (:meth:`_save`)."""
        sp, tr = self.sp, self.transport
        sp.u.x.array[:], tr.theta.x.array[:], self.theta_cells.x.array[:] = saved
        sp.rollback()
        tr.theta_old.x.array[:] = saved[1]

    def _retry_or_fail(self, exc: NumericalError, dt_try: float, failures: list) -> None:
        """Cut the step back after a failed solve; below ``dt_min_s`` write failure.json
        and raise (the finished steps stay)."""
        failures.append({"time_s": self.t + dt_try, "dt_s": dt_try, "error": str(exc)})
        if self.comm.rank == 0:
            log.info("step %d: %s; retrying with dt = %.3g s", self.step + 1, exc,
                     dt_try * self.control.cut_back)
        dt = self.control.retry(dt_try)
        if dt is not None:
            self.dt = dt
            return
        self.writer.write_json("failure.json", {
            "step": self.step + 1, "time_s": self.t, "message": str(exc),
            "attempts": failures[-8:]})
        self.provenance("failed")
        kept = (f"{self.step} finished steps are kept in '{self.out}'" if self.step else
                f"no step finished: fix the case and run it again into '{self.out}' (it "
                "starts afresh)")
        raise NumericalError(f"{exc} — stopped at the smallest step; {kept}") from None

    def _finish(self, dt_try: float, target: float, counts: SolverCounts) -> None:
        """Accept a solved step of ``dt_try`` towards ``target``: commit, grow the step,
        record (before the checkpoint: resumable)."""
        self.sp.commit()
        self.t += dt_try
        self.step += 1
        hit = self.control.reached(self.t, target)
        if hit:
            self.t = target
        self.dt = self.control.grown(dt_try, self.dt)
        self.record(dt_try, counts, self.name_at.get(self.t, "") if hit else "")
        if self.comm.rank == 0:
            r = self.records[-1]
            log.info("step %d  t = %.0f s  SoC %.3f  thickness %.2f um  J-1 %.4f",
                     self.step, self.t, r.soc, r.thickness_um, r.volumetric_strain)

    def advance(self, max_steps: int | None) -> None:
        """Step to the end of the protocol, or ``max_steps`` steps (then resumable)."""
        ctl, theta_at = self.control, self.history.theta_mean_at
        steps_here, failures = 0, []
        while not ctl.finished(self.t, self.t_end) and (max_steps is None
                                                         or steps_here < max_steps):
            target = ctl.next_target(self.targets, self.t)
            dt_try = ctl.propose(theta_at, self.t, self.dt, target)
            th0 = theta_at(self.t)
            saved = self._save()
            try:
                counts = self._solve(dt_try, th0)
            except NumericalError as exc:
                self._undo(saved)
                self._retry_or_fail(exc, dt_try, failures)
                continue
            self._finish(dt_try, target, counts)
            steps_here += 1
        self.provenance("done" if ctl.finished(self.t, self.t_end) else "stopped",
                        {"seconds": time.perf_counter() - self.t_wall, "steps": self.step})


def run_case(case, out: str | os.PathLike, resume: bool = False, max_steps: int | None = None,
             comm=None, progress: bool = True,
             allow_case_change: bool = False) -> list[StepRecord]:
    """Run a validated case (:func:`anodetwin.simulate.case.load_case`) into ``out``.

    Parameters
    ----------
    case : Case
        A loaded case.
    out : str or path-like
        The output folder (layout: module notes).
    resume : bool
        Continue from ``out/checkpoint`` (same number of ranks, same case); without it a
        folder holding a run with finished steps is refused. A folder whose run finished no
        step is started afresh either way.
    max_steps : int, optional
        Stop (checkpointed, resumable) after this many steps of this call: for wall-time
        limits of batch jobs.
    comm : mpi4py.MPI.Comm, optional
        Communicator (default: ``COMM_WORLD``).
    progress : bool
        Unused; kept for callers that pass it.
    allow_case_change : bool
        Resume although the case differs from the one that ran (beyond
        :data:`anodetwin.simulate.case.RESUMABLE_KEYS`); the changes are recorded in
        ``run.json`` (``case_history``).

    Returns
    -------
    list of StepRecord
        The records of every step of the run (resumed ones included), on all ranks; the
        rows of ``summary.csv``. Each reads like a dict of :data:`SUMMARY_COLUMNS`.

    Raises
    ------
    NumericalError
        A step failed at the smallest time step (after writing ``failure.json``; the
        finished steps stay).
    InputError, ParameterError
        The checks of :func:`check_case`, before anything is written.
    """
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    comm = comm or MPI.COMM_WORLD
    out = Path(out)
    t_wall = time.perf_counter()
    setup = check_case(case, out, resume, comm, allow_case_change)  # before any write
    run = _Run(case, out, setup, comm, t_wall)
    run.start()
    run.advance(max_steps)
    return run.records

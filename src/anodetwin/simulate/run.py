"""Running a simulation case: the first (de)lithiation cycle of the cell, step by step.

Scheme (staggered, per time step ``[t, t + dt]``):

1. the cell model gives the mean Li content of the Si at ``t + dt`` from the protocol
   (:mod:`anodetwin.simulate.protocol`); the difference is inserted through the particle
   surfaces with the reaction profile (:class:`~anodetwin.simulate.diffusion.
   LithiumTransport`), backward Euler, exactly conserving Li;
2. the new theta (cell means) drives the finite-strain swelling equilibrium with the stack
   spring (:class:`~anodetwin.simulate.mechanics.SwellingProblem`), Newton from the previous
   displacement; with plastic flow (``[solver] plasticity``, on for LixSi) the cells' return
   and Newton alternate until the plastic state settles (the step's implicit solution).

Staggered rather than monolithic: without the stress term in the chemical potential the
transport does not depend on the mechanics, so the staggered scheme is exact (with it,
``[lithiation] stress_coupling``, the hydrostatic stress of the previous step drives the
drift: explicit coupling, first order in dt, Li still exactly conserved), and each field
keeps the solver that suits it (CG + AMG for diffusion, GMRES + AMG with rigid-body modes for
mechanics). The time step adapts: it lands on every protocol breakpoint and output time,
keeps the change of mean theta below ``dtheta_max``, halves on a failed solve (down to
``dt_min_s``) and grows by 1.5 after a success.

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
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import InputError, NumericalError, ParameterError
from anodetwin.log import get_logger
from anodetwin.phases import PHASE

__all__ = ["run_case", "check_case", "SetUp", "SUMMARY_COLUMNS", "read_summary",
           "defect_multiplier", "stress_factor"]

log = get_logger("simulate")

SUMMARY_COLUMNS = (
    "step", "output", "time_s", "time_h", "dt_s", "soc", "li_inserted_mah_cm2", "theta_mean",
    "theta_si_cells", "thickness_um", "volumetric_strain", "volumetric_strain_collector_half",
    "volumetric_strain_separator_half", "exx", "eyy", "ezz", "stack_pressure_mpa",
    "max_principal_si_mpa", "max_von_mises_si_mpa", "max_plastic_strain_si",
    "newton_iterations", "krylov_iterations", "plastic_passes", "diffusion_iterations",
    "wall_s")


R_GAS = 8.314462618  # J / (mol K)
SI_MOL_PER_M3 = 2.329e6 / 28.0855  # crystalline Si: 2.329 g/cm3, 28.0855 g/mol
LI_PER_SI_FULL = 3.75  # Li15Si4: theta = 1


def stress_factor(beta: float, temperature_k: float) -> float:
    """``kappa = Omega / (R T)`` in 1/MPa, with the partial molar volume of Li ``Omega =
    beta / c_max`` (m3/mol; c_max = 3.75 Li per Si atom: ~3.1e5 mol/m3, Omega ~ 9e-6 m3/mol
    for beta = 2.8; DESIGN.md section 4)."""
    omega = beta / (LI_PER_SI_FULL * SI_MOL_PER_M3)
    return omega * 1e6 / (R_GAS * temperature_k)


def defect_multiplier(mesh, phases, particles, fraction: float, factor: float,
                      width_um: float, seed: int = 0) -> np.ndarray | None:
    """Diffusivity multiplier per local cell: in a share ``fraction`` of the particles
    (chosen by ``seed``), two planar defect bands through the particle's centroid with
    random normals carry ``factor`` times the diffusivity within ``width_um`` of the plane
    (fast-diffusion pathways: network-like lithiation). None when ``fraction`` is 0."""
    from mpi4py import MPI

    if fraction <= 0:
        return None
    if particles is None:
        raise ParameterError("[lithiation] network_fraction > 0 needs particle labels",
                             "mesh labels with particle instances, or set it to 0")
    n = mesh.topology.index_map(3).size_local
    lab = np.zeros(n, np.int64)
    own = particles.indices < n
    lab[particles.indices[own]] = particles.values[own]
    x = mesh.geometry.x[mesh.geometry.dofmaps[0][:n]].mean(axis=1)
    ids = np.unique(np.concatenate(mesh.comm.allgather(np.unique(lab[lab > 0]))))
    sums = np.zeros((ids.size, 4))
    k = np.searchsorted(ids, lab)
    sel = lab > 0
    np.add.at(sums, k[sel], np.c_[x[sel], np.ones(sel.sum())])
    sums = mesh.comm.allreduce(sums, op=MPI.SUM)
    centre = sums[:, :3] / np.maximum(sums[:, 3:], 1)
    rng = np.random.default_rng(seed)
    chosen = rng.random(ids.size) < fraction
    normals = rng.normal(size=(ids.size, 2, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    m = np.ones(n)
    for j in range(2):
        dist = np.abs(np.einsum("nd,nd->n", x - centre[k], normals[k, j]))
        m[sel & chosen[k] & (dist <= width_um)] = factor
    return m


def read_summary(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``summary.csv`` (numbers as float, ``output`` as str)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if k == "output" else float(v)) for k, v in r.items()} for r in rows]


def _write_csv(path: Path, rows: list[dict], columns) -> None:
    from anodetwin.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


class _Checkpoint:
    """The state after a finished step: per-rank arrays plus the rank-0 state (JSON)."""

    def __init__(self, out: Path, comm):
        self.dir, self.comm = out / "checkpoint", comm

    def save(self, arrays: dict, state: dict) -> None:
        from anodetwin.io import atomic_path, atomic_write_json

        if self.comm.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.comm.barrier()
        with atomic_path(self.dir / f"rank{self.comm.rank}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        self.comm.barrier()
        if self.comm.rank == 0:
            atomic_write_json(self.dir / "state.json", {**state, "ranks": self.comm.size})
        self.comm.barrier()

    def load(self) -> tuple[dict, dict] | None:
        sp = self.dir / "state.json"
        if not sp.is_file():
            return None
        state = json.loads(sp.read_text())
        if state["ranks"] != self.comm.size:
            raise InputError(f"checkpoint '{self.dir}' was written by {state['ranks']} ranks, "
                             f"not {self.comm.size}",
                             f"resume with mpiexec -n {state['ranks']}")
        with np.load(self.dir / f"rank{self.comm.rank}.npz") as z:
            return {k: z[k] for k in z.files}, state


def _bounds(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Corners (x, y, z um) of the mesh's bounding box, on all ranks."""
    from mpi4py import MPI

    x = mesh.geometry.x
    lo, hi = np.empty(3), np.empty(3)
    mesh.comm.Allreduce(np.ascontiguousarray(x.min(axis=0), float), lo, op=MPI.MIN)
    mesh.comm.Allreduce(np.ascontiguousarray(x.max(axis=0), float), hi, op=MPI.MAX)
    return lo, hi


def _dvc_grid(case, mesh, mesh_summary: dict):
    """Nodes (N, 3, voxels z y x), grid shape, spacing (voxels), voxel size and origin of
    the DVC sampling grid (spam's makeGrid convention on the mesh's box)."""

    from anodetwin.dvc.correlate import node_grid

    o = case.output
    if o.dvc_node_spacing_um <= 0:
        return None
    lo, hi = _bounds(mesh)
    lo, hi = lo[::-1], hi[::-1]  # z, y, x
    vs = o.dvc_voxel_size_um or float(np.min(mesh_summary.get("voxel_size_um", [1.0])))
    origin = np.array(o.dvc_origin_um) if o.dvc_origin_um else lo + vs / 2
    shape = tuple(int(v) for v in np.round((hi - lo) / vs))
    spacing = max(1, int(round(o.dvc_node_spacing_um / vs)))
    gshape = tuple(len(range(spacing, n, spacing)) for n in shape)  # node_grid's nodes
    if min(gshape) < 2:
        raise ParameterError(f"[output] dvc_node_spacing_um = {o.dvc_node_spacing_um} leaves "
                             f"a node grid of {gshape} on the mesh of "
                             f"{' x '.join(f'{e:.3g}' for e in hi - lo)} um (z, y, x)",
                             "give a smaller spacing (2 nodes per axis at least) or 0")
    nodes, gshape = node_grid(shape, spacing)
    return nodes, gshape, spacing, vs, origin


@dataclass
class SetUp:
    """What :func:`check_case` read and checked: the cell history, the mesh (mesh, phases,
    particles, facets), the mesh's summary.json and the DVC sampling grid (or None)."""

    history: Any
    mesh: tuple
    mesh_summary: dict
    dvc_grid: tuple | None


def check_case(case, out: str | os.PathLike | None = None, resume: bool = False,
               comm=None) -> SetUp:
    """Everything a run checks before any work (``anodetwin simulate --check`` runs it):
    the output folder (no run there unless ``resume``, a checkpoint when resuming), the
    cell protocol, the mesh (readable, with Si), and the DVC sampling grid on the mesh.
    Writes nothing. Raises the typed error of the first failed check."""
    from mpi4py import MPI

    from anodetwin.mesh.io import read_mesh
    from anodetwin.simulate.protocol import simulate_cell

    comm = comm or MPI.COMM_WORLD
    if out is not None:
        out = Path(out)
        if (out / "run.json").exists() and not resume:  # every rank sees the same folder
            raise InputError(f"output folder '{out}' holds a run",
                             "pass --resume to continue it, or choose another --out")
        if resume and not (out / "checkpoint" / "state.json").is_file():
            raise InputError(f"'{out}' has no checkpoint to resume",
                             "run without --resume first")
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
    return SetUp(history, mesh, mesh_summary, _dvc_grid(case, mesh[0], mesh_summary))


def _write_dvc(path: Path, grid, u, params: dict) -> None:
    """Sample ``u`` at the grid's nodes and write it as a DVC pair result (rank 0).

    The FE displacement comes in mesh order (u_x, u_y, u_z, um) and is stored in DVC order
    (z, y, x) in voxels; its strain is taken in um over um node spacings per axis, with the
    components named as everywhere (``eyz``: z with y, ``exz``, ``exy``: y with x)."""
    from anodetwin.dvc.pair import PairResult, write_pair
    from anodetwin.dvc.strain import cell_strain
    from anodetwin.simulate.fields import sample_displacement

    nodes, gshape, spacing, vs, origin = grid
    xyz = (origin + nodes * vs)[:, ::-1]
    disp = sample_displacement(u, xyz)
    if disp is None:
        return
    d = disp[:, ::-1] / vs  # um (x y z) -> voxels (z y x)
    N = len(nodes)
    phi = np.tile(np.eye(4), (N, 1, 1))
    phi[:, :3, 3] = d
    ok = np.isfinite(d).all(axis=1)
    res = PairResult(
        nodes=nodes, grid_shape=gshape, displacement=d, displacement_raw=d, Phi=phi,
        status=np.where(ok, 2, -5), error=np.zeros(N), iterations=np.zeros(N, int),
        delta_phi_norm=np.zeros(N), residual=np.zeros(N), flag=np.where(ok, 0, 2),
        strain=cell_strain(d.reshape(*gshape, 3), spacing, voxel_size_um=vs),  # um / um
        params={**params, "levels": [{"node_spacing": [spacing] * 3, "hws": [0, 0, 0]}],
                "source": "simulation", "origin_um": list(map(float, origin))},
        global_phi=np.eye(4), global_centre=np.zeros(3), voxel_size_um=np.full(3, vs))
    write_pair(path, res, voxel_size_um=vs)


def run_case(case, out: str | os.PathLike, resume: bool = False, max_steps: int | None = None,
             comm=None, progress: bool = True) -> list[dict]:
    """Run a validated case (:func:`anodetwin.simulate.case.load_case`) into ``out``.

    Parameters
    ----------
    resume : bool
        Continue from ``out/checkpoint`` (same number of ranks); without it an existing
        run folder is refused.
    max_steps : int, optional
        Stop (checkpointed, resumable) after this many steps of this call: for wall-time
        limits of batch jobs.

    Returns the summary rows (all ranks). Raises :class:`NumericalError` after writing
    ``failure.json`` when a step fails at the smallest time step; the finished steps stay.
    """
    import h5py  # noqa: F401  (before dolfinx's HDF5, see the README's pitfalls)
    import dolfinx_solver  # noqa: F401
    import dolfinx.fem as fem
    from mpi4py import MPI

    from anodetwin.io import atomic_write_json, make_provenance
    from anodetwin.simulate.diffusion import LithiumTransport
    from anodetwin.simulate.fields import CellFields, merge_xdmf
    from anodetwin.simulate.mechanics import SwellingProblem

    comm = comm or MPI.COMM_WORLD
    out = Path(out)
    ckpt = _Checkpoint(out, comm)
    t_wall = time.perf_counter()
    setup = check_case(case, out, resume, comm)  # nothing is written before it passes
    history, grid = setup.history, setup.dvc_grid
    mesh, phases, particles, facets = setup.mesh

    # --- Li transport in the Si ---------------------------------------------------------
    lith = case.lithiation
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
    D1 = lith.diffusivity_um2_s
    a = float(np.log(lith.diffusivity_ratio))
    z_top_box = float(hi[2])

    def weight(X):
        import ufl

        if lith.profile == "uniform":
            return 1.0
        return ufl.exp((X[2] - z_top_box) / lith.penetration_um)

    kappa = stress_factor(case.materials[PHASE["si"]].beta, lith.temperature_k) \
        if lith.stress_coupling else 0.0
    transport = LithiumTransport(mesh, phases, (PHASE["si"], PHASE["lithiated"]), surface,
                                 D1 / lith.diffusivity_ratio, a, mode="flux", value=0.0,
                                 supply=True, weight=weight, multiplier=mult,
                                 prefix="lith_", stress_factor=kappa)
    if transport.inlet_area_um2 <= 0:
        raise InputError(f"mesh '{case.mesh}' has no Si surface where Li can enter",
                         "give a mesh with Si particles inside the electrode")
    v_si = transport.volume_um3

    # --- mechanics ----------------------------------------------------------------------
    Q = fem.functionspace(mesh, ("DG", 0))
    theta_cells = fem.Function(Q, name="theta")
    sp = SwellingProblem(mesh, phases, facets, case.materials, case.boundary, theta_cells,
                         rtol=case.solver.rtol, prefix="mech_",
                         linear_solver=case.solver.linear,
                         plastic=case.solver.plasticity,
                         plastic_tol=case.solver.plastic_tol)
    fields_probe = CellFields(sp, phases, facets)

    outputs = {name: float(t) for name, t in history.scans.items()}
    for t in case.output.times_s:
        outputs.setdefault(f"t{t:g}s", float(t))
    t_end = max(outputs.values()) if outputs else float(history.time_s[-1])
    targets = sorted(set(outputs.values()) | {float(b) for b in history.breakpoints_s
                                               if 0 < b <= t_end})
    name_at = {}
    for name, t in outputs.items():
        name_at.setdefault(t, name)

    capacity = float(case.cell.cathode_capacity_mah_cm2)
    rows: list[dict] = []
    done_outputs: list[str] = []
    dists: dict[str, dict] = {}
    t, dt, step = 0.0, min(case.solver.dt_max_s, 60.0), 0
    loaded = ckpt.load() if resume else None
    if loaded:
        arrays, state = loaded
        if arrays["u"].shape != sp.u.x.array.shape:
            raise InputError(f"checkpoint '{ckpt.dir}' does not match the mesh partition",
                             "resume with the same mesh and number of ranks")
        sp.u.x.array[:] = arrays["u"]
        transport.theta.x.array[:] = arrays["theta"]
        transport.theta_old.x.array[:] = arrays["theta"]
        theta_cells.x.array[:] = arrays["theta_cells"]
        if sp.plastic:
            sp.Fp_inv.x.array[:] = arrays["Fp_inv"]
            sp.plastic_strain.x.array[:] = arrays["plastic_strain"]
            sp.commit()
        t, dt, step = state["time_s"], state["dt_s"], state["step"]
        rows, done_outputs = state["rows"], state["outputs"]
        dists = state.get("heterogeneity", {})
        if comm.rank == 0:
            log.info("resuming at step %d, t = %.1f s", step, t)

    def provenance(status: str, extra: dict | None = None) -> None:
        if comm.rank != 0:
            return
        prov = make_provenance("simulate", [str(case.path), str(case.mesh / "mesh.xdmf")],
                               case.raw)
        atomic_write_json(out / "run.json", {
            "status": status, "case": case.raw, "mesh": str(case.mesh),
            "ranks": comm.size, "dofs": {"displacement": sp.dofs},
            "cell": {"model": case.cell.name, "theta_full": case.cell.theta_full,
                     "scans_s": history.scans},
            "si_volume_um3": v_si, "inlet_area_um2": transport.inlet_area_um2,
            "electrode_thickness0_um": fields_probe.thickness0,
            "electrode_z_um": [fields_probe.z_bottom, fields_probe.z_top],
            "outputs": done_outputs,
            "provenance": prov, **(extra or {})})

    if comm.rank == 0:  # set-up passed: only now the output folders
        for sub in ("fields", "dvc"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    comm.barrier()
    provenance("running")
    if comm.rank == 0:
        history.to_csv(out / "cell.csv")

    def record(dt_s, its: dict, name: str) -> None:
        f = fields_probe.compute()
        transport.set_hydrostatic(f["hydrostatic"])  # drives the next step (if coupled)
        theta_mean = transport.mean_theta()
        row = {"step": step, "output": name, "time_s": t, "time_h": t / 3600, "dt_s": dt_s,
               "soc": float(history.soc_at(t)),
               "li_inserted_mah_cm2": float(history.soc_at(t)) * capacity,
               "theta_mean": theta_mean, **fields_probe.summary(f),
               "stack_pressure_mpa": sp.stack_pressure(), **its,
               "wall_s": time.perf_counter() - t_wall}
        rows.append({k: row[k] for k in SUMMARY_COLUMNS})
        if name:
            fields_probe.write_xdmf(out / "fields" / f"{name}.xdmf", f, t)
            if grid is not None:
                _write_dvc(out / "dvc" / f"{name}.h5", grid, sp.u,
                           {"case": str(case.path), "output": name, "time_s": t})
            done_outputs.append(name)
            d = fields_probe.distribution(f, case.output.stress_threshold_mpa)
            if comm.rank == 0:
                dists[name] = {"time_s": t, "soc": row["soc"], **d}
                atomic_write_json(out / "heterogeneity.json", dists)
                merge_xdmf([out / "fields" / f"{n}.xdmf" for n in done_outputs],
                           out / "fields" / "fields.xdmf")
        if comm.rank == 0:
            _write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)
        plastic = {"Fp_inv": sp.Fp_inv.x.array, "plastic_strain": sp.plastic_strain.x.array} \
            if sp.plastic else {}
        ckpt.save({"u": sp.u.x.array, "theta": transport.theta.x.array,
                   "theta_cells": theta_cells.x.array, **plastic},
                  {"time_s": t, "dt_s": dt, "step": step, "rows": rows,
                   "outputs": done_outputs, "heterogeneity": dists})

    zero = {"newton_iterations": 0, "krylov_iterations": 0, "plastic_passes": 0,
            "diffusion_iterations": 0}
    if not rows:
        record(0.0, zero, name_at.get(0.0, ""))
    else:  # resumed: the stress that drives the next step
        transport.set_hydrostatic(fields_probe.compute()["hydrostatic"])
    sol = case.solver
    steps_here = 0
    last = None  # (u before the last step, its change of mean theta) for the predictor
    failures: list[dict] = []
    while t < t_end - 1e-9 and (max_steps is None or steps_here < max_steps):
        nxt = next(b for b in targets if b > t + 1e-9)
        dt_try = min(dt, nxt - t, sol.dt_max_s)
        th0 = history.theta_mean_at(t)
        for _ in range(30):  # the largest step with |change of mean theta| <= dtheta_max
            dth = abs(history.theta_mean_at(t + dt_try) - th0)
            if dth <= sol.dtheta_max or dt_try <= sol.dt_min_s:
                break
            dt_try = max(sol.dt_min_s, dt_try * 0.95 * sol.dtheta_max / dth)
        if nxt - t - dt_try < 0.25 * dt_try:
            dt_try = nxt - t  # no sliver before a target
        saved = (sp.u.x.array.copy(), transport.theta.x.array.copy(),
                 theta_cells.x.array.copy())
        if last is not None and last[1] != 0:  # secant predictor in the Li inserted
            r = (history.theta_mean_at(t + dt_try) - th0) / last[1]
            if 0 < r <= 2:  # as far as it keeps cells valid
                du = r * (saved[0] - last[0])
                sp.u.x.array[:] += sp.admissible_fraction(du) * du
                sp.u.x.scatter_forward()
        where = f"at step {step + 1} (t = {t + dt_try:.1f} s, dt = {dt_try:.3g} s)"
        try:
            rate = (history.theta_mean_at(t + dt_try) - th0) * v_si / dt_try
            d_its = transport.step(dt_try, rate, where)
            transport.to_parent_cells(theta_cells)
            newton, krylov, passes = sp.solve(where, dt=dt_try)
        except NumericalError as exc:
            sp.u.x.array[:], transport.theta.x.array[:], theta_cells.x.array[:] = saved
            sp.rollback()
            transport.theta_old.x.array[:] = saved[1]
            failures.append({"time_s": t + dt_try, "dt_s": dt_try, "error": str(exc)})
            if comm.rank == 0:
                log.info("step %d: %s; retrying with dt = %.3g s", step + 1, exc, dt_try / 2)
            if dt_try / 2 < sol.dt_min_s:
                if comm.rank == 0:
                    atomic_write_json(out / "failure.json", {
                        "step": step + 1, "time_s": t, "message": str(exc),
                        "attempts": failures[-8:]})
                provenance("failed")
                raise NumericalError(f"{exc} — stopped at the smallest step; "
                                     f"{step} finished steps are kept in '{out}'") from None
            dt = dt_try / 2
            continue
        sp.commit()
        last = (saved[0], history.theta_mean_at(t + dt_try) - th0)
        t += dt_try
        step += 1
        steps_here += 1
        hit = abs(t - nxt) < 1e-9
        if hit:
            t = nxt
        dt = min(max(dt_try, dt) * 1.5, sol.dt_max_s)  # before the checkpoint: resumable
        record(dt_try, {"newton_iterations": int(sum(newton)),
                        "krylov_iterations": int(sum(krylov)),
                        "plastic_passes": int(passes) if sp.plastic else 0,
                        "diffusion_iterations": int(d_its)},
               name_at.get(t, "") if hit else "")
        if comm.rank == 0:
            log.info("step %d  t = %.0f s  SoC %.3f  thickness %.2f um  J-1 %.4f", step, t,
                     rows[-1]["soc"], rows[-1]["thickness_um"], rows[-1]["volumetric_strain"])
    finished = t >= t_end - 1e-9
    provenance("done" if finished else "stopped",
               {"seconds": time.perf_counter() - t_wall, "steps": step})
    return rows


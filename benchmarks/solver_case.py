"""One solver benchmark case under MPI (``benchmarks/run.py`` runs it; prints one JSON line).

    python benchmarks/solver_case.py mesh reference|LABELS.npy MESH_DIR COARSEN
    mpiexec -n N python benchmarks/solver_case.py unit MESH_DIR
    mpiexec -n N python benchmarks/solver_case.py twin MESH_DIR OUT_DIR STEPS [demo|reference]
    mpiexec -n N python benchmarks/solver_case.py step MESH_DIR

``mesh``: the electrode mesh of the reference phantom (validation/phantom/reference.toml,
T0 cut above the electrode: the demo's and the validation's electrode) or of phase labels
saved as .npy (0.2 um voxels, the first 128 z slices), voxel hexahedra COARSEN voxels wide.
``unit``: one homogeneous linear-elastic solve of the mesh (assembly, rigid-body
near-nullspace, GAMG set-up, CG to 1e-8; E = 100 GPa, nu = 0.3, bonded bottom, the top
pushed down by 0.1 um; its kernel compiled as the twin's), the unit of cost of the solver
benchmark; median of three.
``twin``: the demo electrode's case with the compacting matrix (quick_cell protocol,
separator-side reaction, elastic LixSi, stack pressure 0.3 MPa), or with ``reference``
the validation case (validation/reference_electrode/case.toml: the reference protocol,
plastic flow of LixSi, compacting matrix), for STEPS steps; per step the wall time, Newton
and Krylov iterations. ``step``: theta 0 -> 0.002 -> 0.004 in every
Si cell of the mesh (default materials, spring 0.3 MPa + 0.001 MPa/um).
Every mode reports the peak resident memory summed over the ranks (MiB) and the DOFs.
"""

import h5py  # noqa: F401  (before dolfinx's HDF5)
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI


def hwm() -> float:
    """Peak resident set of this process, MiB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def unit(mesh_dir: str) -> dict:
    """Median time of one homogeneous linear-elastic solve (module notes)."""
    import dolfinx.fem as fem
    import dolfinx.fem.petsc as fp
    import ufl
    from petsc4py import PETSc

    from anodetwin.mesh.io import read_mesh
    from anodetwin.mesh.voxel import FACET
    from anodetwin.simulate.mechanics import near_nullspace
    from anodetwin.simulate.solver import kernel_jit_options

    comm = MPI.COMM_WORLD
    mesh, _, _, facets = read_mesh(Path(mesh_dir), comm)
    V = fem.functionspace(mesh, ("Lagrange", 1, (3,)))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    mu, lam = 1e5 / 2.6, 1e5 * 0.3 / (1.3 * 0.4)

    def eps(w):
        return ufl.sym(ufl.grad(w))

    a = fem.form(ufl.inner(2 * mu * eps(u) + lam * ufl.tr(eps(u)) * ufl.Identity(3), eps(v))
                 * ufl.dx(metadata={"quadrature_degree": 2}),
                 jit_options=kernel_jit_options())  # compiled as the twin's kernels
    bottom = fem.locate_dofs_topological(V, 2, facets.find(FACET["collector"]))
    top = fem.locate_dofs_topological(V.sub(2), 2, facets.find(FACET["separator"]))
    bcs = [fem.dirichletbc(np.zeros(3), bottom, V),
           fem.dirichletbc(PETSc.ScalarType(-0.1), top, V.sub(2))]
    nullspace = near_nullspace(V)
    zero = fem.form(ufl.inner(fem.Constant(mesh, np.zeros(3)), v) * ufl.dx)
    times, its = [], 0
    for _ in range(3):
        comm.barrier()
        t0 = time.perf_counter()
        A = fp.assemble_matrix(a, bcs=bcs)
        A.assemble()
        A.setNearNullSpace(nullspace)
        b = fp.assemble_vector(zero)
        fp.apply_lifting(b, [a], [bcs])
        b.ghostUpdate(PETSc.InsertMode.ADD, PETSc.ScatterMode.REVERSE)
        fp.set_bc(b, bcs)
        ksp = PETSc.KSP().create(comm)
        ksp.setOperators(A)
        ksp.setType("cg")
        ksp.getPC().setType("gamg")
        ksp.setTolerances(rtol=1e-8)
        x = A.createVecRight()
        ksp.solve(b, x)
        comm.barrier()
        times.append(time.perf_counter() - t0)
        its = ksp.getIterationNumber()
        for obj in (ksp, A, b, x):
            obj.destroy()
    return {"unit_s": float(np.median(times)), "cg_iterations": its,
            "dofs": V.dofmap.index_map.size_global * 3}


#: The demo electrode's case of the solver benchmark (the short protocol, separator-side
#: reaction, elastic LixSi, 0.3 MPa); ``twin_case`` switches the compacting matrix on.
DEMO_CASE = """# the solver benchmark's demo-electrode case
[mesh]
path = "mesh"
[cell]
model = "quick_cell"
[lithiation]
diffusivity_um2_s = 0.01
profile = "separator"
[boundary]
p0_mpa = 0.3
[solver]
plasticity = false
compaction = false
[output]
dvc_node_spacing_um = 3.5
dvc_voxel_size_um = {voxel}
"""


def twin_case(mesh_dir: str, kind: str = "demo") -> str:
    """The demo electrode's case (:data:`DEMO_CASE`) with the compacting matrix switched
    on, or the validation case (``kind="reference"``), on ``mesh_dir`` and with no DVC
    grid."""
    if kind == "demo":
        lines = DEMO_CASE.format(voxel=0.2).splitlines()
    else:
        root = Path(__file__).resolve().parents[1]
        lines = (root / "validation" / "reference_electrode" / "case.toml").read_text(
            ).splitlines()
    for key, value in (("path", f'"{Path(mesh_dir).resolve()}"'), ("compaction", "true"),
                       ("dvc_node_spacing_um", "0")):
        if kind != "demo" and key == "compaction":
            continue  # the validation case's default: on
        at = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
        if len(at) != 1:
            raise RuntimeError(f"the demo's case no longer holds one '{key}': update the "
                               "benchmark")
        lines[at[0]] = f"{key} = {value}"
    text = "\n".join(lines) + "\n"
    return text


def twin(mesh_dir: str, out: str, steps: int, kind: str = "demo") -> dict:
    """The first ``steps`` steps of the demo electrode with the compacting matrix, or of the
    validation case (``kind="reference"``)."""
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import run_case

    comm = MPI.COMM_WORLD
    out_dir = Path(out)
    if comm.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "case.toml").write_text(twin_case(mesh_dir, kind))
    comm.barrier()
    case = load_case(out_dir / "case.toml")
    t0 = time.perf_counter()
    run_case(case, out_dir / "run", max_steps=steps, comm=comm)
    wall = time.perf_counter() - t0
    rows = list(csv.DictReader(open(out_dir / "run" / "summary.csv")))
    walls = [float(r["wall_s"]) for r in rows]
    per_step = [{"dtheta": float(rows[i]["theta_mean"]) - float(rows[i - 1]["theta_mean"]),
                 "s": walls[i] - walls[i - 1], "newton": int(rows[i]["newton_iterations"]),
                 "krylov": int(rows[i]["krylov_iterations"]),
                 "thickness_um": float(rows[i]["thickness_um"]),
                 "volumetric_strain": float(rows[i]["volumetric_strain"])}
                for i in range(1, len(rows))]
    return {"steps": per_step, "wall_s": wall, "setup_s": walls[0]}


def step(mesh_dir: str) -> dict:
    """theta 0 -> 0.002 -> 0.004 in every Si cell."""
    from anodetwin.errors import NumericalError
    from anodetwin.mesh.io import read_mesh
    from anodetwin.simulate import default_materials
    from anodetwin.simulate.mechanics import Boundary, SwellingProblem

    comm = MPI.COMM_WORLD
    mesh, phases, _, facets = read_mesh(Path(mesh_dir), comm)
    comm.barrier()
    t0 = time.perf_counter()
    sp = SwellingProblem(mesh, phases, facets, default_materials(),
                         Boundary(p0_mpa=0.3, k_mpa_per_um=0.001))
    sp.refresh_tangent()
    n = mesh.topology.index_map(3).size_local
    si = phases.indices[(phases.values == 2) & (phases.indices < n)]
    dof = sp.Q.dofmap.list[:, 0]
    comm.barrier()
    setup = time.perf_counter() - t0
    out = []
    for th in (0.002, 0.004):
        sp.theta.x.array[dof[si]] = th
        sp.theta.x.scatter_forward()
        comm.barrier()
        t0 = time.perf_counter()
        try:
            newton, krylov, _ = sp.solve("bench")
        except NumericalError:
            newton, krylov = [-1], [-1]  # reported as failed
        comm.barrier()
        out.append({"s": time.perf_counter() - t0, "newton": sum(newton),
                    "krylov": sum(krylov)})
    return {"setup_s": setup, "steps": out}


def mesh(source: str, out: str, coarsen: int) -> dict:
    """Write the electrode mesh of ``source`` (module notes) to ``out``."""
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import Labels, voxel_mesh

    comm = MPI.COMM_WORLD
    if source == "reference":
        from anodetwin.phantom.config import load_config
        from anodetwin.phantom.microstructure import make_microstructure

        root = Path(__file__).resolve().parents[1]
        ms = make_microstructure(load_config(root / "validation" / "phantom" / "reference.toml"))
        top = ms.layers.anode[1]
        labels = Labels(ms.phases[:top], ms.particles[:top], (ms.voxel_size_um,) * 3)
    else:
        labels = Labels(np.load(source)[:128], None, 0.2)
    hm = voxel_mesh(comm, labels, coarsen_by=coarsen)
    write_mesh(Path(out), hm)
    return {"cells": hm.summary["cells"]}


def main() -> int:
    comm = MPI.COMM_WORLD
    mode, mesh_dir = sys.argv[1], sys.argv[2]
    if mode == "mesh":
        res = mesh(mesh_dir, sys.argv[3], int(sys.argv[4]))
    elif mode == "unit":
        res = unit(mesh_dir)
    elif mode == "twin":
        res = twin(mesh_dir, sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])
    else:
        res = step(mesh_dir)
    mib = comm.allreduce(hwm(), op=MPI.SUM)
    if comm.rank == 0:
        print(json.dumps({"mode": mode, "ranks": comm.size, "mib": mib, **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

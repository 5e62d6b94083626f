"""Reference validation case: phantom of the reference electrode -> mesh -> simulation
through the reference protocol -> side-by-side table with the publication (results.md).

    mpiexec -n 2 python validation/reference_electrode/run.py [--coarsen 4] [--resume | --fresh]

Writes out/ (mesh, run) and results.md beside this file; a run already in out/ is continued
with ``--resume`` (``make validation RESUME=1``) or started again with ``--fresh``
(``make validation FRESH=1``). Nothing is fitted to the
mechanical numbers: the parameters are those of models/ and case.toml (see results.md).
"""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5)
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import argparse
import shutil
import sys
import time
import tomllib
from pathlib import Path

from mpi4py import MPI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def make_mesh(out: Path, coarsen: int, comm) -> None:
    """T0 labels of the phantom (validation/phantom/reference.toml), cut above the
    electrode, meshed with voxel hexahedra."""
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import Labels, voxel_mesh
    from anodetwin.phantom.config import load_config
    from anodetwin.phantom.microstructure import make_microstructure

    ms = None
    if comm.rank == 0:
        ms = make_microstructure(load_config(ROOT / "validation" / "phantom" / "reference.toml"))
        top = ms.layers.anode[1]
        ms = (ms.phases[:top].copy(), ms.particles[:top].copy(), ms.voxel_size_um)
    ph, pa, vs = comm.bcast(ms, root=0)
    hm = voxel_mesh(comm, Labels(ph, pa, (vs,) * 3), coarsen_by=coarsen)
    write_mesh(out, hm, {"validation": "reference_electrode", "phantom_voxel_um": vs})


def table(rows: list[dict], expected: dict) -> str:
    """Markdown table: quantity, publication, twin, whether it lies within the band."""
    by = {r["output"]: r for r in rows if r["output"]}
    t0 = by["T0"]["thickness_um"]
    lines = ["| quantity | publication | twin | within the band |", "|---|---|---|---|"]
    for key, e in expected.items():
        scan, col = e["scan"], e["column"]
        if scan not in by:
            continue
        v = by[scan][col]
        if e.get("relative_to_t0"):
            v = v / t0 - 1
        lo, hi = e["value"] - e["band"], e["value"] + e["band"]
        ok = lo <= v <= hi if "max" not in e else abs(v) <= e["max"]
        ref = f"{e['value']:g} ± {e['band']:g}" if "max" not in e else f"< {e['max']:g}"
        lines.append(f"| {e['label']} | {ref} | {v:.3f} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    from anodetwin.errors import AnodetwinError
    from anodetwin.log import configure_logging
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import read_summary, run_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coarsen", type=int, default=4,
                    help="phantom voxels per mesh cell (4: 0.8 um hexahedra)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in out/run")
    mode.add_argument("--fresh", action="store_true",
                      help="delete the run in out/run and start again")
    ap.add_argument("--report-only", action="store_true",
                    help="write results.md from the scans finished so far, run nothing")
    args = ap.parse_args()
    configure_logging(0)
    comm = MPI.COMM_WORLD
    work = HERE / "out"
    start = time.perf_counter()
    if not args.report_only:
        if not (work / "mesh" / "mesh.xdmf").is_file():
            make_mesh(work / "mesh", args.coarsen, comm)
        case = load_case(HERE / "case.toml")
        if args.fresh and comm.rank == 0:
            shutil.rmtree(work / "run", ignore_errors=True)
        comm.barrier()
        try:
            run_case(case, work / "run", resume=args.resume, comm=comm)
        except AnodetwinError as exc:
            if comm.rank == 0:
                print(f"error: {exc}", file=sys.stderr)
                if "--resume" in str(exc):
                    print("hint: make validation RESUME=1 continues it, FRESH=1 starts "
                          "again", file=sys.stderr)
            return 2
    if comm.rank == 0:
        rows = read_summary(work / "run" / "summary.csv")
        expected = tomllib.loads((HERE / "expected.toml").read_text())["metrics"]
        import json

        run = json.loads((work / "run" / "run.json").read_text())
        done = [r["output"] for r in rows if r["output"]]
        failed = (work / "run" / "failure.json").is_file()
        state = "failed" if failed else run["status"]
        status = (f"Run status: {state}; scans simulated: {', '.join(done)} "
                  f"({int(rows[-1]['step'])} steps, t = {rows[-1]['time_h']:.2f} h of the "
                  f"protocol, SoC {rows[-1]['soc']:.3f}). Last step: thickness "
                  f"{rows[-1]['thickness_um']:.2f} um, mean J-1 "
                  f"{rows[-1]['volumetric_strain']:.3f} (collector half "
                  f"{rows[-1]['volumetric_strain_collector_half']:.3f}, separator half "
                  f"{rows[-1]['volumetric_strain_separator_half']:.3f}), exx "
                  f"{rows[-1]['exx']:.1e}, eyy {rows[-1]['eyy']:.1e}.\n")
        if not args.report_only:
            status += (f"\nWall time {(time.perf_counter() - start) / 60:.1f} min on "
                       f"{comm.size} MPI ranks (mesh and simulation"
                       f"{' since the resume' if args.resume else ''}).\n")
        if failed:
            fail = json.loads((work / "run" / "failure.json").read_text())
            status += f"\nStopped: {fail['message']}\n"
        tail = HERE / "results_tail.md"  # reading of the finished run, when written
        text = (HERE / "results_head.md").read_text() + "\n" + status + "\n" + \
            table(rows, expected) + "\n" + (tail.read_text() if tail.is_file() else "")
        (HERE / "results.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

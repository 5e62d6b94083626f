"""The meshing stage on the command line (:mod:`anodetwin.mesh`): ``mesh`` (labels to voxel
hexahedra or conforming tetrahedra) and ``mesh-packing`` (spheres in a box, gmsh). Both run
under ``mpiexec``: rank 0 prints and logs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anodetwin.cli.options import (add_command, flag, float_list, float_value, int_list,
                                   int_value, log, voxel_size_option)

__all__ = ["add_parsers", "cmd_mesh", "cmd_mesh_packing"]

_PREVIEW_HELP = "render the mesh off-screen (pyvista)"


def _add_mesh(sub: Any) -> None:
    p = add_command(sub, "mesh", "hexahedral finite element mesh of labels with phase, "
                                 "particle and boundary tags (runs under mpiexec)", cmd_mesh,
                    {"labels": "labels file of 'anodetwin segment', or a phase-code volume "
                               "(e.g. series.h5:/steps/T0/phases)"},
                    out="output folder: mesh.xdmf/.h5, summary.json")
    p.add_argument("--particles", help="particle-id volume (for a plain phase volume)")
    p.add_argument("--coarsen", type=int_value("--coarsen", low=1, example="2"),
                   default=1, metavar="K",
                   help="majority coarsening by K along each axis (1)")
    voxel_size_option(p)
    p.add_argument("--drop-phases", default="",
                   type=int_list("--drop-phases", low=0, example="0,5", empty=True),
                   metavar="CODES",
                   help="phase codes left out of the mesh, e.g. 0 (pores) or 0,5")
    p.add_argument("--min-speck-voxels",
                   type=int_value("--min-speck-voxels", low=0, example="8"), default=0,
                   help="pieces of a phase smaller than this take the phase around them")
    p.add_argument("--smooth", type=int_value("--smooth", low=0, example="3"),
                   default=0, metavar="N",
                   help="N passes of constrained Taubin smoothing of the interfaces (0)")
    flag(p, "--conforming", "tetrahedra with shared interfaces (SurfaceNets + TetGen) instead "
                            "of voxel hexahedra")
    flag(p, "--quality",
         "with --conforming: TetGen quality refinement (radius-edge ratio 2)")
    p.add_argument("--preview", metavar="PNG", help=_PREVIEW_HELP)


def _add_packing(sub: Any) -> None:
    p = add_command(sub, "mesh-packing", "tetrahedral mesh of particles as spheres in a box "
                                         "(gmsh OCC): single particles, VOIs, small packings",
                    cmd_mesh_packing,
                    {"source": "phantom series.h5, labels file of 'anodetwin segment' (their "
                               "particle tables) or a CSV with id, centroid_z_um, centroid_y_um, "
                               "centroid_x_um, equivalent_diameter_um"},
                    out="output folder (as 'anodetwin mesh')")
    p.add_argument("--box", type=float_list("--box", n=6, example="2.5,7,0,4,0,4"),
                   metavar="Z0,Z1,Y0,Y1,X0,X1",
                   help="box in um (default: the electrode layer of a phantom, else the "
                        "volume of a labels file; required for a CSV)")
    p.add_argument("--ids", type=int_list("--ids", low=1, example="3,7"),
                   help="only these particle ids, e.g. 3,7")
    p.add_argument("--mesh-size",
                   type=float_value("--mesh-size", low=0, above=True, example="0.8"),
                   help="largest element (um)")
    p.add_argument("--surface-size",
                   type=float_value("--surface-size", low=0, above=True, example="0.3"),
                   help="element size on particle surfaces (um)")
    p.add_argument("--preview", metavar="PNG", help=_PREVIEW_HELP)


def add_parsers(sub: Any) -> None:
    """Register ``mesh`` and ``mesh-packing`` on the subparsers ``sub``."""
    _add_mesh(sub)
    _add_packing(sub)


def _finish(args: argparse.Namespace, hm: Any, out: Path, comm: Any, what: str,
            *values: Any) -> None:
    """Preview (``--preview``), then on rank 0 the log line ``what % values`` and the output
    path."""
    from anodetwin.mesh.io import preview

    if args.preview:
        preview(args.preview, hm)
    if comm.rank == 0:
        log.info(what, *values)
        print(out)


def cmd_mesh(args: argparse.Namespace) -> int:
    """Mesh labels (voxel or ``--conforming`` route) and write the mesh folder."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.errors import ParameterError
    from anodetwin.io import check_output_path, input_record, make_provenance
    from anodetwin.mesh.io import read_labels_volume, write_mesh
    from anodetwin.mesh.voxel import voxel_mesh

    comm = MPI.COMM_WORLD
    check_output_path(args.out)
    if args.preview:
        check_output_path(args.preview)
    drop = tuple(args.drop_phases)
    labels = read_labels_volume(args.labels, args.particles, args.voxel_size)
    if args.conforming:
        from anodetwin.mesh.conforming import conforming_mesh

        if drop or args.smooth or args.min_speck_voxels:
            raise ParameterError("--drop-phases, --smooth and --min-speck-voxels belong to the "
                                 "voxel route", "leave them out with --conforming")
        hm = conforming_mesh(comm, labels, args.coarsen, quality=args.quality)
    else:
        hm = voxel_mesh(comm, labels, args.coarsen, drop, args.min_speck_voxels, args.smooth)
    inputs = [input_record(args.labels.split(":/")[0])] if comm.rank == 0 else []
    prov = make_provenance("mesh", inputs, {"coarsen": args.coarsen, "drop_phases": drop,
                                            "min_speck_voxels": args.min_speck_voxels,
                                            "smooth": args.smooth,
                                            "conforming": args.conforming})
    out = write_mesh(args.out, hm, {"provenance": prov})
    s = hm.summary
    _finish(args, hm, out, comm, "%d cells, %d vertices on %d rank(s) in %.1f s", s["cells"],
            s["vertices"], comm.size, s["seconds"])
    return 0


def _packing_box(args: argparse.Namespace, default_box: Any) -> Any:
    """The box [[z0, y0, x0], [z1, y1, x1]] in um: ``--box`` or the source's own."""
    from anodetwin.errors import ParameterError

    box = default_box
    if args.box:
        b = args.box
        box = [[b[0], b[2], b[4]], [b[1], b[3], b[5]]]
    if box is None:
        raise ParameterError(f"no box for '{args.source}'", "give --box Z0,Z1,Y0,Y1,X0,X1 (um)")
    return box


def cmd_mesh_packing(args: argparse.Namespace) -> int:
    """Mesh particles as spheres in a box (gmsh) and write the mesh folder."""
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.errors import ParameterError
    from anodetwin.io import check_output_path, input_record, make_provenance
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.packing import packing_mesh, read_particle_source, spheres_from_table

    comm = MPI.COMM_WORLD
    check_output_path(args.out)
    table, default_box = read_particle_source(args.source)
    box = _packing_box(args, default_box)
    ids = args.ids or None
    spheres = spheres_from_table(table, box, ids)
    if len(spheres.ids) == 0:
        raise ParameterError("no particle intersects the box", "check --box and --ids")
    tmp_model = Path(args.out).with_name(f".{Path(args.out).name}.model")
    if comm.rank == 0:
        tmp_model.mkdir(exist_ok=True)
    comm.barrier()
    hm = packing_mesh(comm, spheres, args.mesh_size, args.surface_size, tmp_model)
    prov = make_provenance("mesh-packing", [input_record(args.source)] if comm.rank == 0
                           else [], {"box": box, "ids": ids, "mesh_size": args.mesh_size,
                                     "surface_size": args.surface_size})
    out = write_mesh(args.out, hm, {"provenance": prov})
    if comm.rank == 0:
        import shutil

        for f in tmp_model.iterdir():
            shutil.move(str(f), out / f.name)
        tmp_model.rmdir()
    _finish(args, hm, out, comm, "%d spheres, %d cells in %.1f s", len(spheres.ids),
            hm.summary["cells"], hm.summary["seconds"])
    return 0

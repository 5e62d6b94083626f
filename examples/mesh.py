# %% [markdown]
# # Meshing a segmented microstructure
#
# The voxel route turns a labels volume into a DOLFINx hexahedral mesh, one cell per voxel
# (or per k^3 voxels with coarsening), with the phase and the particle id of every cell and
# tagged boundary facets: the collector (z = 0 side), the separator side, the four lateral
# faces, and the Si and copper interfaces. The mesh is exactly the voxel geometry, so its
# volumes and areas can be checked by counting voxels.
#
# This example segments a phantom's pristine scan (`examples/segment.py`), meshes the
# electrode without the separator, and checks, by DOLFINx integration over the tagged
# cells and facets, that each phase's volume is its voxel count times the voxel volume and
# that the collector's area is the patch's lateral area.
#
#     python examples/mesh.py [--out DIR]
#     mpiexec -n 2 python examples/mesh.py      # the same mesh, distributed
#
# The command-line equivalent is `anodetwin mesh labels.h5 --out mesh/ --drop-phases 5`.

# %%
import argparse
import json
from pathlib import Path

import anodetwin.fem  # noqa: F401  (before dolfinx: h5py, then the PETSc wheel)

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from anodetwin.io import read_volume
from anodetwin.mesh.io import read_labels_volume, write_mesh
from anodetwin.mesh.voxel import FACET, voxel_mesh
from anodetwin.phantom import PHASE, config_from_dict, generate_series
from anodetwin.segment import segment_volume, write_labels

comm = MPI.COMM_WORLD
parser = argparse.ArgumentParser(description="Mesh a segmented phantom electrode.")
parser.add_argument("--out", type=Path, default=Path("mesh_out"),
                    help="output folder (created; default ./mesh_out)")
out = parser.parse_known_args()[0].out
if comm.rank == 0:
    out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Labels: a segmented phantom scan
#
# An 8 x 8 um patch of an 8 um coating, 0.25 um voxels. Segmentation merges CBD and
# electrolyte (phase contrast cannot tell them apart) into phase 1.

# %%
if comm.rank == 0:
    cfg = config_from_dict({
        "geometry": {"voxel_size_um": 0.25, "lateral_um": 8.0, "cu_thickness_um": 1.0,
                     "separator_thickness_um": 1.5},
        "composition": {"thickness_um": 8.0, "areal_loading_mg_cm2": 3.0 * 8.0 / 21.0},
        "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.5,
                      "max_diameter_um": 4.0},
        "series": {"soc": [0.0], "double_scan": False},
    }, seed=5)
    series = generate_series(cfg, out / "series.h5", progress=False).path
    scan = read_volume(f"{series}:/steps/T0/tomogram", progress=False)
    write_labels(out / "labels.h5", segment_volume(scan, progress=False))
comm.barrier()

# %% [markdown]
# ## Mesh
#
# `read_labels_volume` reads a labels file (or any phase volume with an optional particle
# volume) with its voxel size. Phase 5 (separator) is dropped: the stack spring acts on
# the electrode's top. Every rank builds its slab of the mesh.

# %%
labels = read_labels_volume(out / "labels.h5")
hm = voxel_mesh(comm, labels, coarsen_by=1, drop_phases=(PHASE["separator"],))
write_mesh(out / "mesh", hm)  # mesh.xdmf (ParaView), mesh.h5, summary.json
s = hm.summary
if comm.rank == 0:
    print(f"{s['cells']} hexahedra, {s['vertices']} vertices, {s.get('particles', 0)} "
          f"particles on {comm.size} rank(s)")

# %% [markdown]
# ## Volumes and areas by integration
#
# `dx(tag)` integrates over the cells of one phase, `ds(tag)` over tagged boundary facets;
# the voxel counts come straight from the labels array.

# %%
dx = ufl.Measure("dx", domain=hm.mesh, subdomain_data=hm.phases)
ds = ufl.Measure("ds", domain=hm.mesh, subdomain_data=hm.facets)
one = fem.Constant(hm.mesh, 1.0)


def integral(form) -> float:
    """Value of a scalar form summed over the ranks."""
    return comm.allreduce(fem.assemble_scalar(fem.form(form)), op=MPI.SUM)


voxel_um3 = float(np.prod(labels.voxel_size_um))
volumes = {}
for name in ("copper", "cbd", "si"):
    mesh_volume = integral(one * dx(PHASE[name]))
    voxel_volume = float(np.sum(labels.phases == PHASE[name])) * voxel_um3
    volumes[name] = {"mesh_um3": mesh_volume, "voxels_um3": voxel_volume}
    if comm.rank == 0:
        print(f"{name:7s} volume: mesh {mesh_volume:9.3f} um3, voxels {voxel_volume:9.3f} um3")
ny, nx = labels.phases.shape[1:]
lateral_area = ny * labels.voxel_size_um[1] * nx * labels.voxel_size_um[2]
collector_area = integral(one * ds(FACET["collector"]))
if comm.rank == 0:
    print(f"collector area {collector_area:.3f} um2 (patch {lateral_area:.3f} um2)")
    measured = {"cells": s["cells"], "volumes": volumes, "collector_area_um2": collector_area,
                "lateral_area_um2": lateral_area, "ranks": comm.size}
    (out / "measured.json").write_text(json.dumps(measured, indent=2))

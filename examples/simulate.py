# %% [markdown]
# # A tiny swelling simulation with DOLFINx
#
# The twin solves, step by step through the cell's charge protocol, Li diffusion in the Si
# particles and the finite-strain equilibrium of the swelling electrode: the lithiated Si
# swells (F = Fe Fs, Fs = (1 + beta theta)^(1/3) I), the carbon-binder matrix and pores
# give way, the copper collector is bonded at z = 0, the lateral faces are rollers, and a
# preloaded stack spring presses on the top, traction -(p0 + k u_z).
#
# This example meshes a phantom's pristine electrode (a 6 x 6 um patch, 0.5 um voxels),
# writes a case file and runs the short protocol `models/quick_cell.toml` (30 min at C/3,
# a scan T1, 20 min of discharge at C/6, a scan T2), elastic, in about 10 seconds. It then
# checks the run against numbers worked out by hand:
#
# * Li: the mean Li content of the Si is the charge passed over the anode's Si capacity,
#   theta = (C/3 x 0.5 h x 3.5 mAh/cm2) / (3.0 mg/cm2 x 0.89 x 3579 mAh/g) at T1;
# * the spring: the stack pressure is p0 + k x (thickness growth);
# * rollers: no in-plane strain, so the through-thickness strain is the thickness growth
#   over the initial thickness.
#
#     python examples/simulate.py [--out DIR]
#     mpiexec -n 2 python examples/simulate.py     # the same run on 2 MPI ranks
#
# The command-line equivalent is `anodetwin mesh ...` then
# `mpiexec -n 2 anodetwin simulate case.toml --out run/`.

# %%
import argparse
import csv
import json
import shutil
from pathlib import Path

import anodetwin.fem  # noqa: F401  (before dolfinx: h5py, then the PETSc wheel)

import numpy as np
from mpi4py import MPI

from anodetwin.mesh.io import write_mesh
from anodetwin.mesh.voxel import Labels, voxel_mesh
from anodetwin.phantom import config_from_dict, make_microstructure
from anodetwin.simulate.case import load_case
from anodetwin.simulate.run import run_case

comm = MPI.COMM_WORLD
parser = argparse.ArgumentParser(description="Simulate a tiny swelling electrode.")
parser.add_argument("--out", type=Path, default=Path("simulate_out"),
                    help="output folder (created; default ./simulate_out)")
out = parser.parse_known_args()[0].out
if comm.rank == 0:
    out.mkdir(parents=True, exist_ok=True)
comm.barrier()

# %% [markdown]
# ## The microstructure and its mesh
#
# The phantom's pristine labels (the same on every rank: same configuration and seed),
# cut at the top of the coating; one hexahedron per voxel.

# %%
ms = make_microstructure(config_from_dict({
    "geometry": {"voxel_size_um": 0.5, "lateral_um": 6.0, "cu_thickness_um": 1.0,
                 "separator_thickness_um": 1.0},
    "composition": {"thickness_um": 6.0, "areal_loading_mg_cm2": 3.0 * 6.0 / 21.0},
    "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.8, "max_diameter_um": 5.0},
}, seed=3))
top = ms.layers.anode[1]
voxel = tuple(float(v) for v in np.broadcast_to(ms.voxel_size_um, 3))
labels = Labels(ms.phases[:top], ms.particles[:top], voxel)
write_mesh(out / "mesh", voxel_mesh(comm, labels))

# %% [markdown]
# ## The case file
#
# Relative paths are taken from the case file's folder. Elastic LixSi and no compaction
# stiffening of the matrix keep the run short; Li enters mostly at the separator side.

# %%
p0_mpa, k_mpa_per_um = 0.3, 0.5
case_text = f"""[mesh]
path = "mesh"
[cell]
model = "quick_cell"
[lithiation]
diffusivity_um2_s = 0.05
profile = "separator"
penetration_um = 3.0
[boundary]
p0_mpa = {p0_mpa}
k_mpa_per_um = {k_mpa_per_um}
[solver]
plasticity = false
compaction = false
dtheta_max = 0.02
[output]
dvc_node_spacing_um = 1.0
"""
if comm.rank == 0:
    (out / "case.toml").write_text(case_text)
    shutil.rmtree(out / "run", ignore_errors=True)  # a rerun starts afresh
comm.barrier()

# %% [markdown]
# ## Run
#
# `run_case` writes `summary.csv` (one row per step), `fields/` (XDMF for ParaView:
# displacement, theta, J, stresses, phases), `dvc/T<k>.h5` (the displacement on a DVC
# node grid, for validation), `heterogeneity.json` and checkpoints (a run can resume).

# %%
run_case(load_case(out / "case.toml"), out / "run", comm=comm, progress=False)

# %% [markdown]
# ## Checks by hand

# %%
if comm.rank == 0:
    with open(out / "run" / "summary.csv", newline="") as f:
        rows = {r["output"]: {k: float(v) for k, v in r.items() if k != "output"}
                for r in csv.DictReader(f) if r["output"]}
    si_capacity = 3.0 * 0.89 * 3.579  # mAh/cm2: loading x Si fraction x 3579 mAh/g
    charge = {"T0": 0.0, "T1": 3.5 / 3 * 0.5}  # mAh/cm2: C/3 for 30 min
    charge["T2"] = charge["T1"] - 3.5 / 6 * 20 / 60  # then C/6 for 20 min
    t0 = rows["T0"]["thickness_um"]
    measured = {}
    for name, r in rows.items():
        growth = r["thickness_um"] - t0
        measured[name] = {
            "theta_mean": r["theta_mean"], "theta_by_hand": charge[name] / si_capacity,
            "thickness_um": r["thickness_um"], "stack_pressure_mpa": r["stack_pressure_mpa"],
            "stack_pressure_by_hand": p0_mpa + k_mpa_per_um * growth,
            "ezz": r["ezz"], "ezz_by_hand": growth / t0,
            "in_plane_strain": max(abs(r["exx"]), abs(r["eyy"])),
            "volumetric_strain": r["volumetric_strain"],
            "collector_half": r["volumetric_strain_collector_half"],
            "separator_half": r["volumetric_strain_separator_half"]}
        m = measured[name]
        print(f"{name}: theta {m['theta_mean']:.6f} (by hand {m['theta_by_hand']:.6f}), "
              f"thickness {m['thickness_um']:.3f} um, pressure {m['stack_pressure_mpa']:.4f}"
              f" MPa (by hand {m['stack_pressure_by_hand']:.4f}), J-1 collector half "
              f"{m['collector_half']:.4f}, separator half {m['separator_half']:.4f}")
    (out / "measured.json").write_text(json.dumps(measured, indent=2))

# %% [markdown]
# # Model versus DVC on a phantom: the closed loop
#
# Validation compares a simulation with a DVC measurement on **one grid with one strain
# operator**: the simulated displacement is sampled at the DVC nodes and turned into strain
# by the DVC's own Q8 operator, so both fields are compared cell by cell, per step and
# region (electrode, collector half, separator half), with pass/fail checks and an HTML
# report.
#
# On real data the measurement comes from the beamline. Here the loop is closed on a
# phantom, where the answer is known: the phantom's pristine electrode is meshed and
# simulated (30 min at C/3); its tomograms are rendered deformed by the *simulated*
# displacement (T0, T1); spam DVC measures them; and the validation of the simulation
# against that measurement must agree within the DVC's accuracy. A second "model" without
# Si swelling must fail.
#
#     python examples/validate.py [--out DIR]
#
# The command-line equivalent is `anodetwin validate --sim run/ --dvc dvc/ --out report/`.

# %%
import argparse
import json
import shutil
from pathlib import Path

import anodetwin.fem  # noqa: F401  (before dolfinx: h5py, then the PETSc wheel)

import h5py
import numpy as np
from mpi4py import MPI

from anodetwin.dvc.series import correlate_series
from anodetwin.mesh.io import write_mesh
from anodetwin.mesh.voxel import voxel_mesh
from anodetwin.phantom import config_from_dict
from anodetwin.simulate.case import load_case
from anodetwin.simulate.materials import MODELS_DIR
from anodetwin.simulate.run import run_case
from anodetwin.validate import validate_run
from anodetwin.validate.loop import electrode_labels, render_series

comm = MPI.COMM_SELF  # DVC and rendering run on one process
parser = argparse.ArgumentParser(description="Validate a simulation against DVC of a phantom.")
parser.add_argument("--out", type=Path, default=Path("validate_out"),
                    help="output folder (created; default ./validate_out)")
out = parser.parse_known_args()[0].out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Phantom, mesh, simulation
#
# A 16 x 16 um patch of the reference coating (21 um, 3 mg/cm2) in 0.4 um voxels; lithiated
# Si keeps the grey value of Si in the rendering (brightness conserved, as DVC assumes).
# The mesh is 4x coarser than the voxels (1.6 um hexahedra). The simulation writes its
# displacement on a grid of the phantom's voxel size (`[output] dvc_*`), from which the
# deformed tomograms are rendered. The wrong model is the same case with a LixSi that does
# not swell.

# %%
voxel_um = 0.4
cfg = config_from_dict({
    "geometry": {"voxel_size_um": voxel_um, "lateral_um": 16.0},
    "render": {"grey_lithiated": 30000.0},
    "series": {"double_scan": False},
}, seed=3)
write_mesh(out / "mesh", voxel_mesh(comm, electrode_labels(cfg), coarsen_by=4))

case = """[mesh]
path = "../mesh"
[cell]
model = "quick_cell"
[lithiation]
diffusivity_um2_s = 0.05
profile = "separator"
penetration_um = 5.0
[solver]
plasticity = false
compaction = false
linear = "direct"
[output]
dvc_node_spacing_um = 0.8
dvc_voxel_size_um = 0.4
"""
lixsi = (MODELS_DIR / "lixsi.toml").read_text()
assert "[swelling_beta]\nvalue = 2.8" in lixsi, "models/lixsi.toml changed its swelling entry"
rigid = out / "lixsi_no_swelling.toml"
rigid.write_text(lixsi.replace("[swelling_beta]\nvalue = 2.8", "[swelling_beta]\nvalue = 0.0"))
models = {"model": case,
          "no_swelling": case.replace("[solver]", f'[materials]\nsi = "{rigid}"\n[solver]')}
for name, text in models.items():
    shutil.rmtree(out / name, ignore_errors=True)  # a rerun starts afresh
    (out / name).mkdir()
    (out / name / "case.toml").write_text(text)
    run_case(load_case(out / name / "case.toml"), out / name / "run", comm=comm,
             progress=False)

# %% [markdown]
# ## The "measurement": render, then correlate
#
# `render_series` writes a phantom series whose T0 and T1 are the phantom deformed by the
# simulated displacement of outputs T0 and T1; `correlate_series` measures it.

# %%
series = render_series(out / "model" / "run", cfg, out / "series.h5", outputs=("T0", "T1"))
with h5py.File(series.path, "r") as f:
    scans = [f[f"steps/T{k}/tomogram"][...].astype(np.float32) for k in range(2)]
    phases = f["steps/T0/phases"][...]
correlate_series(scans, out / "dvc", voxel_size_um=voxel_um, node_spacing=5, hws=6,
                 search_range=(6, 2, 2), processes=1, progress=False, quicklook=False,
                 regions={"phases": phases, "cube_um": None, "voi_um": None})

# %% [markdown]
# ## Validate
#
# `validate_run` pairs DVC step k with simulation output T<k>, writes `report.html`,
# `metrics.json`, `metrics.csv`, `checks.csv` and figures, and says whether every check
# passed (defaults: Pearson of the cell J-1 >= 0.9, mean differences <= 0.01, ...).

# %%
measured = {}
for name in models:
    result = validate_run(out / name / "run", out / "dvc", out / f"report_{name}",
                          figures=name == "model")
    metrics = json.loads((out / f"report_{name}" / "metrics.json").read_text())
    t1 = next(m for m in metrics["steps"] if m["output"] == "T1")
    e = t1["regions"]["electrode"]["volumetric"]
    measured[name] = {"passed": bool(result.passed), "cells": int(e["cells"]),
                      "pearson": e["pearson"], "sim_mean": e["sim_mean"],
                      "dvc_mean": e["dvc_mean"],
                      "failed": sorted({c["check"] for c in result.checks if not c["passed"]})}
    print(f"{name}: T1 over {e['cells']} cells, J-1 sim {e['sim_mean']:.4f} vs DVC "
          f"{e['dvc_mean']:.4f}, Pearson {e['pearson']:.3f}; "
          f"{'passed' if result.passed else 'failed: ' + ', '.join(measured[name]['failed'])}")
(out / "measured.json").write_text(json.dumps(measured, indent=2))

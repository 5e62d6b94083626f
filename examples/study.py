# %% [markdown]
# # A tiny design what-if study
#
# "What if the stack pressure were higher?" A study runs many twins (phantom -> mesh ->
# simulation) over design levers and ranks the designs by strain heterogeneity and stress.
# Each case is a Dask task that runs its simulation as an MPI job; every case lives in a
# folder named by the content hash of its inputs, so a study that is stopped and started
# again runs only what is missing.
#
# This example runs two cases, a 6 x 6 um electrode of 0.5 um voxels charged to 10% state
# of charge at a stack pressure of 0.2 and 2 MPa, on an in-process Dask cluster (the
# default is a LocalCluster of processes; `--scheduler tcp://host:8786` on the command line
# for a cluster). It checks what can be known beforehand:
#
# * Li: the mean Li content of the Si at the end of the charge is SoC / (N/P ratio), with
#   N/P the anode-to-cathode capacity ratio of the reference cell (2.73);
# * the stack spring carries exactly its preload (a constant pressure, k = 0);
# * the higher pressure compresses the electrode: less thickness growth.
#
# A second run of the same study finds both cases done and runs nothing.
#
#     python examples/study.py [--out DIR]
#
# The command-line equivalent is `anodetwin study study.toml --out DIR`; a full example
# study (18 twins, its results and written finding) is in `examples/size_porosity/`.

# %%
import argparse
import json
from pathlib import Path

from dask.distributed import Client, LocalCluster

from anodetwin.study import read_results, run_study, study_from_dict

parser = argparse.ArgumentParser(description="Run a two-case design study.")
parser.add_argument("--out", type=Path, default=Path("study_out"),
                    help="output folder (created; default ./study_out)")
out = parser.parse_known_args()[0].out

# %% [markdown]
# ## The study
#
# The same sections as a study file (`anodetwin study study.toml`): `[study]`,
# `[parameters]` (the levers and their levels), `[phantom]` (the base microstructure) and
# `[simulation]` (the base case).

# %%
study = study_from_dict({
    "study": {"name": "stack pressure", "design": "full-factorial", "seed": 3,
              "coarsen": 1, "charge_soc": 0.1, "rank_by": "volumetric_strain_p95"},
    "parameters": {"stack_pressure_mpa": [0.2, 2.0]},
    "phantom": {"geometry": {"voxel_size_um": 0.5, "lateral_um": 6.0,
                             "separator_thickness_um": 1.0, "cu_thickness_um": 1.0},
                "composition": {"thickness_um": 6.0},
                "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.8,
                              "max_diameter_um": 5.0}},
    "simulation": {"solver": {"plasticity": False, "compaction": False, "dtheta_max": 0.02},
                   "output": {"dvc_node_spacing_um": 0.0}},
})

# %% [markdown]
# ## Run it on Dask
#
# One worker thread: each case's simulation is a separate `mpiexec` process anyway.

# %%
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                  dashboard_address=":0") as cluster, Client(cluster) as client:
    result = run_study(study, out, client=client, progress=False)
    again = run_study(study, out, client=client, progress=False)
print(f"first run: {result.ran} cases ran; second run: {again.ran} ran, "
      f"{again.skipped} found done")

# %% [markdown]
# ## Results
#
# `results.csv` has one row per case (levers, every metric, status); `designs.csv` one per
# design point; `summary.html` ranks them with the main effects; `main_effects.png` plots
# each metric against each lever.

# %%
rows = read_results(out / "results.csv")
np_ratio = 3.0 * 0.89 * 3.579 / 3.5  # anode / cathode capacity of the reference cell
measured = {"ran": result.ran, "ran_again": again.ran, "skipped_again": again.skipped,
            "theta_by_hand": 0.1 / np_ratio, "cases": []}
for r in rows:
    case = {k: float(r[k]) for k in ("stack_pressure_mpa", "stack_pressure_end_mpa",
                                     "theta_mean", "thickness_growth",
                                     "volumetric_strain_p95", "max_principal_si_mpa")}
    case["status"] = r["status"]
    measured["cases"].append(case)
    print(f"p0 {case['stack_pressure_mpa']:.1f} MPa: {r['status']}, theta "
          f"{case['theta_mean']:.5f} (by hand {measured['theta_by_hand']:.5f}), pressure at "
          f"the end {case['stack_pressure_end_mpa']:.3f} MPa, thickness growth "
          f"{100 * case['thickness_growth']:.3f}%, p95 of J-1 "
          f"{case['volumetric_strain_p95']:.4f}")
(out / "measured.json").write_text(json.dumps(measured, indent=2))

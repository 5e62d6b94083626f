# %% [markdown]
# # DVC of an in situ series: cumulative fields and region statistics
#
# An in situ experiment scans the electrode at T0, T1, ..., Tn. `correlate_series`
# correlates each increment T(k) -> T(k+1), composes the increments into cumulative fields
# T0 -> Tk on the T0 grid, refines each by a direct T0 -> Tk correlation started from the
# composition, and computes strain statistics over the electrode and its collector- and
# separator-side halves (and cubes and particle-centred volumes of interest, as the
# reference experiment analysed its fields).
#
# The series here is a mechanical phantom (brightness conserved, see
# `examples/dvc_pair.py`) charged to 10% and 20% state of charge with Li entering from the
# separator side, so the separator half swells more than the collector half. The measured
# mean strains are compared, step by step, with the exact field put through the same
# operator.
#
#     python examples/dvc_series.py [--out DIR]
#
# The command-line equivalent is `anodetwin dvc-series T0.tif T1.tif T2.tif --out DIR
# --node-spacing 8 --hws 8 --search-range 6,2,2 --phases T0_phases.tif`.

# %%
import argparse
import json
import tomllib
from pathlib import Path

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from anodetwin.dvc import FLAG, cell_strain
from anodetwin.dvc.series import correlate_series
from anodetwin.phantom import config_from_dict, generate_series

parser = argparse.ArgumentParser(description="Correlate a phantom series; error vs truth.")
parser.add_argument("--out", type=Path, default=Path("dvc_series_out"),
                    help="output folder (created; default ./dvc_series_out)")
out = parser.parse_known_args()[0].out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The series T0, T1, T2

# %%
with open(Path(__file__).with_name("small_electrode.toml"), "rb") as fh:
    electrode = tomllib.load(fh)  # geometry, composition, particles
cfg = config_from_dict({
    **electrode,
    "series": {"soc": [0.0, 0.1, 0.2], "double_scan": False, "reaction_profile": "separator",
               "penetration_depth_um": 4.0},
    "render": {"grey_lithiated": 30000.0},
}, seed=3)
series = generate_series(cfg, out / "series.h5", progress=False).path
scans = [f"{series}:/steps/T{k}/tomogram" for k in range(3)]  # any readable volume path
with h5py.File(series, "r") as f:
    voxel_um = f.attrs["voxel_size_um"]
    phases = f["steps/T0/phases"][...]
    anode = json.loads(f.attrs["layers"])["anode"]
    truth = {k: f[f"steps/T{k}/displacement_um"][...] / voxel_um[:, None, None, None]
             for k in (1, 2)}

# %% [markdown]
# ## Correlate the series
#
# The phase volume of T0 locates the collector and separator interfaces for the region
# statistics; the cubes and particle volumes are switched off to keep this short.

# %%
hws = 8
correlate_series(scans, out / "dvc", node_spacing=8, hws=hws, search_range=(6, 2, 2),
                 processes=1, progress=False, quicklook=False,
                 regions={"phases": phases, "cube_um": None, "voi_um": None})
print("wrote", ", ".join(sorted(p.name for p in (out / "dvc").iterdir())))

# %% [markdown]
# ## Cumulative fields against the truth
#
# Each `cumulative_0_<k>.h5` holds the nodes (voxels), their flags and the cell strains by
# name (`strain/volumetric` is J - 1, `strain/ezz` ... the small-strain components). The
# truth is the exact displacement averaged over a window, through the same Q8 operator;
# cells count when their 8 nodes are kept (measured or repaired) with windows inside the
# coating.

# %%
measured = {"steps": {}}
for k in (1, 2):
    with h5py.File(out / "dvc" / f"cumulative_0_{k}.h5", "r") as f:
        nodes, flag = f["nodes"][...], f["flag"][...]
        grid = tuple(int(g) for g in f["grid_shape"][...])
        dvc = {name: f[f"strain/{name}"][...] for name in ("volumetric", "ezz", "exx")}
        spacing = json.loads(f.attrs["params"])["levels"][-1]["node_spacing"]  # voxels
    seen = [ndimage.uniform_filter(truth[k][c], 2 * hws + 1) for c in range(3)]
    u_true = np.stack([ndimage.map_coordinates(s, nodes.T, order=1) for s in seen], axis=1)
    exact = cell_strain(u_true.reshape(*grid, 3), spacing)
    good = ((nodes[:, 0] > anode[0] + hws) & (nodes[:, 0] < anode[1] - hws)
            & (flag != FLAG["excluded"])).reshape(grid)
    cells = sliding_window_view(good, (2, 2, 2)).all(axis=(-3, -2, -1))  # 8 corners good
    row = {}
    for name in ("volumetric", "ezz", "exx"):
        true_field = exact.volumetric if name == "volumetric" else exact.small[name]
        row[name] = {"dvc": float(np.mean(dvc[name][cells])),
                     "truth": float(np.mean(true_field[cells]))}
    measured["steps"][k] = {"cells": int(cells.sum()), **row}
    print(f"T0 -> T{k} over {cells.sum()} cells: " + ", ".join(
        f"{n} DVC {v['dvc']:+.4f} / truth {v['truth']:+.4f}" for n, v in row.items()))

# %% [markdown]
# ## Region statistics
#
# `regions.h5` holds, per step, region and measure, the statistics named in its
# `stat_columns` attribute (n, mean, std, percentiles, ...); `regions.csv` the same as a
# table.

# %%
with h5py.File(out / "dvc" / "regions.h5", "r") as f:
    names = [n.decode() for n in f["regions/name"][...]]
    columns = json.loads(f.attrs["stat_columns"])
    stats = f["stats/volumetric"][...]
    steps = [int(s) for s in f["steps"][...]]
mean = columns.index("mean")
halves = {}
for s, k in enumerate(steps):
    halves[k] = {region: float(stats[s, names.index(region), mean])
                 for region in ("electrode", "collector_half", "separator_half")}
    print(f"T{k}: mean J-1 " + ", ".join(f"{r} {v:.4f}" for r, v in halves[k].items()))
measured["regions"] = halves
(out / "measured.json").write_text(json.dumps(measured, indent=2))

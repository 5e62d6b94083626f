# %% [markdown]
# # Digital volume correlation of a pair, checked against the exact field
#
# Local DVC (spam) measures the displacement at the nodes of a regular grid by registering
# a window around each node of the reference scan onto the deformed scan; strain follows
# per cell of the node grid from the Q8 (trilinear) shape functions. Here both scans come
# from a phantom whose displacement is known at every voxel, so the error is measured, not
# guessed.
#
# The phantom is *mechanical*: lithiated Si keeps the grey value of Si, so the scans differ
# only by the motion (and noise) and brightness is conserved, as DVC assumes. A window sees
# the field averaged over itself, so the truth at a node is the exact displacement averaged
# over the node's window, and the true strain is that field put through the *same* Q8
# operator (`anodetwin.dvc.cell_strain`).
#
#     python examples/dvc_pair.py [--out DIR]
#
# The command-line equivalent is `anodetwin dvc T0.tif T1.tif --out pair.h5
# --node-spacing 8 --hws 8 --search-range 6,2,2`.

# %%
import argparse
import json
import tomllib
from pathlib import Path

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from anodetwin.dvc import FLAG, cell_strain, correlate_pair, write_pair
from anodetwin.phantom import config_from_dict, generate_series

parser = argparse.ArgumentParser(description="Correlate two phantom scans; error vs truth.")
parser.add_argument("--out", type=Path, default=Path("dvc_pair_out"),
                    help="output folder (created; default ./dvc_pair_out)")
out = parser.parse_known_args()[0].out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Two scans: pristine and at 15% state of charge
#
# A 10 x 10 um patch of a 10 um coating in 0.2 um voxels; the lithiated Si swells, the
# coating grows through its thickness (z) against the bonded collector.

# %%
with open(Path(__file__).with_name("small_electrode.toml"), "rb") as fh:
    electrode = tomllib.load(fh)  # geometry, composition, particles
cfg = config_from_dict({
    **electrode,
    "series": {"soc": [0.0, 0.15], "double_scan": False},
    "render": {"grey_lithiated": 30000.0},
}, seed=3)
series = generate_series(cfg, out / "series.h5", progress=False).path
with h5py.File(series, "r") as f:
    voxel_um = f.attrs["voxel_size_um"]
    ref = f["steps/T0/tomogram"][...].astype(np.float32)
    deformed = f["steps/T1/tomogram"][...].astype(np.float32)
    truth_voxels = f["steps/T1/displacement_um"][...] / voxel_um[:, None, None, None]
    anode = json.loads(f.attrs["layers"])["anode"]  # z range of the coating at T0 (voxels)

# %% [markdown]
# ## Correlate
#
# Nodes every 8 voxels (1.6 um), half-windows of 8 voxels, an integer search of +-6
# voxels along z and +-2 in-plane for nodes that moved beyond the window's margin. Nodes
# whose window leaves the volume are excluded (NaN), poorly correlating ones are repaired
# from their neighbours; `FLAG` names the codes. The global registration that gives the
# first guess may warn about its residual: the swelling is not affine, and the search
# range is the remedy it names.

# %%
hws = 8
pair = correlate_pair(ref, deformed, node_spacing=8, hws=hws, search_range=(6, 2, 2),
                      processes=1, progress=False, voxel_size_um=voxel_um)
write_pair(out / "pair.h5", pair, voxel_size_um=voxel_um)
counts = {name: int(np.sum(pair.flag == code)) for name, code in FLAG.items()}
print(f"{len(pair.nodes)} nodes on a {pair.grid_shape} grid: {counts}")

# %% [markdown]
# ## The truth a window can see
#
# The exact displacement (voxels), averaged over a (2 hws + 1)^3 window, sampled at the
# nodes; its strain through the same operator as the measurement.

# %%
seen = [ndimage.uniform_filter(truth_voxels[c], 2 * hws + 1) for c in range(3)]
u_true = np.stack([ndimage.map_coordinates(s, pair.nodes.T, order=1) for s in seen], axis=1)
strain_true = cell_strain(u_true.reshape(*pair.grid_shape, 3), pair.node_spacing)

# Nodes whose window lies inside the coating: windows across the foil or the separator
# interface see a kink in the field that no affine window follows.
z = pair.nodes[:, 0]
inside = (z > anode[0] + hws) & (z < anode[1] - hws) & (pair.flag == FLAG["measured"])
error = np.linalg.norm(pair.displacement - u_true, axis=1)[inside]
print(f"displacement error over {inside.sum()} interior nodes: median {np.median(error):.3f}, "
      f"95th percentile {np.percentile(error, 95):.3f} voxel")

# %% [markdown]
# ## Strain by component name
#
# Components are named by axis letters, never by index: `ezz` is through the thickness,
# `eyz` is entry (0, 1) (z with y). A cell counts when its 8 corner nodes are interior.

# %%
corner = inside.reshape(pair.grid_shape)
cells = sliding_window_view(corner, (2, 2, 2)).all(axis=(-3, -2, -1))


def component(strain, name: str) -> np.ndarray:
    """One measure by name: J - 1 (``volumetric``) or a small-strain component."""
    return strain.volumetric if name == "volumetric" else strain.small[name]


strain_error = {}
for name in ("volumetric", "ezz", "eyy", "exx", "eyz", "exz", "exy"):
    measured_mean = float(np.mean(component(pair.strain, name)[cells]))
    true_mean = float(np.mean(component(strain_true, name)[cells]))
    strain_error[name] = {"dvc": measured_mean, "truth": true_mean,
                          "error": measured_mean - true_mean}
    print(f"{name:10s} mean over {cells.sum()} cells: DVC {measured_mean:+.4f}, "
          f"truth {true_mean:+.4f}")

measured = {"nodes": counts, "interior_nodes": int(inside.sum()), "interior_cells":
            int(cells.sum()), "displacement_error_median_voxel": float(np.median(error)),
            "displacement_error_p95_voxel": float(np.percentile(error, 95)),
            "strain": strain_error}
(out / "measured.json").write_text(json.dumps(measured, indent=2))

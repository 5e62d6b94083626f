# %% [markdown]
# # A digital electrode phantom: an in situ series with exact ground truth
#
# Real in situ nano-CT series are far too large for a test or a tutorial, so anodetwin
# builds its own: a Si-rich anode on copper foil under a porous separator, made from its
# recipe (89 wt% Si, PAA binder, carbon black, SWCNT), lithiated step by step, swollen,
# and rendered as phase-contrast-like 16-bit tomograms with blur and noise. Every truth is
# stored beside the scans: phases, particle ids, the displacement at every voxel, its
# strain, the Li content of every particle.
#
# This example builds a 10 x 10 um patch of a 10 um thick coating (0.2 um voxels) charged
# to 50% and 85% state of charge, and checks the phantom against numbers worked out by
# hand from the recipe:
#
# * the Si volume fraction of the coating: loading x Si mass fraction / Si density /
#   thickness;
# * the mean Li content of the Si, theta = SoC x cathode capacity / Si capacity of the
#   anode (the cell is cathode-limited);
# * the noise of the double scan: (grey_si - grey_cbd) / SNR.
#
#     python examples/phantom.py [--out DIR]
#
# The command-line equivalent is `anodetwin phantom OUT --config phantom.toml --tiff`.

# %%
import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from anodetwin.io import read_volume
from anodetwin.phantom import PHASE, config_from_dict, generate_series

parser = argparse.ArgumentParser(description="Generate a small phantom series.")
parser.add_argument("--out", type=Path, default=Path("phantom_out"),
                    help="output folder (created; default ./phantom_out)")
out = parser.parse_known_args()[0].out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The configuration
#
# Every key is optional (`validation/phantom/reference.toml` lists the defaults, the
# reference electrode: 21 um, 3 mg/cm2). Here the coating is thinner, so the areal loading
# is scaled with it (same porosity), and the particles are smaller to fit the patch.

# %%
loading_mg_cm2 = 3.0 * 10.0 / 21.0
config = {
    "geometry": {"voxel_size_um": 0.2, "lateral_um": 10.0, "cu_thickness_um": 1.0,
                 "separator_thickness_um": 2.0},
    "composition": {"thickness_um": 10.0, "areal_loading_mg_cm2": loading_mg_cm2},
    "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.5, "max_diameter_um": 5.0},
    "series": {"soc": [0.0, 0.5, 0.85]},
}
cfg = config_from_dict(config, seed=4)

# %% [markdown]
# ## Generate the series
#
# One HDF5 file holds everything (layout in the README, "electrode phantoms");
# `tiff_dir` also writes each step's tomogram as a TIFF with its voxel size, as a
# beamline would deliver them.

# %%
res = generate_series(cfg, out / "series.h5", tiff_dir=str(out / "tiff"), progress=False)
print(f"{res.path.name}: {res.n_steps} steps of {res.shape} voxels "
      f"({res.voxel_size_um} um), {res.n_particles} particles")
t2 = read_volume(out / "tiff" / "T2.tif", progress=False)
print(f"T2.tif: {t2.shape} {t2.dtype}, voxel size {tuple(t2.voxel_size_um)} um")

with h5py.File(res.path, "r") as f:
    layers = json.loads(f.attrs["layers"])
    anode = f["steps/T0/phases"][slice(*layers["anode"])]
    table = f["particles"][...]
    soc = [float(f[f"steps/T{k}"].attrs["soc"]) for k in range(res.n_steps)]
    theta = [float(np.average(f[f"steps/T{k}/theta"][...], weights=table["volume_um3"]))
             for k in range(res.n_steps)]
    thickness = [float(t) for t in f["protocol"]["thickness_um"]]
    volumetric_t2 = f["steps/T2/strain/volumetric"][slice(*layers["anode"])]
    scan_a = f[f"steps/T{res.n_steps - 1}/tomogram"][...].astype(np.float64)
    scan_b = f["double_scan/tomogram_b"][...].astype(np.float64)
    noise_sigma = float(f.attrs["noise_sigma"])

# %% [markdown]
# ## The truth against the recipe, by hand
#
# Si volume per area = loading x 0.89 / 2.33 g/cm3; divided by the thickness it is the Si
# fraction of the coating. The anode's Si capacity is loading x 0.89 x 3579 mAh/g against
# a 3.5 mAh/cm2 cathode. A double scan differs only by noise, so the standard deviation of
# the difference is sqrt(2) times the noise of one scan.

# %%
si_fraction_expected = loading_mg_cm2 * 1e-3 * 0.89 / 2.33 / 10.0e-4
si_fraction = float(np.mean(anode == PHASE["si"]))
anode_capacity = loading_mg_cm2 * 0.89 * 3.579  # mAh/cm2
theta_expected = [s * 3.5 / anode_capacity for s in soc]
noise_expected = (30000.0 - 15000.0) / 8.0  # (grey_si - grey_cbd) / snr, the defaults
noise = float(np.std(scan_b - scan_a) / np.sqrt(2))

print(f"Si fraction of the coating: {si_fraction:.3f} (recipe {si_fraction_expected:.3f})")
for k in range(res.n_steps):
    print(f"T{k}: SoC {soc[k]:.2f}, theta {theta[k]:.4f} (by hand {theta_expected[k]:.4f}), "
          f"thickness {thickness[k]:.2f} um")
print(f"T2 mean volumetric strain of the coating {np.mean(volumetric_t2):.3f}")
print(f"double-scan noise {noise:.0f} grey levels (rendered {noise_sigma:.0f}, "
      f"by hand {noise_expected:.0f})")

measured = {"si_fraction": si_fraction, "si_fraction_expected": si_fraction_expected,
            "theta": theta, "theta_expected": theta_expected, "thickness_um": thickness,
            "noise": noise, "noise_expected": noise_expected,
            "volumetric_strain_t2": float(np.mean(volumetric_t2))}
(out / "measured.json").write_text(json.dumps(measured, indent=2))

# %% [markdown]
# # Reading and converting a tomogram written by another program
#
# Reconstructions reach anodetwin from Fiji/ImageJ, vendor software or a beamline's
# pipeline, each with its own way of recording the voxel size. This example plays the
# other program: it writes a small 16-bit ImageJ hyperstack with **anisotropic** voxels
# (1.0 um slices, 0.5 um pixels, as after binning z on a lab CT) using `tifffile`, then
#
# 1. opens it without reading voxels and reads the calibration anodetwin found,
# 2. computes exact grey-value statistics,
# 3. converts a region, binned 2x, to HDF5 and Zarr, streamed slab by slab,
# 4. checks the converted volumes against an in-memory crop-and-bin, voxel for voxel.
#
# Run it as
#
#     python examples/read_convert.py [--out DIR]
#
# The command-line equivalents are `anodetwin inspect scan.tif` and
# `anodetwin convert scan.tif scan_roi_bin2.h5:/volume --roi 4:44,:,: --bin 2`.
# Arrays are (z, y, x); lengths are micrometres.

# %%
import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

from anodetwin.io import bin_volume, grey_value_stats, open_volume, read_volume, write_volume

parser = argparse.ArgumentParser(description="Read an ImageJ TIFF, inspect and convert it.")
parser.add_argument("--out", type=Path, default=Path("read_convert_out"),
                    help="output folder (created; default ./read_convert_out)")
out = parser.parse_known_args()[0].out
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A scan as another program writes it
#
# A few bright spheres (particles) in a darker matrix, with noise, as `uint16`.
# ImageJ stores the pixel size as X/YResolution (pixels per unit), the slice spacing as
# `spacing` and the unit as `unit` in its description tag.

# %%
rng = np.random.default_rng(7)
shape = (48, 64, 64)  # z, y, x
voxel_um = (1.0, 0.5, 0.5)  # z, y, x
z, y, x = np.indices(shape)
pos_um = (z * voxel_um[0], y * voxel_um[1], x * voxel_um[2])
grey = np.full(shape, 12000.0)
for _ in range(12):
    c = rng.uniform((4, 4, 4), (44, 28, 28))
    r = rng.uniform(2.0, 5.0)
    inside = sum((p - ci) ** 2 for p, ci in zip(pos_um, c, strict=True)) <= r**2
    grey[inside] = 30000.0
data = (grey + rng.normal(0, 1500, shape)).clip(0, 65535).astype(np.uint16)

tif = out / "scan.tif"
tifffile.imwrite(tif, data, imagej=True,
                 resolution=(1 / voxel_um[2], 1 / voxel_um[1]),  # pixels per um (x, y)
                 metadata={"spacing": voxel_um[0], "unit": "um", "axes": "ZYX"})

# %% [markdown]
# ## Inspect: header first, then statistics
#
# `open_volume` reads only the header; `voxel_size` is per axis (z, y, x) in um, taken from
# the ImageJ tags. `grey_value_stats` is exact (streamed moments, exact percentiles).

# %%
with open_volume(tif) as src:
    print(f"{tif.name}: shape {src.shape}, dtype {src.dtype}, voxel size {src.voxel_size_um} um")
    found_voxel = tuple(float(v) for v in src.voxel_size_um)
    stats = grey_value_stats(src.lazy(progress=False))
print("grey values: " + ", ".join(f"{k} {stats[k]:.1f}" for k in ("min", "mean", "std", "max")))
mean_error = abs(stats["mean"] - data.mean())

# %% [markdown]
# ## Convert a region, binned 2x
#
# `roi` is in voxels of the stored volume, end exclusive. Binning is a mean over 2x2x2
# blocks; the voxel size doubles and the origin (centre of the first voxel) moves with the
# region. The lazy source streams slab by slab, so this works the same on a 16 GiB scan.

# %%
roi = "4:44,:,:"
targets = {"hdf5": out / "scan_roi_bin2.h5:/volume", "zarr": out / "scan_roi_bin2.zarr"}
with open_volume(tif) as src:
    for fmt, target in targets.items():
        write_volume(target, src.lazy(roi=roi, binning=2, progress=False), fmt=fmt)

expected = bin_volume(data[4:44], 2)
largest_difference = {}
for fmt, target in targets.items():
    vol = read_volume(target, progress=False)
    largest_difference[fmt] = int(np.abs(vol.data.astype(np.int64) - expected).max())
    print(f"{fmt:5s} {vol.shape} voxel {tuple(vol.voxel_size_um)} um, origin "
          f"{tuple(round(float(o), 3) for o in vol.origin)} um, "
          f"largest difference to the in-memory crop + bin: {largest_difference[fmt]}")
    converted_voxel = tuple(float(v) for v in vol.voxel_size_um)
    converted_origin = tuple(float(o) for o in vol.origin)

# %% [markdown]
# ## Numbers
#
# The voxel size read back equals the one written; the converted volumes equal the
# in-memory crop and bin exactly; the binned voxel is twice the original and the first
# binned voxel is centred between original voxels 4 and 5 along z (4.5 um).

# %%
measured = {"voxel_size_written_um": list(voxel_um), "voxel_size_read_um": list(found_voxel),
            "mean_error": float(mean_error), "largest_difference": largest_difference,
            "converted_voxel_size_um": list(converted_voxel),
            "converted_origin_um": list(converted_origin)}
(out / "measured.json").write_text(json.dumps(measured, indent=2))
print(json.dumps(measured))

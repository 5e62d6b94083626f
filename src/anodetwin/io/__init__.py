"""Tomogram and result I/O: 3D volumes with voxel size, lazy ROI/binning, atomic writes.

Quick use::

    from anodetwin.io import read_volume, write_volume, open_volume

    vol = read_volume("scan_T0.tif", roi="0:512,:,:", binning=2)   # Volume (z, y, x)
    vol.data, vol.voxel_size_um, vol.origin                            # array, um, um
    write_volume("scan_T0_bin2.h5:/volume", vol)                    # atomic, with provenance

    with open_volume("huge.h5:/recon") as src:                      # nothing read yet
        write_volume("crop.zarr", src.lazy(roi="100:900,:,:"))      # streamed slab by slab
"""

from anodetwin.io.agree import Grid, grid_of, require_same_grid, require_series_grid
from anodetwin.io.atomic import atomic_path, atomic_write_json, atomic_write_text, check_output_path
from anodetwin.io.formats import (
    FORMATS,
    VolumeSource,
    detect_format,
    open_volume,
    read_volume,
    write_volume,
)
from anodetwin.io.provenance import content_hash, input_record, make_provenance
from anodetwin.io.tomlfile import read_toml
from anodetwin.io.volume import (
    LazyVolume,
    SlabVolume,
    Volume,
    bin_volume,
    grey_value_stats,
    normalise_binning,
    normalise_roi,
    normalise_voxel_size,
    parse_roi,
    require_3d,
    require_finite,
    require_same_shape,
)

__all__ = [
    "Grid",
    "grid_of",
    "require_same_grid",
    "require_series_grid",
    "read_toml",
    "FORMATS",
    "LazyVolume",
    "SlabVolume",
    "Volume",
    "VolumeSource",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_path",
    "bin_volume",
    "grey_value_stats",
    "content_hash",
    "detect_format",
    "input_record",
    "make_provenance",
    "normalise_binning",
    "normalise_roi",
    "normalise_voxel_size",
    "open_volume",
    "parse_roi",
    "read_volume",
    "require_3d",
    "require_finite",
    "require_same_shape",
    "write_volume",
]

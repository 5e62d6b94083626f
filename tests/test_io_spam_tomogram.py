"""I/O round trips on a real X-ray tomogram: spam's snow scan (100^3 voxels, uint16).

The file records no voxel size, so every geometry here is in voxels of the source. Checks:
every writable format gives the volume back voxel for voxel with its dtype, voxel size and
provenance; files without embedded metadata (npy, raw) are byte-identical when written again;
no temporary files are left behind; a lazily read region with 2x binning equals the same
crop binned in memory, at the origin the region implies; grey-value statistics of the lazy
volume agree with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from anodetwin.demo import spam_tomogram_path
from anodetwin.io import (bin_volume, content_hash, grey_value_stats, input_record,
                          make_provenance, open_volume, read_volume, write_volume)

FORMATS = {
    "tiff": "snow.tif",
    "hdf5": "snow.h5:/volume",
    "zarr": "snow.zarr",
    "npy": "snow.npy",
    "raw": "snow.raw",
    "tiff-dir": "snow_slices/",
}
ROI = "10:90,10:90,10:90"
CROP = slice(10, 90)


def _temporaries(folder):
    """Leftovers of atomic writes: hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings, or any
    ``*.tmp*`` name."""
    return sorted(p for p in folder.rglob("*")
                  if ".tmp" in p.name or (p.name.startswith(".") and ".old-" in p.name))


@pytest.fixture(scope="module")
def snow():
    path = spam_tomogram_path("snow")  # spam is a required dependency: no skip
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def source(snow):
    vol = read_volume(snow)
    assert vol.shape == (100, 100, 100)
    assert vol.dtype == np.uint16
    assert vol.voxel_size_um is None
    return vol


@pytest.fixture(scope="module")
def snow_record(snow):
    rec = input_record(snow)
    assert rec["hash"] == content_hash(snow)
    return rec


@pytest.fixture(scope="module")
def written(tmp_path_factory, source, snow_record):
    """The snow tomogram written once in every format: kind -> (target, path, provenance)."""
    folder = tmp_path_factory.mktemp("volumes")
    out = {}
    for kind, name in FORMATS.items():
        target = str(folder / name)
        prov = make_provenance("test_io_spam_tomogram", [snow_record], {"format": kind})
        path = write_volume(target, source, provenance=prov, fmt=kind)
        out[kind] = (target, path, prov)
    return folder, out


@pytest.mark.parametrize("kind", list(FORMATS))
def test_roundtrip_exact_with_provenance(kind, written, source, snow_record):
    folder, files = written
    target, path, prov = files[kind]
    assert path.exists()
    back = read_volume(target)
    assert back.shape == source.shape
    assert back.dtype == source.dtype
    assert np.array_equal(back.data, source.data)
    assert back.voxel_size_um is None and source.voxel_size_um is None
    assert back.origin == source.origin == (0.0, 0.0, 0.0)
    # every writable format carries the provenance record (embedded or in a JSON sidecar)
    got = back.attrs["provenance"]
    assert got["command"] == "test_io_spam_tomogram"
    assert got["parameters"] == {"format": kind}
    assert got["inputs"] == [snow_record]
    assert got["inputs"][0]["hash"] == content_hash(spam_tomogram_path("snow"))
    assert got == prov
    assert not _temporaries(folder)


@pytest.mark.parametrize("kind", ["npy", "raw"])
def test_second_write_is_byte_identical(kind, tmp_path, source, snow_record):
    target = str(tmp_path / FORMATS[kind])
    hashes = []
    for run in (1, 2):
        prov = make_provenance("test_io_spam_tomogram", [snow_record],
                               {"format": kind, "run": run})
        path = write_volume(target, source, provenance=prov, fmt=kind)
        hashes.append(content_hash(path))
        back = read_volume(target)
        assert np.array_equal(back.data, source.data)
        assert back.attrs["provenance"]["parameters"]["run"] == run  # the sidecar is new
    assert hashes[0] == hashes[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [FORMATS[kind], FORMATS[kind] + ".json"])
    assert not _temporaries(tmp_path)


def test_lazy_roi_binned_to_hdf5(written, source, tmp_path):
    _, files = written
    h5 = files["hdf5"][1]
    roi_path = tmp_path / "snow_roi_bin2.h5"
    with open_volume(h5) as src:
        lazy = src.lazy(ROI, 2)
        assert lazy.shape == (40, 40, 40)
        prov = make_provenance("test_io_spam_tomogram", [input_record(src.path, src.dataset)],
                               {"roi": ROI, "binning": 2})
        write_volume(roi_path, lazy, provenance=prov)
    binned = read_volume(roi_path)
    expected = bin_volume(source.data[CROP, CROP, CROP], 2)
    assert expected.shape == (40, 40, 40)
    assert binned.shape == (40, 40, 40)
    assert binned.dtype == np.uint16
    assert np.array_equal(binned.data, expected)
    assert binned.voxel_size_um is None
    # origin = centre of the first bin: the mean of the centres of source voxels 10 and 11
    # on each axis, in voxels of the source (no voxel size known, source origin 0)
    first_bin = (10 + 11) / 2
    assert binned.origin == (first_bin, first_bin, first_bin) == (10.5, 10.5, 10.5)
    got = binned.attrs["provenance"]
    assert got["parameters"] == {"roi": ROI, "binning": 2}
    assert got["inputs"][0]["dataset"] == "/volume"
    assert got["inputs"][0]["hash"] == content_hash(h5)
    assert not _temporaries(tmp_path)


@pytest.mark.parametrize("which", ["spam-tiff", "hdf5"])
def test_grey_value_stats_of_lazy_volume(which, snow, written, source):
    path = snow if which == "spam-tiff" else written[1]["hdf5"][1]
    with open_volume(path) as src:
        stats = grey_value_stats(src.lazy())
    d = source.data
    assert stats["voxels"] == d.size
    assert stats["nonfinite"] == 0
    assert stats["min"] == int(d.min())
    assert stats["max"] == int(d.max())
    assert stats["mean"] == pytest.approx(float(np.mean(d, dtype=np.float64)), rel=1e-9)
    assert stats["std"] == pytest.approx(float(np.std(d, dtype=np.float64)), rel=1e-9)
    # percentiles are documented as numpy's inverted-CDF percentiles
    for q in (1, 50, 99):
        assert stats[f"p{q}"] == np.percentile(d, q, method="inverted_cdf"), q
    # the median: numpy's (mean of the two middle values) when those agree, as they do here
    ordered = np.sort(d, axis=None)
    mid = ordered[d.size // 2 - 1: d.size // 2 + 1]
    assert mid[0] == mid[1]
    assert stats["p50"] == np.median(d)

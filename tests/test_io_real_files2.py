"""Files written by other software, second round: mixed slice dtypes, byte order in a
sidecar dtype, Zarr chunks that are not there, origins without voxel size, named and
permuted axes, exact grey-value statistics, 64-bit binning, volumetric TIFF tiles, voxel-size
metadata that is present but unusable, OME-TIFF calibration, and smaller cases.

Every expected value comes from the array or calibration written here with
numpy/tifffile/h5py/zarr, never from the code under test.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from anodetwin.errors import (
    CorruptFileError,
    DimensionError,
    MissingDataError,
    ParameterError,
    SidecarError,
)
from anodetwin.io import (
    Volume,
    bin_volume,
    grey_value_stats,
    normalise_voxel_size,
    open_volume,
    read_volume,
    write_volume,
)
from conftest import listing, one_line_error, swap_sensitive_values


def _values(shape, dtype, seed=11):
    return swap_sensitive_values(shape, dtype, seed)


class _Warnings:
    """Collect the warnings of the 'anodetwin' logger (the CLI may stop propagation)."""

    def __init__(self, caplog):
        self.caplog = caplog

    def __enter__(self):
        self.caplog.set_level(logging.WARNING)
        self.lg = logging.getLogger("anodetwin")
        self.lg.addHandler(self.caplog.handler)
        self.caplog.clear()
        return self

    def __exit__(self, *exc):
        self.lg.removeHandler(self.caplog.handler)

    @property
    def messages(self):
        return [r.getMessage() for r in self.caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------------
# 1. a slice folder with slices of another dtype is refused, never cast


@pytest.mark.parametrize("first, odd, odd_values", [
    ("uint16", "float32", [70000.7, -5.0]),
    ("int16", "uint16", [60000, 40000]),
])
def test_slice_folder_mixed_dtypes(tmp_path, cli, first, odd, odd_values):
    d = tmp_path / "mixed"
    d.mkdir()
    a = _values((4, 6, 7), first)
    names = [f"recon_{k:04d}.tif" for k in range(4)]
    for k, name in enumerate(names):
        plane = a[k]
        if k == 2:
            plane = np.full(a.shape[1:], odd_values[0], dtype=odd)
            plane[0, 0] = odd_values[1]
        tifffile.imwrite(d / name, plane)
    with pytest.raises(CorruptFileError) as info:
        read_volume(d)
    msg = str(info.value)
    assert "recon_0002.tif" in msg and odd in msg and first in msg
    before = listing(tmp_path)
    one_line_error(cli("convert", d, tmp_path / "out.npy"), "recon_0002.tif", odd, first)
    assert listing(tmp_path) == before
    # the slices before the odd one are still read right
    np.testing.assert_array_equal(read_volume(d, roi="0:2,:,:").data, a[:2])


# --------------------------------------------------------------------------------------------
# 2. the byte order in a raw sidecar's dtype string


@pytest.mark.parametrize("dtype", [">u2", ">f4", "<i4", ">i8"])
def test_raw_sidecar_dtype_byte_order(tmp_path, dtype):
    a = _values((3, 4, 5), np.dtype(dtype).newbyteorder("="))
    p = tmp_path / "v.raw"
    a.astype(dtype).tofile(p)
    (tmp_path / "v.raw.json").write_text(json.dumps({"shape": [3, 4, 5], "dtype": dtype}))
    vol = read_volume(p)
    assert vol.dtype.isnative
    np.testing.assert_array_equal(vol.data, a)
    agree = "big" if dtype[0] == ">" else "little"
    (tmp_path / "v.raw.json").write_text(json.dumps(
        {"shape": [3, 4, 5], "dtype": dtype, "byte_order": agree}))
    np.testing.assert_array_equal(read_volume(p).data, a)


def test_raw_sidecar_byte_order_disagrees(tmp_path, cli):
    p = tmp_path / "v.raw"
    np.arange(60, dtype=">u2").tofile(p)
    (tmp_path / "v.raw.json").write_text(json.dumps(
        {"shape": [3, 4, 5], "dtype": ">u2", "byte_order": "little"}))
    with pytest.raises(SidecarError) as info:
        read_volume(p)
    assert ">u2" in str(info.value) and "little" in str(info.value)
    one_line_error(cli("inspect", p), ">u2", "little")


# --------------------------------------------------------------------------------------------
# 3. Zarr chunks that are not there


def _chunk_files(store):
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name not in
                  ("zarr.json", ".zarray", ".zattrs", ".zgroup"))


def test_anodetwin_zarr_writes_every_chunk_and_refuses_a_missing_one(tmp_path, cli):
    a = np.zeros((8, 16, 16), np.uint16)
    a[4:] = 7  # the first half is all fill value: zarr would not store it by default
    store = tmp_path / "v.zarr"
    write_volume(store, a, voxel_size=0.5)
    meta = json.loads((store / "zarr.json").read_text())
    assert meta["attributes"]["all_chunks_written"] is True
    arr = zarr.open_array(str(store), mode="r")
    grid = [-(-n // c) for n, c in zip(a.shape, arr.chunks, strict=True)]
    assert len(_chunk_files(store)) == int(np.prod(grid))
    np.testing.assert_array_equal(read_volume(store).data, a)
    _chunk_files(store)[0].unlink()
    with pytest.raises(MissingDataError) as info:
        read_volume(store)
    assert "c/0/0/0" in str(info.value) and "z 0:" in str(info.value)
    one_line_error(cli("inspect", store, "--no-stats"), "c/0/0/0")


def _foreign_zarr(tmp, kind, a):
    p = tmp / f"{kind}.zarr"
    if kind == "v3":
        z = zarr.create_array(store=str(p), shape=a.shape, dtype=a.dtype, chunks=(2, 4, 4))
    else:
        sep = "/" if kind == "v2-nested" else "."
        z = zarr.create_array(store=str(p), shape=a.shape, dtype=a.dtype, chunks=(2, 4, 4),
                              zarr_format=2, chunk_key_encoding={"name": "v2", "separator": sep})
    z[:] = a
    key = z.metadata.encode_chunk_key((2, 1, 0))  # z 4:6
    (p / key).unlink()
    return p


@pytest.mark.parametrize("kind", ["v2-flat", "v2-nested", "v3"])
def test_foreign_zarr_missing_chunk_is_reported(tmp_path, cli, caplog, kind):
    a = _values((8, 8, 8), "uint16") + 1  # no chunk is all fill value
    store = _foreign_zarr(tmp_path, kind, a)
    with _Warnings(caplog) as w:
        vol = read_volume(store)
    expected = a.copy()
    expected[4:6, 4:8, 0:4] = 0
    np.testing.assert_array_equal(vol.data, expected)  # what zarr gives, but not silently
    assert "1 of 16" in vol.attrs["missing_chunks_note"]
    assert any("1 of 16" in m and "z 4:6" in m and "fill value" in m for m in w.messages)
    with _Warnings(caplog) as w:
        vol = read_volume(store, roi="0:4,:,:")  # the region read has every chunk
    assert "missing_chunks_note" not in vol.attrs and not w.messages
    res = cli("inspect", store, "--no-stats")
    assert res.code == 0 and "1 of 16" in res.out and "z 4:6" in res.out
    res = cli("inspect", store, "--no-stats", "--json")
    assert "z 4:6" in json.loads(res.out)["missing_chunks_note"]


def test_missing_chunks_note_survives_convert(tmp_path, cli):
    store = _foreign_zarr(tmp_path, "v3", _values((8, 8, 8), "uint16") + 1)
    assert cli("convert", store, f"{tmp_path}/o.h5:/v").code == 0
    with open_volume(f"{tmp_path}/o.h5:/v") as src:
        assert "1 of 16" in src.attrs["missing_chunks_note"]
    res = cli("inspect", f"{tmp_path}/o.h5:/v", "--no-stats")
    assert "1 of 16" in res.out


# --------------------------------------------------------------------------------------------
# 4. an origin without voxel size is in voxels, never labelled um


def test_origin_without_voxel_size_is_voxels(tmp_path, cli):
    np.save(tmp_path / "n.npy", np.zeros((10, 10, 10), "u2"))
    res = cli("convert", tmp_path / "n.npy", f"{tmp_path}/o.h5:/v", "--roi", "4:8,2:10,:")
    assert res.code == 0, res.err
    with h5py.File(tmp_path / "o.h5") as f:
        assert "origin_um" not in f["v"].attrs
        np.testing.assert_array_equal(f["v"].attrs["origin_voxels"], [4, 2, 0])
    truth = read_volume(tmp_path / "n.npy", roi="4:8,2:10,:", voxel_size=0.5).origin
    assert truth == pytest.approx((2.0, 1.0, 0.0))
    assert read_volume(f"{tmp_path}/o.h5:/v", voxel_size=0.5).origin == pytest.approx(truth)
    res = cli("inspect", f"{tmp_path}/o.h5:/v", "--voxel-size", "0.5", "--no-stats")
    assert res.code == 0 and "(2, 1, 0) um" in res.out, res.out
    res = cli("inspect", f"{tmp_path}/o.h5:/v", "--no-stats", "--json")
    rep = json.loads(res.out)
    assert rep["origin_um"] is None and rep["origin_voxels"] == [4, 2, 0]
    with open_volume(f"{tmp_path}/o.h5:/v") as src:  # as noise-floor sets an agreed size
        src.voxel_size_um = (0.5, 0.5, 0.5)
        assert src.origin == pytest.approx(truth)
    # a voxel size given when writing converts the voxel origin too
    write_volume(tmp_path / "w.h5", Volume(np.zeros((2, 2, 2), "u1"), origin=(4, 2, 0)),
                 voxel_size=0.5)
    assert read_volume(tmp_path / "w.h5").origin == pytest.approx((2.0, 1.0, 0.0))


def test_origin_of_older_anodetwin_file_is_voxels(tmp_path):
    """Files written before origin_voxels stored the voxel origin as origin_um."""
    p = tmp_path / "old.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("volume", data=np.zeros((4, 8, 10), "u2"))
        d.attrs["axes"] = "zyx"
        d.attrs["origin_um"] = [4.0, 2.0, 0.0]
        d.attrs["provenance"] = json.dumps({"tool": "anodetwin", "version": "0.1.0"})
    assert read_volume(p, voxel_size=0.5).origin == pytest.approx((2.0, 1.0, 0.0))


@pytest.mark.parametrize("target", ["o.tif", "o.zarr", "o.npy", "o.raw"])
def test_origin_voxels_in_every_writer(tmp_path, target):
    vol = read_volume(_saved(tmp_path), roi="4:8,2:10,:")
    write_volume(tmp_path / target, vol)
    assert read_volume(tmp_path / target, voxel_size=0.25).origin == pytest.approx((1, .5, 0))


def _saved(tmp):
    np.save(tmp / "n.npy", np.zeros((10, 10, 10), "u2"))
    return tmp / "n.npy"


# --------------------------------------------------------------------------------------------
# 5. axis names: permutations and singleton axes


def test_zarr_v3_dimension_names_permuted(tmp_path):
    a = _values((4, 6, 8), "int16")
    p = tmp_path / "xyz.zarr"
    z = zarr.create_array(store=str(p), shape=a.T.shape, dtype=a.dtype, chunks=(3, 3, 2),
                          dimension_names=["x", "y", "z"])
    z[:] = a.T
    z.attrs["voxel_size_um"] = [0.25, 0.5, 2.0]  # stored axis order: x, y, z
    with open_volume(p) as src:
        assert src.shape == a.shape
        assert src.voxel_size_um == pytest.approx((2.0, 0.5, 0.25))
        np.testing.assert_array_equal(src.read().data, a)
        np.testing.assert_array_equal(src.read(roi="1:3,2:5,1:7").data, a[1:3, 2:5, 1:7])
        out = np.empty((2, 6, 8), a.dtype)
        np.testing.assert_array_equal(src.read_block(slice(1, 3), slice(0, 6), slice(0, 8),
                                                     out=out), a[1:3])


def test_ome_zarr_axes_xyz_scale(tmp_path):
    a = _values((4, 6, 8), "uint16")
    root = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    root.create_array("0", shape=a.T.shape, dtype=a.dtype, chunks=(4, 4, 4))[:] = a.T
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "xyz"], "datasets": [
        {"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [0.25, 0.5, 2.0]},
            {"type": "translation", "translation": [1.0, 2.0, 3.0]}]}]}]
    with open_volume(tmp_path / "ome.zarr") as src:
        assert src.voxel_size_um == pytest.approx((2.0, 0.5, 0.25))
        assert src.origin == pytest.approx((3.0, 2.0, 1.0))
        np.testing.assert_array_equal(src.read().data, a)


def test_ome_zarr_tczyx_singletons_squeezed(tmp_path):
    a = _values((4, 6, 8), "float32")
    root = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    root.create_array("0", shape=(1, 1) + a.shape, dtype=a.dtype,
                      chunks=(1, 1, 2, 3, 4))[:] = a[None, None]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, 300.0, 200.0, 100.0]}]}]}]
    with open_volume(tmp_path / "ome.zarr") as src:
        assert src.shape == a.shape
        assert src.voxel_size_um == pytest.approx((0.3, 0.2, 0.1))
        np.testing.assert_array_equal(src.read(roi="1:3,:,2:8").data, a[1:3, :, 2:8])


def test_hdf5_dimension_labels_permuted(tmp_path):
    a = _values((4, 6, 8), "float64")
    p = tmp_path / "l.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("vol", data=np.ascontiguousarray(a.transpose(2, 0, 1)))  # x, z, y
        for i, name in enumerate("xzy"):
            d.dims[i].label = name
        d.attrs["voxel_size"] = [0.1, 0.3, 0.2]  # x, z, y
        d.attrs["units"] = "um"
    with open_volume(f"{p}:/vol") as src:
        assert src.shape == a.shape
        assert src.voxel_size_um == pytest.approx((0.3, 0.2, 0.1))
        np.testing.assert_array_equal(src.read().data, a)
        np.testing.assert_array_equal(src.read(roi="1:4,2:6,3:8", binning=1).data,
                                      a[1:4, 2:6, 3:8])


def test_nexus_axes_permuted(tmp_path):
    a = _values((4, 6, 8), "uint16")
    p = tmp_path / "nx.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("entry/data")
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = "data"
        g.attrs["axes"] = ["y", "z", "x"]
        g["data"] = np.ascontiguousarray(a.transpose(1, 0, 2))
    np.testing.assert_array_equal(read_volume(f"{p}:/entry/data/data").data, a)


def test_hdf5_singleton_leading_axis(tmp_path):
    a = _values((4, 6, 8), "int16")
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f["vol"] = a[None]
        f["many"] = np.stack([a, a])
    np.testing.assert_array_equal(read_volume(f"{p}:/vol").data, a)
    np.testing.assert_array_equal(read_volume(f"{p}:/vol", roi="1:3,:,4:").data, a[1:3, :, 4:])
    with pytest.raises(DimensionError, match="2 volumes"):
        read_volume(f"{p}:/many")


def test_unknown_axis_names_keep_stored_order_and_say_so(tmp_path, cli):
    a = _values((4, 6, 8), "uint8")
    p = tmp_path / "u.zarr"
    z = zarr.create_array(store=str(p), shape=a.shape, dtype=a.dtype, chunks=(4, 6, 8),
                          dimension_names=["depth", "row", "col"])
    z[:] = a
    with open_volume(p) as src:
        np.testing.assert_array_equal(src.read().data, a)
        assert "depth" in src.attrs["axes_note"]
    res = cli("inspect", p, "--no-stats")
    assert res.code == 0 and "depth" in res.out


def test_xarray_array_dimensions(tmp_path):
    a = _values((4, 6, 8), "float32")
    p = tmp_path / "xr.zarr"
    z = zarr.create_array(store=str(p), shape=a.T.shape, dtype=a.dtype, chunks=(8, 6, 4),
                          zarr_format=2)
    z[:] = a.T
    z.attrs["_ARRAY_DIMENSIONS"] = ["x", "y", "z"]
    np.testing.assert_array_equal(read_volume(p).data, a)


# --------------------------------------------------------------------------------------------
# 6./7. grey-value statistics: exact percentiles, std with a large offset


def _ref_pct(a, q):
    f = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    return float(np.percentile(f, q, method="inverted_cdf"))


def test_percentiles_with_one_outlier(tmp_path, cli):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((20, 30, 40)) * 0.1 + 0.5).astype(np.float32)
    a[5, 6, 7] = 1e6
    np.save(tmp_path / "o.npy", a)
    res = cli("inspect", tmp_path / "o.npy", "--json")
    st = json.loads(res.out)["stats"]
    for q in (1, 50, 99):
        assert st[f"p{q}"] == _ref_pct(a, q)
    assert st["p1"] == pytest.approx(0.27, abs=0.01) and st["p99"] == pytest.approx(0.73, abs=0.01)


@pytest.mark.parametrize("collect", [10, 1 << 21])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint32", "int64", "uint64"])
def test_percentiles_exact_wide_types(monkeypatch, dtype, collect):
    import anodetwin.io.volume as volmod

    monkeypatch.setattr(volmod, "_COLLECT", collect)  # 10: the refinement passes
    rng = np.random.default_rng(5)
    if dtype.startswith("float"):
        a = (rng.standard_normal((9, 10, 11)) * 3 + 100).astype(dtype)
        a[0, 0, :3] = [np.nan, np.inf, 1e30]
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, info.max - 2**40), info.max, (9, 10, 11), dtype=dtype,
                         endpoint=True)
        a[0, 0, 0] = info.min
    st = grey_value_stats(Volume(a))
    for q in (1, 50, 99):
        assert st[f"p{q}"] == _ref_pct(a, q), q
    assert st["nonfinite"] == (2 if dtype.startswith("float") else 0)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "uint16", "int16"])
def test_stats_exact_small_integers(dtype):
    rng = np.random.default_rng(9)
    if dtype == "bool":
        a = rng.random((10, 20, 30)) > 0.2
    else:
        a = np.zeros((10, 20, 30), dtype)  # labels: mostly 0
        info = np.iinfo(dtype)
        a[:, :5] = rng.integers(info.min, info.max, (10, 5, 30), dtype=dtype, endpoint=True)
    st = grey_value_stats(Volume(a))
    for q in (1, 50, 99):
        assert st[f"p{q}"] == _ref_pct(a, q)
    assert st["min"] == float(a.min()) and st["max"] == float(a.max())
    assert st["mean"] == pytest.approx(float(a.mean()), rel=1e-12)
    assert st["std"] == pytest.approx(float(a.std()), rel=1e-9)


def test_labels_p1_is_zero(tmp_path, cli):
    a = np.zeros((10, 10, 10), np.uint8)
    a[5:] = 3
    np.save(tmp_path / "labels.npy", a)
    st = json.loads(cli("inspect", tmp_path / "labels.npy", "--json").out)["stats"]
    assert (st["p1"], st["p50"], st["p99"]) == (0.0, 0.0, 3.0)


@pytest.mark.parametrize("offset, sigma, dtype", [(1e8, 1.0, "float64"), (4e9, 3.0, "uint32")])
def test_std_with_large_offset(tmp_path, offset, sigma, dtype):
    rng = np.random.default_rng(4)
    a = (offset + rng.standard_normal((16, 20, 24)) * sigma).astype(dtype)
    np.save(tmp_path / "a.npy", a)
    with open_volume(tmp_path / "a.npy") as src:
        st = grey_value_stats(src.lazy())
    assert st["std"] == pytest.approx(float(a.astype(np.float64).std()), rel=1e-6)
    assert st["mean"] == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-12)


# --------------------------------------------------------------------------------------------
# 8. binning 64-bit integers exactly


def _exact_bin(a, b):
    n = [s // b for s in a.shape]
    out = np.empty(n, a.dtype)
    for idx in np.ndindex(*n):
        blk = a[tuple(slice(i * b, (i + 1) * b) for i in idx)]
        out[idx] = round(Fraction(sum(int(v) for v in blk.ravel()), blk.size))  # half to even
    return out


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_bin_64bit_integers_exact(dtype):
    info = np.iinfo(dtype)
    full = np.full((4, 4, 4), info.max, dtype)
    np.testing.assert_array_equal(bin_volume(full, 2), np.full((2, 2, 2), info.max, dtype))
    rng = np.random.default_rng(2)
    a = rng.integers(info.min, info.max, (4, 6, 8), dtype=dtype, endpoint=True)
    a[:2, :2, :2] = info.max - np.arange(8, dtype=dtype).reshape(2, 2, 2)
    np.testing.assert_array_equal(bin_volume(a, 2), _exact_bin(a, 2))


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8"])
def test_bin_integers_near_minimum_exact(dtype):
    info = np.iinfo(dtype)
    a = np.full((3, 2, 2), info.min, dtype)  # bins of 3: floor(min / 3) * 3 < min
    np.testing.assert_array_equal(bin_volume(a, (3, 1, 1)), np.full((1, 2, 2), info.min))
    rng = np.random.default_rng(8)
    b = rng.integers(info.min, info.min + 5, (6, 3, 3), dtype=dtype, endpoint=True)
    np.testing.assert_array_equal(bin_volume(b, 3), _exact_bin(b, 3))
    big = np.full((128, 128, 128), info.min, dtype)  # 2**21 voxels per bin: integer path
    big[0, 0, 0] = info.max
    assert bin_volume(big, 128)[0, 0, 0] == round(Fraction(int(info.max) + (2**21 - 1)
                                                           * int(info.min), 2**21))


def test_bin_uint64_file(tmp_path):
    np.save(tmp_path / "u.npy", np.full((4, 4, 4), 2**64 - 1, "u8"))
    assert (read_volume(tmp_path / "u.npy", binning=2).data == 2**64 - 1).all()


# --------------------------------------------------------------------------------------------
# 9. TIFF volumetric tiles and other non-contiguous layouts


@pytest.mark.parametrize("kw", [{"tile": (4, 16, 16)},
                                {"tile": (4, 16, 16), "compression": "zlib", "byteorder": ">"},
                                {"tile": (16, 16), "compression": "lzw"}])
def test_tiff_volumetric_tiles(tmp_path, cli, kw):
    a = _values((8, 40, 30), "uint16")
    p = tmp_path / "vt.tif"
    tifffile.imwrite(p, a, photometric="minisblack", **kw)
    np.testing.assert_array_equal(read_volume(p).data, a)
    np.testing.assert_array_equal(read_volume(p, roi="3:7,5:33,2:27").data, a[3:7, 5:33, 2:27])
    res = cli("inspect", p, "--roi", "3:7,5:33,2:27", "--json")
    assert res.code == 0, res.err
    st = json.loads(res.out)["stats"]
    assert st["max"] == float(a[3:7, 5:33, 2:27].max())
    res = cli("convert", p, tmp_path / "o.npy", "--bin", "2")
    assert res.code == 0, res.err
    assert np.load(tmp_path / "o.npy").shape == (4, 20, 15)


# --------------------------------------------------------------------------------------------
# 10. voxel-size metadata present but unusable: noted, warned, x/y kept when only z is bad


def _ij(tmp, metadata, res=(2.0, 2.0)):
    p = tmp / "ij.tif"
    tifffile.imwrite(p, _values((3, 4, 5), "uint16"), imagej=True, resolution=res,
                     metadata={"axes": "ZYX", **metadata})
    return p


def test_imagej_negative_spacing_keeps_xy(tmp_path, cli, caplog):
    p = _ij(tmp_path, {"unit": "um", "spacing": -1.5})
    with _Warnings(caplog) as w, open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((0.5, 0.5, 0.5))
        assert "spacing" in src.voxel_size_note and "ignored" in src.voxel_size_note
    assert any("spacing" in m for m in w.messages)
    res = cli("inspect", p, "--no-stats")
    assert "ignored" in res.out and "-1.5" in res.out


@pytest.mark.parametrize("unit", ["u", "furlong"])
def test_imagej_unknown_unit_is_named(tmp_path, cli, caplog, unit):
    p = _ij(tmp_path, {"unit": unit, "spacing": 2.0})
    with _Warnings(caplog) as w, open_volume(p) as src:
        assert src.voxel_size_um is None
        assert unit in src.voxel_size_note and "ignored" in src.voxel_size_note
    assert any(unit in m for m in w.messages)
    res = cli("inspect", p, "--no-stats")
    assert res.code == 0 and "not in the file" not in res.out and "ignored" in res.out
    assert json.loads(cli("inspect", p, "--no-stats", "--json").out)["voxel_size_note"]


@pytest.mark.parametrize("value, expected", [
    ([0.0, 1.0, 1.0], (1.0, 1.0, 1.0)),
    ([-1.0, 1.0, 1.0], (1.0, 1.0, 1.0)),
    ([np.nan, 1.0, 1.0], (1.0, 1.0, 1.0)),
    ([2.0, 1.0], None),
    ([1.0, 0.0, 1.0], None),
])
def test_hdf5_unusable_voxel_size_is_noted(tmp_path, cli, value, expected):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("vol", data=_values((3, 4, 5), "uint16"))
        d.attrs["voxel_size"] = value
        d.attrs["units"] = "um"
    with open_volume(p) as src:
        assert src.voxel_size_um == (pytest.approx(expected) if expected else None)
        assert "ignored" in src.voxel_size_note and "voxel_size" in src.voxel_size_note
    res = cli("inspect", p, "--no-stats")
    assert res.code == 0 and "not in the file" not in res.out and "ignored" in res.out


def test_hdf5_voxel_size_as_json_text_and_per_axis_units(tmp_path):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("text", data=_values((3, 4, 5), "uint16"))
        d.attrs["voxel_size_um"] = "[1.0, 0.5, 0.5]"
        d = f.create_dataset("units", data=_values((3, 4, 5), "uint16"))
        d.attrs["voxel_size"] = [2.0, 100.0, 100.0]
        d.attrs["units"] = ["um", "nm", "nm"]
    with open_volume(f"{p}:/text") as src:
        assert src.voxel_size_um == pytest.approx((1.0, 0.5, 0.5)) and src.voxel_size_note is None
    with open_volume(f"{p}:/units") as src:
        assert src.voxel_size_um == pytest.approx((2.0, 0.1, 0.1)) and src.voxel_size_note is None


@pytest.mark.parametrize("key, value, expected", [
    ("voxel_size_nm", [100, 50, 50], (0.1, 0.05, 0.05)),
    ("voxel_size_mm", 0.002, (2.0, 2.0, 2.0)),
    ("pixel_size_um", [0.3, 0.2, 0.1], (0.3, 0.2, 0.1)),
])
def test_sidecar_voxel_size_unit_keys(tmp_path, key, value, expected):
    a = _values((3, 4, 5), "uint16")
    a.tofile(tmp_path / "v.raw")
    (tmp_path / "v.raw.json").write_text(json.dumps(
        {"shape": [3, 4, 5], "dtype": "uint16", key: value}))
    with open_volume(tmp_path / "v.raw") as src:
        assert src.voxel_size_um == pytest.approx(expected, rel=1e-12)
        assert src.voxel_size_note is None


# --------------------------------------------------------------------------------------------
# 11. OME-TIFF physical sizes


def test_ome_tiff_physical_size(tmp_path):
    a = _values((4, 5, 6), "uint16")
    p = tmp_path / "o.ome.tif"
    tifffile.imwrite(p, a, resolution=(1.0, 1.0), metadata={
        "axes": "ZYX", "PhysicalSizeX": 50.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 60.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.2})
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((0.2, 0.06, 0.05), rel=1e-12)
        assert src.voxel_size_note is None
        np.testing.assert_array_equal(src.read().data, a)


def test_ome_tiff_without_z_size(tmp_path):
    p = tmp_path / "o.ome.tif"
    tifffile.imwrite(p, _values((4, 5, 6), "uint16"), metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((0.65, 0.65, 0.65))
        assert "PhysicalSizeZ" in src.voxel_size_note


# --------------------------------------------------------------------------------------------
# 12. smaller cases


def test_72_dpi_marked_as_assumed(tmp_path):
    p = tmp_path / "d.tif"
    tifffile.imwrite(p, _values((3, 4, 5), "uint8"), resolution=(72, 72),
                     resolutionunit="INCH", photometric="minisblack")
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((25400 / 72,) * 3)
        assert "72 dpi" in src.voxel_size_note and "assumed" in src.voxel_size_note


def test_slice_step_is_noted(tmp_path, caplog):
    a = _values((5, 4, 5), "uint16")
    d = tmp_path / "step"
    d.mkdir()
    for k, plane in zip(range(0, 10, 2), a, strict=True):
        tifffile.imwrite(d / f"s_{k:03d}.tif", plane)
    with _Warnings(caplog) as w, open_volume(d) as src:
        np.testing.assert_array_equal(src.read().data, a)
        assert "step of 2" in src.voxel_size_note
    assert any("step of 2" in m for m in w.messages)


def test_two_sidecars_that_disagree(tmp_path, cli):
    a = _values((3, 4, 5), "uint16")
    a.tofile(tmp_path / "v.raw")
    side = {"shape": [3, 4, 5], "dtype": "uint16", "voxel_size_um": 0.5}
    (tmp_path / "v.raw.json").write_text(json.dumps(side))
    (tmp_path / "v.json").write_text(json.dumps(side))
    np.testing.assert_array_equal(read_volume(tmp_path / "v.raw").data, a)  # agree: fine
    (tmp_path / "v.json").write_text(json.dumps({**side, "voxel_size_um": 0.7}))
    with pytest.raises(SidecarError) as info:
        read_volume(tmp_path / "v.raw")
    assert "v.raw.json" in str(info.value) and "v.json" in str(info.value)
    one_line_error(cli("inspect", tmp_path / "v.raw"), "v.raw.json", "v.json")


@pytest.mark.parametrize("value", [1e-9, 1e-5, 2e5])
def test_voxel_size_outside_micrometre_range(tmp_path, cli, value):
    with pytest.raises(ParameterError, match="micrometres"):
        normalise_voxel_size(value)
    np.save(tmp_path / "n.npy", np.zeros((2, 3, 4), "u1"))
    one_line_error(cli("inspect", tmp_path / "n.npy", "--voxel-size", str(value)),
                    "micrometres")
    assert normalise_voxel_size((1e-4, 0.05, 1e5)) == (1e-4, 0.05, 1e5)


def test_binning_none_is_one(tmp_path):
    a = _values((3, 4, 5), "int16")
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.npy", binning=None).data, a)


# --------------------------------------------------------------------------------------------
# third round: ImageJ frames saved instead of slices, sparse files

@pytest.mark.parametrize("axes,word", [("TYX", "time frames"), ("CYX", "channels")])
def test_imagej_frames_or_channels_are_not_z(tmp_path, axes, word):
    """A Fiji stack saved as 4 time frames (or channels) is not silently taken as z."""
    a = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    p = tmp_path / "frames.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": axes, "unit": "um"})
    with pytest.raises(DimensionError, match=f"4 {word}.*Slices = 4"):
        read_volume(p)
    q = tmp_path / "slices.tif"  # the same data saved as z slices reads as written
    tifffile.imwrite(q, a, imagej=True, metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    v = read_volume(q)
    assert np.array_equal(v.data, a) and v.voxel_size_um == (0.5, 1.0, 1.0)


def test_tifffile_imagej_without_axes_is_refused_with_the_tifffile_fix(tmp_path):
    """tifffile's imwrite(imagej=True) of a 3-D array without axes writes channels: the
    refusal says how to write z slices with tifffile too."""
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, np.zeros((4, 5, 6), np.uint16), imagej=True)
    with pytest.raises(DimensionError) as err:
        read_volume(p)
    assert "metadata={'axes': 'ZYX'}" in err.value.fix


def _sparse(path, a, written_planes):
    with open(path, "wb") as fh:
        fh.truncate(a.nbytes)
        fh.write(a[:written_planes].tobytes())
    path.with_name(path.name + ".json").write_text(
        json.dumps({"shape": list(a.shape), "dtype": "uint16"}))


def test_sparse_raw_holes_are_noted(tmp_path, caplog):
    """Planes never written (holes of a sparse file) read as zeros: warned, noted, carried."""
    a = np.random.default_rng(4).integers(1, 999, (64, 64, 64)).astype(np.uint16)
    p = tmp_path / "sparse.raw"
    _sparse(p, a, 32)
    if p.stat().st_blocks * 512 >= p.stat().st_size:
        pytest.skip("this file system allocates sparse files")
    with caplog.at_level(logging.WARNING):
        v = read_volume(p)
    note = v.attrs["missing_data_note"]
    assert "planes 32..63" in note and "262144 bytes" in note
    assert any("sparse" in r.getMessage() for r in caplog.records)
    assert np.array_equal(v.data[:32], a[:32])
    out = write_volume(tmp_path / "copy.h5", v)  # the note travels with the data
    assert "planes 32..63" in read_volume(out).attrs["missing_data_note"]
    d = tmp_path / "dense.raw"
    a.tofile(d)
    d.with_name("dense.raw.json").write_text(json.dumps({"shape": [64] * 3, "dtype": "uint16"}))
    assert "missing_data_note" not in read_volume(d).attrs


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_dangling_link_is_named_without_a_dataset_path(tmp_path, kind):
    """The file's only entry links to an object that does not exist: the error names the
    link instead of saying that the file holds no datasets."""
    with h5py.File(tmp_path / "target.h5", "w") as f:
        f["other"] = np.zeros((3, 3, 3))
    p = tmp_path / "master.h5"
    with h5py.File(p, "w") as f:
        f["v"] = (h5py.ExternalLink("target.h5", "/v") if kind == "external"
                  else h5py.SoftLink("/nothing"))
    with pytest.raises(MissingDataError, match="/v -> .*no such object"):
        read_volume(p)

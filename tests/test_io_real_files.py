"""Files as real users have them: big-endian data, virtual/linked HDF5, numbered slice folders
with gaps, per-axis units, compressed and multi-series TIFFs.

Every expected value comes from the array written here with numpy/tifffile/h5py/zarr, never
from the code under test.
"""

from __future__ import annotations

import json
import logging
import types

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from anodetwin.errors import (
    AmbiguousInputError,
    DatasetNotFoundError,
    DimensionError,
    MissingCodecError,
    MissingDataError,
)
from anodetwin.io import open_volume, read_volume
from conftest import listing, one_line_error, swap_sensitive_values

DTYPES = ["uint8", "uint16", "int16", "uint32", "float32", "float64"]


def _bin_ref(a, b):
    """Mean over b x b x b blocks, by hand; integers rounded half to even, like numpy.rint."""
    n = [s // b for s in a.shape]
    v = a[: n[0] * b, : n[1] * b, : n[2] * b].astype(np.float64)
    m = v.reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))
    return np.rint(m).astype(a.dtype) if a.dtype.kind in "iu" else m.astype(a.dtype)


def _assert_binned(actual, expected):
    """Exact for integers; floats to their precision (the sum order may differ)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.dtype.kind in "iu":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=16 * np.finfo(expected.dtype).eps)


def _one_line_error(res, *names):
    line = one_line_error(res, *names)
    assert ";" in line  # the fix follows the problem
    return line


# --------------------------------------------------------------------------------------------
# 1. byte order: every reader and the fast paths honour the stored byte order


def _write_be_tiff(tmp, a):
    p = tmp / "be.tif"
    tifffile.imwrite(p, a, byteorder=">", photometric="minisblack")
    return str(p)


def _write_be_tiff_dir(tmp, a):
    d = tmp / "be_slices"
    d.mkdir()
    for k, plane in enumerate(a):
        tifffile.imwrite(d / f"recon_{k:04d}.tif", plane, byteorder=">")
    return str(d)


def _write_be_npy(tmp, a):
    p = tmp / "be.npy"
    np.save(p, a.astype(a.dtype.newbyteorder(">")))
    return str(p)


def _write_be_npy_fortran(tmp, a):
    p = tmp / "bef.npy"
    np.save(p, np.asfortranarray(a.astype(a.dtype.newbyteorder(">"))))
    return str(p)


def _write_be_raw(tmp, a):
    p = tmp / "be.raw"
    a.astype(a.dtype.newbyteorder(">")).tofile(p)
    (tmp / "be.raw.json").write_text(json.dumps(
        {"shape": list(a.shape), "dtype": a.dtype.name, "byte_order": "big"}))
    return str(p)


def _write_be_hdf5(tmp, a):
    p = tmp / "be.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("vol", data=a, dtype=a.dtype.newbyteorder(">"), chunks=(2, 4, 4))
    return f"{p}:/vol"


def _write_be_zarr2(tmp, a):
    p = tmp / "be2.zarr"
    z = zarr.create_array(store=str(p), shape=a.shape, dtype=a.dtype.newbyteorder(">"),
                          chunks=(2, 4, 4), zarr_format=2)
    z[:] = a
    assert json.loads((p / ".zarray").read_text())["dtype"][0] in "><|"
    return str(p)


def _write_be_zarr3(tmp, a):
    from zarr.codecs import BytesCodec

    p = tmp / "be3.zarr"
    z = zarr.create_array(store=str(p), shape=a.shape, dtype=a.dtype, chunks=(2, 4, 4),
                          serializer=BytesCodec(endian="big"), compressors=None)
    z[:] = a
    return str(p)


BIG_ENDIAN = {"tiff": _write_be_tiff, "tiff-dir": _write_be_tiff_dir, "npy": _write_be_npy,
              "npy-fortran": _write_be_npy_fortran, "raw": _write_be_raw,
              "hdf5": _write_be_hdf5, "zarr2": _write_be_zarr2, "zarr3": _write_be_zarr3}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", sorted(BIG_ENDIAN))
def test_big_endian_read_roi_bin_and_out(tmp_path, fmt, dtype):
    a = swap_sensitive_values((6, 9, 10), dtype)
    path = BIG_ENDIAN[fmt](tmp_path, a)
    vol = read_volume(path)
    assert vol.dtype == a.dtype and vol.dtype.isnative
    np.testing.assert_array_equal(vol.data, a)
    np.testing.assert_array_equal(read_volume(path, roi="1:5,2:8,3:9").data, a[1:5, 2:8, 3:9])
    _assert_binned(read_volume(path, binning=2).data, _bin_ref(a, 2))
    with open_volume(path) as src:
        out = np.empty((3, 9, 10), dtype=a.dtype)  # native, whole planes: the fast path
        assert src.read_block(slice(2, 5), slice(0, 9), slice(0, 10), out=out) is out
        np.testing.assert_array_equal(out, a[2:5])
        part = src.read_block(slice(0, 2), slice(1, 4), slice(2, 7))
        assert part.dtype.isnative
        np.testing.assert_array_equal(part, a[0:2, 1:4, 2:7])


def test_big_endian_tiff_uses_fast_path_and_cli(tmp_path, cli):
    """The user's case: float32 big-endian multi-page TIFF, via convert, --roi, --bin,
    inspect statistics (NaNs appeared that the file does not have)."""
    a = swap_sensitive_values((8, 12, 14), "float32")
    inp = _write_be_tiff(tmp_path, a)
    with open_volume(inp) as src:
        assert src._contiguous  # plain reads, not per-page tifffile calls
    res = cli("convert", inp, tmp_path / "out.npy", "--roi", "1:7,2:12,0:14", "--bin", "2")
    assert res.code == 0, res.err
    _assert_binned(np.load(tmp_path / "out.npy"), _bin_ref(a[1:7, 2:12], 2))
    res = cli("inspect", inp, "--json")
    assert res.code == 0, res.err
    stats = json.loads(res.out)["stats"]
    assert stats["nonfinite"] == 0
    assert stats["min"] == float(a.min()) and stats["max"] == float(a.max())
    assert stats["mean"] == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-9)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_big_endian_compressed_tiff(tmp_path, dtype):
    a = swap_sensitive_values((5, 16, 16), dtype)
    p = tmp_path / "bez.tif"
    tifffile.imwrite(p, a, byteorder=">", compression="zlib", photometric="minisblack")
    np.testing.assert_array_equal(read_volume(p, roi="1:4,2:15,3:16").data, a[1:4, 2:15, 3:16])


# --------------------------------------------------------------------------------------------
# 2. missing data is an error, never zeros


def _vds(tmp, a, nchunk=3, drop=None, mapped=None):
    """master.h5:/vol, a virtual dataset over chunk_K.h5:/data files (relative names)."""
    step = a.shape[0] // nchunk
    layout = h5py.VirtualLayout(shape=a.shape, dtype=a.dtype)
    for k in range(mapped if mapped is not None else nchunk):
        with h5py.File(tmp / f"chunk_{k}.h5", "w") as f:
            f["data"] = a[k * step:(k + 1) * step]
        layout[k * step:(k + 1) * step] = h5py.VirtualSource(
            f"chunk_{k}.h5", "data", shape=(step,) + a.shape[1:])
    with h5py.File(tmp / "master.h5", "w") as f:
        f.create_virtual_dataset("vol", layout, fillvalue=0)
    if drop is not None:
        (tmp / f"chunk_{drop}.h5").unlink()
    return tmp / "master.h5"


def test_vds_reads_from_master_folder(tmp_path, monkeypatch):
    a = swap_sensitive_values((6, 5, 4), "uint16")
    master = _vds(tmp_path, a)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # sources resolve from the master's folder
    np.testing.assert_array_equal(read_volume(f"{master}:/vol").data, a)


def test_vds_missing_source_file(tmp_path, cli, monkeypatch):
    a = swap_sensitive_values((6, 5, 4), "uint16")
    master = _vds(tmp_path, a, drop=1)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(MissingDataError) as info:
        read_volume(f"{master}:/vol")
    assert "chunk_1.h5" in str(info.value) and "z 2:4" in str(info.value)
    with pytest.raises(MissingDataError):
        read_volume(master)  # the only 3D dataset, picked without naming it
    before = listing(tmp_path)
    _one_line_error(cli("convert", f"{master}:/vol", tmp_path / "out.h5"), "chunk_1.h5", "z 2:4")
    assert listing(tmp_path) == before, "convert wrote something"
    _one_line_error(cli("inspect", f"{master}:/vol"), "chunk_1.h5")


def test_vds_source_dataset_missing_or_too_small(tmp_path):
    a = swap_sensitive_values((6, 5, 4), "float32")
    master = _vds(tmp_path, a)
    with h5py.File(tmp_path / "chunk_2.h5", "a") as f:
        del f["data"]
        f["other"] = a[4:6]
    with pytest.raises(MissingDataError, match=r"chunk_2\.h5:data.*z 4:6|z 4:6.*chunk_2\.h5"):
        read_volume(f"{master}:/vol")
    with h5py.File(tmp_path / "chunk_2.h5", "a") as f:
        f["data"] = a[4:5]  # one plane where two are mapped
    with pytest.raises(MissingDataError, match="too small"):
        read_volume(f"{master}:/vol")


def test_vds_unmapped_z_range(tmp_path):
    a = swap_sensitive_values((6, 5, 4), "int16")
    master = _vds(tmp_path, a, mapped=2)  # z 4:6 maps to no source
    with pytest.raises(MissingDataError, match="z 4:6"):
        read_volume(f"{master}:/vol")


def test_external_link_missing_file(tmp_path, cli):
    a = swap_sensitive_values((4, 5, 6), "uint16")
    with h5py.File(tmp_path / "target.h5", "w") as f:
        f["data"] = a
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["ok"] = h5py.ExternalLink("target.h5", "/data")
        f["gone"] = h5py.ExternalLink("nothere.h5", "/data")
        f["entry"] = h5py.ExternalLink("alsogone.h5", "/entry")
    np.testing.assert_array_equal(read_volume(f"{tmp_path}/master.h5:/ok").data, a)
    with pytest.raises(MissingDataError, match="nothere.h5"):
        read_volume(f"{tmp_path}/master.h5:/gone")
    with pytest.raises(MissingDataError, match="alsogone.h5"):
        read_volume(f"{tmp_path}/master.h5:/entry/data")  # a group above is the link
    line = _one_line_error(cli("inspect", f"{tmp_path}/master.h5:/gone"), "nothere.h5")
    assert "empty" not in line


def test_external_link_only_and_missing(tmp_path):
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["vol"] = h5py.ExternalLink("scan_0001.h5", "/entry/data")
    with pytest.raises(MissingDataError, match="scan_0001.h5") as info:
        read_volume(tmp_path / "master.h5")  # no dataset named
    assert "empty" not in str(info.value)


def test_external_link_dataset_is_found_without_naming(tmp_path):
    a = swap_sensitive_values((4, 5, 6), "float64")
    with h5py.File(tmp_path / "target.h5", "w") as f:
        f["data"] = a
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["vol"] = h5py.ExternalLink("target.h5", "/data")
    np.testing.assert_array_equal(read_volume(tmp_path / "master.h5").data, a)


def test_hdf5_chunks_never_written(tmp_path):
    a = swap_sensitive_values((8, 6, 6), "uint16")
    p = tmp_path / "partial.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("vol", shape=a.shape, dtype=a.dtype, chunks=(2, 6, 6))
        d[:4] = a[:4]  # export interrupted after z = 4
    with pytest.raises(MissingDataError, match="z 4:6"):
        read_volume(p)
    with h5py.File(p, "w") as f:
        f.create_dataset("vol", shape=a.shape, dtype=a.dtype)  # contiguous, never written
    with pytest.raises(MissingDataError, match="never written"):
        read_volume(p)


def _slices(folder, a, names):
    folder.mkdir()
    for plane, name in zip(a, names, strict=True):
        tifffile.imwrite(folder / name, plane)


def test_slice_folder_gap(tmp_path, cli):
    a = swap_sensitive_values((41, 6, 7), "uint16")
    names = [f"recon_{k:04d}.tif" for k in range(100, 141)]
    keep = [k for k in range(41) if k != 17]
    _slices(tmp_path / "recon", a[keep], [names[k] for k in keep])
    with pytest.raises(MissingDataError) as info:
        read_volume(tmp_path / "recon")
    assert "recon_0117.tif" in str(info.value) and "117" in str(info.value)
    before = listing(tmp_path)
    _one_line_error(cli("convert", tmp_path / "recon", tmp_path / "out.tif"), "recon_0117.tif")
    _one_line_error(cli("inspect", tmp_path / "recon", "--no-stats"), "recon_0117.tif")
    assert listing(tmp_path) == before


def test_slice_folder_gap_unpadded_and_several(tmp_path):
    a = swap_sensitive_values((12, 4, 5), "float32")
    keep = [k for k in range(12) if k not in (4, 5, 9)]
    _slices(tmp_path / "s", a[keep], [f"slice_{k}.tiff" for k in keep])
    with pytest.raises(MissingDataError, match=r"3 slice.*4-5 .*9 .*'slice_4.tiff'"):
        read_volume(tmp_path / "s")


def test_slice_folder_mixed_prefixes(tmp_path):
    a = swap_sensitive_values((10, 4, 5), "uint8")
    _slices(tmp_path / "m", a, [f"recon_{k:04d}.tif" for k in range(7)]
            + [f"preview_{k:04d}.tif" for k in range(3)])
    with pytest.raises(AmbiguousInputError, match="recon_.*preview_|preview_.*recon_"):
        read_volume(tmp_path / "m")


def test_slice_folder_mixed_prefixes_with_gap_is_not_read(tmp_path):
    """Two series interleaved in natural order would hide the gap of each."""
    a = swap_sensitive_values((6, 4, 5), "uint8")
    _slices(tmp_path / "m", a, ["a_0001.tif", "a_0003.tif", "b_0002.tif", "a_0002.tif",
                                "b_0001.tif", "b_0004.tif"])
    with pytest.raises((AmbiguousInputError, MissingDataError)):
        read_volume(tmp_path / "m")


def test_slice_folder_duplicate_number(tmp_path):
    a = swap_sensitive_values((3, 4, 5), "uint16")
    _slices(tmp_path / "d", a, ["im_01.tif", "im_1.tif", "im_02.tif"])
    with pytest.raises(AmbiguousInputError, match="im_01.tif"):
        read_volume(tmp_path / "d")


def test_slice_folder_constant_step_and_unnumbered(tmp_path):
    a = swap_sensitive_values((5, 4, 5), "int16")
    _slices(tmp_path / "step", a, [f"z{k:03d}.tif" for k in range(10, 20, 2)])
    np.testing.assert_array_equal(read_volume(tmp_path / "step").data, a)
    _slices(tmp_path / "abc", a[:3], ["a.tif", "b.tif", "c.tif"])
    np.testing.assert_array_equal(read_volume(tmp_path / "abc").data, a[:3])


# --------------------------------------------------------------------------------------------
# 3. voxel size per axis in um, from every calibration source; assumed values are marked


def test_imagej_zunit_differs_from_unit(tmp_path):
    """The user's case: unit=nm (x, y), zunit=micron, spacing=0.1 -> z voxel 0.1 um."""
    a = swap_sensitive_values((4, 5, 6), "uint16")
    p = tmp_path / "fiji.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 50.0, 1 / 50.0),
                     metadata={"unit": "nm", "zunit": "micron", "spacing": 0.1, "axes": "ZYX"})
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((0.1, 0.05, 0.05), rel=1e-12)
        assert src.voxel_size_note is None


@pytest.mark.parametrize("yunit", ["\\u00B5m", "micron", "um"])
def test_imagej_yunit_spellings(tmp_path, yunit):
    a = swap_sensitive_values((3, 4, 5), "uint8")
    p = tmp_path / "y.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 40.0, 1 / 0.2),
                     metadata={"unit": "nm", "yunit": yunit, "spacing": 60, "axes": "ZYX"})
    assert read_volume(p).voxel_size_um == pytest.approx((0.06, 0.2, 0.04), rel=1e-12)


def test_imagej_escaped_micro_unit(tmp_path):
    """ImageJ writes 'unit=\\u00B5m' (escaped) in its description."""
    a = swap_sensitive_values((3, 4, 5), "float32")
    p = tmp_path / "mu.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"unit": "\\u00B5m", "spacing": 0.7, "axes": "ZYX"})
    assert read_volume(p).voxel_size_um == pytest.approx((0.7, 0.3, 0.3), rel=1e-12)


def test_imagej_origin_in_pixels(tmp_path):
    """ImageJ's xorigin/yorigin/zorigin are pixel offsets: x_um = (i - xorigin) * dx."""
    p = tmp_path / "orig.tif"
    tifffile.imwrite(p, swap_sensitive_values((3, 4, 5), "uint16"), imagej=True, resolution=(2.0, 4.0),
                     metadata={"unit": "um", "spacing": 2.0, "xorigin": 4, "yorigin": -2,
                               "zorigin": 1, "axes": "ZYX"})
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((2.0, 0.25, 0.5))
        assert src.origin == pytest.approx((-2.0, 0.5, -2.0))


def test_imagej_stack_without_spacing_is_marked(tmp_path, cli):
    """ImageJ leaves 'spacing' out when it is 1 (unit): z = 1 unit, marked as assumed."""
    a = swap_sensitive_values((3, 4, 5), "uint16")
    p = tmp_path / "nospacing.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"unit": "micron", "axes": "ZYX"})
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((1.0, 0.5, 0.5))
        assert "spacing" in src.voxel_size_note
    res = cli("inspect", p, "--no-stats")
    assert res.code == 0 and "assumed" in res.out


@pytest.mark.parametrize("unit, per_um", [("INCH", 1 / 25400.0), ("CENTIMETER", 1e-4),
                                           ("MILLIMETER", 1e-3), ("MICROMETER", 1.0)])
def test_tiff_resolution_unit(tmp_path, unit, per_um, cli):
    a = swap_sensitive_values((3, 4, 5), "int16")
    p = tmp_path / "res.tif"
    # 0.5 um in x, 0.25 um in y: resolution is pixels per unit
    tifffile.imwrite(p, a, resolution=(1 / (0.5 * per_um), 1 / (0.25 * per_um)),
                     resolutionunit=unit, photometric="minisblack")
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx((0.5, 0.25, 0.5), rel=1e-9)
        assert "z taken equal to x" in src.voxel_size_note
    res = cli("inspect", p, "--json", "--no-stats")
    assert "z taken equal to x" in json.loads(res.out)["voxel_size_note"]


def test_assumed_voxel_size_is_logged(tmp_path, caplog):
    a = swap_sensitive_values((3, 4, 5), "uint8")
    p = tmp_path / "res.tif"
    tifffile.imwrite(p, a, resolution=(1e4 / 2.0, 1e4 / 2.0), resolutionunit="CENTIMETER",
                     photometric="minisblack")
    lg = logging.getLogger("anodetwin")
    caplog.set_level(logging.WARNING)
    lg.addHandler(caplog.handler)  # the CLI may have switched propagation off
    try:
        open_volume(p).close()
    finally:
        lg.removeHandler(caplog.handler)
    assert any("assumed" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_voxel_size_override_clears_note(tmp_path):
    p = tmp_path / "res.tif"
    tifffile.imwrite(p, swap_sensitive_values((3, 4, 5), "uint8"), resolution=(1e4, 1e4),
                     resolutionunit="CENTIMETER", photometric="minisblack")
    with open_volume(p, voxel_size=(2, 1, 1)) as src:
        assert src.voxel_size_um == (2.0, 1.0, 1.0) and src.voxel_size_note is None


def test_tiff_slice_folder_z_assumed(tmp_path, cli):
    a = swap_sensitive_values((4, 5, 6), "uint16")
    d = tmp_path / "ij_slices"
    d.mkdir()
    for k, plane in enumerate(a):
        tifffile.imwrite(d / f"s_{k:03d}.tif", plane, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                         metadata={"unit": "um"})
    with open_volume(d) as src:
        assert src.voxel_size_um == pytest.approx((0.2, 0.2, 0.2))
        assert "z taken equal to x" in src.voxel_size_note
    res = cli("inspect", d, "--no-stats")
    assert "assumed" in res.out and "z taken equal to x" in res.out


def test_assumed_note_survives_convert(tmp_path, cli):
    a = swap_sensitive_values((3, 4, 5), "uint16")
    p = tmp_path / "res.tif"
    tifffile.imwrite(p, a, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
                     photometric="minisblack")
    assert cli("convert", p, tmp_path / "out.h5").code == 0
    with open_volume(tmp_path / "out.h5") as src:
        assert src.voxel_size_um == pytest.approx((0.5, 0.5, 0.5))
        assert "z taken equal to x" in src.voxel_size_note
    assert cli("convert", p, tmp_path / "given.h5", "--voxel-size", "0.5").code == 0
    with open_volume(tmp_path / "given.h5") as src:
        assert src.voxel_size_note is None


@pytest.mark.parametrize("unit, scale", [("nm", 1e-3), ("um", 1.0), ("\u00b5m", 1.0),
                                          ("\u03bcm", 1.0), ("micron", 1.0), ("mm", 1e3),
                                          ("m", 1e6), (b"nm", 1e-3)])
def test_hdf5_nexus_pixel_size_fields(tmp_path, unit, scale):
    a = swap_sensitive_values((4, 5, 6), "float32")
    p = tmp_path / "nx.h5"
    # 50 m voxels would be refused as implausible (> 10 cm): metres get micrometre values
    per = 1e-6 if unit == "m" else 1.0
    scale *= per
    with h5py.File(p, "w") as f:
        det = f.create_group("entry/instrument/detector")
        det["data"] = a
        for ax, v in (("x", 50.0), ("y", 40.0), ("z", 30.0)):
            det[f"{ax}_pixel_size"] = v * per
            det[f"{ax}_pixel_size"].attrs["units"] = unit
    with open_volume(f"{p}:/entry/instrument/detector/data") as src:
        assert src.voxel_size_um == pytest.approx((30 * scale, 40 * scale, 50 * scale), rel=1e-12)
        assert src.voxel_size_note is None
        np.testing.assert_array_equal(src.read().data, a)


def test_hdf5_nexus_xy_only_z_assumed(tmp_path):
    p = tmp_path / "nx.h5"
    with h5py.File(p, "w") as f:
        f["det/data"] = swap_sensitive_values((4, 5, 6), "uint16")
        f["det/x_pixel_size"] = 0.65
        f["det/x_pixel_size"].attrs["units"] = "um"
        f["det/y_pixel_size"] = 0.65
        f["det/y_pixel_size"].attrs["units"] = "um"
    with open_volume(f"{p}:/det/data") as src:
        assert src.voxel_size_um == pytest.approx((0.65, 0.65, 0.65))
        assert "z voxel size taken equal to x" in src.voxel_size_note


@pytest.mark.parametrize("key, value, units, expected, note", [
    ("voxel_size", [100.0, 50.0, 50.0], "nm", (0.1, 0.05, 0.05), None),
    ("voxel_size", 2.5, "micrometer", (2.5, 2.5, 2.5), None),
    ("voxel_size", [0.3, 0.2, 0.1], None, (0.3, 0.2, 0.1), "no length unit"),
    ("voxel_size", [0.3, 0.2, 0.1], "counts", (0.3, 0.2, 0.1), "no length unit"),
    ("element_size_um", [200.0, 100.0, 100.0], "nm", (0.2, 0.1, 0.1), "not in um"),
    ("element_size_um", [0.2, 0.1, 0.1], "micron", (0.2, 0.1, 0.1), None),
    ("element_size_um", [0.2, 0.1, 0.1], None, (0.2, 0.1, 0.1), None),
])
def test_hdf5_voxel_size_attribute_with_units(tmp_path, key, value, units, expected, note):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("vol", data=swap_sensitive_values((3, 4, 5), "uint16"))
        d.attrs[key] = value
        if units is not None:
            d.attrs["units"] = units
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx(expected, rel=1e-12)
        assert (src.voxel_size_note is None) if note is None else (note in src.voxel_size_note)


def _ome(tmp, a, axes, transforms, ms_transforms=None, v05=False):
    fmt = 3 if v05 else 2
    root = zarr.open_group(store=str(tmp / "img.zarr"), mode="w", zarr_format=fmt)
    root.create_array("0", shape=a.shape, dtype=a.dtype, chunks=(2, 4, 4))[:] = a
    half = a[::2, ::2, ::2]
    root.create_array("1", shape=half.shape, dtype=a.dtype, chunks=(2, 4, 4))[:] = half
    ms = {"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": transforms[0]},
        {"path": "1", "coordinateTransformations": transforms[1]}]}
    if ms_transforms:
        ms["coordinateTransformations"] = ms_transforms
    root.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}} if v05
                      else {"multiscales": [ms]})
    return tmp / "img.zarr"


@pytest.mark.parametrize("v05", [False, True])
def test_ome_zarr_scale_translation_units(tmp_path, v05):
    a = swap_sensitive_values((6, 8, 10), "uint16")
    axes = [{"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    tf = [[{"type": "scale", "scale": [0.5, 100.0, 200.0]},
           {"type": "translation", "translation": [1.0, 300.0, -400.0]}],
          [{"type": "scale", "scale": [1.0, 200.0, 400.0]},
           {"type": "translation", "translation": [1.25, 350.0, -300.0]}]]
    store = _ome(tmp_path, a, axes, tf, [{"type": "scale", "scale": [2.0, 1.0, 1.0]}], v05)
    with open_volume(store) as src:  # the full-resolution array "0" by default
        np.testing.assert_array_equal(src.read().data, a)
        # dataset scale, then the multiscale's: z 0.5 * 2 um, y 100 nm, x 200 nm
        assert src.voxel_size_um == pytest.approx((1.0, 0.1, 0.2), rel=1e-12)
        assert src.origin == pytest.approx((2.0, 0.3, -0.4), rel=1e-12)
        assert src.voxel_size_note is None
    with open_volume(f"{store}:/1") as src:
        assert src.voxel_size_um == pytest.approx((2.0, 0.2, 0.4), rel=1e-12)
        assert src.origin == pytest.approx((2.5, 0.35, -0.3), rel=1e-12)


def test_ome_zarr_axes_without_unit_are_marked(tmp_path):
    a = swap_sensitive_values((4, 4, 4), "float32")
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    tf = [[{"type": "scale", "scale": [0.3, 0.2, 0.2]}], [{"type": "scale", "scale": [1, 1, 1]}]]
    with open_volume(_ome(tmp_path, a, axes, tf)) as src:
        assert src.voxel_size_um == pytest.approx((0.3, 0.2, 0.2))
        assert "um assumed" in src.voxel_size_note


@pytest.mark.parametrize("side, expected, note", [
    ({"voxel_size": [100, 50, 50], "unit": "nm"}, (0.1, 0.05, 0.05), None),
    ({"voxel_size": 0.65, "units": "micron"}, (0.65, 0.65, 0.65), None),
    ({"voxel_size": [1, 2, 3], "unit": "mm"}, (1e3, 2e3, 3e3), None),
    ({"voxel_size": 0.5}, (0.5, 0.5, 0.5), "no length unit"),
    ({"voxel_size_um": [0.3, 0.2, 0.1]}, (0.3, 0.2, 0.1), None),
])
@pytest.mark.parametrize("fmt", ["raw", "npy"])
def test_json_sidecar_voxel_size_and_unit(tmp_path, side, expected, note, fmt):
    a = swap_sensitive_values((3, 4, 5), "uint16")
    p = tmp_path / f"scan.{fmt}"
    if fmt == "raw":
        a.tofile(p)
        side = {"shape": [3, 4, 5], "dtype": "uint16", **side}
    else:
        np.save(p, a)
    (tmp_path / f"scan.{fmt}.json").write_text(json.dumps(side))
    with open_volume(p) as src:
        assert src.voxel_size_um == pytest.approx(expected, rel=1e-12)
        assert (src.voxel_size_note is None) if note is None else (note in src.voxel_size_note)


# --------------------------------------------------------------------------------------------
# 7. compressed and multi-series TIFFs


CODECS = {"lzw": {"compression": "lzw"},
          "deflate-predictor": {"compression": "zlib", "predictor": True},
          "zstd": {"compression": "zstd"},
          "lzw-tiled": {"compression": "lzw", "tile": (16, 16)}}


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compressed_tiff_stack_and_folder(tmp_path, codec, dtype):
    a = swap_sensitive_values((5, 32, 48), dtype)
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, a, photometric="minisblack", **CODECS[codec])
    np.testing.assert_array_equal(read_volume(p).data, a)
    np.testing.assert_array_equal(read_volume(p, roi="1:4,3:30,5:47").data, a[1:4, 3:30, 5:47])
    d = tmp_path / "slices"
    d.mkdir()
    for k, plane in enumerate(a):
        tifffile.imwrite(d / f"r_{k:03d}.tif", plane, **CODECS[codec])
    _assert_binned(read_volume(d, binning=(1, 2, 2)).data, _bin_ref_yx(a))


def _bin_ref_yx(a):
    m = a.astype(np.float64).reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2)
    m = m.mean(axis=(2, 4))
    return np.rint(m).astype(a.dtype) if a.dtype.kind in "iu" else m.astype(a.dtype)


def _drop_codecs(monkeypatch):
    """Make tifffile behave as without the imagecodecs package (codec tables emptied)."""
    import tifffile.tifffile as tt

    monkeypatch.setattr(tt, "imagecodecs", types.SimpleNamespace())
    monkeypatch.setattr(tt.TIFF.DECOMPRESSORS, "_codecs", {1: tt.identityfunc})
    monkeypatch.setattr(tt.TIFF.UNPREDICTORS, "_codecs",
                        {k: v for k, v in tt.TIFF.UNPREDICTORS._codecs.items() if k == 1})


@pytest.mark.parametrize("kind", ["stack", "folder"])
def test_missing_codec_is_named(tmp_path, cli, monkeypatch, kind):
    a = swap_sensitive_values((3, 16, 16), "uint16")
    if kind == "stack":
        p = tmp_path / "lzw.tif"
        tifffile.imwrite(p, a, compression="lzw", photometric="minisblack")
    else:
        p = tmp_path / "lzw"
        p.mkdir()
        for k, plane in enumerate(a):
            tifffile.imwrite(p / f"s_{k}.tif", plane, compression="lzw")
    _drop_codecs(monkeypatch)
    with pytest.raises(MissingCodecError, match="LZW") as info:
        read_volume(p)
    assert "damaged" not in str(info.value) and "imagecodecs" in str(info.value)
    line = _one_line_error(cli("convert", p, tmp_path / "out.h5"), "LZW")
    assert "damaged" not in line
    assert not (tmp_path / "out.h5").exists()


def test_missing_predictor_codec_is_named(tmp_path, monkeypatch):
    p = tmp_path / "fp.tif"
    tifffile.imwrite(p, swap_sensitive_values((3, 16, 16), "float32"), compression="zlib", predictor=3,
                     photometric="minisblack")
    _drop_codecs(monkeypatch)
    with pytest.raises(MissingCodecError, match="FLOATINGPOINT predictor") as info:
        read_volume(p)
    assert "damaged" not in str(info.value)


def test_codec_missing_at_read_time(tmp_path, monkeypatch):
    """Opened while the codec was there, read after it went: still named, not 'damaged'."""
    p = tmp_path / "lzw.tif"
    tifffile.imwrite(p, swap_sensitive_values((3, 16, 16), "uint16"), compression="lzw",
                     photometric="minisblack")
    with open_volume(p) as src:
        _drop_codecs(monkeypatch)
        with pytest.raises(MissingCodecError, match="LZW"):
            src.read()


def _preview_then_stack(p, a, preview_shape=(8, 10)):
    with tifffile.TiffWriter(p) as w:
        w.write(np.full(preview_shape, 7, np.uint8), photometric="minisblack")
        w.write(a, photometric="minisblack")


def test_tiff_with_preview_series(tmp_path, cli):
    a = swap_sensitive_values((6, 12, 14), "uint16")
    p = tmp_path / "vendor.tif"
    _preview_then_stack(p, a)
    with open_volume(p) as src:  # the 3D series, read with plain file reads
        assert src.shape == a.shape and src._contiguous
        np.testing.assert_array_equal(src.read().data, a)
    np.testing.assert_array_equal(read_volume(f"{p}:series=1", roi="2:5,:,3:9").data,
                                  a[2:5, :, 3:9])
    with pytest.raises(DimensionError):
        read_volume(f"{p}:series=0")  # the 2D preview
    res = cli("convert", f"{p}:series=1", tmp_path / "out.npy")
    assert res.code == 0, res.err
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), a)


@pytest.mark.parametrize("sel", ["series=5", "series=x", "series=-1"])
def test_tiff_bad_series_lists_series(tmp_path, cli, sel):
    a = swap_sensitive_values((6, 12, 14), "float32")
    p = tmp_path / "vendor.tif"
    _preview_then_stack(p, a)
    with pytest.raises(DatasetNotFoundError) as info:
        read_volume(f"{p}:{sel}")
    msg = str(info.value)
    assert "0: (8, 10) uint8" in msg and "1: (6, 12, 14) float32" in msg
    _one_line_error(cli("inspect", f"{p}:{sel}"), "(6, 12, 14) float32")


def test_tiff_two_stacks_largest_by_default(tmp_path):
    small, big = swap_sensitive_values((3, 5, 6), "uint16", 1), swap_sensitive_values((4, 9, 10), "uint16", 2)
    p = tmp_path / "two.tif"
    with tifffile.TiffWriter(p, byteorder=">") as w:
        w.write(small, photometric="minisblack")
        w.write(big, photometric="minisblack", compression="zlib")
    np.testing.assert_array_equal(read_volume(p).data, big)
    np.testing.assert_array_equal(read_volume(f"{p}:series=0").data, small)


def test_series_path_is_not_for_writing(tmp_path):
    from anodetwin.errors import UnknownFormatError
    from anodetwin.io import write_volume

    with pytest.raises(UnknownFormatError, match="series"):
        write_volume(f"{tmp_path}/x.tif:series=1", np.zeros((2, 3, 4), np.uint8))

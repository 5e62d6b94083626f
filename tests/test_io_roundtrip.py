"""Every format keeps data, dtype, voxel size and origin exactly."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

from anodetwin.io import Volume, detect_format, open_volume, read_volume, write_volume
from conftest import random_volume

# path inside tmp_path per format (a trailing slash writes a TIFF slice folder)
TARGETS = {
    "tiff": "vol.tif",
    "tiff-dir": "slices/",
    "hdf5": "vol.h5:/group/volume",
    "zarr": "vol.zarr",
    "zarr-group": "grp.zarr:/scan/t0",
    "npy": "vol.npy",
    "raw": "vol.raw",
}
DTYPES = ["uint8", "uint16", "int16", "int32", "uint32", "float32", "float64"]


@pytest.mark.parametrize("fmt", sorted(TARGETS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 11, 13), (3, 4, 5), (1, 6, 4)])
def test_roundtrip_exact(tmp_path, rng, fmt, dtype, shape):
    # (3, y, x) and (1, y, x) must stay grey-level volumes, never become RGB or 2D images
    data = random_volume(rng, shape, dtype)
    vs = (0.05, 0.0625, 0.07)  # anisotropic on purpose
    origin = (1.5, -2.25, 3.0)
    path = f"{tmp_path}/{TARGETS[fmt]}"
    written = write_volume(path, Volume(data, vs, origin))
    assert written.exists()
    back = read_volume(path)
    assert back.dtype == data.dtype
    assert back.shape == data.shape
    np.testing.assert_array_equal(back.data, data)
    assert back.voxel_size_um == vs
    assert back.origin == origin
    prov = back.attrs["provenance"]
    assert prov["tool"] == "anodetwin" and "created" in prov


@pytest.mark.parametrize("fmt", sorted(TARGETS))
def test_voxel_size_override_and_unknown(tmp_path, rng, fmt):
    data = random_volume(rng, (4, 5, 6), "uint16")
    path = f"{tmp_path}/{TARGETS[fmt]}"
    write_volume(path, data)  # no voxel size known
    assert read_volume(path).voxel_size_um is None
    assert read_volume(path, voxel_size=0.05).voxel_size_um == (0.05, 0.05, 0.05)
    assert read_volume(path, voxel_size=[1, 2, 3]).voxel_size_um == (1.0, 2.0, 3.0)


def test_imagej_tiff_from_other_software(tmp_path, rng):
    """A Fiji-style hyperstack (no anodetwin tag): voxel size from spacing + resolution."""
    data = random_volume(rng, (6, 8, 9), "uint16")
    p = tmp_path / "fiji.tif"
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.05, 1 / 0.05),
                     metadata={"spacing": 0.1, "unit": "micron", "axes": "ZYX"})
    vol = read_volume(p)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_um == pytest.approx((0.1, 0.05, 0.05), rel=1e-9)


def test_imagej_tiff_in_nanometres(tmp_path, rng):
    data = random_volume(rng, (3, 4, 5), "uint8")
    p = tmp_path / "nm.tif"
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 50.0, 1 / 50.0),
                     metadata={"spacing": 50.0, "unit": "nm", "axes": "ZYX"})
    assert read_volume(p).voxel_size_um == pytest.approx((0.05, 0.05, 0.05))


def test_plain_tiff_centimetre_resolution(tmp_path, rng):
    data = random_volume(rng, (3, 4, 5), "int32")
    p = tmp_path / "cm.tif"
    tifffile.imwrite(p, data, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
                     photometric="minisblack")
    assert read_volume(p).voxel_size_um == pytest.approx((0.5, 0.5, 0.5))


def test_compressed_tiled_tiff(tmp_path, rng):
    """Non-contiguous TIFFs (compressed, tiled) are read page by page."""
    data = random_volume(rng, (5, 32, 48), "uint16")
    p = tmp_path / "zlib.tif"
    tifffile.imwrite(p, data, compression="zlib", tile=(16, 16))
    with open_volume(p) as src:
        assert not src._contiguous
        np.testing.assert_array_equal(src.read().data, data)
        np.testing.assert_array_equal(src.read("1:4,3:30,5:47").data, data[1:4, 3:30, 5:47])


def test_hdf5_fiji_element_size(tmp_path, rng):
    data = random_volume(rng, (4, 5, 6), "float32")
    p = tmp_path / "ilastik.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("exported_data", data=data)
        d.attrs["element_size_um"] = [0.2, 0.1, 0.1]
    vol = read_volume(p)  # the only 3D dataset is found without naming it
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_um == (0.2, 0.1, 0.1)


def test_hdf5_writes_fiji_attribute(tmp_path, rng):
    p = tmp_path / "out.h5"
    write_volume(p, Volume(random_volume(rng, (2, 3, 4), "uint8"), 0.05))
    with h5py.File(p, "r") as f:
        np.testing.assert_allclose(f["volume"].attrs["element_size_um"], [0.05] * 3)
        assert json.loads(f.attrs["provenance"])["tool"] == "anodetwin"


@pytest.mark.parametrize("order", ["little", "big"])
def test_raw_byte_order(tmp_path, rng, order):
    data = random_volume(rng, (3, 4, 5), "uint16")
    p = tmp_path / "scan.raw"
    data.astype(data.dtype.newbyteorder("<" if order == "little" else ">")).tofile(p)
    (tmp_path / "scan.json").write_text(json.dumps(
        {"shape": [3, 4, 5], "dtype": "uint16", "byte_order": order, "voxel_size_um": 0.05}))
    vol = read_volume(p)
    assert vol.dtype == np.uint16 and vol.dtype.isnative
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_um == (0.05, 0.05, 0.05)


def test_raw_header_bytes(tmp_path, rng):
    data = random_volume(rng, (3, 4, 5), "float32")
    p = tmp_path / "scan.vol.raw"
    p.write_bytes(b"H" * 512 + data.tobytes())
    (tmp_path / "scan.vol.raw.json").write_text(json.dumps(
        {"shape": [3, 4, 5], "dtype": "float32", "header_bytes": 512}))
    np.testing.assert_array_equal(read_volume(p).data, data)


def test_fortran_npy(tmp_path, rng):
    data = np.asfortranarray(random_volume(rng, (5, 6, 7), "int16"))
    p = tmp_path / "f.npy"
    np.save(p, data)
    np.testing.assert_array_equal(read_volume(p, roi="1:4,2:5,0:7").data, data[1:4, 2:5])


def test_npy_without_sidecar(tmp_path, rng):
    data = random_volume(rng, (3, 4, 5), "uint16")
    np.save(tmp_path / "plain.npy", data)
    vol = read_volume(tmp_path / "plain.npy")
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_um is None


def test_tiff_slice_folder_natural_order(tmp_path, rng):
    data = random_volume(rng, (12, 4, 5), "uint16")
    d = tmp_path / "recon"
    d.mkdir()
    for k in range(12):  # names without zero padding: slice_2 must come before slice_10
        tifffile.imwrite(d / f"slice_{k}.tif", data[k])
    np.testing.assert_array_equal(read_volume(d).data, data)


def test_overwrite_replaces_folder_outputs(tmp_path, rng):
    a = random_volume(rng, (4, 5, 6), "uint8")
    b = random_volume(rng, (2, 3, 4), "uint8")
    for target in ("v.zarr", "s/"):
        write_volume(tmp_path / target if target != "s/" else str(tmp_path / "s") + "/", a)
        path = tmp_path / target if target != "s/" else str(tmp_path / "s") + "/"
        write_volume(path, b)
        np.testing.assert_array_equal(read_volume(path).data, b)


def test_detect_format():
    assert detect_format("a/b.TIF", for_writing=True)[0] == "tiff"
    assert detect_format("x.h5:/a/b", for_writing=True) == ("hdf5", detect_format(
        "x.h5", for_writing=True)[1], "/a/b")
    assert detect_format("x.zarr:/t0", for_writing=True)[2] == "/t0"
    assert detect_format("out/", for_writing=True)[0] == "tiff-dir"
    assert detect_format("v.bin", for_writing=True)[0] == "raw"


def test_a_read_only_format_is_refused_for_writing(tmp_path, rng, monkeypatch, cli):
    """A format registered with a reader only (here ``.npz`` read as npy) opens, and writing
    it is a one-line typed error in the library and exit 2 on the command line."""
    from anodetwin.errors import UnknownFormatError
    from anodetwin.io import formats

    monkeypatch.setitem(formats._EXT, ".npz", "npz")
    monkeypatch.setitem(formats._SOURCES, "npz", formats._SOURCES["npy"])
    data = random_volume(rng, (4, 5, 6), np.uint16)
    np.save(tmp_path / "v.npy", data)
    (tmp_path / "v.npy").rename(tmp_path / "v.npz")
    assert np.array_equal(read_volume(tmp_path / "v.npz").data, data)
    assert detect_format(tmp_path / "v.npz")[0] == "npz"
    with pytest.raises(UnknownFormatError, match="format 'npz' cannot be written; use one"):
        write_volume(tmp_path / "w.npz", data)
    with pytest.raises(UnknownFormatError, match="cannot be written"):
        detect_format(tmp_path / "w.x", for_writing=True, fmt="npz")
    r = cli("convert", tmp_path / "v.npz", tmp_path / "out.npz")
    assert r.code == 2 and "cannot be written" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "out.npz").exists()


def test_an_output_may_not_replace_any_file_an_input_reads(tmp_path):
    """The file, a raw file's JSON sidecar, an external link's target and a virtual
    dataset's source files are all refused as outputs; other paths are not."""
    import h5py

    from anodetwin.errors import OutputError
    from anodetwin.io import check_output_path

    raw = tmp_path / "vol.raw"
    np.zeros((2, 3, 4), np.uint16).tofile(raw)
    (tmp_path / "vol.raw.json").write_text('{"shape": [2, 3, 4], "dtype": "uint16"}')
    src = tmp_path / "source.h5"
    with h5py.File(src, "w") as f:
        f["data"] = np.zeros((2, 3, 4), np.uint16)
    with h5py.File(tmp_path / "master.h5", "w") as f:
        f["linked"] = h5py.ExternalLink("source.h5", "/data")
        layout = h5py.VirtualLayout(shape=(2, 3, 4), dtype=np.uint16)
        layout[:] = h5py.VirtualSource("source.h5", "data", shape=(2, 3, 4))
        f.create_virtual_dataset("virtual", layout)
    for inp, out in ((raw, raw), (raw, tmp_path / "vol.raw.json"),
                     (f"{tmp_path / 'master.h5'}:/linked", src),
                     (f"{tmp_path / 'master.h5'}:/virtual", src),
                     (f"{tmp_path / 'master.h5'}:/virtual", tmp_path / "master.h5")):
        with pytest.raises(OutputError, match="destroy the input"):
            check_output_path(out, inputs=[inp])
    assert check_output_path(tmp_path / "master.h5", inputs=[f"{src}:/data", raw]) \
        == tmp_path / "master.h5"

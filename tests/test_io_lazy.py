"""Lazy reads: a cropped/binned read equals the same crop/bin of the full array."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import anodetwin.io.volume as volmod
from anodetwin.errors import ParameterError
from anodetwin.io import Volume, bin_volume, open_volume, parse_roi, read_volume, write_volume
from conftest import random_volume

TARGETS = ["vol.tif", "slices/", "vol.h5:/v", "vol.zarr", "vol.npy", "vol.raw"]
ROIS = ["0:17,0:19,0:23", "3:15,2:17,5:20", "5:6,:,-7:", ":,10:11,:"]
BINS = [1, 2, 3, (1, 2, 3)]


def _reference_bin(a: np.ndarray, b) -> np.ndarray:
    """Independent mean-binning: explicit loops over bins."""
    b = (b,) * 3 if isinstance(b, int) else b
    n = [s // f for s, f in zip(a.shape, b)]
    out = np.empty(n, dtype=np.float64)
    for i, j, k in itertools.product(*map(range, n)):
        out[i, j, k] = a[i * b[0]:(i + 1) * b[0], j * b[1]:(j + 1) * b[1],
                         k * b[2]:(k + 1) * b[2]].astype(np.float64).mean()
    if np.issubdtype(a.dtype, np.integer):
        return np.rint(out).astype(a.dtype)
    return out.astype(a.dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("b", BINS)
def test_bin_volume_matches_reference(rng, dtype, b):
    a = random_volume(rng, (7, 8, 10), dtype)
    got = bin_volume(a, b)
    assert got.dtype == a.dtype
    ref = _reference_bin(a, b)
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, ref)


def test_bin_volume_bool_majority():
    a = np.zeros((2, 2, 2), bool)
    a.flat[:4] = True
    assert bin_volume(a, 2).tolist() == [[[True]]]
    a.flat[3] = False
    assert bin_volume(a, 2).tolist() == [[[False]]]


@pytest.mark.parametrize("target", TARGETS)
def test_lazy_crop_bin_equals_in_memory(tmp_path, rng, monkeypatch, target):
    # tiny slabs so that every read crosses several slabs
    monkeypatch.setattr(volmod, "SLAB_BYTES", 700)
    full = random_volume(rng, (17, 19, 23), "uint16")
    path = f"{tmp_path}/{target}"
    write_volume(path, Volume(full, 0.05, (0.0, 0.0, 0.0)))
    with open_volume(path) as src:
        for roi, b in itertools.product(ROIS, BINS):
            r = parse_roi(roi)
            try:
                expected = bin_volume(full[r], b)
            except ParameterError:
                with pytest.raises(ParameterError):
                    src.read(roi, b)
                continue
            got = src.read(roi, b)
            np.testing.assert_array_equal(got.data, expected, err_msg=f"{roi} bin {b}")
            assert got.dtype == full.dtype


def test_geometry_of_crop_and_bin(tmp_path, rng):
    full = random_volume(rng, (10, 10, 10), "uint8")
    p = tmp_path / "g.npy"
    write_volume(p, Volume(full, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0)))
    v = read_volume(p, roi="2:10,4:10,0:9", binning=(2, 3, 3))
    assert v.shape == (4, 2, 3)
    assert v.voxel_size_um == pytest.approx((0.2, 0.6, 0.9))
    # centre of the first bin = mean of the centres it covers
    assert v.origin == pytest.approx((1.0 + 2.5 * 0.1, 2.0 + 5 * 0.2, 3.0 + 1 * 0.3))
    # the in-memory Volume gives the same geometry
    w = Volume(full, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0)).crop_bin("2:10,4:10,0:9", (2, 3, 3))
    assert w.origin == pytest.approx(v.origin) and w.voxel_size_um == pytest.approx(v.voxel_size_um)
    np.testing.assert_array_equal(w.data, v.data)


def test_streamed_conversion(tmp_path, rng, monkeypatch):
    """A LazyVolume written to another format equals crop + bin of the original."""
    monkeypatch.setattr(volmod, "SLAB_BYTES", 1000)
    full = random_volume(rng, (20, 12, 14), "float32")
    write_volume(tmp_path / "a.h5", Volume(full, 0.05))
    with open_volume(tmp_path / "a.h5") as src:
        write_volume(tmp_path / "b.tif", src.lazy("2:18,:,1:13", 2))
    got = read_volume(tmp_path / "b.tif")
    np.testing.assert_allclose(got.data, bin_volume(full[2:18, :, 1:13], 2), rtol=1e-6)
    assert got.voxel_size_um == (0.1, 0.1, 0.1)


@pytest.mark.parametrize("roi", ["0:5,0:5", "0:5:2,:,:", "a:b,:,:", "5:5,:,:", "0:100,:,:"])
def test_bad_roi(tmp_path, rng, roi):
    p = tmp_path / "r.npy"
    write_volume(p, random_volume(rng, (10, 10, 10), "uint8"))
    with pytest.raises(ParameterError):  # 0:100 of 10 slices: refused, never clipped
        read_volume(p, roi=roi)


@pytest.mark.parametrize("b", [0, -1, 2.5, "x", (1, 2)])
def test_bad_binning(tmp_path, rng, b):
    p = tmp_path / "b.npy"
    write_volume(p, random_volume(rng, (4, 4, 4), "uint8"))
    with pytest.raises(ParameterError):
        read_volume(p, binning=b)


def test_slab_volume_streams(tmp_path, monkeypatch):
    from anodetwin.io import SlabVolume

    monkeypatch.setattr(volmod, "SLAB_BYTES", 100)
    calls = []

    def make(z0, z1):
        calls.append((z0, z1))
        return np.broadcast_to(np.arange(z0, z1, dtype=np.int32)[:, None, None], (z1 - z0, 4, 5))

    write_volume(tmp_path / "s.h5", SlabVolume((9, 4, 5), np.int32, make, voxel_size_um=0.5))
    v = read_volume(tmp_path / "s.h5")
    np.testing.assert_array_equal(v.data[:, 0, 0], np.arange(9))
    assert v.voxel_size_um == (0.5, 0.5, 0.5) and len(calls) > 1
    with pytest.raises(ValueError):
        write_volume(tmp_path / "t.h5", SlabVolume((9, 4, 5), np.int32, lambda a, b: np.zeros(3)))
    assert not (tmp_path / "t.h5").exists()


@pytest.mark.parametrize("target", ["l.h5", "l.zarr"])
def test_chunked_writers_recut_slabs(tmp_path, rng, monkeypatch, target):
    """Slabs of any thickness are re-cut into whole chunk layers without loss."""
    monkeypatch.setattr(volmod, "SLAB_BYTES", 3 * 7 * 9)  # 3-plane slabs
    full = random_volume(rng, (70, 7, 9), "int16")
    write_volume(tmp_path / target, Volume(full, 0.1))
    np.testing.assert_array_equal(read_volume(tmp_path / target).data, full)

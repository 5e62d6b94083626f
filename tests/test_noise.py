"""Noise floor of a double scan against exact truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import norm

from anodetwin.demo import spam_tomogram_path
from anodetwin.dvc import noise_floor
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import read_volume


@pytest.fixture(scope="module")
def snow():
    return read_volume(spam_tomogram_path("snow")).data


def test_noise_floor_recovers_known_noise(snow):
    """Real tomogram + known Gaussian noise twice: std, drift and threshold are recovered."""
    rng = np.random.default_rng(7)
    s, drift = 400.0, 25.0
    a = snow + rng.normal(0, s, snow.shape)
    b = snow + rng.normal(0, s, snow.shape) + drift
    res = noise_floor(a, b, sigma=2.0, percentile=99.0)
    n = snow.size
    assert res.noise_std == pytest.approx(s, rel=5 / np.sqrt(n) * 10)
    assert res.drift == pytest.approx(drift, abs=4 * np.sqrt(2) * s / np.sqrt(n))
    # exact std of the blurred difference: sqrt(2) s * ||discrete Gaussian kernel||_2
    delta = np.zeros((25, 25, 25))
    delta[12, 12, 12] = 1
    kernel_norm = np.sqrt((ndimage.gaussian_filter(delta, 2.0) ** 2).sum())
    blurred_std = np.sqrt(2) * s * kernel_norm
    # |N(drift, sd)| 99th percentile (drift is small against sd here: solve numerically)
    x = np.linspace(0, 10 * blurred_std, 200001)
    cdf = norm.cdf(x, drift, blurred_std) - norm.cdf(-x, drift, blurred_std)
    expected = x[np.searchsorted(cdf, 0.99)]
    # the blurred field is correlated over ~2 sigma: fewer independent samples, 3% tolerance
    assert res.residual_threshold == pytest.approx(expected, rel=0.03)


def test_identical_scans_have_zero_floor(snow):
    res = noise_floor(snow, snow.copy())
    assert res.noise_std == 0 and res.residual_threshold == 0 and res.drift == 0


def test_noise_floor_bad_input(snow):
    with pytest.raises(ShapeMismatchError):
        noise_floor(snow, snow[:-1])
    with pytest.raises(ParameterError):
        noise_floor(snow, snow, sigma=-1)
    with pytest.raises(ParameterError):
        noise_floor(snow, snow, percentile=0)


def test_noise_floor_cli(tmp_path, cli, snow):
    from anodetwin.io import Volume, write_volume

    rng = np.random.default_rng(1)
    for name in ("t8.tif", "t9.tif"):
        noisy = np.clip(snow + rng.normal(0, 300, snow.shape), 0, 65535).astype(np.uint16)
        write_volume(tmp_path / name, Volume(noisy, 0.05))
    res = cli("noise-floor", tmp_path / "t8.tif", tmp_path / "t9.tif", "--json",
              "--out", tmp_path / "diff.h5")
    assert res.code == 0, res.err
    import json

    rep = json.loads(res.out)
    assert rep["noise_std"] == pytest.approx(300, rel=0.02)
    diff = read_volume(tmp_path / "diff.h5")
    assert diff.dtype == np.float32 and diff.voxel_size_um == (0.05, 0.05, 0.05)
    assert diff.attrs["provenance"]["command"] == "noise-floor"


def test_block_by_block_equals_numpy_on_the_whole_volume(snow, tmp_path):
    """The order statistic and the moments reduced over blocks (and from a file read
    lazily) equal NumPy's on the whole volume."""
    import h5py

    from anodetwin.io import open_volume

    rng = np.random.default_rng(3)
    a = (snow + rng.normal(0, 300, snow.shape)).astype(np.float32)
    b = (snow + rng.normal(0, 300, snow.shape) + 10).astype(np.float32)
    d = (b - a).astype(np.float32)
    blurred = np.abs(ndimage.gaussian_filter(d, 1.5, truncate=4.0))[6:-6, 6:-6, 6:-6]
    expected = np.percentile(blurred.astype(np.float64), 97.5)
    for kw in ({}, {"block_shape": 24, "workers": 2}, {"block_shape": (7, 50, 13)},
               {"memory_limit": "64MB", "workers": 1}):
        res = noise_floor(a, b, sigma=1.5, percentile=97.5, **kw)
        assert res.residual_threshold == pytest.approx(expected, rel=1e-12), kw
        assert res.drift == pytest.approx(float(d.mean(dtype=np.float64)), rel=1e-12)
        assert res.noise_std == pytest.approx(float(d.std(dtype=np.float64)) / np.sqrt(2),
                                              rel=1e-12)
        assert res.n_voxels == d.size
    with h5py.File(tmp_path / "ab.h5", "w") as f:
        f["a"], f["b"] = a, b
    with open_volume(f"{tmp_path / 'ab.h5'}:/a") as sa, open_volume(
            f"{tmp_path / 'ab.h5'}:/b") as sb:
        res = noise_floor(sa.lazy(progress=False), sb.lazy(progress=False), sigma=1.5,
                          percentile=97.5, block_shape=32, workers=2)
    assert res.residual_threshold == pytest.approx(expected, rel=1e-12)


def test_nonfinite_voxels_counted_over_all_blocks(snow):
    from anodetwin.errors import NonFiniteError

    a = snow.astype(np.float32)
    b = a.copy()
    b[1, 2, 3] = b[-2, -3, -4] = np.nan
    b[40, 5, 5] = np.inf
    with pytest.raises(NonFiniteError, match="second scan contains 2 NaN and 1 inf"):
        noise_floor(a, b, block_shape=16)

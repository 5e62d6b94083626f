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


def test_scans_without_noise_between_them_are_refused(snow, tmp_path, cli):
    """Identical scans (or a difference that is one constant) have no noise: a floor of 0
    would flag every residual voxel, so they are refused, naming both scans."""
    from anodetwin.errors import InputError
    from anodetwin.io import Volume, write_volume

    with pytest.raises(InputError, match="'a' and 'b' are identical"):
        noise_floor(snow, snow.copy(), names=("'a'", "'b'"))
    with pytest.raises(InputError, match="differ by the same 7 grey levels"):
        noise_floor(snow.astype(np.float32), snow.astype(np.float32) + 7)
    write_volume(tmp_path / "t2.h5", Volume(snow, 0.2))
    res = cli("noise-floor", tmp_path / "t2.h5", tmp_path / "t2.h5")
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert res.err.count("t2.h5'") == 2 and "identical" in res.err and "noise_std" not in res.out


def _exact(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Drift and per-scan noise std of integer scans from exact integer sums (first
    principles: mean = S1/n, std^2 = (n S2 - S1^2) / n^2 / 2, each rounded once)."""
    from fractions import Fraction

    d = [int(x) for x in (b.astype(np.int64) - a.astype(np.int64)).ravel()]
    n, s1, s2 = len(d), sum(d), sum(x * x for x in d)
    return float(Fraction(s1, n)), float(np.sqrt(float(Fraction(n * s2 - s1 * s1,
                                                                  2 * n * n))))


@pytest.mark.parametrize("dtype,scale", [(np.uint16, 1800), (np.int32, 6e8)])
def test_integer_scans_give_the_same_bits_on_every_route(snow, tmp_path, dtype, scale):
    """Integer scans: drift and noise std are the correctly rounded values of the exact
    integer moments, bit for bit, whatever the blocks, workers or route (in memory, from a
    file)."""
    import h5py

    from anodetwin.io import open_volume

    rng = np.random.default_rng(11)
    info = np.iinfo(dtype)
    base = snow.astype(np.float64) * (scale / 1800)
    a, b = (np.clip(base + rng.normal(0, scale, snow.shape), info.min, info.max).astype(dtype)
            for _ in range(2))
    drift, std = _exact(a, b)
    with h5py.File(tmp_path / "ab.h5", "w") as f:
        f["a"], f["b"] = a, b
    seen = set()
    for kw in ({}, {"workers": 2}, {"block_shape": 24, "workers": 3},
               {"block_shape": (7, 50, 13)}, {"memory_limit": "64MB", "workers": 1},
               {"memory_limit": "64MB", "workers": 2}):
        res = noise_floor(a, b, **kw)
        seen.add((res.drift, res.noise_std, res.residual_threshold))
        assert (res.drift, res.noise_std) == (drift, std), kw
        with open_volume(f"{tmp_path / 'ab.h5'}:/a") as sa, open_volume(
                f"{tmp_path / 'ab.h5'}:/b") as sb:
            res = noise_floor(sa.lazy(progress=False), sb.lazy(progress=False), **kw)
        seen.add((res.drift, res.noise_std, res.residual_threshold))
    assert len(seen) == 1, seen


def test_noise_floor_cli_identical_on_every_route_and_never_over_an_input(snow, tmp_path,
                                                                           cli):
    """The JSON of ``noise-floor`` is the same for 1, 2 and all (0) workers, in memory
    (--out) or from the files; --out naming an input scan is refused before any work."""
    import json

    import h5py

    from anodetwin.io import Volume, write_volume

    rng = np.random.default_rng(2)
    a, b = (np.clip(snow + rng.normal(0, 1800, snow.shape), 0, 65535).astype(np.uint16)
            for _ in range(2))
    write_volume(tmp_path / "A.tif", Volume(a, 0.2))
    with h5py.File(tmp_path / "B.h5", "w") as f:
        f["entry/data/data"] = b
    A, B = tmp_path / "A.tif", f"{tmp_path / 'B.h5'}:/entry/data/data"
    outs = set()
    for extra in ([], ["--workers", "2"], ["--workers", "0"], ["--memory-limit", "64MB"],
                  ["--out", tmp_path / "d.h5"], ["--out", tmp_path / "e.h5", "--workers", "2"]):
        res = cli("noise-floor", A, B, "--json", "--voxel-size", "0.2", *extra)
        assert res.code == 0, res.err
        outs.add(res.out)
    assert len(outs) == 1, outs
    drift, std = _exact(a, b)
    rep = json.loads(outs.pop())
    assert (rep["drift"], rep["noise_std"]) == (drift, std)
    before = (A.read_bytes(), (tmp_path / "B.h5").read_bytes())
    for out in (A, B, f"{tmp_path / 'B.h5'}:/diff"):
        res = cli("noise-floor", A, B, "--voxel-size", "0.2", "--out", out)
        assert res.code == 2 and "Traceback" not in res.err and "is read for the input" in \
            res.err, res.err
    assert (A.read_bytes(), (tmp_path / "B.h5").read_bytes()) == before


def test_noise_floor_names_the_scan_with_nan(snow, tmp_path, cli):
    from anodetwin.io import Volume, write_volume

    nan = snow.astype(np.float32)
    nan[:2] = np.nan
    write_volume(tmp_path / "nanslab.h5", Volume(nan, 0.2))
    write_volume(tmp_path / "f32.h5", Volume(snow.astype(np.float32), 0.2))
    for extra in ([], ["--out", tmp_path / "d.h5"]):
        res = cli("noise-floor", tmp_path / "nanslab.h5", tmp_path / "f32.h5", *extra)
        assert res.code == 2 and "Traceback" not in res.err, res.err
        assert f"scan A '{tmp_path / 'nanslab.h5'}' contains 20000 NaN" in res.err, res.err


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

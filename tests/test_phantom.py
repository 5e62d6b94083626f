"""Phantoms: composition, microstructure statistics, exact ground truth, determinism,
double scans and bad configurations."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy import ndimage

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.phantom import (PHASE, Recipe, config_from_dict, electrode_composition,
                               generate_series, load_config, make_microstructure,
                               soc_from_protocol)
from anodetwin.phantom.render import noise_sigma
from anodetwin.kinematics import inverse_coordinates, sample_nearest
from conftest import listing

SMALL = {"geometry": {"voxel_size_um": 0.25, "lateral_um": 16.0, "separator_thickness_um": 3.0},
         "series": {"soc": [0.0, 0.3, 0.85]}}


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    path = tmp_path_factory.mktemp("phantom") / "s.h5"
    res = generate_series(config_from_dict(SMALL, seed=5), path, progress=False)
    return res


# -- composition ------------------------------------------------------------------------------

def test_reference_composition_by_hand():
    c = electrode_composition()
    # 3 mg/cm2 over 21 um: 2.1e-3 cm3 per cm2; Si 0.89 * 3e-3 g / 2.33 g/cm3
    assert c.si_fraction == pytest.approx(0.89 * 3e-3 / 2.33 / 2.1e-3, rel=1e-12)
    solid = (0.09 / 1.22 + 0.018 / 1.9 + 0.002 / 1.5) * 3e-3 / 2.1e-3
    assert c.cbd_solid_fraction == pytest.approx(solid, rel=1e-12)
    assert c.cbd_fraction == pytest.approx(solid / 0.5, rel=1e-12)
    assert c.porosity == pytest.approx(1 - c.si_fraction - solid, rel=1e-12)
    assert c.anode_capacity_mah_cm2 == pytest.approx(0.89 * 3e-3 * 3579, rel=1e-12)
    assert c.si_utilisation == pytest.approx(3.5 / (0.89 * 3e-3 * 3579), rel=1e-12)
    assert c.cathode_limited and 0.3 < c.si_utilisation < 0.4  # ~1/3 of the Si capacity


@pytest.mark.parametrize("recipe, match", [
    (Recipe(weight_fractions={"si": 0.95, "paa_binder": 0.09}), "sum to"),
    (Recipe(thickness_um=-21), "thickness_um"),
    (Recipe(areal_loading_mg_cm2=10.0), "does not fit"),
    (Recipe(weight_fractions={"binder": 1.0}, densities_g_cm3={"binder": 1.0}), "lack 'si'"),
])
def test_bad_recipes(recipe, match):
    with pytest.raises(ParameterError, match=match):
        electrode_composition(recipe)


def test_protocol_to_soc():
    socs = soc_from_protocol([
        {"kind": "cc", "c_rate": 1 / 3, "minutes": 30},
        {"kind": "cv", "c_rate": 1 / 3, "minutes": 30, "tau_min": 15, "cutoff_c_rate": 0.1},
        {"kind": "rest", "minutes": 1, "scan": False},
        {"kind": "cc", "c_rate": -0.2, "minutes": 30}])
    cv = 1 / 3 * 15 * (1 - np.exp(-min(30, 15 * np.log(10 / 3)) / 15)) / 60
    assert socs == pytest.approx([0, 1 / 6, 1 / 6 + cv, 1 / 6 + cv - 0.1])


# -- microstructure ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_volume_fractions_match_composition(seed):
    ms = make_microstructure(config_from_dict(SMALL, seed=seed))
    a0, a1 = ms.layers.anode
    an = ms.phases[a0:a1]
    comp = ms.composition
    assert abs((an == PHASE["si"]).mean() - comp.si_fraction) <= 0.02
    assert abs((an == PHASE["cbd"]).mean() - comp.cbd_fraction) <= 0.02
    assert abs((an == PHASE["pore"]).mean() - comp.pore_fraction) <= 0.02
    assert (ms.phases[: ms.layers.cu[1]] == PHASE["copper"]).all()
    sep = ms.phases[ms.layers.separator[0]:]
    assert abs((sep == PHASE["pore"]).mean() - 0.45) <= 0.02
    # the particle labels are exactly the Si voxels of the anode
    np.testing.assert_array_equal(ms.particles > 0, ms.phases == PHASE["si"])


def _edge_corrected_median(ms) -> float:
    """Median volume-equivalent diameter of the particles, Miles-Lantuejoul edge correction
    (particles cut by the lateral faces are left out, the others weighted by the chance of
    lying fully inside)."""
    v = ms.voxel_size_um
    _, ny, nx = ms.particles.shape
    objs = ndimage.find_objects(ms.particles)
    d, w = [], []
    for row in ms.table:
        sl = objs[row["id"] - 1]
        if sl[1].start == 0 or sl[2].start == 0 or sl[1].stop == ny or sl[2].stop == nx \
                or row["cracked"]:
            continue
        ly, lx = (sl[1].stop - sl[1].start) * v, (sl[2].stop - sl[2].start) * v
        d.append(row["equivalent_diameter_um"])
        w.append(1.0 / ((ny * v - ly) * (nx * v - lx)))
    d, w = np.array(d), np.array(w)
    o = np.argsort(d)
    return float(d[o][np.searchsorted(np.cumsum(w[o]) / w.sum(), 0.5)])


@pytest.mark.parametrize("median", [4.0, 5.0])
def test_median_particle_diameter(median):
    meds = []
    for seed in (0, 1, 2):
        cfg = config_from_dict({"geometry": {"voxel_size_um": 0.25, "lateral_um": 30.0},
                                "particles": {"median_diameter_um": median}}, seed=seed)
        meds.append(_edge_corrected_median(make_microstructure(cfg)))
    assert abs(np.mean(meds) / median - 1) <= 0.10, meds


def test_particle_table(small_series):
    with h5py.File(small_series.path) as f:
        t = f["particles"][...]
        lab = f["steps/T0/particles"][...]
        v = f.attrs["voxel_size_um"][0]
        cu_top = json.loads(f.attrs["layers"])["copper"][1] * v
    counts = np.bincount(lab.ravel())
    assert np.allclose(t["volume_um3"], counts[t["id"]] * v**3)
    assert np.allclose(t["equivalent_diameter_um"], np.cbrt(6 * t["volume_um3"] / np.pi))
    com = ndimage.center_of_mass(lab > 0, lab, t["id"])
    assert np.allclose(t["centroid_z_um"], (np.array(com)[:, 0] + 0.5) * v)
    assert np.allclose(t["distance_to_collector_um"], t["centroid_z_um"] - cu_top)
    # touching: brute force on one particle
    pid = int(t["id"][np.argmax(t["touching"])])
    grown = ndimage.binary_dilation(lab == pid)
    nb = set(np.unique(lab[grown])) - {0, pid}
    assert len(nb) == t["touching"][t["id"] == pid][0]
    assert t["touching"].mean() >= 1.5  # calendered particles touch


# -- ground truth -----------------------------------------------------------------------------

def test_warping_t0_with_stored_field_reproduces_tn(small_series):
    with h5py.File(small_series.path) as f:
        v = f.attrs["voxel_size_um"][0]
        p0 = f["steps/T0/particles"][...]
        ph0 = f["steps/T0/phases"][...]
        a0, a1 = json.loads(f.attrs["layers"])["anode"]
        for n in (1, 2):
            g = f[f"steps/T{n}"]
            u = g["displacement_um"][...]
            # independent inverse: Newton on the full 3D field, trilinear u (the generator
            # inverted the axial profile exactly)
            X = inverse_coordinates(u, v)
            pn = sample_nearest(p0, X)
            top = int(np.floor(a1 + u[0, a1 - 1].max() / v))
            inside = slice(a0, top)
            agree = (pn[inside] == g["particles"][inside]).mean()
            assert agree >= 0.99, (n, agree)
            ref = np.where(g["lithiated"][...] > 0, PHASE["lithiated"], ph0).astype(np.uint8)
            phn = sample_nearest(ref, X)
            assert (phn[inside] == g["phases"][inside]).mean() >= 0.99


def test_stored_strain_is_gradient_of_stored_displacement(small_series):
    with h5py.File(small_series.path) as f:
        v = f.attrs["voxel_size_um"][0]
        for n in range(small_series.n_steps):
            g = f[f"steps/T{n}"]
            u = g["displacement_um"][...].astype(np.float64)
            grad = [[np.gradient(u[i], v, axis=j) for j in range(3)] for i in range(3)]
            F = np.array(grad).transpose(2, 3, 4, 0, 1) + np.eye(3)
            np.testing.assert_allclose(g["strain/ezz"][...], grad[0][0], atol=1e-5)
            np.testing.assert_allclose(g["strain/eyz"][...], 0.5 * (grad[0][1] + grad[1][0]),
                                       atol=1e-5)  # z with y
            np.testing.assert_allclose(g["strain/exy"][...], 0.5 * (grad[1][2] + grad[2][1]),
                                       atol=1e-5)  # y with x
            np.testing.assert_allclose(g["strain/volumetric"][...], np.linalg.det(F) - 1,
                                       atol=1e-4)


def test_lithiation_truth(small_series):
    with h5py.File(small_series.path) as f:
        t = f["particles"][...]
        v = f.attrs["voxel_size_um"][0]
        util = json.loads(f.attrs["composition"])["si_utilisation"]
        lab0 = f["steps/T0/particles"][...]
        prev = None
        for n in range(small_series.n_steps):
            g = f[f"steps/T{n}"]
            theta, core = g["theta"][...], g["core_volume_um3"][...]
            assert np.all((theta >= 0) & (theta <= 1))
            assert np.average(theta, weights=t["volume_um3"]) == pytest.approx(
                g.attrs["soc"] * util, abs=1e-9)
            # lithiated voxels of each particle (reference grid): theta of its voxels
            lith = g["lithiated"][...].astype(bool)
            assert not (lith & (lab0 == 0)).any()
            n_lith = np.bincount(lab0[lith], minlength=lab0.max() + 1)[t["id"]]
            n_all = np.bincount(lab0.ravel())[t["id"]]
            assert np.allclose(core, (n_all - n_lith) * v**3)
            assert np.all(np.abs(n_lith - theta * n_all) <= 1.0)
            if prev is not None:
                assert np.all(theta >= prev[0] - 1e-12)  # charging only adds Li
                assert not (prev[1] & ~lith).any()  # and the lithiated set only grows
            prev = (theta, lith)
        # separator-concentrated reaction: more Li near the separator
        top = t["distance_to_collector_um"] > np.median(t["distance_to_collector_um"])
        assert theta[top].mean() > theta[~top].mean()
        assert set(np.unique(t["mode"])) <= {0, 1}


def test_thickness_growth_like_the_reference(small_series):
    proto = small_series.protocol
    # reference: 20.7 um -> 30.0 um (+44%) at 85% SoC; the phantom's model lands near it
    growth = proto["thickness_um"][-1] / proto["thickness_um"][0] - 1
    assert 0.30 < growth < 0.55
    assert np.all(np.diff(proto["thickness_um"]) > 0)


def test_double_scan_is_pure_noise(small_series):
    with h5py.File(small_series.path) as f:
        a = f[f"steps/T{small_series.n_steps - 1}/tomogram"][...].astype(np.float64)
        b = f["double_scan/tomogram_b"][...].astype(np.float64)
        sigma = f.attrs["noise_sigma"]
        ph = f[f"steps/T{small_series.n_steps - 1}/phases"][...]
    d = b - a
    assert d.std() / np.sqrt(2) == pytest.approx(sigma, rel=0.02)
    assert abs(d.mean()) < 5 * sigma / np.sqrt(d.size)
    # no structure: uncorrelated with the image and with the phases
    assert abs(np.corrcoef(d.ravel(), (a + b).ravel())[0, 1]) < 0.01
    means = [d[ph == c].mean() for c in np.unique(ph)]
    assert np.ptp(means) < 0.1 * sigma
    # and spatially white (neighbouring voxels independent)
    assert abs(np.corrcoef(d[:, :, :-1].ravel(), d[:, :, 1:].ravel())[0, 1]) < 0.01


def test_rendering_contrast(small_series):
    cfg = config_from_dict(SMALL)
    with h5py.File(small_series.path) as f:
        tomo = f["steps/T2/tomogram"][...].astype(float)
        ph = f["steps/T2/phases"][...]
    core = ndimage.binary_erosion(ph == PHASE["si"], iterations=3)
    lith = ndimage.binary_erosion(ph == PHASE["lithiated"], iterations=1)
    cbd = ndimage.binary_erosion(ph == PHASE["cbd"], iterations=2)
    # crystalline Si clearly distinct; lithiated Si close to CBD + electrolyte
    assert tomo[core].mean() - tomo[cbd].mean() > 5 * noise_sigma(cfg.render)
    assert abs(tomo[lith].mean() - tomo[cbd].mean()) < abs(tomo[core].mean() - tomo[cbd].mean()) / 3


def test_same_seed_bit_identical(tmp_path, small_series):
    again = generate_series(config_from_dict(SMALL, seed=5), tmp_path / "again.h5",
                            progress=False)
    other = generate_series(config_from_dict(SMALL, seed=6), tmp_path / "other.h5",
                            progress=False)

    def datasets(path):
        out = {}
        with h5py.File(path) as f:
            f.visititems(lambda n, o: out.__setitem__(n, o[...].tobytes())
                         if isinstance(o, h5py.Dataset) else None)
        return out

    a, b, c = datasets(small_series.path), datasets(again.path), datasets(other.path)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    assert a["steps/T0/tomogram"] != c["steps/T0/tomogram"]


def test_external_displacement_field(tmp_path, small_series):
    """A displacement field from a file (e.g. a simulation) drives the warping."""
    with h5py.File(small_series.path) as f:
        shape = f["steps/T0/phases"].shape
        v = f.attrs["voxel_size_um"][0]
    z, y, x = np.indices(shape, dtype=np.float32) * v
    u = np.zeros((3,) + shape, np.float32)
    u[0] = 0.05 * z                                   # 5% axial stretch
    u[2] = 0.3 * np.sin(2 * np.pi * y / (shape[1] * v))  # in-plane shear wave, um
    field = tmp_path / "u.h5"
    with h5py.File(field, "w") as f:  # same grid as SMALL (same headroom: same max SoC)
        f["steps/T1/displacement_um"] = u
        f["steps/T2/displacement_um"] = 2 * u
    cfg = config_from_dict({**SMALL, "series": {"soc": [0.0, 0.3, 0.85],
                                                "displacement_file": str(field)}}, seed=5)
    res = generate_series(cfg, tmp_path / "ext.h5", progress=False)
    with h5py.File(res.path) as f:
        np.testing.assert_array_equal(f["steps/T1/displacement_um"][...], u)
        assert np.allclose(f["steps/T1/strain/ezz"][...], 0.05, atol=1e-4)
        p1 = f["steps/T1/particles"][...]
        p0 = f["steps/T0/particles"][...]
    # forward check: the centre of mass of each particle moved by u at its centre
    com0 = np.array(ndimage.center_of_mass(p0 > 0, p0, [1, 2, 3]))
    com1 = np.array(ndimage.center_of_mass(p1 > 0, p1, [1, 2, 3]))
    for c0, c1 in zip(com0, com1, strict=True):
        iz, iy, ix = np.rint(c0).astype(int)
        expect = c0 + u[:, iz, iy, ix] / v
        assert np.abs(c1 - expect).max() < 1.0  # voxels


# -- configuration errors ---------------------------------------------------------------------

BAD = {
    "negative size": ({"particles": {"median_diameter_um": -5}}, "median_diameter_um"),
    "negative voxel": ({"geometry": {"voxel_size_um": -0.1}}, "voxel_size_um"),
    "fractions over 1": ({"composition": {"weight_fractions": {
        "si": 0.95, "paa_binder": 0.09, "carbon_black": 0.018, "swcnt": 0.002}}}, "sum to"),
    "unreachable packing": ({"composition": {"areal_loading_mg_cm2": 3.8,
                                             "cbd_nanoporosity": 0.0}}, "packing density"),
    "unknown mode": ({"series": {"modes": {"network": 0.5, "dendritic": 0.5}}}, "dendritic"),
    "modes not summing": ({"series": {"modes": {"network": 0.5}}}, "sum to 1"),
    "unknown key": ({"particles": {"diameter": 5}}, "unknown key"),
    "soc over 1": ({"series": {"soc": [0.0, 1.2]}}, "soc"),
    "unknown shape": ({"particles": {"shape": "cube"}}, "cube"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_rejected_before_work(tmp_path, cli, case):
    data, match = BAD[case]
    with pytest.raises(ParameterError, match=match):
        config_from_dict(data)
    import tomllib  # noqa: F401  (the CLI reads TOML)

    cfg = tmp_path / "bad.toml"
    cfg.write_text(_toml(data))
    before = listing(tmp_path)
    res = cli("phantom", tmp_path / "out", "--config", cfg)
    assert res.code == 2, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anodetwin: error:")
    assert listing(tmp_path) == before  # no output folder, nothing started


def _toml(data: dict, prefix: str = "") -> str:
    def val(x):
        if isinstance(x, str):
            return json.dumps(x)
        if isinstance(x, dict):
            return "{" + ", ".join(f'"{k}" = {val(v)}' for k, v in x.items()) + "}"
        if isinstance(x, list):
            return "[" + ", ".join(val(v) for v in x) + "]"
        return repr(x)
    out = []
    for sec, body in data.items():
        out.append(f"[{sec}]")
        out.extend(f'"{k}" = {val(v)}' for k, v in body.items())
    return "\n".join(out) + "\n"


def test_missing_config_file(tmp_path):
    with pytest.raises(InputNotFoundError):
        load_config(tmp_path / "nope.toml")


def test_cli_phantom(tmp_path, cli):
    cfg = tmp_path / "small.toml"
    cfg.write_text(_toml(SMALL))
    res = cli("phantom", tmp_path / "ph", "--config", cfg, "--seed", "2", "--tiff")
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "ph" / "summary.json").read_text())
    assert summary["particles"]["count"] > 5
    assert len(summary["protocol"]) == 3
    from anodetwin.io import read_volume

    t2 = read_volume(tmp_path / "ph" / "tiff" / "T2.tif")
    assert t2.voxel_size_um == (0.25, 0.25, 0.25)
    h5 = read_volume(f"{tmp_path}/ph/series.h5:/steps/T2/tomogram")
    np.testing.assert_array_equal(t2.data, h5.data)
    assert (tmp_path / "ph" / "preview.png").stat().st_size > 10_000


def test_documented_example_config_is_the_default():
    """validation/phantom/reference.toml documents every key with its default value."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "validation" / "phantom" / "reference.toml"
    cfg = load_config(path)
    assert cfg == load_config(seed=1)


def test_inverse_mapping_of_a_strong_local_stretch_is_exact():
    """x = X + u(X) with u_z = 1.5 (Z - b) voxels between Z = b and b + 10 (a stretch of
    2.5, its gradient jumping at two planes), the base b = 20, 22 or 24 changing from one x
    column to the next (kinks on voxel planes: the trilinear field is the piecewise linear
    one): the preimage by hand is Z = x below b, b + (x - b) / 2.5 inside the band, x - 15
    above it."""
    shape = (60, 12, 12)
    Z, Y, X = np.indices(shape, dtype=float)
    base = 20 + 2 * (X % 3)
    uz = np.clip(1.5 * (Z - base), 0.0, 15.0)
    disp = np.stack([uz, np.zeros(shape), np.zeros(shape)])  # um, voxel size 1
    got = inverse_coordinates(disp, 1.0)
    z = Z  # deformed-frame coordinates of the same grid
    top = base + 10 * 2.5
    want = np.where(z <= base, z, np.where(z <= top, base + (z - base) / 2.5, z - 15.0))
    inner = z < shape[0] - 1  # the top plane's preimage lies on the grid's face
    np.testing.assert_allclose(got[0][inner], want[inner], atol=2e-3)
    np.testing.assert_allclose(got[1], Y, atol=1e-9)
    np.testing.assert_allclose(got[2], X, atol=1e-9)

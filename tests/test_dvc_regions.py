"""Region statistics, particle-centred VOIs, quick-looks and residual CLI of the DVC module,
against fields with exact strain."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from anodetwin.dvc.correlate import node_grid
from anodetwin.dvc.pair import PairResult, read_pair, write_pair
from anodetwin.dvc.regions import (
    STAT_COLUMNS,
    electrode_interfaces,
    particle_centres,
    region_statistics,
    write_regions,
)
from anodetwin.dvc.strain import cell_strain
from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import Volume, write_volume
from anodetwin.phases import PHASE

SHAPE = (80, 60, 60)  # z, y, x voxels
SPACING = 10
VS = 0.5  # um


def field_result(u_of_nodes, shape=SHAPE, spacing=SPACING, vs=VS) -> PairResult:
    """A pair result carrying an exact nodal displacement field u(nodes) (voxels)."""
    nodes, gshape = node_grid(shape, spacing)
    u = np.asarray(u_of_nodes(nodes), float)
    n = len(nodes)
    z = np.zeros(n)
    params = {"levels": [{"node_spacing": [spacing] * 3, "hws": [spacing] * 3}]}
    return PairResult(nodes, gshape, u, u, np.repeat(np.eye(4)[None], n, 0), z + 2, z, z, z,
                      z, z.astype(np.uint8), cell_strain(u.reshape(*gshape, 3), spacing),
                      params, np.eye(4), np.zeros(3), np.full(3, vs))


def two_slope(e1, e2, zmid):
    """u_z = e1 (z - zmid) below zmid, e2 (z - zmid) above: ezz = J-1 = e1 / e2."""
    def u(nodes):
        z = nodes[:, 0]
        out = np.zeros_like(nodes, dtype=float)
        out[:, 0] = np.where(z < zmid, e1, e2) * (z - zmid)
        return out
    return u


def phases_volume(zc=10, zs=70):
    ph = np.full(SHAPE, PHASE["cbd"], np.uint8)
    ph[:zc] = PHASE["copper"]
    ph[zs:] = PHASE["separator"]
    ph[30:40, 20:30, 20:30] = PHASE["si"]
    return ph


def test_interfaces_from_phases(tmp_path):
    ph = phases_volume()
    assert electrode_interfaces(ph) == (9.5, 69.5)
    write_volume(tmp_path / "ph.tif", Volume(ph, VS))
    assert electrode_interfaces(str(tmp_path / "ph.tif")) == (9.5, 69.5)  # read lazily
    ph2 = ph.copy()
    ph2[ph2 == PHASE["copper"]] = PHASE["pore"]  # no foil: first slice mostly electrode
    assert electrode_interfaces(ph2) == (-0.5, 69.5)
    with pytest.raises(ParameterError):
        electrode_interfaces(np.full(SHAPE, 9, np.uint8))


def test_halves_and_cubes_have_the_exact_strain():
    """Cells below the mid-plane strain by e1, above by e2; the halves, cubes and the whole
    electrode report exactly that (means, spread, percentiles, histograms)."""
    # nodes every 10 voxels from 10 (cell centres 15 ... 65 along z, 15 ... 45 in y, x);
    # the electrode 9.5 ... 69.5 splits at 39.5
    e1, e2 = 0.11, 0.46  # inside histogram bins, not on edges
    res = field_result(two_slope(e1, e2, 40.0))  # kink on a node plane: cells pure e1 / e2
    rs = region_statistics([res], interfaces=(9.5, 69.5), cube_um=10.0, voi_um=None)
    col = STAT_COLUMNS.index
    assert rs.value(1, "collector_half") == pytest.approx(e1)
    assert rs.value(1, "separator_half") == pytest.approx(e2)
    s = rs.stats["volumetric"][0, rs.names.index("separator_half")]
    # separator half: cell centres 45, 55, 65 in [39.5, 69.5): all e2
    assert s[col("mean")] == pytest.approx(e2) and s[col("std")] == pytest.approx(0, abs=1e-12)
    assert s[col("p5")] == pytest.approx(e2) and s[col("p95")] == pytest.approx(e2)
    c = rs.stats["volumetric"][0, rs.names.index("collector_half")]
    assert c[col("n")] == 3 * 4 * 4  # centres 15, 25, 35 in [9.5, 39.5), 4 x 4 laterally
    e = rs.stats["ezz"][0, rs.names.index("electrode")]
    assert e[col("mean")] == pytest.approx((3 * e1 + 3 * e2) / 6)
    assert rs.stats["exx"][0, 0, col("max")] == pytest.approx(0, abs=1e-12)
    h = rs.hist["volumetric"][0, rs.names.index("electrode")]
    assert h.sum() == 6 * 16 and h[np.searchsorted(rs.edges, e1) - 1] == 48
    # the region as a whole: det(mean F) - 1
    assert rs.volumetric_of_mean_F[0, rs.names.index("electrode")] == pytest.approx(
        (e1 + e2) / 2)
    # cubes of 10 um = 20 voxels tile z 9.5..69.5 into 3, the cells' y/x 10..50 into 2 x 2
    cubes = [n for n, k in zip(rs.names, rs.kinds, strict=True) if k == "cube"]
    assert len(cubes) == 12
    lo = rs.bounds[rs.names.index("cube_z0_y0_x0")]
    np.testing.assert_allclose(lo, [[9.5, 10, 10], [29.5, 30, 30]])
    assert rs.value(1, "cube_z0_y1_x0") == pytest.approx(e1)
    assert rs.value(1, "cube_z2_y1_x1") == pytest.approx(e2)


def test_particle_voi_is_recentred_on_the_moving_particle():
    """Uniaxial strain e of the whole grid: the particle's centre of mass moves to
    z (1 + e); the VOI follows it and holds the cells whose deformed centres are inside."""
    labels = np.zeros(SHAPE, np.int32)
    labels[36:45, 26:35, 26:35] = 7  # centre of mass (40, 30, 30)
    labels[12:15, 5:8, 5:8] = 3  # small: no VOI with min_particle_voxels=100
    ids, com = particle_centres(labels, min_voxels=100)
    assert ids.tolist() == [7] and np.allclose(com, [[40, 30, 30]])

    def uniaxial(e):
        return lambda nodes: np.c_[e * nodes[:, 0], np.zeros((len(nodes), 2))]

    results = [field_result(uniaxial(e)) for e in (0.0, 0.2, 0.5)]
    rs = region_statistics(results, particles=labels, voi_um=16.0, cube_um=None,
                           steps=[0, 3, 6], min_particle_voxels=100)
    assert rs.particle_ids.tolist() == [7]
    np.testing.assert_allclose(rs.com[:, 0], [[40, 30, 30], [48, 30, 30], [60, 30, 30]],
                               atol=1e-9)
    np.testing.assert_allclose(rs.voi_bounds[2, 0], [[44, 14, 14], [76, 46, 46]])
    r = rs.names.index("particle_7")
    n = rs.stats["volumetric"][:, r, 0]
    # 32-voxel box; cell centres every 10 voxels (15 ... 65 in z, 15 ... 45 in y, x): 4 x 4
    # laterally, and along z those whose deformed centres fall in the box
    cz = np.arange(15, 70, 10)
    for k, e in enumerate((0.0, 0.2, 0.5)):
        zc = 40 * (1 + e)
        inside = np.sum((cz * (1 + e) >= zc - 16) & (cz * (1 + e) < zc + 16))
        assert n[k] == inside * 16
        assert rs.value([0, 3, 6][k], "particle_7") == pytest.approx(e)
    assert n[2] < n[0]  # the swollen neighbourhood is smaller in reference cells


def test_region_file_layout_and_csv(tmp_path):
    results = [field_result(two_slope(0.1 * k, 0.3 * k, 40.0)) for k in (1, 2)]
    labels = np.zeros(SHAPE, np.int32)
    labels[36:45, 26:35, 26:35] = 1
    rs = region_statistics(results, phases=phases_volume(), particles=labels)
    h5, table = write_regions(tmp_path / "regions.h5", rs)
    with h5py.File(h5) as f:
        assert f.attrs["format"] == "anodetwin-dvc-regions"
        assert json.loads(f.attrs["stat_columns"]) == list(STAT_COLUMNS)
        np.testing.assert_allclose(f.attrs["interfaces_voxels"], [9.5, 69.5])
        R = len(f["regions/name"])
        assert f["stats/volumetric"].shape == (2, R, len(STAT_COLUMNS))
        assert f["hist/ezz"].shape == (2, R, len(f["hist/edges"]) - 1)
        assert f["particles/com"].shape == (2, 1, 3)
        assert b"particle_1" in f["regions/name"][...].tolist()
        assert json.loads(f.attrs["provenance"])["command"]
    lines = table.read_text().splitlines()
    assert lines[0].startswith("step,region,kind,measure,n,mean,std")
    assert len(lines) == 1 + 2 * R * 6
    assert rs.value(2, "separator_half") == pytest.approx(0.6)


def test_region_errors():
    a = field_result(two_slope(0.1, 0.2, 35.0))
    b = field_result(two_slope(0.1, 0.2, 35.0), spacing=15)
    with pytest.raises(ShapeMismatchError):
        region_statistics([a, b], cube_um=None, voi_um=None)
    with pytest.raises(ParameterError):
        region_statistics([a], interfaces=(50, 10))
    a.voxel_size_um = None
    with pytest.raises(ParameterError, match="voxel size"):
        region_statistics([a], cube_um=40.0)  # the default ("auto") then makes no cubes
    with pytest.raises(ParameterError):
        particle_centres(-np.ones((4, 4, 4), int))


def test_cli_regions_and_quicklooks(tmp_path, cli):
    paths = []
    for k in (1, 2):
        p = tmp_path / f"cumulative_0_{k}.h5"
        write_pair(p, field_result(two_slope(0.1 * k, 0.3 * k, 40.0)))
        paths.append(p)
    back = read_pair(paths[1])
    np.testing.assert_allclose(back.strain.volumetric,
                               field_result(two_slope(0.2, 0.6, 40.0)).strain.volumetric)
    assert np.allclose(back.voxel_size_um, VS)
    write_volume(tmp_path / "ph.tif", Volume(phases_volume(), VS))
    r = cli("dvc-regions", *paths, "--out", tmp_path / "reg.h5", "--phases",
            tmp_path / "ph.tif", "--png-dir", tmp_path / "png", "--steps", "3,6")
    assert r.code == 0, r.err
    with h5py.File(tmp_path / "reg.h5") as f:
        assert f["steps"][...].tolist() == [3, 6]
    assert (tmp_path / "reg.csv").exists()
    for name in ("step_3.png", "step_6.png", "series.png"):
        assert (tmp_path / "png" / name).read_bytes()[:4] == b"\x89PNG"
    for bad, words in ((["--interfaces", "1,x"], "--interfaces"),
                       (["--steps", "1"], "step labels"),
                       (["--interfaces", "40,10"], "interfaces")):
        r = cli("dvc-regions", *paths, "--out", tmp_path / "bad.h5", *bad)
        assert r.code == 2 and words in r.err and "Traceback" not in r.err
        assert not (tmp_path / "bad.h5").exists()
    r = cli("dvc-regions", tmp_path / "ph.tif", "--out", tmp_path / "bad.h5")
    assert r.code == 2 and "not an anodetwin DVC result" in r.err


def test_phantom_series_accuracy_and_regions(tmp_path):
    """DVC of a swelling phantom series against its exact field: a mechanical phantom
    (lithiated Si keeps its grey value, so brightness is conserved) T0 -> T1 -> T2, the
    cumulative fields compared with the true displacement averaged over the correlation
    window (what a window can see), and the region statistics of the series with the true
    ones."""
    from dataclasses import replace

    from scipy import ndimage

    from anodetwin.dvc.series import correlate_series
    from anodetwin.phantom import config_from_dict, generate_series

    cfg = config_from_dict({"series": {"soc": [0.0, 0.1, 0.2]},
                            "render": {"grey_lithiated": 30000.0}}, seed=3)
    ph = generate_series(cfg, tmp_path / "s.h5", progress=False)
    with h5py.File(ph.path) as f:
        vols = [f[f"steps/T{k}/tomogram"][...].astype(np.float32) for k in range(3)]
        vs = f.attrs["voxel_size_um"]
        truth = [f[f"steps/T{k}/displacement_um"][...] / vs[0] for k in (1, 2)]
        phases, labels = f["steps/T0/phases"][...], f["steps/T0/particles"][...]
    hws = 16
    correlate_series(vols, tmp_path / "dvc", voxel_size_um=vs, node_spacing=12, hws=hws,
                     search_range=(8, 2, 2), processes=2, progress=False,
                     regions={"phases": phases, "particles": labels})
    zc, zs = electrode_interfaces(phases)
    fields, truths = [], []
    for k, u in enumerate(truth, start=1):
        r = read_pair(tmp_path / "dvc" / f"cumulative_0_{k}.h5")
        seen = [ndimage.uniform_filter(u[c], 2 * hws + 1) for c in range(3)]
        ut = np.stack([ndimage.map_coordinates(s, r.nodes.T, order=1) for s in seen], axis=1)
        # windows wholly inside the electrode (those across the foil or the separator
        # interface see a kink in the field that no affine window follows)
        inside = (r.nodes[:, 0] > zc + hws) & (r.nodes[:, 0] < zs - hws) & (r.flag == 0)
        assert inside.sum() > 50
        err = np.linalg.norm(r.displacement - ut, axis=1)[inside]
        assert np.median(err) <= 0.05 and np.percentile(err, 95) <= 0.2, (k, err)
        fields.append(r)
        truths.append(replace(r, displacement=ut,
                              strain=cell_strain(ut.reshape(*r.grid_shape, 3),
                                                 r.node_spacing)))
    measured = region_statistics(fields, phases=phases, particles=labels)
    exact = region_statistics(truths, phases=phases, particles=labels)
    for k in (1, 2):
        for half in ("electrode", "collector_half", "separator_half"):
            assert abs(measured.value(k, half) - exact.value(k, half)) < 0.01, (k, half)
        assert exact.value(k, "separator_half") > exact.value(k, "collector_half") + 0.02
    # the series wrote the same statistics and its quick-looks
    with h5py.File(tmp_path / "dvc" / "regions.h5") as f:
        np.testing.assert_allclose(f["stats/volumetric"][...], measured.stats["volumetric"])
        assert len(f["particles/id"]) == len(np.unique(labels)) - 1
    for name in ("T0_T1.png", "T0_T2.png", "series.png"):
        assert (tmp_path / "dvc" / "quicklook" / name).stat().st_size > 1000
    summary = json.loads((tmp_path / "dvc" / "series.json").read_text())
    assert summary["interfaces_voxels"] == list(electrode_interfaces(phases))


def test_cli_residual_map(tmp_path, cli):
    """``dvc-residual`` on phantom files with a DVC result carrying the exact field: the
    residual volume is readable as a volume, the particle table separates core-shell from
    network lithiation, the floor can come from the double scan; bad inputs exit 2."""
    from scipy import ndimage

    from anodetwin.io import read_volume
    from anodetwin.phantom import config_from_dict, generate_series

    cfg = config_from_dict({"series": {"soc": [0.0, 0.85],
                                       "modes": {"network": 0.5, "core-shell": 0.5}}}, seed=3)
    s = generate_series(cfg, tmp_path / "s.h5", progress=False).path
    with h5py.File(s) as f:
        u = f["steps/T1/displacement_um"][...] / f.attrs["voxel_size_um"][0]
        shape = u.shape[1:]
        table = f["particles"][...]
        sigma = float(f.attrs["noise_sigma"])

    def exact(nodes):
        return np.stack([ndimage.map_coordinates(u[c], nodes.T, order=1) for c in range(3)],
                        axis=1)

    # the field's voxel size is the tomograms' (dvc-residual checks that they agree)
    write_pair(tmp_path / "pair.h5", field_result(exact, shape=shape, spacing=4, vs=0.2))
    t0, t1 = f"{s}:/steps/T0/tomogram", f"{s}:/steps/T1/tomogram"
    parts = f"{s}:/steps/T0/particles"
    r = cli("dvc-residual", t0, t1, tmp_path / "pair.h5", "--out", tmp_path / "res.h5",
            "--particles", parts, "--floor", sigma)
    assert r.code == 0, r.err
    res = read_volume(f"{tmp_path / 'res.h5'}:/residual")
    assert res.shape == shape and res.voxel_size_um == (0.2, 0.2, 0.2)
    assert res.data[:5].max() == 0  # the copper foil does not change
    with h5py.File(tmp_path / "res.h5") as f:
        stats = f["particles"][...]
        assert f.attrs["floor"] == pytest.approx(sigma)
    mode = dict(zip(table["id"], table["mode"], strict=True))
    big = stats["voxels"] > 200
    truth = np.array([mode[i] == 0 for i in stats["id"]])
    assert (stats["core_shell_like"] == truth)[big].mean() >= 0.85
    # blocks that cut the particles, on 2 threads: the same map and table
    r = cli("dvc-residual", t0, t1, tmp_path / "pair.h5", "--out", tmp_path / "blocks.h5",
            "--particles", parts, "--floor", sigma, "--memory-limit", "2GB", "--workers", "2")
    assert r.code == 0, r.err
    with h5py.File(tmp_path / "res.h5") as f, h5py.File(tmp_path / "blocks.h5") as g:
        np.testing.assert_array_equal(f["residual"][...], g["residual"][...])
        a, b = f["particles"][...], g["particles"][...]
        for name in a.dtype.names:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    nan = read_volume(t1).data.astype(np.float32)
    nan[3, 4, 5] = np.nan
    write_volume(tmp_path / "nan.tif", Volume(nan, (0.2, 0.2, 0.2)))
    r = cli("dvc-residual", t0, tmp_path / "nan.tif", tmp_path / "pair.h5", "--out",
            tmp_path / "bad.h5", "--voxel-size", "0.2")
    assert r.code == 2 and "nan.tif' contains 1 NaN" in r.err, r.err
    assert not (tmp_path / "bad.h5").exists()
    r = cli("dvc-residual", t0, t1, tmp_path / "pair.h5", "--out", tmp_path / "ds.h5",
            "--double-scan", t1, f"{s}:/double_scan/tomogram_b")
    assert r.code == 0, r.err
    with h5py.File(tmp_path / "ds.h5") as f:
        assert 0 < f.attrs["floor"] < 5000 and "particles" not in f
    for bad, words in (([t0, t1, s], "not an anodetwin DVC result"),
                       ([t0, t1, tmp_path / "no.h5"], "no.h5' does not exist"),
                       ([t0, tmp_path / "nope.tif", tmp_path / "pair.h5"], "nope.tif")):
        r = cli("dvc-residual", *bad, "--out", tmp_path / "bad.h5")
        assert r.code == 2 and words in r.err and "Traceback" not in r.err, r.err
        assert not (tmp_path / "bad.h5").exists()
    write_volume(tmp_path / "small.tif", Volume(np.zeros((8, 8, 8), np.uint16)))
    r = cli("dvc-residual", t0, tmp_path / "small.tif", tmp_path / "pair.h5", "--out",
            tmp_path / "bad.h5")
    assert r.code == 2 and "small.tif" in r.err and not (tmp_path / "bad.h5").exists()

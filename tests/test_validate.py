"""Model-versus-DVC validation: frames and resampling, metrics and checks, the report, and
bad input."""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5)
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from anodetwin.dvc.correlate import node_grid
from anodetwin.dvc.pair import FLAG, PairResult, read_pair, write_pair
from anodetwin.dvc.strain import cell_strain
from anodetwin.errors import InputError, ParameterError
from anodetwin.validate import config_from_dict, validate_run
from anodetwin.validate.compare import load_simulation, pair_steps

from conftest import run_cli_process

COMM = MPI.COMM_SELF


def _pair(nodes, gshape, spacing, disp_vox, vs, origin=None) -> PairResult:
    n = len(nodes)
    ok = np.isfinite(disp_vox).all(axis=1)
    params = {"levels": [{"node_spacing": [spacing] * 3, "hws": [0, 0, 0]}]}
    if origin is not None:
        params["origin_um"] = list(map(float, origin))
    return PairResult(
        nodes=nodes.astype(float), grid_shape=gshape, displacement=disp_vox,
        displacement_raw=disp_vox, Phi=np.tile(np.eye(4), (n, 1, 1)),
        status=np.where(ok, 2, -5), error=np.zeros(n), iterations=np.zeros(n, int),
        delta_phi_norm=np.zeros(n), residual=np.zeros(n),
        flag=np.where(ok, FLAG["measured"], FLAG["excluded"]).astype(np.uint8),
        strain=cell_strain(disp_vox.reshape(*gshape, 3), spacing), params=params,
        global_phi=np.eye(4), global_centre=np.zeros(3), voxel_size_um=np.full(3, vs))


def _fake_simulation(folder: Path, fields: dict, z_range=(0.0, 10.0)) -> Path:
    """A simulation folder with run.json, summary.csv and dvc/<T>.h5 (PairResults)."""
    (folder / "dvc").mkdir(parents=True)
    rows = ["step,output,time_s", "0,T0,0"]
    for i, (name, pr) in enumerate(fields.items(), start=1):
        write_pair(folder / "dvc" / f"{name}.h5", pr)
        rows.append(f"{i},{name},{3600.0 * i}")
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")
    (folder / "run.json").write_text(json.dumps({"status": "done", "case": {},
                                                 "electrode_z_um": list(z_range)}))
    return folder


A = np.array([[0.02, 0.003, -0.001], [0.0, -0.004, 0.002], [0.001, 0.0, 0.006]])


def _linear(points_um):  # u = A x (z, y, x)
    return points_um @ A.T


def test_resampling_to_the_dvc_grid_is_exact_for_a_linear_field(tmp_path):
    """The simulated field on its own grid (0.5 um voxels, origin 0.25) brought to a DVC
    grid of another voxel (0.2 um), spacing and origin: a linear field is reproduced
    exactly at the DVC nodes, and so is its strain with the DVC operator."""
    vs_s, o_s = 0.5, np.array([0.25, 0.25, 0.25])
    nodes, g = node_grid((24, 24, 24), 2)
    sim = _pair(nodes, g, 2, _linear(o_s + nodes * vs_s) / vs_s, vs_s, o_s)
    simdir = _fake_simulation(tmp_path / "sim", {"T1": sim}, (0.0, 12.0))
    vs_d, o_d = 0.2, np.array([1.0, 1.3, 0.9])
    dn, dg = node_grid((40, 40, 40), 5)
    dvc = _pair(dn, dg, 5, _linear(o_d + dn * vs_d) / vs_d, vs_d)
    (tmp_path / "dvc").mkdir()
    write_pair(tmp_path / "dvc" / "cumulative_0_1.h5", dvc)
    cfg = config_from_dict({"frame": {"dvc_origin_um": list(o_d)}})
    (p,) = pair_steps(load_simulation(simdir), tmp_path / "dvc", cfg)
    assert np.allclose(p.u_sim_um, p.u_dvc_um, atol=1e-12)
    F = p.strain_sim.F[p.valid]
    assert p.valid.sum() > 100
    assert np.allclose(F, np.eye(3) + A, atol=1e-12)
    res = validate_run(simdir, tmp_path / "dvc", tmp_path / "report", cfg, figures=False)
    e = res.metrics[0]["regions"]["electrode"]["volumetric"]
    assert abs(e["mean_difference"]) < 1e-12 and res.metrics[0]["displacement_rmse_um"] < 1e-12


def _swelling_field(nodes_um, top_um=10.0, sep=0.3, col=0.1, rng=None, particles=True):
    """A heterogeneous axial swelling: u_z = int_0^z e(z') dz' with e rising from the
    collector (col) to the separator (sep), plus particle-like local dilatation blobs."""
    z = nodes_um[:, 0]
    uz = col * z + (sep - col) * z ** 2 / (2 * top_um)
    u = np.zeros_like(nodes_um)
    u[:, 0] = uz
    if particles:
        for c in ([3.0, 3.0, 3.0], [6.5, 5.0, 6.0], [8.0, 2.5, 7.5]):
            d = nodes_um - np.array(c)
            u += 0.06 * d * np.exp(-np.sum(d * d, axis=1) / 3.0)[:, None]
    return u


def _dvc_folder(folder: Path, fields_um: dict, vs: float, spacing: int, shape, rng,
                noise_um: float, excluded: float = 0.05) -> Path:
    """A dvc-series-like folder: cumulative_0_<k>.h5 with noise and excluded nodes."""
    folder.mkdir(parents=True)
    nodes, g = node_grid(shape, spacing)
    for k, fn in fields_um.items():
        u = fn(nodes * vs) + rng.normal(0, noise_um, (len(nodes), 3))
        u[rng.random(len(nodes)) < excluded] = np.nan
        write_pair(folder / f"cumulative_0_{k}.h5", _pair(nodes, g, spacing, u / vs, vs))
    (folder / "series.json").write_text(json.dumps({"parameters": {"node_spacing": spacing}}))
    return folder


def test_matching_model_passes_and_wrong_models_fail(tmp_path):
    """Closed loop on synthetic fields: the 'measured' series is the simulated field with
    DVC-like noise (0.01 um) and 5% excluded nodes on its own grid; the same model passes
    (Pearson >= 0.9, mean differences within the noise), a uniform-reaction model fails on
    the halves' asymmetry and means, and a model without the particles' swelling fails on
    the correlation. The report holds every figure and its JSON equals the recomputed
    metrics."""
    rng = np.random.default_rng(3)
    vs, shape = 0.25, (40, 40, 40)
    sim_nodes, g = node_grid(shape, 2)
    true = {1: lambda x: _swelling_field(x, sep=0.15, col=0.05),
            2: lambda x: _swelling_field(x, sep=0.3, col=0.1)}

    def sim_folder(name, fn_by_step):
        return _fake_simulation(tmp_path / name, {
            f"T{k}": _pair(sim_nodes, g, 2, fn(sim_nodes * vs) / vs, vs, [0, 0, 0])
            for k, fn in fn_by_step.items()})

    good = sim_folder("good", true)
    uniform = sim_folder("uniform", {1: lambda x: _swelling_field(x, sep=0.1, col=0.1),
                                     2: lambda x: _swelling_field(x, sep=0.2, col=0.2)})
    smooth = sim_folder("smooth", {k: (lambda x, f=f: _swelling_field(
        x, sep=s, col=c, particles=False)) for k, f, s, c in
        ((1, None, 0.15, 0.05), (2, None, 0.3, 0.1))})
    dvc = _dvc_folder(tmp_path / "dvc", true, vs, 4, shape, rng, noise_um=0.01)
    res = validate_run(good, dvc, tmp_path / "r_good")
    assert res.passed, [c for c in res.checks if not c["passed"]]
    e2 = res.metrics[1]["regions"]["electrode"]["volumetric"]
    assert e2["pearson"] > 0.9 and abs(e2["mean_difference"]) < 0.005
    assert res.metrics[1]["derived"]["dvc"]["asymmetry"] > 1.3  # separator side swells more
    # the report: every figure exists and is a non-empty PNG, JSON = recomputed metrics
    out = tmp_path / "r_good"
    html = (out / "report.html").read_text()
    for f in ["timeseries"] + [f"{k}_T{s}" for s in (1, 2)
                               for k in ("hist", "slices", "scatter")]:
        png = out / "figures" / f"{f}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert html.count("data:image/png;base64,") == 7
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["passed"] is True
    assert saved["steps"][1]["regions"]["separator_half"]["ezz"]["dvc_mean"] == \
        pytest.approx(res.metrics[1]["regions"]["separator_half"]["ezz"]["dvc_mean"],
                      rel=1e-12)
    assert (out / "checks.csv").read_text().count("\n") == len(res.checks) + 1
    # particle-centred VOIs around the three swelling blobs (balls of 1 um in the labels)
    labels = tmp_path / "labels.h5"
    zz, yy, xx = np.meshgrid(*[np.arange(n) * vs for n in shape], indexing="ij")
    pa = np.zeros(shape, np.int32)
    for i, c in enumerate(([3.0, 3.0, 3.0], [6.5, 5.0, 6.0], [8.0, 2.5, 7.5]), start=1):
        pa[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 1.0] = i
    with h5py.File(labels, "w") as f:
        for name, a in (("phases", np.where(pa > 0, 2, 1).astype(np.uint8)),
                        ("particles", pa)):
            f.create_dataset(name, data=a).attrs["voxel_size_um"] = [vs] * 3
    ms = {"microstructure": {"labels": f"{labels}:/phases",
                             "particles": f"{labels}:/particles", "voi_scale": 2.5}}
    vres = validate_run(good, dvc, tmp_path / "r_vois", config_from_dict(ms))
    pm = vres.metrics[1]["particles"]
    assert pm["count"] == 3 and pm["mean_abs_difference"] < 0.01
    assert [v["particle"] for v in pm["vois"]] == [1, 2, 3]
    assert pm["vois"][0]["centre_um"] == pytest.approx([3.0, 3.0, 3.0], abs=1e-9)
    assert min(v["dvc_mean"] for v in pm["vois"]) > 0.1  # the blobs swell
    assert (tmp_path / "r_vois" / "figures" / "particle3d_T2.png").stat().st_size > 5000
    assert (tmp_path / "r_vois" / "particles.csv").read_text().count("\n") == 7
    vsmooth = validate_run(smooth, dvc, tmp_path / "r_vsmooth", config_from_dict(ms),
                           figures=False)
    assert vsmooth.metrics[1]["particles"]["mean_abs_difference"] > 3 * pm["mean_abs_difference"]
    bad = validate_run(uniform, dvc, tmp_path / "r_uniform", figures=False)
    failed = {(c["check"], c["region"]) for c in bad.checks if not c["passed"]}
    assert not bad.passed
    assert ("|asymmetry sim - dvc| <= max", "halves") in failed
    assert ("|mean difference volumetric| <= max", "collector_half") in failed
    flat = validate_run(smooth, dvc, tmp_path / "r_smooth", figures=False)
    failed = {(c["check"], c["region"]) for c in flat.checks if not c["passed"]}
    assert ("pearson_volumetric >= min", "electrode") in failed


def test_collector_registration_removes_rigid_motion(tmp_path):
    """The measured series moved as a rigid body (0.4 deg about an inclined axis and a
    shift of 0.3-0.5 um, as a sample that shifted between scans): with [frame] register =
    "collector" the rigid fit of the collector's nodes recovers the motion (1e-9) and the
    validation passes as on the aligned series; without it the displacement RMSE is the
    motion's and the correlation check fails."""
    from scipy.spatial.transform import Rotation

    vs, shape, z0 = 0.25, (40, 40, 40), 2.0  # collector below z0, electrode above

    def truth(x):
        u = _swelling_field(x - [z0, 0, 0], top_um=8.0, sep=0.3, col=0.1)
        return np.where(x[:, :1] < z0, 0.0, u)

    nodes, g = node_grid(shape, 2)
    sim = _fake_simulation(tmp_path / "sim", {
        "T1": _pair(nodes, g, 2, truth(nodes * vs) / vs, vs, [0, 0, 0])}, (z0, 10.0))
    R = Rotation.from_rotvec(np.radians(0.4) * np.array([0.3, 0.8, 0.52]) /
                             np.linalg.norm([0.3, 0.8, 0.52])).as_matrix()
    t = np.array([0.3, -0.5, 0.4])

    def moved(x):  # the deformed positions moved rigidly
        return (x + truth(x)) @ R.T + t - x

    dvc = _dvc_folder(tmp_path / "dvc", {1: moved}, vs, 4, shape,
                      np.random.default_rng(0), noise_um=0.0, excluded=0.0)
    reg = config_from_dict({"frame": {"register": "collector"}})
    res = validate_run(sim, dvc, tmp_path / "r", reg, figures=False)
    frame = json.loads((tmp_path / "r" / "metrics.json").read_text())["frame"]
    fit = frame["registration"]["T1"]
    assert fit["collector_nodes"] >= 40 and fit["collector_rms_um"] < 1e-9
    assert fit["translation_um"] == pytest.approx(t, abs=1e-9)
    assert fit["rotation_deg"] == pytest.approx(0.4, rel=1e-9)
    assert res.passed and res.metrics[0]["displacement_rmse_um"] < 1e-9
    raw = validate_run(sim, dvc, tmp_path / "raw", figures=False)
    assert raw.metrics[0]["displacement_rmse_um"] > 0.3
    with pytest.raises(ParameterError, match="register"):
        config_from_dict({"frame": {"register": "cu"}})
    with pytest.raises(InputError, match="too few to register"):
        validate_run(sim, dvc, tmp_path / "r2", config_from_dict(
            {"frame": {"register": "collector"}, "regions": {"electrode_z_um": [0.1, 10]}}),
            figures=False)


def test_bad_inputs(tmp_path):
    """One-line errors: no overlap in space or in time, steps the simulation lacks, voxel
    sizes that disagree (with the settings, or with the simulation's grid when no transform
    is given), unknown settings; and the CLI exits 2 without a traceback."""
    vs = 0.25
    nodes, g = node_grid((20, 20, 20), 2)
    sim = _fake_simulation(tmp_path / "sim", {
        "T1": _pair(nodes, g, 2, np.zeros((len(nodes), 3)), vs, [0, 0, 0])})
    dvc = _dvc_folder(tmp_path / "dvc", {1: lambda x: 0 * x}, vs, 4, (20, 20, 20),
                      np.random.default_rng(0), 0.0, 0.0)
    with pytest.raises(InputError, match="do not overlap"):
        validate_run(sim, dvc, tmp_path / "r", config_from_dict(
            {"frame": {"dvc_origin_um": [100.0, 0, 0]}}))
    shutil.copy(dvc / "cumulative_0_1.h5", dvc / "cumulative_0_3.h5")
    with pytest.raises(InputError, match="3 -> T3"):
        validate_run(sim, dvc, tmp_path / "r")
    (dvc / "cumulative_0_1.h5").rename(dvc / "cumulative_0_5.h5")
    with pytest.raises(InputError, match="no overlap in time"):
        validate_run(sim, dvc, tmp_path / "r")
    (dvc / "cumulative_0_5.h5").rename(dvc / "cumulative_0_1.h5")
    (dvc / "cumulative_0_3.h5").unlink()
    coarse = _fake_simulation(tmp_path / "coarse", {
        "T1": _pair(nodes, g, 2, np.zeros((len(nodes), 3)), 2 * vs, [0, 0, 0])})
    with pytest.raises(ParameterError, match="no transform"):
        validate_run(coarse, dvc, tmp_path / "r")
    validate_run(coarse, dvc, tmp_path / "r", config_from_dict(  # the frame stated: fine
        {"frame": {"dvc_voxel_size_um": vs}}), figures=False)
    with pytest.raises(ParameterError, match="differs"):
        validate_run(sim, dvc, tmp_path / "r", config_from_dict(
            {"frame": {"dvc_voxel_size_um": 0.5}}))
    pr = read_pair(dvc / "cumulative_0_1.h5")
    (tmp_path / "novs").mkdir()
    write_pair(tmp_path / "novs" / "cumulative_0_1.h5", replace(pr, voxel_size_um=None))
    with pytest.raises(ParameterError, match="no voxel size"):
        validate_run(sim, tmp_path / "novs", tmp_path / "r")
    with pytest.raises(ParameterError, match="unknown keys"):
        config_from_dict({"tolerances": {"min_pearson": 0.9}})
    with pytest.raises(InputError, match="no cumulative"):
        validate_run(sim, tmp_path / "sim", tmp_path / "r")
    cfg = tmp_path / "v.toml"
    cfg.write_text("[frame]\ndvc_origin_um = [100.0, 0, 0]\n")
    r = run_cli_process("validate", "--sim", sim, "--dvc", dvc, "--out", tmp_path / "o",
                        "--config", cfg)
    assert r.code == 2 and "Traceback" not in r.err
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1
    r = run_cli_process("validate", "--sim", sim, "--dvc", dvc, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert (tmp_path / "o" / "report.html").is_file()


def _uniaxial_pair(e_sim: float, e_dvc: float):
    """Two uniform uniaxial fields u_z = e z on a 3 x 3 x 3 node grid (1 um spacing),
    electrode 0..2 um: every cell valid, four per half."""
    from anodetwin.dvc.strain import cell_mean
    from anodetwin.validate.compare import StepPair

    g = (3, 3, 3)
    nodes = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), axis=-1)
    nodes = nodes.reshape(-1, 3)
    u = {}
    for who, e in (("sim", e_sim), ("dvc", e_dvc)):
        u[who] = np.zeros_like(nodes)
        u[who][:, 0] = e * nodes[:, 0]
    s_sim = cell_strain(u["sim"].reshape(*g, 3), 1.0)
    s_dvc = cell_strain(u["dvc"].reshape(*g, 3), 1.0)
    cells = cell_mean(nodes.reshape(*g, 3))
    return StepPair(1, "T1", 3600.0, nodes, g, u["dvc"], u["sim"], s_dvc, s_sim, cells,
                    np.ones(cells.shape[:3], bool), (0.0, 2.0), (1.0, 1.0, 1.0))


def test_typed_metrics_and_checks_of_uniform_fields():
    """Uniform uniaxial strains, 0.03 simulated and 0.01 measured: by hand J - 1 = e_zz = e
    in every cell, so per region the means are 0.03 and 0.01 (difference 0.02, std 0), the
    Wasserstein distance of two point masses is 0.02, KS is 1 and the correlations are
    undefined (NaN); the halves are equal (asymmetry 1, half difference 0), the axial
    share is 1, the thickness change e x 2 um; the displacement RMSE is
    0.02 sqrt(mean z^2) = 0.02 sqrt(5/3) over nodes at z = 0, 1, 2 um. The results are
    typed and read as mappings too, and the checks fail exactly on the NaN Pearson and
    the Wasserstein above its limit."""
    from anodetwin.validate.config import Tolerances
    from anodetwin.validate.metrics import (REGIONS, Check, RegionStatistics, StepMetrics,
                                            checks, step_metrics)

    m = step_metrics(_uniaxial_pair(0.03, 0.01))
    assert isinstance(m, StepMetrics) and m.particles is None and "particles" not in m
    for region in REGIONS:
        for meas in ("volumetric", "ezz"):
            st = m.regions[region][meas]
            assert isinstance(st, RegionStatistics)
            assert st.sim_mean == pytest.approx(0.03, abs=1e-15)
            assert st.dvc_mean == pytest.approx(0.01, abs=1e-15)
            assert st.mean_difference == pytest.approx(0.02, abs=1e-15)
            assert st.sim_std == pytest.approx(0.0, abs=1e-15)
            assert st.wasserstein == pytest.approx(0.02, abs=1e-15)
            assert st.ks == 1.0 and np.isnan(st.pearson) and np.isnan(st.spearman)
            assert st.cells == (8 if region == "electrode" else 4)
            assert st["mean_difference"] == st.mean_difference  # mapping view
    for who, e in (("sim", 0.03), ("dvc", 0.01)):
        d = m.derived[who]
        assert d.asymmetry == pytest.approx(1.0, rel=1e-12)
        assert d.half_difference == pytest.approx(0.0, abs=1e-15)
        assert d.axial_share == pytest.approx(1.0, rel=1e-12)
        assert d.thickness_change_um == pytest.approx(2 * e, rel=1e-12)
    assert m.nodes_used == 27
    assert m.displacement_rmse_um == pytest.approx(0.02 * np.sqrt(5 / 3), rel=1e-12)
    plain = m.as_dict()
    assert json.loads(json.dumps(plain))["regions"]["electrode"]["ezz"]["cells"] == 8
    assert list(plain) == ["step", "output", "time_s", "nodes_used", "displacement_rmse_um",
                           "regions", "derived"]
    tol = Tolerances(min_pearson_volumetric=0.9, max_mean_difference=0.025,
                     max_wasserstein_volumetric=0.01, max_asymmetry_difference=0.02)
    table = checks([m], tol)
    assert all(isinstance(c, Check) for c in table) and len(table) == 1 + 6 + 1 + 1
    assert {(c.check, c.region) for c in table if not c.passed} == {
        ("pearson_volumetric >= min", "electrode"),
        ("wasserstein_volumetric <= max", "electrode")}
    assert list(dict(table[0])) == ["step", "output", "check", "region", "value", "limit",
                                    "passed"]
    assert table[1]["value"] == pytest.approx(0.02, abs=1e-15) and table[1]["limit"] == 0.025


def test_particle_spheres_of_a_labelled_box():
    """A 3 x 2 x 4 voxel box labelled 7 in anisotropic voxels (z, y, x) = (1, 2, 0.5) um,
    origin (10, 20, 30) um, the box at voxels z 2..4, y 1..2, x 0..3: centroid by hand
    origin + (3, 1.5, 1.5) x voxel = (13, 23, 30.75) um, volume 24 x 1 um^3, radius
    (3 x 24 / 4 pi)^(1/3)."""
    from types import SimpleNamespace

    from anodetwin.validate.metrics import particle_spheres

    pa = np.zeros((6, 4, 5), np.int32)
    pa[2:5, 1:3, 0:4] = 7
    labels = SimpleNamespace(particles=pa, voxel_size_um=(1.0, 2.0, 0.5),
                             origin_um=(10.0, 20.0, 30.0))
    (q,) = particle_spheres(labels)
    assert q.particle == 7
    assert q.centre_um == pytest.approx((13.0, 23.0, 30.75), abs=1e-12)
    assert q.volume_um3 == pytest.approx(24.0, rel=1e-15)
    assert q.radius_um == pytest.approx((3 * 24.0 / (4 * np.pi)) ** (1 / 3), rel=1e-15)
    assert particle_spheres(SimpleNamespace(particles=np.zeros((2, 2, 2), int),
                                            voxel_size_um=(1, 1, 1), origin_um=(0, 0, 0))) == []


LOOP_CASE = """[mesh]
path = "{mesh}"
[materials]
si = "{si}"
[cell]
model = "quick_cell"
[lithiation]
diffusivity_um2_s = 0.05
profile = "separator"
penetration_um = 5.0
[solver]
plasticity = false
linear = "direct"
[output]
dvc_node_spacing_um = 0.8
dvc_voxel_size_um = 0.4
"""


def test_closed_loop_phantom_simulation_dvc_validation(tmp_path):
    """The closed loop: a phantom's electrode (16 x 16 um, 0.4 um voxels) is meshed and
    simulated (30 min at C/3, elastic); T0 and T1 are rendered deformed by the simulated
    displacement; spam DVC measures them; validated against that simulation the series
    passes (Pearson of the cell J-1 >= 0.9, mean differences within 0.01: measured 0.925
    and 0.0754 vs 0.0767), validated against a model without swelling it fails on the
    correlation and the means."""
    import time

    from anodetwin.dvc.series import correlate_series
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import voxel_mesh
    from anodetwin.phantom import config_from_dict
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import run_case
    from anodetwin.validate.loop import electrode_labels, render_series

    t0 = time.perf_counter()
    cfg = config_from_dict({"geometry": {"lateral_um": 16.0, "voxel_size_um": 0.4},
                            "render": {"grey_lithiated": 30000.0},
                            "series": {"double_scan": False}}, seed=3)
    write_mesh(tmp_path / "mesh", voxel_mesh(COMM, electrode_labels(cfg), coarsen_by=4))
    models = Path(__file__).resolve().parents[1] / "models"
    rigid = tmp_path / "lixsi_no_swelling.toml"
    rigid.write_text((models / "lixsi.toml").read_text().replace(
        "[swelling_beta]\nvalue = 2.8", "[swelling_beta]\nvalue = 0.0"))
    sims = {}
    for name, si in (("model", models / "lixsi.toml"), ("no_swelling", rigid)):
        (tmp_path / name).mkdir()
        case = tmp_path / name / "case.toml"
        case.write_text(LOOP_CASE.format(mesh=tmp_path / "mesh", si=si))
        run_case(load_case(case), tmp_path / name / "run", comm=COMM)
        sims[name] = tmp_path / name / "run"
    t_sim = time.perf_counter() - t0
    ser = render_series(sims["model"], cfg, tmp_path / "series.h5", outputs=("T0", "T1"))
    with h5py.File(ser.path) as f:
        vols = [f[f"steps/T{k}/tomogram"][...].astype(np.float32) for k in range(2)]
        phases = f["steps/T0/phases"][...]
        u1 = f["steps/T1/displacement_um"][...]
    assert np.abs(u1[0]).max() > 0.5  # the simulated swelling moves the top by > 0.5 um
    correlate_series(vols, tmp_path / "dvc", voxel_size_um=0.4, node_spacing=5, hws=6,
                     search_range=(6, 2, 2), processes=2, progress=False, quicklook=False,
                     regions={"phases": phases, "cube_um": None, "voi_um": None})
    t_dvc = time.perf_counter() - t0 - t_sim
    good = validate_run(sims["model"], tmp_path / "dvc", tmp_path / "report")
    for m in good.metrics:
        e = m["regions"]["electrode"]["volumetric"]
        print(m["output"], e["cells"], e["pearson"], e["sim_mean"], e["dvc_mean"],
              m["derived"], f"simulations {t_sim:.0f} s, DVC {t_dvc:.0f} s")
    assert good.passed, [c for c in good.checks if not c["passed"]]
    assert good.metrics[0]["regions"]["electrode"]["volumetric"]["cells"] >= 50
    wrong = validate_run(sims["no_swelling"], tmp_path / "dvc", tmp_path / "wrong",
                         figures=False)
    failed = {(c["output"], c["check"], c["region"]) for c in wrong.checks
              if not c["passed"]}
    assert ("T1", "pearson_volumetric >= min", "electrode") in failed
    assert ("T1", "|mean difference volumetric| <= max", "electrode") in failed

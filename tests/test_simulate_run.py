"""Simulation runs: case files, the coupled Li + mechanics stepping through a protocol,
outputs, checkpoints, MPI, and bad input."""

from __future__ import annotations

import h5py  # before dolfinx's HDF5 (h5py then fails with "Not a datatype")
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from scipy.optimize import brentq

from anodetwin.errors import InputError, InputNotFoundError, NumericalError, ParameterError
from anodetwin.mesh.io import write_mesh
from anodetwin.mesh.voxel import Labels, voxel_mesh
from anodetwin.phases import PHASE
from anodetwin.simulate import load_material
from anodetwin.simulate.case import case_from_dict, load_case
from anodetwin.simulate.protocol import simulate_cell
from anodetwin.simulate.run import SUMMARY_COLUMNS, defect_multiplier, read_summary, run_case

from conftest import BIN, run_cli_process, two_particle_labels
from elastic_check import nominal_zz

COMM = MPI.COMM_SELF


def _write_mesh(folder: Path, ph: np.ndarray, pa=None, vs=1.0) -> Path:
    hm = voxel_mesh(COMM, Labels(ph, pa, (vs,) * 3))
    return write_mesh(folder, hm)


@pytest.fixture(scope="module")
def micro_mesh(tmp_path_factory) -> Path:
    ph, pa = two_particle_labels()
    return _write_mesh(tmp_path_factory.mktemp("micro") / "mesh", ph, pa)


def _case(tmp: Path, mesh: Path, **sections) -> Path:
    """Write a case file beside a copy-free reference to ``mesh``."""
    lines = [f'[mesh]\npath = "{mesh}"\n[cell]\nmodel = "quick_cell"\n']
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{k} = {json.dumps(v)}")
    p = tmp / "case.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_layered_block_follows_the_exact_uniaxial_solution(tmp_path):
    """Coupled check: a Si layer under a non-swelling layer of the same stiffness, lateral
    rollers, bonded collector, preloaded spring. Li enters at the Si top and diffuses fast,
    so theta is uniform and each layer is in exact uniaxial strain under the spring's
    pressure; thickness, J - 1 and pressure follow at every step, and Li is conserved
    (elastic: plastic flow off)."""
    ph = np.full((7, 3, 3), PHASE["si"], np.uint8)
    ph[6] = PHASE["cbd"]
    mesh = _write_mesh(tmp_path / "mesh", ph)
    p0, k = 0.3, 1.0
    case = load_case(_case(tmp_path, mesh, materials={"cbd": "lixsi"},
                           lithiation={"diffusivity_um2_s": 100.0, "diffusivity_ratio": 1.0,
                                       "profile": "uniform"},
                           boundary={"p0_mpa": p0, "k_mpa_per_um": k},
                           solver={"plasticity": False},
                           output={"dvc_node_spacing_um": 1.0}))
    rows = run_case(case, tmp_path / "out", comm=COMM)
    hist = simulate_cell(case.cell)
    si = load_material("lixsi")
    assert len(rows) > 5
    for r in rows[1:]:
        theta = hist.theta_mean_at(r["time_s"])
        assert r["theta_mean"] == pytest.approx(theta, rel=1e-8, abs=1e-12)  # Li conserved
        assert r["theta_si_cells"] == pytest.approx(theta, rel=1e-4)

        def gap(p):  # both layers carry the pressure; the spring closes the loop
            ls = brentq(lambda lz: nominal_zz(lz, si, theta) + p, 0.5, 3.0, xtol=1e-14)
            lt = brentq(lambda lz: nominal_zz(lz, si, 0.0) + p, 0.5, 3.0, xtol=1e-14)
            return p - p0 - k * (6 * (ls - 1) + (lt - 1)), ls, lt

        p = brentq(lambda p: gap(p)[0], 0.0, 50.0, xtol=1e-14)
        _, ls, lt = gap(p)
        assert r["thickness_um"] == pytest.approx(6 * ls + lt, rel=1e-5)
        assert r["volumetric_strain"] == pytest.approx((6 * (ls - 1) + (lt - 1)) / 7,
                                                       rel=1e-4)
        assert r["stack_pressure_mpa"] == pytest.approx(p, rel=1e-5)
        assert abs(r["exx"]) < 1e-9 and abs(r["eyy"]) < 1e-9
    # T1 after the charge, T2 after a partial discharge: partial recovery
    out = {r["output"]: r for r in rows if r["output"]}
    assert set(out) == {"T0", "T1", "T2"}
    assert out["T1"]["thickness_um"] > out["T2"]["thickness_um"] > out["T0"]["thickness_um"]
    # the DVC-grid file holds the exact axial displacement, in voxels (z, y, x)
    from anodetwin.dvc.pair import read_pair

    pr = read_pair(tmp_path / "out" / "dvc" / "T1.h5")
    t1 = out["T1"]
    theta = hist.theta_mean_at(t1["time_s"])
    ls = brentq(lambda lz: nominal_zz(lz, si, theta) + t1["stack_pressure_mpa"], 0.5, 3.0,
                xtol=1e-14)
    z_um = pr.nodes[:, 0] * 1.0 + (-0.5 + 0.5)  # voxel centres: origin + i * voxel
    in_si = z_um < 6.0 - 0.5
    ok = np.isfinite(pr.displacement[:, 0])
    sel = in_si & ok
    assert sel.sum() > 0
    assert np.allclose(pr.displacement[sel, 0], (ls - 1) * (z_um[sel] + 0.5), rtol=1e-4)
    assert np.allclose(pr.displacement[ok, 1:], 0, atol=1e-9)


def test_microstructure_run_outputs_and_resume(tmp_path, micro_mesh):
    """A two-particle electrode: outputs at the scans (ParaView XDMF with every field in
    one temporal file, DVC-layout displacement, summary CSV), Li conservation, and a run
    stopped after 3 steps then resumed equals an uninterrupted run."""
    case = load_case(_case(tmp_path, micro_mesh, lithiation={"diffusivity_um2_s": 0.05},
                           output={"dvc_node_spacing_um": 2.0}))
    full = run_case(case, tmp_path / "full", comm=COMM)
    hist = simulate_cell(case.cell)
    for r in full:
        assert r["theta_mean"] == pytest.approx(hist.theta_mean_at(r["time_s"]), abs=1e-9)
    assert [r["output"] for r in full if r["output"]] == ["T0", "T1", "T2"]
    t1 = next(r for r in full if r["output"] == "T1")
    assert t1["volumetric_strain"] > 0.01 and t1["thickness_um"] > 7.0
    assert list(read_summary(tmp_path / "full" / "summary.csv")[0]) == list(SUMMARY_COLUMNS)
    # the combined XDMF: every referenced dataset exists with its declared shape
    fdir = tmp_path / "full" / "fields"
    root = ET.parse(fdir / "fields.xdmf").getroot()
    names = {g.get("Name") for g in root.find("Domain").findall("Grid")}
    assert {"mesh", "displacement", "theta", "J", "von_mises", "hydrostatic",
            "max_principal", "hencky", "phase"} <= names
    times = [float(t.get("Value")) for t in root.iter("Time")]
    assert len(times) == 3 * (len(names) - 1)
    for item in root.iter("DataItem"):
        fname, dset = item.text.strip().split(":")
        with h5py.File(fdir / fname, "r") as f:
            assert f[dset].shape == tuple(int(v) for v in item.get("Dimensions").split())
    with h5py.File(fdir / "T1.h5", "r") as f:
        J = f["Function/J"][list(f["Function/J"])[0]][...].ravel()
    assert J.min() > 0.5 and J.max() > 1.05  # the particles swell
    # stop after 3 steps, resume, compare
    part = run_case(case, tmp_path / "part", comm=COMM, max_steps=3)
    assert len(part) == 4
    assert json.loads((tmp_path / "part" / "run.json").read_text())["status"] == "stopped"
    with pytest.raises(InputError, match="holds a run"):
        run_case(case, tmp_path / "part", comm=COMM)
    resumed = run_case(case, tmp_path / "part", comm=COMM, resume=True)
    assert len(resumed) == len(full)
    for a, b in zip(full, resumed):
        for key in ("time_s", "thickness_um", "volumetric_strain", "theta_mean",
                    "max_principal_si_mpa"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert json.loads((tmp_path / "part" / "run.json").read_text())["status"] == "done"


def test_separator_profile_lithiates_the_separator_side_first(tmp_path, micro_mesh):
    """The reaction profile concentrated at the separator swells the separator-side half
    more than a uniform profile does (slow diffusion keeps the Li where it entered)."""
    out = {}
    for profile in ("uniform", "separator"):
        d = tmp_path / profile
        d.mkdir()
        case = load_case(_case(d, micro_mesh, lithiation={
            "diffusivity_um2_s": 0.002, "profile": profile, "penetration_um": 1.0},
            output={"dvc_node_spacing_um": 0.0}))
        rows = run_case(case, d / "out", comm=COMM)
        t1 = next(r for r in rows if r["output"] == "T1")
        out[profile] = t1["volumetric_strain_separator_half"] - \
            t1["volumetric_strain_collector_half"]
    assert out["separator"] > out["uniform"] + 0.005


def test_stress_coupling_in_a_run(tmp_path, micro_mesh):
    """[lithiation] stress_coupling: the mechanics' hydrostatic stress drives the Li (the
    Li distribution differs from the uncoupled run's) while the Li inserted still equals
    the protocol's; a coupled run stopped and resumed equals the uninterrupted one."""
    hist, theta = None, {}
    for coupled in (False, True):
        d = tmp_path / str(coupled)
        d.mkdir()
        case = load_case(_case(d, micro_mesh, lithiation={
            "diffusivity_um2_s": 0.01, "stress_coupling": coupled},
            output={"dvc_node_spacing_um": 0.0}))
        hist = simulate_cell(case.cell)
        rows = run_case(case, d / "out", comm=COMM, max_steps=6)
        for r in rows:
            assert r["theta_mean"] == pytest.approx(hist.theta_mean_at(r["time_s"]),
                                                    abs=1e-9)
        theta[coupled] = np.load(d / "out" / "checkpoint" / "rank0.npz")["theta"]
    assert np.abs(theta[True] - theta[False]).max() > 1e-4
    d = tmp_path / "resumed"
    d.mkdir()
    case = load_case(_case(d, micro_mesh, lithiation={
        "diffusivity_um2_s": 0.01, "stress_coupling": True},
        output={"dvc_node_spacing_um": 0.0}))
    run_case(case, d / "out", comm=COMM, max_steps=3)
    run_case(case, d / "out", comm=COMM, max_steps=3, resume=True)
    again = np.load(d / "out" / "checkpoint" / "rank0.npz")["theta"]
    assert np.allclose(again, theta[True], rtol=1e-9, atol=1e-12)


def test_defect_pathways(micro_mesh):
    """Defect bands: in the chosen particles only, within the band width of planes through
    the particle centroid."""
    from anodetwin.mesh.io import read_mesh

    mesh, phases, particles, _ = read_mesh(micro_mesh, COMM)
    assert defect_multiplier(mesh, phases, particles, 0.0, 100, 0.5) is None
    m = defect_multiplier(mesh, phases, particles, 1.0, 100.0, 0.6, seed=3)
    n = mesh.topology.index_map(3).size_local
    lab = np.zeros(n, int)
    lab[particles.indices] = particles.values
    assert set(np.unique(m)) == {1.0, 100.0}
    assert np.all(lab[m == 100.0] > 0)
    with pytest.raises(ParameterError, match="particle labels"):
        defect_multiplier(mesh, phases, None, 0.5, 100.0, 0.5)


def test_failed_step_keeps_finished_steps(tmp_path, micro_mesh, monkeypatch):
    """A step that fails at every step size stops cleanly: failure.json says where, the
    finished steps stay in summary.csv and the checkpoint, and the run can be resumed."""
    from anodetwin.simulate import mechanics

    real = mechanics.SwellingProblem.solve
    calls = {"n": 0}

    def flaky(self, where="", dt=np.inf):
        calls["n"] += 1
        if calls["n"] > 4:
            raise NumericalError(f"Newton did not converge {where}", "test")
        return real(self, where, dt)

    monkeypatch.setattr(mechanics.SwellingProblem, "solve", flaky)
    case = load_case(_case(tmp_path, micro_mesh, solver={"dt_min_s": 10.0},
                           output={"dvc_node_spacing_um": 0.0}))
    with pytest.raises(NumericalError, match="finished steps are kept"):
        run_case(case, tmp_path / "out", comm=COMM)
    fail = json.loads((tmp_path / "out" / "failure.json").read_text())
    assert fail["step"] == 5 and len(fail["attempts"]) >= 2
    assert len(read_summary(tmp_path / "out" / "summary.csv")) == 5  # T0 + 4 steps
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"
    monkeypatch.setattr(mechanics.SwellingProblem, "solve", real)
    rows = run_case(case, tmp_path / "out", comm=COMM, resume=True)
    assert rows[-1]["output"] == "T2"


def test_bad_cases(tmp_path, micro_mesh):
    """One-line typed errors before any work."""
    base = {"mesh": {"path": str(micro_mesh)}}
    with pytest.raises(InputNotFoundError, match="mesh"):
        case_from_dict({"mesh": {"path": str(tmp_path / "nope")}})
    with pytest.raises(ParameterError, match="lacks \\[mesh\\]"):
        case_from_dict({})
    with pytest.raises(InputNotFoundError, match="material 'unobtainium'"):
        case_from_dict({**base, "materials": {"si": "unobtainium"}})
    with pytest.raises(ParameterError, match="unknown phase"):
        case_from_dict({**base, "materials": {"silicon": "lixsi"}})
    with pytest.raises(ParameterError, match="unknown keys"):
        case_from_dict({**base, "solver": {"dtheta": 0.1}})
    with pytest.raises(ParameterError, match="unknown sections"):
        case_from_dict({**base, "solvers": {}})
    with pytest.raises(ParameterError, match="not positive"):
        case_from_dict({**base, "lithiation": {"diffusivity_um2_s": -1.0}})
    with pytest.raises(ParameterError, match="not a number"):
        case_from_dict({**base, "boundary": {"p0_mpa": "high"}})
    with pytest.raises(ParameterError, match="top"):
        case_from_dict({**base, "boundary": {"top": "glue"}})
    src = Path(load_material("lixsi").sources and "models/lixsi.toml")
    text = (Path(__file__).resolve().parents[1] / src).read_text()
    with pytest.raises(ParameterError, match="dt_max_s"):
        case_from_dict({**base, "solver": {"dt_max_s": 0.0}})
    with pytest.raises(ParameterError, match="plastic_tol"):  # a key of former versions
        case_from_dict({**base, "solver": {"plastic_tol": 1e-4}})
    with pytest.raises(ParameterError, match="plasticity"):
        case_from_dict({**base, "solver": {"plasticity": "yes"}})
    with pytest.raises(ParameterError, match="compaction"):
        case_from_dict({**base, "solver": {"compaction": 1}})
    assert case_from_dict(base).materials[1].lock_volume_ratio == 0.25
    assert case_from_dict({**base, "solver": {"compaction": False}}
                          ).materials[1].lock_volume_ratio == 0.0
    for old, new, match in (("value = 150.0", "value = -150.0", "not positive"),
                            ("value = 0.24", "value = 0.5", "Poisson"),
                            ("value = 1.75", "value = -1.75", "plastic flow"),
                            ('unit = "1/s"', 'unit = "1/h"', "unit")):
        bad = tmp_path / "bad_si.toml"
        bad.write_text(text.replace(old, new, 1))
        with pytest.raises(ParameterError, match=match):
            case_from_dict({**base, "materials": {"si": str(bad)}})
    cell = (Path(__file__).resolve().parents[1] / "models" / "quick_cell.toml").read_text()
    bad = tmp_path / "unreachable.toml"
    bad.write_text(cell.replace("voltage_v = 4.3\nuntil_c_rate = \"C/10\"\nmax_minutes = 30",
                                "voltage_v = 4.9\nmode2 = 1", 1).replace('mode = "cccv"',
                                                                          'mode = "cc"', 1)
                   .replace("mode2 = 1\n", ""))
    with pytest.raises(ParameterError):
        case_from_dict({**base, "cell": {"model": str(bad)}})


def test_cli_simulate_errors_and_check(tmp_path, micro_mesh):
    """The CLI: one line and exit 2 on a bad case, --check prints the scans."""
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[mesh]\npath = "{micro_mesh}"\n[boundary]\np0_mpa = -1.0\n')
    r = run_cli_process("simulate", bad, "--out", tmp_path / "o")
    assert r.code == 2 and "Traceback" not in r.err
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1
    # the default 3.5 um DVC grid leaves one node on this 8 x 6 x 6 um mesh: --check refuses
    # it as the run would (tests/test_inputs_agree.py), so sample on a 2 um grid here
    good = _case(tmp_path, micro_mesh, output={"dvc_node_spacing_um": 2.0})
    r = run_cli_process("simulate", good, "--out", tmp_path / "o", "--check")
    assert r.code == 0 and "T1" in r.out and "SoC 0.167" in r.out


@pytest.mark.skipif(shutil.which("mpiexec", path=str(BIN) + os.pathsep +
                                 os.environ.get("PATH", "")) is None, reason="no mpiexec")
def test_one_and_two_ranks_give_the_same_summary(tmp_path, micro_mesh):
    """(5) The summary CSV of 1 and 2 MPI ranks agrees to 1e-6 (relative)."""
    case = _case(tmp_path, micro_mesh, output={"dvc_node_spacing_um": 2.0})
    mpiexec = shutil.which("mpiexec", path=str(BIN) + os.pathsep + os.environ["PATH"])
    res = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        proc = subprocess.run([mpiexec, "-n", str(n), str(BIN / "anodetwin"), "simulate",
                               str(case), "--out", str(out)], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        res[n] = read_summary(out / "summary.csv")
    assert len(res[1]) == len(res[2])
    skip = {"output", "wall_s", "newton_iterations", "krylov_iterations",
            "diffusion_iterations"}
    for a, b in zip(res[1], res[2]):
        for key in SUMMARY_COLUMNS:
            if key not in skip:
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-10), key
    from anodetwin.dvc.pair import read_pair

    d1 = read_pair(tmp_path / "n1" / "dvc" / "T1.h5").displacement
    d2 = read_pair(tmp_path / "n2" / "dvc" / "T1.h5").displacement
    assert np.allclose(d1, d2, rtol=1e-6, atol=1e-9, equal_nan=True)


# -- the parts of a run: step control, step records, summary file, Si physics -------------------

def test_step_control_names_the_rule():
    """The step rule's numbers are named fields; a case's [solver] sets the three limits."""
    from anodetwin.simulate.steps import StepControl

    ctl = StepControl(dt_max_s=600.0, dt_min_s=0.5, dtheta_max=0.01)
    assert (ctl.initial_dt_s, ctl.growth, ctl.cut_back, ctl.dtheta_safety,
            ctl.max_dtheta_cuts, ctl.sliver_fraction, ctl.time_tol_s) == \
        (60.0, 1.5, 0.5, 0.95, 30, 0.25, 1e-9)
    assert ctl.first_step() == 60.0
    assert StepControl(30.0, 0.5, 0.01).first_step() == 30.0


def test_step_control_limits_the_li_change_and_lands_on_targets():
    """Steps from first principles: with theta rising at r per second a step changes theta
    by r dt; one too large shrinks to 0.95 dtheta_max / r; no sliver before a target; growth
    by 1.5 up to dt_max; a failed step retries with half, down to dt_min."""
    from anodetwin.simulate.steps import StepControl

    ctl = StepControl(dt_max_s=600.0, dt_min_s=0.5, dtheta_max=0.01)
    r = 1e-4  # 1/s: 600 s change theta by 0.06 > 0.01
    dt = ctl.propose(lambda t: r * t, 1000.0, 600.0, 10_000.0)
    assert dt == pytest.approx(0.95 * 0.01 / r, rel=1e-12)  # 95 s
    assert r * dt <= 0.01
    flat = lambda t: 0.2  # noqa: E731  (a rest: only the target and dt_max limit)
    assert ctl.propose(flat, 0.0, 1e9, 10_000.0) == 600.0
    assert ctl.propose(flat, 0.0, 90.0, 100.0) == 100.0  # 10 s left < 0.25 * 90 s
    assert ctl.propose(flat, 0.0, 70.0, 100.0) == 70.0  # 30 s left >= 0.25 * 70 s
    assert ctl.propose(flat, 50.0, 80.0, 100.0) == 50.0  # cut to the target
    jump = lambda t: 0.0 if t < 0.1 else 1.0  # noqa: E731  (never below dtheta_max)
    assert ctl.propose(jump, 0.0, 600.0, 1000.0) == 0.5  # down to dt_min, then stop
    assert ctl.grown(40.0, 30.0) == 60.0 and ctl.grown(30.0, 40.0) == 60.0
    assert ctl.grown(500.0, 10.0) == 600.0
    assert ctl.retry(10.0) == 5.0 and ctl.retry(1.0) == 0.5 and ctl.retry(0.8) is None
    assert ctl.next_target([10.0, 20.0, 30.0], 10.0 - 1e-12) == 20.0
    assert ctl.reached(20.0 + 1e-10, 20.0) and not ctl.reached(20.0 + 1e-8, 20.0)
    assert ctl.finished(30.0 - 1e-10, 30.0) and not ctl.finished(29.0, 30.0)


def test_step_record_is_a_typed_row_of_the_summary(tmp_path):
    """A record reads by attribute and by column; summary.csv has the columns in their
    order, integers as integers, floats with 10 significant digits; read back as floats."""
    from anodetwin.simulate.steps import StepRecord
    from anodetwin.simulate.writer import RunWriter

    assert SUMMARY_COLUMNS == (
        "step", "output", "time_s", "time_h", "dt_s", "soc", "li_inserted_mah_cm2",
        "theta_mean", "theta_si_cells", "thickness_um", "volumetric_strain",
        "volumetric_strain_collector_half", "volumetric_strain_separator_half", "exx", "eyy",
        "ezz", "stack_pressure_mpa", "max_principal_si_mpa", "max_von_mises_si_mpa",
        "max_plastic_strain_si", "newton_iterations", "krylov_iterations", "spring_passes",
        "diffusion_iterations", "wall_s")
    values = dict.fromkeys(SUMMARY_COLUMNS, 0.0)
    values.update(step=3, output="T1", time_s=1200.0, time_h=1 / 3, soc=0.5,
                  thickness_um=7.123456789012, max_principal_si_mpa=-np.inf,
                  newton_iterations=12, krylov_iterations=345, spring_passes=2,
                  diffusion_iterations=4)
    rec = StepRecord(**values)
    assert rec["time_h"] == rec.time_h == 1 / 3 and rec.get("nope") is None
    assert list(rec) == list(SUMMARY_COLUMNS) and dict(rec) == values
    assert StepRecord.from_mapping({**values, "extra": 1}) == rec
    with pytest.raises(KeyError):
        rec["extra"]
    RunWriter(tmp_path, COMM).write_summary([rec])
    text = (tmp_path / "summary.csv").read_text()
    assert text == (",".join(SUMMARY_COLUMNS) + "\n"
                    "3,T1,1200,0.3333333333,0,0.5,0,0,0,7.123456789,0,0,0,0,0,0,0,-inf,0,0,"
                    "12,345,2,4,0\n")
    back = read_summary(tmp_path / "summary.csv")[0]
    assert back["output"] == "T1" and back["step"] == 3.0 and back["time_h"] == 0.3333333333


def test_stress_factor_is_omega_over_rt():
    """kappa = Omega / (R T) with Omega = beta / c_max, c_max = 3.75 Li per Si atom of
    crystalline Si (2.329 g/cm3, 28.0855 g/mol): about 3.63e-3 1/MPa for beta = 2.8 at
    25 C."""
    from anodetwin.simulate.silicon import stress_factor

    c_max = 3.75 * 2.329e6 / 28.0855  # mol/m3
    omega = 2.8 / c_max  # m3/mol
    kappa = omega / (8.314462618 * 298.15) * 1e6  # 1/Pa -> 1/MPa
    assert stress_factor(2.8, 298.15) == pytest.approx(kappa, rel=1e-12)
    assert stress_factor(2.8, 298.15) == pytest.approx(3.632e-3, rel=1e-3)


def test_simulate_package_exports_the_stage_without_dolfinx():
    """The stage's entry points come from ``anodetwin.simulate``; importing it loads no
    DOLFINx."""
    code = ("import sys, anodetwin.simulate as s\n"
            "assert 'dolfinx' not in sys.modules, 'dolfinx imported'\n"
            "for n in ('load_case', 'check_case', 'run_case', 'read_summary', 'StepRecord',\n"
            "          'StepControl', 'SUMMARY_COLUMNS', 'simulate_cell', 'load_protocol'):\n"
            "    assert n in s.__all__ and hasattr(s, n), n\n")
    proc = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_case_petsc_options_reach_the_mechanics_solver(tmp_path, micro_mesh):
    """``[solver] petsc_options`` override the mechanics' PETSc options: with a direct
    solve (``preonly`` + LU) every linear solve takes one Krylov iteration, so a step's
    Krylov count is its Newton count plus the predictor's solve; the states reached equal
    those of the default CG + GAMG to Newton's tolerance."""
    rows = {}
    for name, opts in (("default", ""),
                       ("lu", 'petsc_options = {ksp_type = "preonly", pc_type = "lu"}')):
        d = tmp_path / name
        d.mkdir()
        p = d / "case.toml"
        p.write_text(f'[mesh]\npath = "{micro_mesh}"\n[cell]\nmodel = "quick_cell"\n'
                     f'[lithiation]\ndiffusivity_um2_s = 0.05\n[solver]\n{opts}\n'
                     '[output]\ndvc_node_spacing_um = 0\n')
        case = load_case(p)
        rows[name] = run_case(case, d / "run", comm=COMM, max_steps=3)
    assert load_case(tmp_path / "lu" / "case.toml").solver.petsc_options == {
        "ksp_type": "preonly", "pc_type": "lu"}
    for a, b in zip(rows["default"][1:], rows["lu"][1:], strict=True):
        assert b.newton_iterations > 0
        assert b.krylov_iterations <= b.newton_iterations + 1 < a.krylov_iterations
        assert b.thickness_um == pytest.approx(a.thickness_um, rel=1e-9)
        assert b.volumetric_strain == pytest.approx(a.volumetric_strain, rel=1e-6, abs=1e-12)


def test_output_scans_end_the_run_at_the_last_of_them(micro_mesh):
    """``[output] scans``: only those scans are outputs and the protocol is simulated up to
    the last of them (reference_cell: the 10-min scan T0, a 30-min charge, a 1-min rest,
    the 10-min scan T1, a 30-min charge, a 1-min rest: T2 begins at 82 min)."""
    from anodetwin.simulate.run import _schedule  # noqa: PLC2701  (module-internal in tests)

    base = {"mesh": {"path": str(micro_mesh)}, "cell": {"model": "reference_cell"}}
    case = case_from_dict({**base, "output": {"scans": ["T0", "T2"]}})
    hist = simulate_cell(case.cell)
    name_at, targets, t_end = _schedule(case, hist)
    assert sorted(name_at.values()) == ["T0", "T2"]
    assert t_end == pytest.approx((10 + 30 + 1 + 10 + 30 + 1) * 60, abs=1e-6)
    assert max(targets) == t_end
    full = _schedule(case_from_dict(base), hist)
    assert full[2] > t_end and "T6" in full[0].values()
    with pytest.raises(ParameterError, match=r"\[output\] scans holds T11"):
        case_from_dict({**base, "output": {"scans": ["T0", "T11"]}})

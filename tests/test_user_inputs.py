"""What a new user ran into: every input is checked where it enters, and nothing is reported
silently wrong. Resuming with a changed case, non-finite and non-physical case values, runs
that stopped before their first step, region interfaces outside the DVC grid, cubes below a
cell, texture-less DVC windows, hints that follow the evidence, option values that mean
nothing, ROIs outside the volume, duplicate step labels and negative zeros in messages."""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5: h5py then fails with "Not a datatype")
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import importlib.resources  # noqa: F401  (spam.datasets needs it)
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from anodetwin.errors import InputError, NumericalError, ParameterError
from anodetwin.phases import PHASE

from conftest import one_line_error, two_particle_labels

warnings.filterwarnings("ignore", category=np.exceptions.ComplexWarning)

COMM = MPI.COMM_SELF


# -- simulation cases ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro_mesh(tmp_path_factory) -> Path:
    """Copper foil, CBD and two Si particles (z, y, x), 1 um voxels."""
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import Labels, voxel_mesh

    ph, pa = two_particle_labels(pore_corner=False)
    return write_mesh(tmp_path_factory.mktemp("mesh") / "mesh",
                      voxel_mesh(COMM, Labels(ph, pa, (1.0,) * 3)))


def _case(path: Path, mesh: Path, extra: str = "", spacing: float = 0.0) -> Path:
    """A case file on the quick protocol; ``extra``: more TOML (raw, so inf and nan work)."""
    path.write_text(f'[mesh]\npath = "{mesh}"\n[cell]\nmodel = "quick_cell"\n'
                    f"[output]\ndvc_node_spacing_um = {spacing}\n" + extra)
    return path


def _rows(out: Path) -> int:
    return len((out / "summary.csv").read_text().strip().splitlines()) - 1


def test_resume_refuses_a_changed_case_naming_the_keys(tmp_path, micro_mesh, cli):
    """A run resumed with another stack pressure and step size was a silent mix of two cases;
    now the differing keys are named (old -> new) and nothing is written. A numerical
    setting that leaves the steps alone may change; --allow-case-change continues on
    purpose and run.json keeps the history."""
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import run_case

    base = _case(tmp_path / "base.toml", micro_mesh)
    changed = _case(tmp_path / "base2.toml", micro_mesh,
                    "[boundary]\np0_mpa = 0.5\n[solver]\ndtheta_max = 0.02\n")
    out = tmp_path / "run0"
    run_case(load_case(base), out, comm=COMM, max_steps=2)
    with pytest.raises(InputError, match=r"\[boundary\] p0_mpa 0.3 -> 0.5.*"
                                         r"\[solver\] dtheta_max 0.01 -> 0.02.*"
                                         r"--allow-case-change"):
        run_case(load_case(changed), out, comm=COMM, resume=True, max_steps=1)
    assert _rows(out) == 3
    for extra in ((), ("--check",)):
        res = cli("simulate", changed, "--out", out, "--resume", "--max-steps", "1", *extra)
        one_line_error(res, "p0_mpa 0.3 -> 0.5", "new --out")
    assert _rows(out) == 3
    # the linear solver does not change the steps: accepted as it is
    direct = _case(tmp_path / "direct.toml", micro_mesh, '[solver]\nlinear = "direct"\n')
    run_case(load_case(direct), out, comm=COMM, resume=True, max_steps=1)
    assert _rows(out) == 4
    rows = run_case(load_case(changed), out, comm=COMM, resume=True, max_steps=1,
                    allow_case_change=True)
    assert len(rows) == 5
    run = json.loads((out / "run.json").read_text())
    history = run["case_history"]
    assert [h["from_step"] for h in history] == [0, 2, 3]
    assert history[1]["changes"] == {"solver.linear": ["iterative", "direct"]}
    assert history[2]["changes"]["boundary.p0_mpa"] == [0.3, 0.5]
    assert history[2]["changes"]["solver.linear"] == ["direct", "iterative"]
    assert run["case_hash"] == history[2]["case_hash"] != history[0]["case_hash"]


BAD_VALUES = [
    ("lithiation", "diffusivity_um2_s = inf", r"\[lithiation\] diffusivity_um2_s = inf"),
    ("lithiation", "penetration_um = inf", r"\[lithiation\] penetration_um = inf"),
    ("lithiation", "diffusivity_ratio = inf", r"\[lithiation\] diffusivity_ratio = inf"),
    ("lithiation", "seed = 1.5", r"\[lithiation\] seed = 1.5 is not an integer"),
    ("boundary", "p0_mpa = nan", r"\[boundary\] p0_mpa = nan"),
    ("boundary", "p0_mpa = inf", r"\[boundary\] p0_mpa = inf"),
    ("boundary", "p0_mpa = 1e6", r"\[boundary\] p0_mpa = 1e\+06 MPa.*<= 100 MPa"),
    ("boundary", "k_mpa_per_um = nan", r"\[boundary\] k_mpa_per_um = nan"),
    ("boundary", "k_mpa_per_um = inf", r"\[boundary\] k_mpa_per_um = inf"),
    ("solver", "dt_max_s = inf", r"\[solver\] dt_max_s = inf"),
    ("output", "dvc_voxel_size_um = nan", r"\[output\] dvc_voxel_size_um = nan"),
    ("output", "times_s = [nan]", r"\[output\] times_s\[0\] = nan"),
    ("output", "times_s = [1e12]", r"\[output\] times_s holds 1e\+12 s, after the end of the "
                                   r"protocol .*3120 s"),
]


@pytest.mark.parametrize("section, line, match", BAD_VALUES,
                         ids=[f"{s} {ln}" for s, ln, _ in BAD_VALUES])
def test_case_values_are_finite_and_physical(tmp_path, micro_mesh, section, line, match):
    """Each value is refused where the case is read (both --check and the run read it
    there), naming its TOML section and key."""
    from anodetwin.simulate.case import load_case

    text = f"[{section}]\n{line}\n"
    if section == "output":  # the case's own [output] table takes the line
        path = tmp_path / "case.toml"
        path.write_text(f'[mesh]\npath = "{micro_mesh}"\n[cell]\nmodel = "quick_cell"\n{text}')
    else:
        path = _case(tmp_path / "case.toml", micro_mesh, text)
    with pytest.raises(ParameterError, match=match):
        load_case(path)


def test_check_and_run_refuse_the_same_values_in_one_line(tmp_path, micro_mesh, cli):
    """A NaN node spacing was a ValueError traceback in --check and in the run; a spacing
    below one voxel silently became one voxel."""
    for value, words in (("nan", ("[output] dvc_node_spacing_um = nan",)),
                         ("1e-3", ("[output] dvc_node_spacing_um = 0.001",
                                   "below one voxel", "1 um"))):
        case = tmp_path / f"c{value}.toml"
        case.write_text(f'[mesh]\npath = "{micro_mesh}"\n[cell]\nmodel = "quick_cell"\n'
                        f"[output]\ndvc_node_spacing_um = {value}\n")
        for extra in (("--check",), ()):
            one_line_error(cli("simulate", case, "--out", tmp_path / "run", *extra), *words)
        assert not (tmp_path / "run").exists()


def test_protocol_numbers_are_finite(tmp_path, micro_mesh):
    from anodetwin.simulate.case import load_case

    cell = (Path(__file__).resolve().parents[1] / "models" / "quick_cell.toml").read_text()
    for old, new, match in (('c_rate = "C/3"', "c_rate = inf", r"segments\[0\]\.c_rate = inf"),
                            ("value = 3.5", "value = inf", "cathode_capacity_mah_cm2 = inf"),
                            ("value = 440.0", "value = inf", "resistance_ohm_cm2 = inf")):
        bad = tmp_path / "cell.toml"
        bad.write_text(cell.replace(old, new, 1))
        case = _case(tmp_path / "case.toml", micro_mesh, "")
        case.write_text(case.read_text().replace('"quick_cell"', f'"{bad}"'))
        with pytest.raises(ParameterError, match=match):
            load_case(case)


def test_a_run_with_no_finished_step_starts_afresh(tmp_path, micro_mesh, monkeypatch, cli):
    """A run that failed at its first step left T0, a checkpoint and failure.json; the
    fixed case was then refused ("holds a run; pass --resume"). Now --check accepts the
    folder and the run starts it afresh, with or without --resume."""
    from anodetwin.simulate import mechanics
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import check_case, run_case

    real = mechanics.SwellingProblem.solve

    def fails(self, where="", dt=np.inf):
        raise NumericalError(f"Newton did not converge {where}", "test")

    case = load_case(_case(tmp_path / "case.toml", micro_mesh, "[solver]\ndt_min_s = 30.0\n"))
    out = tmp_path / "run"
    monkeypatch.setattr(mechanics.SwellingProblem, "solve", fails)
    with pytest.raises(NumericalError, match="no step finished.*starts afresh"):
        run_case(case, out, comm=COMM)
    assert (out / "failure.json").is_file() and (out / "checkpoint").is_dir()
    monkeypatch.setattr(mechanics.SwellingProblem, "solve", real)
    assert check_case(case, out, comm=COMM).restart
    res = cli("simulate", tmp_path / "case.toml", "--out", out, "--check")
    assert res.code == 0 and "starts afresh" in res.out, res.err
    rows = run_case(case, out, comm=COMM, max_steps=1)
    assert len(rows) == 2 and not (out / "failure.json").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    with pytest.raises(InputError, match="holds a run with 1 finished steps"):
        check_case(case, out, comm=COMM)


# -- DVC regions -------------------------------------------------------------------------------

SHAPE, SPACING, VS = (60, 40, 40), 10, 0.5


def _field(e: float = 0.1, shape=SHAPE):
    """A pair result of uniaxial strain e (u_z = e z) on spam's node grid."""
    from anodetwin.dvc.correlate import node_grid
    from anodetwin.dvc.pair import PairResult
    from anodetwin.dvc.strain import cell_strain

    nodes, gshape = node_grid(shape, SPACING)
    u = np.c_[e * nodes[:, 0], np.zeros((len(nodes), 2))]
    z = np.zeros(len(nodes))
    params = {"levels": [{"node_spacing": [SPACING] * 3, "hws": [SPACING] * 3}]}
    return PairResult(nodes, gshape, u, u, np.repeat(np.eye(4)[None], len(nodes), 0), z + 2,
                      z, z, z, z, z.astype(np.uint8), cell_strain(u.reshape(*gshape, 3), SPACING),
                      params, np.eye(4), np.zeros(3), np.full(3, VS))


def test_interfaces_outside_the_grid_are_refused(tmp_path, cli):
    """Interfaces beyond the grid (z 0..60 voxels, cells 10..50) or between two node rows
    gave rc 0 and NaN statistics; now the error names the grid's z range."""
    from anodetwin.dvc.pair import write_pair
    from anodetwin.dvc.regions import region_statistics

    for bad in ((200, 300), (1, 2), (21, 24)):
        with pytest.raises(ParameterError, match=r"holds no cell of the DVC grid, whose cells "
                                                 r"span z 10\.\.50 voxels \(5\.\.25 um\)"):
            region_statistics([_field()], interfaces=bad, cube_um=None)
    rs = region_statistics([_field()], interfaces=(10, 50), cube_um=None)
    assert rs.value(1, "separator_half") == pytest.approx(0.1)
    write_pair(tmp_path / "c1.h5", _field())
    res = cli("dvc-regions", tmp_path / "c1.h5", "--out", tmp_path / "r.h5", "--interfaces",
              "200,300")
    one_line_error(res, "z 10..50 voxels (5..25 um)", "--interfaces")
    assert not (tmp_path / "r.h5").exists()


def test_dvc_series_checks_the_regions_before_any_work(tmp_path, cli):
    import spam.datasets

    from anodetwin.io import Volume, write_volume

    snow = spam.datasets.loadSnow()
    for k in range(2):
        write_volume(tmp_path / f"T{k}.tif", Volume(snow, 0.5))
    for extra, words in ((["--interfaces", "200,300"], ["holds no cell", "voxels", "um"]),
                         (["--cube-um", "2"], ["--cube-um", "smaller than one cell"])):
        res = cli("dvc-series", tmp_path / "T0.tif", tmp_path / "T1.tif", "--out",
                  tmp_path / "ser", "--node-spacing", "25", "--hws", "10", *extra)
        one_line_error(res, *words)
        assert not (tmp_path / "ser").exists()


def test_a_blank_volume_is_refused_by_name_and_leaves_no_output(tmp_path, cli):
    """A scan with one grey value everywhere (a failed export) is named as the cause, with
    no library warning first; ``dvc-series`` creates its folder only with a result."""
    import spam.datasets

    from anodetwin.io import Volume, write_volume

    snow = spam.datasets.loadSnow()
    write_volume(tmp_path / "T0.tif", Volume(snow, 0.5))
    write_volume(tmp_path / "blank.tif", Volume(np.full_like(snow, 7), 0.5))
    for args, role in ((["dvc", "T0.tif", "blank.tif", "--out", "r.h5"], "deformed"),
                       (["dvc", "blank.tif", "T0.tif", "--out", "r.h5"], "reference"),
                       (["dvc-series", "T0.tif", "blank.tif", "--out", "ser"], "deformed")):
        res = cli(*(str(tmp_path / a) if a.endswith((".tif", ".h5")) or a == "ser" else a
                    for a in args), "--node-spacing", "25", "--hws", "10")
        assert res.code == 2 and "Traceback" not in res.err and "Warning" not in res.err
        last = res.err.strip().splitlines()[-1]
        assert last.startswith("anodetwin: error:"), res.err
        for words in (f"{role} volume '", "blank.tif' has one grey value (7)"):
            assert words in last, last
        assert not (tmp_path / "r.h5").exists() and not (tmp_path / "ser").exists()


def test_cubes_and_vois_below_a_cell_and_too_many_cubes_are_refused(monkeypatch):
    from anodetwin.dvc import regions

    labels = np.zeros(SHAPE, np.int32)
    labels[25:35, 15:25, 15:25] = 4
    with pytest.raises(ParameterError, match=r"--cube-um \(cube_um\) = 2 um is smaller than "
                                             r"one cell of the DVC grid \(5 um"):
        regions.region_statistics([_field()], cube_um=2.0)
    with pytest.raises(ParameterError, match=r"--voi-um \(voi_um\) = 3 um is smaller"):
        regions.region_statistics([_field()], cube_um=None, particles=labels, voi_um=3.0)
    monkeypatch.setattr(regions, "MAX_CUBES", 4)
    with pytest.raises(ParameterError, match="gives 16 cubes"):
        regions.region_statistics([_field()], cube_um=5.0)
    # the defaults ("auto"): the reference's 40 um cubes and 15 um VOIs where they are a
    # cell (5 um here) or more, none where they are below one (50 um cells at 5 um voxels)
    rs = regions.region_statistics([_field()], particles=labels)
    assert "cube_z0_y0_x0" in rs.names and "particle_4" in rs.names
    rs = regions.region_statistics([_field()], particles=labels, voxel_size_um=5.0)
    assert rs.names == ["electrode", "collector_half", "separator_half"]
    assert rs.params["cube_um"] is None and rs.params["voi_um"] is None


def test_duplicate_step_labels_are_refused(tmp_path, cli):
    from anodetwin.dvc.pair import write_pair
    from anodetwin.dvc.regions import region_statistics

    with pytest.raises(ParameterError, match=r"step labels \[1, 1\] repeat \[1\]"):
        region_statistics([_field(0.1), _field(0.2)], steps=[1, 1], cube_um=None)
    for k in (1, 2):
        write_pair(tmp_path / f"c{k}.h5", _field(0.1 * k))
    res = cli("dvc-regions", tmp_path / "c1.h5", tmp_path / "c2.h5", "--out",
              tmp_path / "r.h5", "--steps", "3,3")
    one_line_error(res, "repeat")


# -- DVC: texture and hints --------------------------------------------------------------------

@pytest.fixture(scope="module")
def snow():
    import spam.datasets

    return spam.datasets.loadSnow().astype(np.float32)


@pytest.mark.parametrize("engine", ["spam", "native"])
def test_textureless_windows_are_excluded_never_repaired(snow, engine):
    """Snow's texture only in [40:60]^3 of a flat noisy volume, moved 1.5 voxels along z:
    windows without a textured voxel inside their 1-voxel margin (both engines) were
    'repaired' from the measured nodes; they are excluded (status -6, flag 2, NaN) and
    every cell touching them has NaN strain."""
    import spam.deformation
    import spam.DIC

    from anodetwin.dvc.pair import FLAG, correlate_pair

    rng = np.random.default_rng(5)
    vol = np.full(snow.shape, snow.mean(), np.float32)
    vol[40:60, 40:60, 40:60] = snow[40:60, 40:60, 40:60]
    moved = spam.DIC.applyPhi(vol, Phi=spam.deformation.computePhi({"t": [1.5, 0.0, 0.0]}))
    noise = 0.02 * snow.std()
    ref = vol + rng.normal(0, noise, vol.shape).astype(np.float32)
    deformed = moved + rng.normal(0, noise, vol.shape).astype(np.float32)
    hws = 10
    res = correlate_pair(ref, deformed, node_spacing=15, hws=hws, progress=False,
                         engine=engine)
    n = res.nodes
    inside = np.all((n - hws >= 0) & (n + hws <= 99), axis=1)
    textured = np.all((n + hws - 1 >= 40) & (n - hws + 1 < 60), axis=1)
    assert textured.sum() == 8
    blank = inside & ~textured
    assert np.all(res.flag[blank] == FLAG["excluded"])
    from anodetwin.dvc.correlate import STATUS

    assert np.all(res.status[blank] == STATUS["no_texture"])
    assert np.all(res.flag[textured] == FLAG["measured"])
    assert not np.any(res.flag == FLAG["repaired"])
    np.testing.assert_allclose(res.displacement[textured], [[1.5, 0, 0]] * 8, atol=0.25)
    assert np.isnan(res.displacement[res.flag == FLAG["excluded"]]).all()
    assert res.params["noise_std"] == pytest.approx(noise, rel=0.1)
    # strain only where all eight nodes of a cell were measured: the one cell among them
    vol_strain = res.strain.volumetric
    assert np.isfinite(vol_strain).sum() == 1 and abs(np.nanmax(vol_strain)) < 0.02


def test_no_node_hints_follow_the_evidence(snow):
    """Two different samples: the residual near 2 says so (with and without a search, and
    a search range is no longer the fix once given); two noise volumes have no texture.
    The measured residual is always in the message."""
    import spam.datasets

    from anodetwin.dvc.pair import correlate_pair

    concrete = spam.datasets.loadConcreteXr().astype(np.float32)
    kw = {"node_spacing": 25, "hws": 10, "progress": False}
    with pytest.raises(NumericalError) as exc:
        correlate_pair(snow, concrete, **kw)
    msg = str(exc.value)
    assert "global registration residual 1.8" in msg
    assert msg.index("do not show the same sample") < msg.index("--search-range")
    with pytest.raises(NumericalError) as exc:
        correlate_pair(snow, concrete, search_range=10, **kw)
    msg = str(exc.value)
    assert "do not show the same sample" in msg and "residual 1.8" in msg
    assert "--search-range" not in msg
    rng = np.random.default_rng(0)
    a, b = (rng.normal(1000, 50, snow.shape).astype(np.float32) for _ in range(2))
    with pytest.raises(NumericalError) as exc:
        correlate_pair(a, b, **kw)
    msg = str(exc.value)
    assert "27 without texture" in msg and "no grey-value texture" in msg
    assert "residual" in msg and "--search-range" not in msg


# -- option values ---------------------------------------------------------------------------

BAD_OPTIONS = [
    (["segment-train", "a", "b", "--out", "m.joblib", "--jobs", "0"], "--jobs"),
    (["segment-train", "a", "b", "--out", "m.joblib", "--jobs", "-3"], "--jobs"),
    (["dvc-residual", "a", "b", "c", "--out", "o.h5", "--shell", "0"], "--shell"),
    (["noise-floor", "a", "b", "--percentile", "150"], "--percentile"),
    (["segment", "a", "--out", "l.h5", "--h", "0"], "--h"),
    (["dvc-regions", "a", "--out", "o.h5", "--steps", "1,-1"], "--steps"),
    (["dvc", "a", "b", "--out", "o.h5", "--roi", ""], "--roi"),
    (["dvc", "a", "b", "--out", "o.h5", "--roi", " "], "--roi"),
]


@pytest.mark.parametrize("args, option", BAD_OPTIONS, ids=[" ".join(a[-2:]) for a, _ in
                                                           BAD_OPTIONS])
def test_meaningless_option_values_exit_2_naming_the_option(capsys, args, option):
    from anodetwin.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{option} " in lines[0] and "give" in lines[0], lines


def test_jobs_minus_one_means_all_cores_and_the_library_checks_too():
    from anodetwin.cli import build_parser
    from anodetwin.dvc.residual import ResidualMap, particle_residuals
    from anodetwin.segment.classifier import train_classifier

    a = build_parser().parse_args(["segment-train", "a", "b", "--out", "m", "--jobs", "-1"])
    assert a.jobs == -1
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(6, 16, 16)).astype(np.float32)
    ann = np.full(vol.shape, 255, np.uint8)
    ann[3, :8] = 1
    ann[3, 8:] = 2
    with pytest.raises(ParameterError, match="n_jobs"):
        train_classifier(vol, ann, n_estimators=2, n_jobs=0)
    rmap = ResidualMap(np.zeros((4, 4, 4), np.float32), 1.0, 2.0,
                       np.stack(np.indices((4, 4, 4)), 0).astype(float))
    with pytest.raises(ParameterError, match="shell"):
        particle_residuals(rmap, np.ones((4, 4, 4), int), shell_voxels=0)


def test_roi_outside_the_volume_is_refused_not_clipped():
    from anodetwin.io import normalise_roi

    with pytest.raises(ParameterError, match=r"axis z 0:100 reaches outside the volume of "
                                             r"size 40.*within 0:40"):
        normalise_roi("0:100,:,:", (40, 50, 50))
    with pytest.raises(ParameterError, match=r"axis x -60: reaches outside"):
        normalise_roi(":,:,-60:", (40, 50, 50))
    assert normalise_roi("-10:,0:50,:", (40, 50, 50))[0] == slice(30, 40)


def test_negative_zero_is_written_as_zero():
    from anodetwin.errors import GridMismatchError
    from anodetwin.io.agree import Grid, require_same_grid

    with pytest.raises(GridMismatchError) as exc:
        require_same_grid(Grid((4, 4, 4), (1.0,) * 3, (-0.0, -0.0, -2.0)),
                          Grid((4, 4, 4), (1.0,) * 3, (0.0, 0.0, 0.0)), "A", "B")
    assert "(0, 0, -2)" in str(exc.value) and "-0," not in str(exc.value)


def test_pyramid_levels_must_be_coarser_than_the_nodes():
    """A pyramid level at or below the final spacing was dropped without a word."""
    from anodetwin.dvc.pair import correlate_pair

    vol = np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32)
    with pytest.raises(ParameterError, match=r"pyramid level\(s\) \[5, 10\].*node spacing 10"):
        correlate_pair(vol, vol, node_spacing=10, pyramid=[20, 5, 10])


def test_unknown_drop_phase_codes_are_refused():
    from anodetwin.mesh.voxel import Labels, voxel_mesh

    ph = np.full((4, 4, 4), PHASE["si"], dtype=np.uint8)
    lab = Labels(ph, np.zeros_like(ph, dtype=np.int32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match=r"drop phase\(s\) \[9\].*0 pore"):
        voxel_mesh(MPI.COMM_WORLD, lab, drop_phases=(0, 9))


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`anodetwin ... | head -1` must not end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    code = ("import anodetwin.cli as c\n"
            "import anodetwin.cli.info as i\n"
            "i.cmd_info = lambda a: [print('x' * 100) for _ in range(200000)]\n"
            "raise SystemExit(c.main(['info']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err

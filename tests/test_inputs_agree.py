"""Inputs that meet must agree (voxel size, shape, origin) or the user says so with
--voxel-size; every list/number option is parsed by one typed converter (exit 2, one line);
failures name their likely cause (a large drift: --search-range); ``simulate --check``
checks what the run checks and a run that stops at set-up leaves nothing behind."""

from __future__ import annotations

import importlib.resources  # noqa: F401  (spam.datasets needs it)
import json
import logging
import warnings

import h5py
import numpy as np
import pytest
from scipy import ndimage

from anodetwin.errors import GridMismatchError, NumericalError, ShapeMismatchError
from anodetwin.io import Volume, write_volume
from anodetwin.io.agree import Grid, require_same_grid, require_series_grid
from conftest import listing, one_line_error

warnings.filterwarnings("ignore", category=np.exceptions.ComplexWarning)


def texture(shape=(40, 40, 40), seed=0, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A smooth random grey texture (uint16), optionally moved by ``shift`` voxels."""
    rng = np.random.default_rng(seed)
    big = ndimage.gaussian_filter(rng.normal(size=tuple(n + 24 for n in shape)), 1.5)
    big = ndimage.shift(big, shift, order=3, mode="nearest")
    v = big[12:-12, 12:-12, 12:-12]
    v = (v - v.min()) / (v.max() - v.min())
    return (1000 + 50000 * v).astype(np.uint16)


@pytest.fixture
def scans(tmp_path):
    """T0 at 0.2 um, T1 the same grid but declared at 0.4 um, T1ok at 0.2 um."""
    write_volume(tmp_path / "t0.tif", Volume(texture(), 0.2))
    write_volume(tmp_path / "t1.tif", Volume(texture(shift=(1, 0, 0)), 0.4))
    write_volume(tmp_path / "t1ok.tif", Volume(texture(shift=(1, 0, 0)), 0.2))
    return tmp_path / "t0.tif", tmp_path / "t1.tif", tmp_path / "t1ok.tif"


# -- fault 6: inputs that disagree ----------------------------------------------------------

def test_require_same_grid_checks_voxel_size_shape_origin():
    a = Grid((10, 10, 10), (0.2, 0.2, 0.2), (0.0, 0.0, 0.0))
    assert require_same_grid(a, Grid((10, 10, 10), (0.2 * (1 + 1e-8),) * 3, (0, 0, 0)),
                             "A", "B").voxel_size_um == (0.2, 0.2, 0.2)
    with pytest.raises(GridMismatchError, match=r"A has voxel size 0.2 um but B has "
                                                r"0.2 x 0.2 x 0.4 um \(z, y, x\)"):
        require_same_grid(a, Grid((10, 10, 10), (0.2, 0.2, 0.4), (0, 0, 0)), "A", "B")
    with pytest.raises(ShapeMismatchError, match=r"shape \(10, 10, 10\) but B has shape"):
        require_same_grid(a, Grid((10, 10, 9), (0.2,) * 3, (0, 0, 0)), "A", "B")
    with pytest.raises(GridMismatchError, match="origin"):
        require_same_grid(a, Grid((10, 10, 10), (0.2,) * 3, (0, 0, 2.0)), "A", "B")
    with pytest.raises(GridMismatchError, match="unknown.*--voxel-size"):
        require_same_grid(Grid((10, 10, 10), None, (0, 0, 0)), a, "A", "B")
    # an explicit voxel size states the grid of both: accepted, and the result carries it
    g = require_same_grid(a, Grid((10, 10, 10), (0.4,) * 3, (0, 0, 2.0)), "A", "B",
                          voxel_size=(0.3, 0.2, 0.2))
    assert g.voxel_size_um == (0.3, 0.2, 0.2)
    # plain arrays carry no voxel size: shape only
    assert require_same_grid(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), "A",
                             "B").voxel_size_um is None
    with pytest.raises(GridMismatchError, match="T2"):
        require_series_grid([a, a, Grid((10, 10, 10), (0.21,) * 3, (0, 0, 0))])


def test_dvc_refuses_scans_of_different_voxel_size(cli, scans, tmp_path):
    t0, t1, _ = scans
    before = listing(tmp_path)
    res = cli("dvc", t0, t1, "--out", tmp_path / "pair.h5", "--node-spacing", "12",
              "--hws", "6")
    one_line_error(res, "t0.tif", "t1.tif", "0.2 um", "0.4 um", "--voxel-size")
    assert listing(tmp_path) == before


def test_dvc_voxel_size_override_is_accepted_and_labels_the_result(cli, scans, tmp_path):
    t0, t1, _ = scans
    res = cli("dvc", t0, t1, "--out", tmp_path / "pair.h5", "--node-spacing", "12",
              "--hws", "6", "--voxel-size", "0.4,0.2,0.2")
    assert res.code == 0, res.err
    with h5py.File(tmp_path / "pair.h5") as f:
        np.testing.assert_allclose(f.attrs["voxel_size_um"], [0.4, 0.2, 0.2])
        grid = json.loads(f.attrs["params"])["reference_grid"]
        assert grid["shape"] == [40, 40, 40]
        assert np.nanmedian(f["displacement"][:, 0]) == pytest.approx(1.0, abs=0.05)


def test_dvc_refuses_unknown_next_to_known_voxel_size_and_other_origins(cli, scans, tmp_path):
    t0, _, _ = scans
    write_volume(tmp_path / "nosize.tif", Volume(texture(shift=(1, 0, 0))))
    res = cli("dvc", t0, tmp_path / "nosize.tif", "--out", tmp_path / "p.h5")
    one_line_error(res, "nosize.tif", "unknown", "--voxel-size")
    write_volume(tmp_path / "moved.tif", Volume(texture(), 0.2, origin=(2.0, 0.0, 0.0)))
    res = cli("dvc", t0, tmp_path / "moved.tif", "--out", tmp_path / "p.h5")
    one_line_error(res, "moved.tif", "origin", "(2, 0, 0)")
    res = cli("dvc", t0, tmp_path / "moved.tif", "--out", tmp_path / "p.h5", "--mask",
              tmp_path / "nosize.tif", "--voxel-size", "0.2", "--node-spacing", "12",
              "--hws", "6")
    assert res.code == 0, res.err  # the user states the grid: accepted (and logged)


def test_library_entry_points_refuse_disagreeing_volumes(scans):
    from anodetwin.dvc.noise import noise_floor
    from anodetwin.dvc.pair import correlate_pair
    from anodetwin.dvc.residual import residual_map

    a, b = Volume(texture(), 0.2), Volume(texture(shift=(1, 0, 0)), 0.4)
    with pytest.raises(GridMismatchError, match="0.2 um but deformed volume has 0.4 um"):
        correlate_pair(a, b, node_spacing=12, hws=6, progress=False)
    t0, t1, _ = scans
    with pytest.raises(GridMismatchError, match="t1.tif"):
        correlate_pair(t0, t1, node_spacing=12, hws=6, progress=False)
    with pytest.raises(GridMismatchError, match="second scan"):
        noise_floor(a, b)
    assert noise_floor(a, b, voxel_size_um=0.2).noise_std > 0
    with pytest.raises(GridMismatchError):
        residual_map(a, b, np.zeros((3, 40, 40, 40), np.float32))
    res = correlate_pair(a, Volume(b.data, 0.2), node_spacing=12, hws=6, progress=False)
    np.testing.assert_allclose(res.voxel_size_um, 0.2)


def test_noise_floor_cli_refuses_different_voxel_sizes(cli, scans):
    t0, t1, t1ok = scans
    one_line_error(cli("noise-floor", t0, t1), "t0.tif", "t1.tif", "0.4 um")
    assert cli("noise-floor", t0, t1, "--voxel-size", "0.2").code == 0
    assert cli("noise-floor", t0, t1ok).code == 0


def test_dvc_series_checks_every_scan_before_any_work(cli, scans, tmp_path):
    t0, t1, t1ok = scans
    res = cli("dvc-series", t0, t1ok, t1, "--out", tmp_path / "ser", "--node-spacing", "12",
              "--hws", "6")
    one_line_error(res, "T2 '", "t1.tif", "0.4 um")
    assert not (tmp_path / "ser").exists()
    write_volume(tmp_path / "ph.tif", Volume(np.ones((40, 40, 40), np.uint8), 0.4))
    res = cli("dvc-series", t0, t1ok, "--out", tmp_path / "ser", "--phases",
              tmp_path / "ph.tif")
    one_line_error(res, "phases", "ph.tif", "0.4 um")
    assert not (tmp_path / "ser").exists()


@pytest.fixture
def pair_result(tmp_path, scans):
    from anodetwin.dvc.pair import correlate_pair, write_pair

    t0, _, t1ok = scans
    res = correlate_pair(t0, t1ok, node_spacing=12, hws=6, progress=False)
    return write_pair(tmp_path / "pair.h5", res)


def test_dvc_regions_refuses_labels_of_another_grid(cli, tmp_path, pair_result):
    write_volume(tmp_path / "ph04.tif", Volume(np.ones((40, 40, 40), np.uint8), 0.4))
    write_volume(tmp_path / "ph_small.tif", Volume(np.ones((30, 40, 40), np.uint8), 0.2))
    for bad, words in ((["--phases", tmp_path / "ph04.tif"], ("ph04.tif", "0.4 um")),
                       (["--particles", tmp_path / "ph_small.tif"], ("shape (30, 40, 40)",))):
        res = cli("dvc-regions", pair_result, "--out", tmp_path / "reg.h5", "--cube-um", "0",
                  *bad)
        one_line_error(res, "pair.h5", *words)
        assert not (tmp_path / "reg.h5").exists()
    res = cli("dvc-regions", pair_result, "--out", tmp_path / "reg.h5", "--cube-um", "0",
              "--phases", tmp_path / "ph04.tif", "--voxel-size", "0.2")
    assert res.code == 0, res.err


def test_dvc_residual_checks_result_double_scan_and_particles(cli, scans, tmp_path,
                                                               pair_result):
    t0, t1, t1ok = scans
    out = tmp_path / "res.h5"
    one_line_error(cli("dvc-residual", t0, t1, pair_result, "--out", out), "0.4 um")
    one_line_error(cli("dvc-residual", t0, t1ok, pair_result, "--out", out,
                        "--double-scan", t0, t1), "double scan", "t1.tif", "0.4 um")
    write_volume(tmp_path / "small.tif", Volume(texture((30, 40, 40)), 0.2))
    one_line_error(cli("dvc-residual", tmp_path / "small.tif", tmp_path / "small.tif",
                        pair_result, "--out", out), "DVC result", "(40, 40, 40)")
    write_volume(tmp_path / "lab.tif", Volume(np.ones((40, 40, 40), np.int32), 0.1))
    one_line_error(cli("dvc-residual", t0, t1ok, pair_result, "--out", out, "--particles",
                        tmp_path / "lab.tif"), "particles", "0.1 um")
    assert not out.exists()
    res = cli("dvc-residual", t0, t1ok, pair_result, "--out", out, "--floor", "100")
    assert res.code == 0, res.err


def test_segment_align_to_and_morphology_check_the_grid(cli, tmp_path, scans):
    from anodetwin.segment.morphology import series_morphology
    from anodetwin.segment.particles import particle_table
    from anodetwin.segment.pipeline import Segmentation, write_labels

    t0, t1, _ = scans
    res = cli("segment", t0, "--out", tmp_path / "lab.h5", "--align-to", t1)
    one_line_error(res, "--align-to reference", "t1.tif", "0.4 um")
    assert not (tmp_path / "lab.h5").exists()

    def seg(vs):
        ph = np.ones((6, 5, 5), np.uint8)
        ph[0] = 4
        ph[2:4, 1:3, 1:3] = 2
        pa = (ph == 2).astype(np.int32)
        col = np.full((5, 5), 0.5)
        return Segmentation(ph, pa, particle_table(pa, vs, col), col, np.full((5, 5), 4.5),
                            (vs,) * 3, collector_face="low")

    with pytest.raises(GridMismatchError, match="labels of T1 has 0.4 um"):
        series_morphology([seg(0.2), seg(0.4)], prior="none")
    assert series_morphology([seg(0.2), seg(0.4)], prior="none",
                             voxel_size_um=0.2).voxel_size_um == (0.2, 0.2, 0.2)
    write_labels(tmp_path / "a.h5", seg(0.2))
    write_labels(tmp_path / "b.h5", seg(0.4))
    res = cli("morphology", tmp_path / "a.h5", tmp_path / "b.h5", "--out", tmp_path / "m",
              "--prior", "none")
    one_line_error(res, "b.h5", "0.4 um")
    assert not (tmp_path / "m").exists()


def test_mesh_particles_must_lie_on_the_labels_grid(tmp_path):
    from anodetwin.mesh.io import read_labels_volume

    write_volume(tmp_path / "ph.tif", Volume(np.full((6, 6, 6), 2, np.uint8), 0.5))
    write_volume(tmp_path / "pa.tif", Volume(np.ones((6, 6, 6), np.int32), 1.0))
    with pytest.raises(GridMismatchError, match="particles '.*pa.tif' has 1 um"):
        read_labels_volume(tmp_path / "ph.tif", str(tmp_path / "pa.tif"))
    lab = read_labels_volume(tmp_path / "ph.tif", str(tmp_path / "pa.tif"), (0.5, 0.25, 0.25))
    assert tuple(lab.voxel_size_um) == (0.5, 0.25, 0.25)


# -- fault 8: bad command-line values ---------------------------------------------------------

BAD_OPTIONS = [
    (["dvc", "a", "b", "--out", "o.h5", "--pyramid", "100,abc"], "--pyramid"),
    (["dvc", "a", "b", "--out", "o.h5", "--pyramid", "100,0"], "--pyramid"),
    (["dvc", "a", "b", "--out", "o.h5", "--search-range", "3,x"], "--search-range"),
    (["dvc", "a", "b", "--out", "o.h5", "--search-range", "3,4"], "--search-range"),
    (["dvc", "a", "b", "--out", "o.h5", "--search-range", "-1"], "--search-range"),
    (["dvc", "a", "b", "--out", "o.h5", "--roi", "0:10,:"], "--roi"),
    (["dvc", "a", "b", "--out", "o.h5", "--voxel-size", "0"], "--voxel-size"),
    (["dvc", "a", "b", "--out", "o.h5", "--voxel-size", "0.1,0.2"], "--voxel-size"),
    (["dvc", "a", "b", "--out", "o.h5", "--node-spacing", "x"], "--node-spacing"),
    (["dvc", "a", "b", "--out", "o.h5", "--hws", "0"], "--hws"),
    (["dvc", "a", "b", "--out", "o.h5", "--hws", "6,10"], "--hws"),
    (["dvc-series", "a", "b", "--out", "o", "--interfaces", "1,x"], "--interfaces"),
    (["dvc-series", "a", "b", "--out", "o", "--interfaces", "20"], "--interfaces"),
    (["dvc-series", "a", "b", "--out", "o", "--pyramid", "7;3"], "--pyramid"),
    (["dvc-regions", "a", "--out", "o.h5", "--steps", "1,a"], "--steps"),
    (["dvc-regions", "a", "--out", "o.h5", "--cube-um", "nan"], "--cube-um"),
    (["dvc-residual", "a", "b", "c", "--out", "o.h5", "--voxel-size", "abc"], "--voxel-size"),
    (["segment-train", "a", "b", "--out", "m.joblib", "--slices", "1,x"], "--slices"),
    (["segment-train", "a", "b", "--out", "m.joblib", "--sigmas", "1,-2"], "--sigmas"),
    (["segment", "a", "--out", "l.h5", "--min-particle-voxels", "2.5"], "--min-particle-voxels"),
    (["mesh", "a", "--out", "m", "--drop-phases", "0,x"], "--drop-phases"),
    (["mesh", "a", "--out", "m", "--voxel-size", "-1"], "--voxel-size"),
    (["mesh-packing", "a", "--out", "m", "--ids", "3,x"], "--ids"),
    (["mesh-packing", "a", "--out", "m", "--box", "1,2,3"], "--box"),
    (["convert", "a", "b.h5", "--bin", "0"], "--bin"),
    (["convert", "a", "b.h5", "--voxel-size", "inf"], "--voxel-size"),
    (["noise-floor", "a", "b", "--percentile", "x"], "--percentile"),
    (["simulate", "c.toml", "--out", "o", "--max-steps", "0"], "--max-steps"),
    (["study", "s.toml", "--out", "o", "--workers", "two"], "--workers"),
]


@pytest.mark.parametrize("args, option", BAD_OPTIONS, ids=[" ".join(a[-2:]) for a, _ in
                                                           BAD_OPTIONS])
def test_bad_option_values_exit_2_with_one_line(capsys, args, option):
    from anodetwin.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    line = one_line_error(type("R", (), {"code": 2, "err": err})(), option)
    assert args[-1] in line  # the value as given
    assert "give" in line or "write it as" in line  # and the fix


def test_list_options_parse_to_numbers():
    from anodetwin.cli import build_parser

    p = build_parser()
    a = p.parse_args(["dvc", "a", "b", "--out", "o", "--pyramid", "100, 70",
                      "--search-range", "15,5,5", "--voxel-size", "0.4,0.2,0.2"])
    assert a.pyramid == [100, 70] and a.search_range == [15, 5, 5]
    assert a.voxel_size == [0.4, 0.2, 0.2]
    a = p.parse_args(["dvc", "a", "b", "--out", "o", "--voxel-size", "0.05"])
    assert a.voxel_size == 0.05 and a.search_range == [0] and a.hws is None
    a = p.parse_args(["dvc-series", "a", "b", "--out", "o", "--hws", "6,10,10"])
    assert a.hws == [6, 10, 10]
    assert p.parse_args(["dvc", "a", "b", "--out", "o", "--hws", "12"]).hws == 12
    a = p.parse_args(["mesh", "a", "--out", "m"])
    assert a.drop_phases == []


# -- fault 9: hints that point the right way ---------------------------------------------------

@pytest.fixture(scope="module")
def drifted():
    import spam.datasets
    import spam.deformation
    import spam.DIC

    snow = spam.datasets.loadSnow().astype(np.float32)
    shift = np.array([10.0, -12.0, 9.0])
    moved = spam.DIC.applyPhi(snow, Phi=spam.deformation.computePhi({"t": list(shift)}))
    return snow, moved, shift


def test_large_drift_is_found_by_phase_correlation(drifted):
    """A rigid drift of (10, -12, 9) voxels between two scans of spam's snow: every node
    was lost before (the affine registration converged to a wrong translation); now the
    phase correlation finds it and the nodes measure the drift to 0.1 voxel."""
    from anodetwin.dvc.pair import correlate_pair

    snow, moved, shift = drifted
    res = correlate_pair(snow, moved, node_spacing=20, hws=10, progress=False)
    np.testing.assert_allclose(res.global_phi[:3, 3], shift, atol=0.1)
    err = np.linalg.norm(res.displacement - shift, axis=1)
    assert np.mean(err < 0.1) >= 0.9
    assert res.params["registration"]["residual"] < 0.1


def test_failed_correlation_names_search_range(drifted, tmp_path, cli):
    from anodetwin.dvc.pair import correlate_pair

    snow, moved, _ = drifted
    with pytest.raises(NumericalError, match="--search-range"):
        correlate_pair(snow, moved, node_spacing=20, hws=10, global_registration=False,
                       progress=False)
    write_volume(tmp_path / "a.tif", Volume(snow.astype(np.uint16), 1.0))
    write_volume(tmp_path / "b.tif", Volume(np.clip(moved, 0, 65535).astype(np.uint16), 1.0))
    res = cli("--quiet", "dvc", tmp_path / "a.tif", tmp_path / "b.tif", "--out",
              tmp_path / "p.h5", "--node-spacing", "20", "--hws", "10", "--no-global")
    one_line_error(res, "no node could be measured", "--search-range")
    assert not (tmp_path / "p.h5").exists()


def test_large_registration_residual_warns_with_search_range(drifted):
    """Unrelated volumes: the registration cannot match them; the warning says what to do."""
    from anodetwin.dvc.pair import correlate_pair

    snow, _, _ = drifted
    other = texture((100, 100, 100), seed=3).astype(np.float32)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("anodetwin")
    logger.addHandler(handler)
    try:
        with pytest.raises(NumericalError, match="--search-range"):
            correlate_pair(snow, other, node_spacing=20, hws=10, progress=False)
    finally:
        logger.removeHandler(handler)
    assert any("--search-range" in r.getMessage() for r in records)


# -- fault 9: simulate --check -------------------------------------------------------------------

def test_simulate_check_and_run_refuse_a_one_node_dvc_grid(tmp_path, cli):
    import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
    from mpi4py import MPI

    from anodetwin.errors import ParameterError
    from anodetwin.mesh.io import write_mesh
    from anodetwin.mesh.voxel import Labels, voxel_mesh
    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import check_case, run_case

    ph = np.full((8, 6, 6), 1, np.uint8)
    ph[0] = 4
    ph[2:5, 1:4, 1:4] = 2
    write_mesh(tmp_path / "mesh", voxel_mesh(MPI.COMM_SELF, Labels(ph, None, (1.0,) * 3)))
    case = tmp_path / "case.toml"
    case.write_text(f'[mesh]\npath = "{tmp_path / "mesh"}"\n[cell]\nmodel = "quick_cell"\n'
                    "[output]\ndvc_node_spacing_um = 5.0\n")
    res = cli("simulate", case, "--out", tmp_path / "run", "--check")
    one_line_error(res, "dvc_node_spacing_um", "give a smaller spacing")
    with pytest.raises(ParameterError, match="dvc_node_spacing_um"):
        run_case(load_case(case), tmp_path / "run", comm=MPI.COMM_SELF)
    assert not (tmp_path / "run").exists()  # nothing left behind
    case.write_text(case.read_text().replace("5.0", "2.0"))
    assert check_case(load_case(case), tmp_path / "run", comm=MPI.COMM_SELF).dvc_grid[1] \
        == (3, 2, 2)
    assert not (tmp_path / "run").exists()

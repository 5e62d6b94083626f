"""Scoring a run folder against a phantom's truth (anodetwin.pipeline.score).

Every expected number is computed by hand from the synthetic inputs below, which are written
with the real writers (labels, DVC pair files, morphology) so the layouts are the real ones.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anodetwin.dvc.correlate import node_grid
from anodetwin.dvc.pair import PairResult, write_pair
from anodetwin.errors import ParameterError
from anodetwin.phases import PHASE
from anodetwin.pipeline.score import LIMITS, criteria, score_run, truth_at_points, write_score
from anodetwin.segment import Segmentation, series_morphology, write_labels, write_morphology
from anodetwin.segment.particles import particle_table
from anodetwin.strain import cell_strain

SHAPE = (20, 12, 12)
V = 0.5  # um
CU, ANODE, SEP = (0, 4), (4, 14), (14, 20)
SPACING = 2
# T1: u_z = C1 * max(Z - 4, 0) voxels, so the coating top (plane 13.5) moves by 2 voxels
C1 = 2.0 / 9.5


def _phases0() -> np.ndarray:
    p = np.zeros(SHAPE, np.uint8)
    p[CU[0]:CU[1]] = PHASE["copper"]
    p[ANODE[0]:ANODE[1], :, ::2] = PHASE["cbd"]  # binder in every other x column, pores between
    p[6:10, 4:8, 4:8] = PHASE["si"]  # 64 voxels of Si
    sep = p[SEP[0]:]
    sep[...] = PHASE["separator"]
    sep[:, ::3] = PHASE["pore"]  # a porous separator
    return p


def _phases1() -> np.ndarray:
    """T1: the separator layer starts 2 planes higher, half of the Si is lithiated."""
    p = _phases0()
    p[SEP[0]:] = PHASE["pore"]
    p[SEP[0] + 2:] = _phases0()[SEP[0]:SHAPE[0] - 2]
    p[6:8, 4:8, 4:8] = PHASE["lithiated"]
    return p


def _u1() -> np.ndarray:
    z = np.arange(SHAPE[0], dtype=float)
    u = np.zeros((3,) + SHAPE, np.float32)
    u[0] = (C1 * np.maximum(z - ANODE[0], 0) * V)[:, None, None]
    return u


def _u2() -> np.ndarray:
    """T2: a u_z that varies in its gradient (J - 1 changes across cells) and a u_x."""
    z = np.arange(SHAPE[0], dtype=float)
    x = np.arange(SHAPE[2], dtype=float)
    u = np.zeros((3,) + SHAPE, np.float32)
    u[0] = (0.01 * np.maximum(z - ANODE[0], 0) ** 2 * V)[:, None, None]
    u[2] = (0.05 * x * V)[None, None, :]
    return u


def _u3() -> np.ndarray:
    """T3: the whole sample, collector included, moved by +1 voxel along z."""
    return np.full((3,) + SHAPE, 0.0, np.float32) + np.array([V, 0, 0], np.float32)[:, None,
                                                                                    None, None]


STEPS = {
    "T0": dict(phases=_phases0(), u=np.zeros((3,) + SHAPE, np.float32), thickness=5.0,
               core=[10.0, 6.0]),
    "T1": dict(phases=_phases1(), u=_u1(), thickness=6.3, core=[6.0, 2.0]),
    "T2": dict(phases=_phases1(), u=_u2(), thickness=6.3, core=[4.0, 0.0]),
    "T3": dict(phases=np.concatenate([_phases0()[:1], _phases0()[:-1]]), u=_u3(),
               thickness=5.0, core=[10.0, 6.0]),
}


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """A truth series with the layout of anodetwin.phantom.generate (the parts scored)."""
    import h5py

    path = tmp_path_factory.mktemp("truth") / "series.h5"
    with h5py.File(path, "w") as f:
        f.attrs["voxel_size_um"] = [V, V, V]
        f.attrs["layers"] = json.dumps({"copper": CU, "anode": ANODE, "separator": SEP})
        for name, s in STEPS.items():
            g = f.create_group(f"steps/{name}")
            g.attrs["thickness_um"] = s["thickness"]
            g.create_dataset("phases", data=s["phases"])
            g.create_dataset("displacement_um", data=s["u"])
            g.create_dataset("core_volume_um3", data=np.array(s["core"]))
    return path


def _seg(phases: np.ndarray, top: float) -> Segmentation:
    col = np.full(SHAPE[1:], CU[1] - 0.5)
    parts = (phases == PHASE["si"]).astype(np.int32)
    return Segmentation(phases.astype(np.uint8), parts, particle_table(parts, V, col), col,
                        np.full(SHAPE[1:], top), (V, V, V))


def _seg_phases(truth_phases: np.ndarray, sep_from: int) -> np.ndarray:
    """What a perfect threshold segmentation writes: copper, Si, CBD+E, separator layer."""
    p = np.where(truth_phases == PHASE["si"], PHASE["si"], PHASE["cbd"]).astype(np.uint8)
    p[truth_phases == PHASE["copper"]] = PHASE["copper"]
    p[sep_from:] = PHASE["separator"]
    return p


def _nodes():
    return node_grid(SHAPE, SPACING)


def _write_pair(path, disp_vox: np.ndarray, flag: np.ndarray) -> None:
    nodes, gshape = _nodes()
    n = len(nodes)
    d = np.where((flag == 2)[:, None], np.nan, disp_vox)
    res = PairResult(
        nodes=nodes, grid_shape=gshape, displacement=d, displacement_raw=d,
        Phi=np.tile(np.eye(4), (n, 1, 1)), status=np.full(n, 2), error=np.zeros(n),
        iterations=np.zeros(n, int), delta_phi_norm=np.zeros(n), residual=np.zeros(n),
        flag=flag.astype(np.uint8),
        strain=cell_strain(d.reshape(*gshape, 3), SPACING, voxel_size_um=V),
        params={"levels": [{"node_spacing": [SPACING] * 3, "hws": [2, 2, 2]}]},
        global_phi=np.eye(4), global_centre=np.zeros(3), voxel_size_um=np.full(3, V))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pair(path, res, voxel_size_um=V)


def _truth_nodes_vox(u: np.ndarray) -> np.ndarray:
    """Truth at the nodes in voxels (nodes sit on voxel centres: no interpolation)."""
    nodes, _ = _nodes()
    i = nodes.astype(int)
    return np.stack([u[c][i[:, 0], i[:, 1], i[:, 2]] for c in range(3)], axis=1) / V


def _electrode_nodes() -> np.ndarray:
    nodes, _ = _nodes()
    return (nodes[:, 0] >= ANODE[0]) & (nodes[:, 0] < ANODE[1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, truth):
    """A run folder with every stage: T0, T1, T2."""
    out = tmp_path_factory.mktemp("run")
    segs = [_seg(_seg_phases(STEPS["T0"]["phases"], 14), 13.5),
            _seg(_seg_phases(STEPS["T1"]["phases"], 16), 15.5),
            _seg(_seg_phases(STEPS["T2"]["phases"], 14), 15.5)]
    # T0: 16 Si voxels missed (plane z = 9), 8 extra voxels called Si in the binder
    p0 = segs[0].phases
    p0[9, 4:8, 4:8] = PHASE["cbd"]
    p0[11, 0:2, 0:4] = PHASE["si"]
    for name, s in zip(("T0", "T1", "T2"), segs, strict=True):
        (out / "segment").mkdir(exist_ok=True)
        write_labels(out / "segment" / f"{name}.h5", s)
    write_morphology(out / "morphology", series_morphology(segs, prior="none"))
    flag = np.zeros(len(_nodes()[0]), np.uint8)
    el = np.flatnonzero(_electrode_nodes())
    flag[el[:10]] = 1  # repaired: not measured
    flag[el[10:15]] = 2  # excluded
    d1 = _truth_nodes_vox(STEPS["T1"]["u"])
    d1[flag == 1] += 5.0  # a repaired node's error must not count
    _write_pair(out / "dvc" / "cumulative_0_1.h5", d1, flag)
    _write_pair(out / "dvc" / "cumulative_0_2.h5", _truth_nodes_vox(STEPS["T2"]["u"]),
                np.zeros_like(flag))
    twin = _truth_nodes_vox(STEPS["T1"]["u"])
    twin[:, 1] += 0.2  # the twin is off by 0.2 voxel along y
    tflag = np.where(_nodes()[0][:, 0] < ANODE[0], 2, 0).astype(np.uint8)  # mesh: no copper
    _write_pair(out / "simulate" / "run" / "dvc" / "T1.h5", twin, tflag)
    (out / "validate").mkdir()
    (out / "validate" / "metrics.json").write_text(json.dumps({"steps": [
        {"step": 1, "regions": {"electrode": {"volumetric": {"pearson": 0.95}}}},
        {"step": 2, "regions": {"electrode": {"volumetric": {"pearson": 0.85}}}}]}))
    (out / "run.json").write_text(json.dumps({"scans": [
        {"name": n, "file": f"series.h5:/steps/{n}/tomogram", "soc": None, "time_s": None}
        for n in ("T0", "T1", "T2")]}))
    return out


@pytest.fixture(scope="module")
def score(run_dir, truth):
    return score_run(run_dir, truth, ["T0", "T1", "T2"])


def test_dice_by_hand(score):
    t0, t1 = score["scans"][0]["dice"], score["scans"][1]["dice"]
    # Si: 64 true voxels, 48 found, 8 false: 2 * 48 / (64 + 56)
    assert t0["si"] == pytest.approx(96 / 120)
    # CBD+E gains the 16 missed Si voxels and loses the 8 false ones
    n_cbd = (ANODE[1] - ANODE[0]) * 144 - 64
    assert t0["cbd"] == pytest.approx(2 * (n_cbd - 8) / (n_cbd + n_cbd + 16 - 8))
    assert t0["copper"] == 1.0 and t0["separator"] == 1.0  # the layer, pores included
    # T1: lithiated Si is CBD+E to the image; the separator layer moved with the coating top
    assert t1 == {"copper": 1.0, "si": 1.0, "cbd": 1.0, "separator": 1.0}
    # T2: u_z at the coating top (plane 13.5) is 0.01 * (81 + 100) / 2 = 0.905 voxel, so the
    # truth's layer starts at z = 15 (5 planes); the labels put it at z = 14 (6 planes)
    t2 = score["scans"][2]["dice"]
    assert t2["separator"] == pytest.approx(2 * 5 / (6 + 5))


def test_thickness_and_rnl(score):
    t0, t1 = score["scans"][0], score["scans"][1]
    assert t0["thickness_um"] == pytest.approx({"pipeline": 5.0, "truth": 5.0, "error": 0.0})
    assert t1["thickness_um"]["pipeline"] == pytest.approx(6.0)
    assert t1["thickness_um"]["error"] == pytest.approx(6.0 - 6.3)
    r0, r1 = t0["rnl"], t1["rnl"]
    assert r0["truth"] == 1.0 and r0["pipeline"] == 1.0
    # pipeline: 56 Si voxels at T0, 32 at T1; truth cores 16 -> 8 um3, visible Si 64 -> 32
    assert r1["pipeline"] == pytest.approx(32 / 56)
    assert r1["pipeline_si_volume_um3"] == pytest.approx(32 * V**3)
    assert r1["truth"] == pytest.approx(0.5) and r1["truth_core_volume_um3"] == 8.0
    assert r1["truth_image"] == pytest.approx(0.5)
    assert r1["error"] == pytest.approx(32 / 56 - 0.5)


def test_dvc_error_components_and_measured_nodes(score):
    d1 = score["scans"][1]["dvc_displacement_error_um"]
    assert d1["median"] == pytest.approx(0, abs=1e-6) and d1["p95"] == pytest.approx(0, abs=1e-6)
    n_el = int(_electrode_nodes().sum())
    assert d1["measured_fraction"] == pytest.approx((n_el - 15) / n_el)
    assert d1["nodes"] == len(_nodes()[0]) - 15
    d2 = score["scans"][2]["dvc_displacement_error_um"]  # u_z and u_x, both by name
    assert d2["median"] == pytest.approx(0, abs=1e-6) and d2["measured_fraction"] == 1.0
    assert d2["pearson_j"] == pytest.approx(1.0)
    assert score["scans"][0]["dvc_displacement_error_um"] is None  # no T0 -> T0 field


def test_offset_in_x_and_swapped_components(tmp_path, truth):
    nodes, _ = _nodes()
    flag = np.zeros(len(nodes), np.uint8)
    d = _truth_nodes_vox(STEPS["T1"]["u"])
    d[:, 2] += 0.3  # 0.3 voxel along x
    _write_pair(tmp_path / "dvc" / "cumulative_0_1.h5", d, flag)
    u2 = _truth_nodes_vox(STEPS["T2"]["u"])
    _write_pair(tmp_path / "dvc" / "cumulative_0_2.h5", u2[:, [0, 2, 1]], flag)  # x into y
    s = score_run(tmp_path, truth, ["T0", "T1", "T2"])["scans"]
    e1 = s[1]["dvc_displacement_error_um"]
    assert e1["median"] == pytest.approx(0.3 * V, abs=1e-6)
    assert e1["p95"] == pytest.approx(0.3 * V, abs=1e-6)
    assert e1["median_voxels"] == pytest.approx(0.3, abs=1e-6)
    # u_x written as u_y: the error at a node is sqrt(2) |u_x| there
    ux = np.abs(u2[:, 2]) * V
    assert s[2]["dvc_displacement_error_um"]["median"] == pytest.approx(
        np.sqrt(2) * np.median(ux), rel=1e-5)


def test_twin_against_truth_and_dvc(score):
    t1 = score["scans"][1]
    tw = t1["twin_displacement_error_um"]
    assert tw["median"] == pytest.approx(0.2 * V, abs=1e-6)
    assert tw["median_voxels"] == pytest.approx(0.2, abs=1e-6)
    assert tw["nodes"] == int((_nodes()[0][:, 0] >= ANODE[0]).sum())
    assert t1["twin_dvc_pearson_j"] == 0.95
    assert score["scans"][2]["twin_displacement_error_um"] is None  # no twin output for T2
    assert score["scans"][0]["twin_dvc_pearson_j"] is None


def test_criteria_of_the_run(score):
    c = {r["name"]: r for r in score["criteria"]}
    assert c["si_dice_min"]["value"] == pytest.approx(0.8) and not c["si_dice_min"]["passed"]
    assert c["thickness_error_max_um"]["value"] == pytest.approx(0.3)
    assert c["thickness_error_max_um"]["passed"]
    assert c["twin_dvc_pearson_j_min"]["value"] == 0.85
    assert not c["twin_dvc_pearson_j_min"]["passed"] and not score["passed"]


def _rows(si, th, pj):
    return [{"dice": None if s is None else {"si": s},
             "thickness_um": {"error": t}, "twin_dvc_pearson_j": p}
            for s, t, p in zip(si, th, pj, strict=True)]


@pytest.mark.parametrize("si, th, pj, expect", [
    ((0.95, 0.99), (0.5, -0.5), (None, 0.9), (True, True, True)),
    ((0.9499, 0.99), (0.5001, 0.0), (None, 0.8999), (False, False, False)),
    ((None, 0.99), (None, 0.1), (0.99, None), (False, False, False)),
])
def test_criteria_flip_at_the_limits(si, th, pj, expect):
    got = criteria(_rows(si, th, pj))
    assert [c["name"] for c in got] == list(LIMITS)
    assert tuple(c["passed"] for c in got) == expect


def test_collector_motion_is_undone(tmp_path, truth):
    """T3's truth (whole sample 1 voxel up) scores 1 against labels aligned on T0's foil."""
    (tmp_path / "segment").mkdir()
    write_labels(tmp_path / "segment" / "T3.h5",
                 _seg(_seg_phases(STEPS["T0"]["phases"], 14), 13.5))
    s = score_run(tmp_path, truth, ["T0", "T3"])["scans"][1]
    assert s["dice"] == {"copper": 1.0, "si": 1.0, "cbd": 1.0, "separator": 1.0}
    assert s["alignment_voxels"]["truth"] == pytest.approx([1.0, 0.0, 0.0])


def test_missing_stages_give_null(tmp_path, truth):
    s = score_run(tmp_path, truth, ["T0", "T1"])
    for r in s["scans"]:
        assert r["dice"] is None and r["alignment_voxels"] is None
        assert r["thickness_um"]["pipeline"] is None and r["thickness_um"]["error"] is None
        assert r["thickness_um"]["truth"] is not None
        assert r["rnl"]["pipeline"] is None and r["rnl"]["error"] is None
        assert r["dvc_displacement_error_um"] is None
        assert r["twin_displacement_error_um"] is None and r["twin_dvc_pearson_j"] is None
    assert all(c["value"] is None and not c["passed"] for c in s["criteria"])
    assert not s["passed"]
    path = write_score(tmp_path, s)
    assert path == tmp_path / "score" / "score.json"

    def no_nan(text):
        raise AssertionError(f"{text} in the score file")

    back = json.loads(path.read_text(), parse_constant=no_nan)
    assert back["scans"][1]["scan"] == "T1" and back["format"] == "anodetwin-score"


def test_scans_from_run_json_and_unknown_scan(run_dir, truth, score):
    s = score_run(run_dir, truth)
    assert [r["scan"] for r in s["scans"]] == ["T0", "T1", "T2"]
    with pytest.raises(ParameterError, match="T9"):
        score_run(run_dir, truth, ["T0", "T9"])


def test_truth_at_points_is_trilinear_and_nan_outside():
    u = np.zeros((3, 4, 4, 4), np.float32)
    u[0] = np.arange(4, dtype=np.float32)[:, None, None]  # u_z = z
    u[2] = 2 * np.arange(4, dtype=np.float32)[None, None, :]  # u_x = 2 x
    got = truth_at_points(u, np.array([[1.25, 2.0, 0.5], [3.5, 0.0, 0.0]]))
    assert got[0] == pytest.approx([1.25, 0.0, 1.0])
    assert all(math.isnan(v) for v in got[1])


def test_lithiated_si_is_scored_with_the_phase_it_looks_like():
    from anodetwin.pipeline.score import DICE_CLASSES, dice_classes

    phase_contrast = {"grey_si": 30000.0, "grey_cbd": 15000.0, "grey_lithiated": 16500.0}
    assert dice_classes(phase_contrast) == DICE_CLASSES
    assert PHASE["lithiated"] in DICE_CLASSES["cbd"]
    bright = {**phase_contrast, "grey_lithiated": 28000.0}
    c = dice_classes(bright)
    assert c["si"] == (PHASE["si"], PHASE["lithiated"])
    assert PHASE["lithiated"] not in c["cbd"] and c["copper"] == (PHASE["copper"],)
    assert dice_classes(None) == DICE_CLASSES

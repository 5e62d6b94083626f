"""The main job on built-in data: ``anodetwin demo`` is ``anodetwin run`` on a phantom series
deformed by a truth twin, scored against that truth afterwards."""

from __future__ import annotations

import json
import tomllib

import pytest

from anodetwin.demo import DEMO_SCANS, demo_run_file, run_demo
from anodetwin.pipeline import load_run

SMALL = {"seed": 3,
         "geometry": {"voxel_size_um": 0.25, "lateral_um": 10.0, "cu_thickness_um": 1.0,
                      "separator_thickness_um": 2.0},
         "composition": {"thickness_um": 10.0, "areal_loading_mg_cm2": 10 / 7},
         "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.5,
                       "max_diameter_um": 5.0}}
SCANS = ("T0", "T1", "T2")


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The demo on a small phantom and the reference cell's first three scans."""
    from anodetwin.phantom import config_from_dict

    out = tmp_path_factory.mktemp("demo") / "out"
    res = run_demo(out, ranks=2, phantom=config_from_dict(SMALL), scans=SCANS,
                   tables={"dvc": {"node_spacing": 8, "hws": 8, "search_range": 8},
                           "mesh": {"coarsen": 4}})
    return res


def test_the_demo_is_a_run_file_a_user_could_have_written(small_demo):
    out = small_demo.out_dir
    run = out / "run.toml"
    d = tomllib.loads(run.read_text())
    assert d["scans"]["files"][0] == "series/series.h5:/steps/T0/tomogram"
    assert d["truth"]["series"] == "series/series.h5" and d["cell"]["model"] == "reference_cell"
    cfg = load_run(run)
    assert cfg.names == SCANS and len(cfg.double_scan) == 2
    # the run is the pipeline's: every stage done, the report written
    state = json.loads((out / "run" / "run.json").read_text())
    assert {s["stage"]: s["state"] for s in state["stages"]} == dict.fromkeys(
        ["segment", "morphology", "dvc", "residuals", "mesh", "simulate", "validate", "score",
         "report"], "done")
    assert small_demo.report == out / "run" / "report" / "report.html"
    html = small_demo.report.read_text()
    assert "si_dice_min" in html and "twin_dvc_pearson_j_min" in html


def test_the_truth_twin_deforms_the_series_and_the_run_meshes_the_segmentation(small_demo):
    import h5py

    out = small_demo.out_dir
    with h5py.File(out / "series" / "series.h5") as f:
        t = [float(f[f"steps/{n}"].attrs["thickness_um"]) for n in SCANS]
        cfg = json.loads(f.attrs["config"])
    assert t[1] > t[0] * 1.02 and t[2] > t[1]  # two charge segments: it swells
    # lithiated Si rendered as bright as Si
    assert cfg["render"]["grey_lithiated"] == cfg["render"]["grey_si"]
    assert json.loads((out / "run" / "mesh" / "stage.json").read_text()
                      )["params"]["coarsen"] == 4
    run_mesh = json.loads((out / "run" / "mesh" / "summary.json").read_text())
    truth_mesh = json.loads((out / "series" / "truth" / "mesh" / "summary.json").read_text())
    # the run meshes its segmentation of T0 (pores and binder mostly one phase, CBD+E), the
    # truth twin the phantom's true labels: close, not equal
    run_v, true_v = run_mesh["volume_um3"], truth_mesh["volume_um3"]
    assert run_v.get("pore", 0) < true_v["pore"] and run_v["cbd"] > true_v["cbd"]
    assert 0 < abs(run_v["si"] / true_v["si"] - 1) < 0.3


def test_the_score_holds_every_scan_and_the_criteria(small_demo):
    score = json.loads((small_demo.run_dir / "score" / "score.json").read_text())
    assert [r["scan"] for r in score["scans"]] == list(SCANS)
    names = {c["name"] for c in score["criteria"]}
    assert names == {"si_dice_min", "thickness_error_max_um", "twin_dvc_pearson_j_min"}
    for r in score["scans"]:
        assert r["dice"]["si"] > 0.9 and abs(r["thickness_um"]["error"]) < 1.0
    for r in score["scans"][1:]:
        assert r["dvc_displacement_error_um"]["median"] < 0.2  # um
        assert r["twin_dvc_pearson_j"] is not None
    assert small_demo.summary["criteria"] == score["criteria"]


def test_a_second_demo_resumes_and_redoes_nothing(small_demo, cli):
    before = {p: p.stat().st_mtime_ns for p in small_demo.run_dir.rglob("stage.json")}
    again = run_demo(small_demo.out_dir, ranks=2, scans=SCANS,
                     tables={"dvc": {"node_spacing": 8, "hws": 8, "search_range": 8},
                             "mesh": {"coarsen": 4}})
    assert again.summary["criteria"] == small_demo.summary["criteria"]
    assert {p: p.stat().st_mtime_ns for p in small_demo.run_dir.rglob("stage.json")} == before


@pytest.mark.slow
def test_the_full_demo_meets_its_targets(tmp_path, cli):
    """``make demo``: the reference phantom T0..T6; the issue's targets."""
    res = cli("demo", "--out", tmp_path / "demo")
    assert res.code == 0, res.err
    assert "report:" in res.out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    crit = {c["name"]: c for c in summary["criteria"]}
    assert crit["si_dice_min"]["value"] >= 0.95
    assert crit["thickness_error_max_um"]["value"] <= 0.5
    assert crit["twin_dvc_pearson_j_min"]["value"] >= 0.9
    score = json.loads((tmp_path / "demo" / "run" / "score" / "score.json").read_text())
    assert [r["scan"] for r in score["scans"]] == list(DEMO_SCANS)


def test_demo_run_file_names_the_scans_relative_to_itself(tmp_path):
    series = tmp_path / "data" / "series.h5"
    series.parent.mkdir()
    series.write_bytes(b"")
    p = demo_run_file(tmp_path / "runs" / "run.toml", series, 2, ("T0", "T1"))
    d = tomllib.loads(p.read_text())
    assert d["scans"]["files"] == ["../data/series.h5:/steps/T0/tomogram",
                                   "../data/series.h5:/steps/T1/tomogram"]
    assert d["scans"]["double_scan"][1] == "../data/series.h5:/double_scan/tomogram_b"
    assert d["resources"] == {"ranks": 2, "workers": 2}

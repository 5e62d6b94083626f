"""The main job runs end to end and its checks hold."""

from __future__ import annotations

import json

from anodetwin.demo import run_demo
from anodetwin.io import read_volume
from anodetwin.validate import config_from_dict, validate_run


def test_demo(tmp_path, cli):
    res = cli("demo", "--out", tmp_path / "demo")
    assert res.code == 0, res.err
    assert "demo output:" in res.out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert all(f["roundtrip_exact"] for f in summary["formats"].values())
    assert set(summary["formats"]) == {"tiff", "tiff-dir", "hdf5", "zarr", "npy", "raw"}
    assert summary["roi_binned"]["equals_in_memory_crop_bin"]
    assert summary["roi_binned"]["shape"] == [40, 40, 40]
    assert (tmp_path / "demo" / "orthoslices.png").stat().st_size > 10_000
    assert read_volume(tmp_path / "demo" / "volumes" / "snow.zarr").shape == (100, 100, 100)
    ph = summary["phantom"]
    assert ph["noise_floor"]["matches_rendered_noise"]
    assert 1.3 < ph["thickness_um"][-1] / ph["thickness_um"][0] < 1.55  # reference: +44%
    assert read_volume(f"{tmp_path}/demo/{ph['series']}:/steps/T6/tomogram").dtype == "uint16"
    sim = summary["simulation"]
    assert sim["li_conserved"] and sim["swells_and_recovers"]
    t0, t1, t2 = sim["thickness_um"]
    assert 20.0 < t0 < 22.0 and t1 > t0 * 1.02  # T1 of the reference: ~6% volumetric
    run = tmp_path / "demo" / "simulation" / "run"
    assert (run / "fields" / "fields.xdmf").is_file() and (run / "dvc" / "T1.h5").is_file()
    # the closed loop: rendered series, DVC, report; its figures exist and its metrics are
    # what validating the same simulation and DVC again gives
    val = summary["validation"]
    demo = tmp_path / "demo"
    report = demo / val["report"]
    assert report.is_file() and report.stat().st_size > 50_000  # figures embedded
    names = {p.name for p in (report.parent / "figures").glob("*.png")}
    for kind in ("hist", "slices", "scatter", "particles"):
        assert {f"{kind}_T1.png", f"{kind}_T2.png"} <= names, names
    assert {"timeseries.png", "particle3d_T2.png"} <= names
    assert all((report.parent / "figures" / n).stat().st_size > 5_000 for n in names)
    written = json.loads((demo / val["metrics"]).read_text())
    again = validate_run(demo / "simulation" / "run", demo / val["dvc"], tmp_path / "again",
                         config_from_dict(written["settings_file"]), figures=False)
    assert json.dumps(json.loads(json.dumps(again.metrics, default=float)), sort_keys=True) \
        == json.dumps(written["steps"], sort_keys=True)
    assert val["passed"] == written["passed"]
    e = val["electrode_volumetric"]["T1"]
    assert e["pearson"] >= 0.9 and e["cells"] >= 30
    assert written["steps"][-1]["particles"]["count"] >= 10
    # a second run replaces the outputs in place; data files without embedded metadata
    # (npy, raw: metadata lives in the sidecar) come out byte for byte the same
    again = run_demo(tmp_path / "demo", simulate=False)
    for kind in ("npy", "raw"):
        assert again.summary["formats"][kind]["hash"] == summary["formats"][kind]["hash"]
    assert not [p for p in (tmp_path / "demo").rglob(".*tmp-*")]

"""The main job runs end to end and its checks hold."""

from __future__ import annotations

import json

from anodetwin.demo import run_demo
from anodetwin.io import read_volume


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
    # a second run replaces the outputs in place; data files without embedded metadata
    # (npy, raw: metadata lives in the sidecar) come out byte for byte the same
    again = run_demo(tmp_path / "demo", simulate=False)
    for kind in ("npy", "raw"):
        assert again.summary["formats"][kind]["hash"] == summary["formats"][kind]["hash"]
    assert not [p for p in (tmp_path / "demo").rglob(".*tmp-*")]

"""The examples gallery (examples/*.py): every script runs as a user would run it
(``python examples/<name>.py --out DIR``, one thread), exits 0, writes its files into the
given folder only, and its measured numbers agree with values worked out by hand (the
phantom's recipe, the cell's charge, voxel counts) within tolerances argued here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, tmp_path: Path, timeout: float = 600) -> tuple[Path, dict]:
    """Run ``examples/<name>.py --out tmp_path/out`` from ``tmp_path``; return the output
    folder and its ``measured.json``."""
    before = sorted(p.name for p in EXAMPLES.iterdir())
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip(), "an example prints what it measured"
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before, "wrote into the repository"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "wrote beside --out"
    return out, json.loads((out / "measured.json").read_text())


def test_read_convert(tmp_path):
    out, m = run_example("read_convert", tmp_path)
    assert m["voxel_size_read_um"] == pytest.approx(m["voxel_size_written_um"], rel=1e-9)
    assert m["mean_error"] < 1e-6 * 30000  # exact moments, up to float round-off
    assert m["largest_difference"] == {"hdf5": 0, "zarr": 0}
    # 2x binning doubles the voxel; the first binned voxel is centred between voxels 4 and
    # 5 of the region 4:44 along z (1 um apart) and between voxels 0 and 1 along y, x
    assert m["converted_voxel_size_um"] == pytest.approx([2.0, 1.0, 1.0])
    assert m["converted_origin_um"] == pytest.approx([4.5, 0.25, 0.25])
    assert (out / "scan.tif").is_file() and (out / "scan_roi_bin2.zarr").is_dir()


def test_phantom(tmp_path):
    out, m = run_example("phantom", tmp_path)
    # a 10 um patch holds ~40 particles: their discreteness allows 2 points of volume share
    assert abs(m["si_fraction"] - m["si_fraction_expected"]) <= 0.02
    # Li in the Si is the cathode's charge (Li conservation, exact)
    assert m["theta"] == pytest.approx(m["theta_expected"], rel=1e-6, abs=1e-12)
    # std of ~3e5 noise samples: standard error ~0.2%; 2% leaves the copper streaks room
    assert m["noise"] == pytest.approx(m["noise_expected"], rel=0.02)
    th = m["thickness_um"]
    assert th[0] == pytest.approx(10.0, abs=0.2) and th[0] < th[1] < th[2]
    assert (out / "series.h5").is_file() and len(list((out / "tiff").glob("T*.tif"))) == 3


def test_segment(tmp_path):
    out, m = run_example("segment", tmp_path)
    for step in ("T0", "T1"):
        s = m[step]
        assert s["dice"]["copper"] >= 0.9
        # the interfaces are found within one voxel (0.2 um)
        assert abs(s["thickness_um"] - s["true_thickness_um"]) <= 0.2
    assert m["T0"]["dice"]["si"] >= 0.9  # pristine Si is clearly brighter than CBD+E
    assert abs(m["T0"]["particles"] - m["T0"]["true_particles"]) <= 0.2 * m["T0"][
        "true_particles"]
    assert abs(m["rnl"] - m["rnl_truth"]) <= 0.03
    assert (out / "labels_T1.h5").is_file()


def test_dvc_pair(tmp_path):
    out, m = run_example("dvc_pair", tmp_path)
    assert m["interior_nodes"] >= 50 and m["interior_cells"] >= 20
    # spam's sub-voxel accuracy on noisy windows: a few hundredths of a voxel
    assert m["displacement_error_median_voxel"] <= 0.1
    # a 0.05 voxel node error over an 8 voxel cell is 0.006 strain per cell; averaged
    # over >= 20 cells with a 0.02 voxel bias, the means agree within 0.005
    for name, s in m["strain"].items():
        assert abs(s["error"]) <= 0.005, (name, s)
    assert m["strain"]["ezz"]["truth"] > 0.05  # the coating swells through its thickness
    assert (out / "pair.h5").is_file()


def test_dvc_series(tmp_path):
    out, m = run_example("dvc_series", tmp_path)
    for k in ("1", "2"):
        s = m["steps"][k]
        assert s["cells"] >= 20
        for name, tol in (("volumetric", 0.01), ("ezz", 0.01), ("exx", 0.005)):
            # as for a pair, plus the bias of the composed increments (0.01-0.03 voxel
            # each, refined by the direct T0 -> Tk correlation)
            assert abs(s[name]["dvc"] - s[name]["truth"]) <= tol, (k, name, s[name])
    assert m["steps"]["2"]["volumetric"]["truth"] > m["steps"]["1"]["volumetric"]["truth"]
    for k in ("1", "2"):  # Li enters at the separator: that half swells more
        r = m["regions"][k]
        assert r["separator_half"] > r["collector_half"]
    assert (out / "dvc" / "cumulative_0_2.h5").is_file()


def test_mesh(tmp_path):
    out, m = run_example("mesh", tmp_path)
    for name, v in m["volumes"].items():
        assert v["voxels_um3"] > 0
        assert v["mesh_um3"] == pytest.approx(v["voxels_um3"], rel=1e-9), name
    assert m["collector_area_um2"] == pytest.approx(m["lateral_area_um2"], rel=1e-9)
    assert m["lateral_area_um2"] == pytest.approx(64.0)
    assert (out / "mesh" / "mesh.xdmf").is_file()


def test_simulate(tmp_path):
    out, m = run_example("simulate", tmp_path)
    assert set(m) == {"T0", "T1", "T2"}
    for name, s in m.items():
        assert s["theta_mean"] == pytest.approx(s["theta_by_hand"], rel=1e-8, abs=1e-12)
        # the spring law on the mean top displacement
        assert s["stack_pressure_mpa"] == pytest.approx(s["stack_pressure_by_hand"], rel=1e-3)
        assert s["ezz"] == pytest.approx(s["ezz_by_hand"], rel=1e-6, abs=1e-12)
        assert s["in_plane_strain"] < 1e-9  # rollers
    assert m["T1"]["thickness_um"] > m["T2"]["thickness_um"] > m["T0"]["thickness_um"]
    assert m["T1"]["separator_half"] > m["T1"]["collector_half"]
    assert (out / "run" / "summary.csv").is_file()
    assert (out / "run" / "fields" / "fields.xdmf").is_file()


def test_validate(tmp_path):
    out, m = run_example("validate", tmp_path)
    good, wrong = m["model"], m["no_swelling"]
    assert good["cells"] >= 20
    # the DVC measures the simulated field within its accuracy (as for a pair: 0.01)
    assert abs(good["sim_mean"] - good["dvc_mean"]) <= 0.01
    assert good["passed"], good["failed"]
    # a model without swelling misses the measured mean swelling
    assert abs(wrong["sim_mean"]) < 1e-3 and not wrong["passed"]
    assert (out / "report_model" / "report.html").is_file()


def test_study(tmp_path):
    out, m = run_example("study", tmp_path)
    assert (m["ran"], m["ran_again"], m["skipped_again"]) == (2, 0, 2)
    low, high = sorted(m["cases"], key=lambda c: c["stack_pressure_mpa"])
    for c in (low, high):
        assert c["status"] == "done"
        assert c["theta_mean"] == pytest.approx(m["theta_by_hand"], rel=1e-6)
        assert c["stack_pressure_end_mpa"] == pytest.approx(c["stack_pressure_mpa"],
                                                           rel=1e-9)
        assert math.isfinite(c["volumetric_strain_p95"])
    assert high["thickness_growth"] < low["thickness_growth"]  # pressed harder, grows less
    assert (out / "summary.html").is_file() and (out / "results.csv").is_file()


def test_run_series(tmp_path):
    out, m = run_example("run_series", tmp_path)
    assert set(m["stages"].values()) == {"done"} and len(m["stages"]) == 8
    assert m["redone_second_run"] == []
    # quick_cell: 30 min at C/3 then 20 min at C/6 (state of charge by hand)
    assert m["soc"] == pytest.approx([0.0, 0.5 / 3, 0.5 / 3 - 1 / 18], abs=2e-3)
    t0, t1, t2 = m["thickness_um"]
    assert abs(t0 - 10.0) < 0.3  # the 10 um coating
    assert t1 > t0 + 0.5 and t0 < t2 < t1  # swells on charge, shrinks on discharge
    assert len(m["pearson_volumetric"]) == 2
    assert (out / m["report"]).is_file()

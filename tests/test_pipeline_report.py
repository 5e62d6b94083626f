"""The report of a run folder: every section from the stage outputs of a small phantom
series, figures embedded, missing, failed and stale stages, scoring tables."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from anodetwin.errors import InputNotFoundError
from anodetwin.pipeline.report import write_report

SOC = (0.0, 0.4, 0.85)
FIGURES = ("thickness_rnl", "strain_time", "hist_halves", "components", "strain_map_T2",
           "residual_classes")
STAGES = ("segment", "morphology", "dvc", "residuals", "mesh", "simulate", "validate")


def _twin(out: Path, vs) -> None:
    """A twin stand-in in the simulation folder layout (run.json, summary.csv, dvc/T<k>.h5):
    the measured cumulative field, gaps filled, scaled by 0.8 (a finite element run would
    take minutes)."""
    from anodetwin.dvc.correlate import filled_grid
    from anodetwin.dvc.pair import read_pair, write_pair

    sim = out / "simulate" / "run"
    (sim / "dvc").mkdir(parents=True)
    rows = ["step,time_s,soc,thickness_um,volumetric_strain,output", "0,0,0,20.8,0,T0"]
    for k in (1, 2):
        r = read_pair(out / "dvc" / f"cumulative_0_{k}.h5")
        u = 0.8 * filled_grid(r.grid_shape, r.displacement).reshape(-1, 3)
        write_pair(sim / "dvc" / f"T{k}.h5", replace(r, displacement=u), vs)
        rows.append(f"{k},{1800.0 * k},{SOC[k]},{20.8 + 3.5 * k},{0.15 * k},T{k}")
    (sim / "summary.csv").write_text("\n".join(rows) + "\n")
    zc, zs = json.loads((out / "dvc" / "series.json").read_text())["interfaces_voxels"]
    (sim / "run.json").write_text(json.dumps({"status": "done", "case": {},
                                              "electrode_z_um": [zc * vs[0], zs * vs[0]]}))


def _run_record(out: Path) -> None:
    """run.json (mesh failed) and a stage.json with parameters for the dvc stage."""
    scans = [{"name": f"T{k}", "file": f"series.h5:/steps/T{k}/tomogram", "soc": s,
              "time_s": 1800.0 * k} for k, s in enumerate(SOC)]
    stages = [{"stage": n, "state": "done", "key": f"{i:02d}" + "0123456789abcdef" * 2,
               "seconds": 1.25 + i, "peak_rss_mb": 300.0 + i, "error": None}
              for i, n in enumerate(STAGES)]
    stages[4].update(state="failed", error="mesh: no copper slice found")
    (out / "run.json").write_text(json.dumps({"run_file": "run.toml", "scans": scans,
                                              "double_scan": ["T2", "T2b"],
                                              "stages": stages}))
    (out / "dvc" / "stage.json").write_text(json.dumps({
        "stage": "dvc", "status": "done", "params": {"node_spacing": 6, "hws": 8,
                                                     "regions": {"cube_um": 40.0}}}))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run folder of a phantom T0..T2 (12 x 12 um, 0.4 um voxels) written by the library's
    stage functions: labels, morphology, DVC series with regions, noise floor and residual
    maps, a twin stand-in and its validation."""
    from anodetwin.dvc.noise import noise_floor
    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.residual import (dense_displacement, particle_residuals,
                                        residual_map, write_residual_map)
    from anodetwin.dvc.series import correlate_series
    from anodetwin.io import atomic_write_json
    from anodetwin.phantom import config_from_dict, generate_series
    from anodetwin.segment.morphology import series_morphology, write_morphology
    from anodetwin.segment.pipeline import segment_volume, write_labels
    from anodetwin.validate import validate_run

    base = tmp_path_factory.mktemp("pipeline_report")
    out = base / "run"
    cfg = config_from_dict({"geometry": {"lateral_um": 12.0, "voxel_size_um": 0.4},
                            "series": {"soc": list(SOC),
                                       "modes": {"network": 0.5, "core-shell": 0.5}}}, seed=3)
    ph = generate_series(cfg, base / "series.h5", progress=False)
    with h5py.File(ph.path) as f:
        vols = [f[f"steps/T{k}/tomogram"][...] for k in range(3)]
        vs, scan_b = f.attrs["voxel_size_um"], f["double_scan/tomogram_b"][...]
    (out / "segment").mkdir(parents=True)
    segs = [segment_volume(v, voxel_size_um=vs, align_to=vols[0] if k else None,
                           progress=False) for k, v in enumerate(vols)]
    for k, s in enumerate(segs):
        write_labels(out / "segment" / f"T{k}.h5", s)
    write_morphology(out / "morphology", series_morphology(segs))
    correlate_series([v.astype(np.float32) for v in vols], out / "dvc", voxel_size_um=vs,
                     node_spacing=6, hws=8, search_range=(8, 2, 2), processes=2,
                     progress=False, quicklook=False,
                     regions={"phases": segs[0].phases, "particles": segs[0].particles})
    (out / "residuals").mkdir()
    nf = noise_floor(vols[-1], scan_b)
    atomic_write_json(out / "residuals" / "noise_floor.json", nf.to_dict())
    for k in (1, 2):
        r = read_pair(out / "dvc" / f"cumulative_0_{k}.h5")
        u = dense_displacement(r.nodes, r.grid_shape, r.displacement, vols[0].shape)
        rm = residual_map(vols[0], vols[k], u, floor=nf.residual_threshold)
        write_residual_map(out / "residuals" / f"residual_0_{k}.h5", rm, vs,
                           particles=particle_residuals(rm, segs[0].particles))
    _twin(out, vs)
    validate_run(out / "simulate" / "run", out / "dvc", out / "validate")
    _run_record(out)
    return out


@pytest.fixture(scope="session")
def report(run_dir) -> dict:
    path = write_report(run_dir)
    return {"path": path, "html": path.read_text()}


def _section(html: str, number: int) -> str:
    """The HTML of section ``number`` (from its heading to the next one)."""
    m = re.search(rf"<h2>{number}\. .*?(?=<h2>|</body>)", html, re.S)
    assert m, number
    return m.group(0)


def _copy(run_dir: Path, dest: Path, without: tuple = ()) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report"))
    for name in without:
        shutil.rmtree(dest / name)
    return dest


def test_every_figure_is_written_and_embedded(report, run_dir):
    path, html = report["path"], report["html"]
    assert path == run_dir / "report" / "report.html"
    figs = run_dir / "report" / "figures"
    assert sorted(p.stem for p in figs.iterdir()) == sorted(FIGURES)
    for name in FIGURES:
        data = (figs / f"{name}.png").read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 5000
        assert base64.b64encode(data).decode("ascii") in html, name
    assert html.count("data:image/png;base64,") == len(FIGURES)
    # self-contained: nothing fetched from elsewhere, no temporary left
    assert not re.search(r"(src|href)=['\"](https?:|//)", html)
    assert "<script" not in html and "<link" not in html
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == ["figures", "report.html"]


def test_thickness_and_rnl_from_morphology(report, run_dir):
    sec = _section(report["html"], 1)
    rows = list(csv.DictReader((run_dir / "morphology" / "morphology.csv").open()))
    assert len(rows) == 3
    for r, soc in zip(rows, SOC, strict=True):
        th, sd, rnl = (float(r[c]) for c in ("thickness_mean_um", "thickness_std_um", "rnl"))
        assert f"<td>T{r['step']}</td><td>{soc:.4g}</td><td>{th:.4g}</td><td>{sd:.4g}</td>" in sec
        assert f"<td>{rnl:.4g}</td>" in sec
    growth = 100 * (float(rows[2]["thickness_mean_um"]) / float(rows[0]["thickness_mean_um"]) - 1)
    assert growth > 20 and f"<td>{growth:.4g}</td>" in sec  # the electrode swells
    assert "scan index" not in sec  # every scan's SoC is known
    assert "alt=\"thickness_rnl\"" in sec


def test_region_strain_dvc_and_twin(report, run_dir):
    sec = _section(report["html"], 2)
    table = {(int(r["step"]), r["region"]): float(r["mean"]) for r in
             csv.DictReader((run_dir / "dvc" / "regions.csv").open())
             if r["measure"] == "volumetric"}
    metrics = json.loads((run_dir / "validate" / "metrics.json").read_text())
    for k in (1, 2):
        dvc = [table[(k, r)] for r in ("electrode", "collector_half", "separator_half")]
        twin = [metrics["steps"][k - 1]["regions"][r]["volumetric"]["sim_mean"]
                for r in ("electrode", "collector_half", "separator_half")]
        cells = "".join(f"<td>{v:.4g}</td>" for v in dvc + twin)
        assert f"<td>T{k}</td><td>{0.5 * k:.4g}</td>{cells}" in sec, k
    assert table[(2, "separator_half")] > table[(2, "collector_half")]
    assert "twin separator half J-1" in sec and "Twin values from the validation" in sec


def test_histograms_components_and_map(report, run_dir):
    from anodetwin.dvc.pair import read_pair

    html = report["html"]
    rows = {(int(r["step"]), r["region"], r["measure"]): r for r in
            csv.DictReader((run_dir / "dvc" / "regions.csv").open())}
    sec3 = _section(html, 3)
    for k in (1, 2):
        for half in ("collector_half", "separator_half"):
            r = rows[(k, half, "volumetric")]
            cells = "".join(f"<td>{float(r[c]):.4g}</td>" for c in ("p5", "p50", "p95", "max"))
            assert f"<td>{half.replace('_', ' ')}</td><td>{float(r['n']):.4g}</td>{cells}" in sec3
    sec4 = _section(html, 4)
    for m in ("small-strain e_zz (axial)", "small-strain e_yy", "small-strain e_xx",
              "Hencky volumetric strain log J"):
        assert f"<th>{m}</th>" in sec4
    ezz = float(rows[(2, "electrode", "ezz")]["mean"])
    share = ezz / float(rows[(2, "electrode", "volumetric")]["mean"])
    assert f"<td>{ezz:.4g}</td>" in sec4 and f"<td>{share:.4g}</td>" in sec4
    sec5 = _section(html, 5)
    st = read_pair(run_dir / "dvc" / "cumulative_0_2.h5").strain.volumetric
    assert f"cumulative_0_2.h5</code>: {int(np.isfinite(st).sum())} of {st.size} cells" in sec5
    assert "alt=\"strain_map_T2\"" in sec5


def test_residual_classes(report, run_dir):
    sec = _section(report["html"], 6)
    for k in (1, 2):
        with h5py.File(run_dir / "residuals" / f"residual_0_{k}.h5") as f:
            t, floor = f["particles"][...], float(f.attrs["floor"])
        judged = np.isfinite(t["interior_fraction_above"]) & (t["fraction_above"] > 0)
        cs = t["core_shell_like"]
        counts = [len(t), int((cs & judged).sum()), int((~cs & judged).sum()),
                  int((~judged).sum())]
        assert counts[1] > 0 and counts[2] > 0  # the phantom mixes both patterns
        assert f"<td>T{k}</td><td>{floor:.4g}</td>" + "".join(
            f"<td>{c}</td>" for c in counts) in sec
    nf = json.loads((run_dir / "residuals" / "noise_floor.json").read_text())
    assert "double scan T2 / T2b" in sec and f"<td>{nf['noise_std']:.4g}</td>" in sec


def test_validation_section(report, run_dir):
    sec = _section(report["html"], 7)
    m = json.loads((run_dir / "validate" / "metrics.json").read_text())
    n_ok = sum(c["passed"] for c in m["checks"])
    verdict = "PASSED" if m["passed"] else "FAILED"
    assert f"<b>{verdict}</b>: {n_ok} of {len(m['checks'])} checks passed" in sec
    assert "href='../validate/report.html'" in sec
    assert sec.count("<tr class='pass'>") == n_ok
    assert sec.count("<tr class='fail'>") == len(m["checks"]) - n_ok
    rmse = m["steps"][1]["displacement_rmse_um"]
    assert f"<td>{rmse:.4g}</td></tr>" in sec


def test_stage_table(report):
    sec = _section(report["html"], 9)
    assert "<tr class='fail'><td>mesh</td><td>failed</td><td>5.25</td><td>304</td>" in sec
    assert "mesh: no copper slice found" in sec
    assert "<td>dvc</td><td>done</td><td>3.25</td><td>302</td><td>020123456789</td>" \
           "<td>node_spacing = 6; hws = 8; regions.cube_um = 40</td>" in sec
    assert sec.count("<tr") == 1 + len(STAGES)


def test_missing_failed_and_stale_stages(run_dir, tmp_path):
    """Without residuals (failed) and validation (not run) each section says so in one
    line; the twin drops out of the strain section; a stale stage is noted; figures of an
    earlier report whose inputs are gone are removed."""
    out = _copy(run_dir, tmp_path / "run")
    write_report(out)
    assert (out / "report" / "figures" / "residual_classes.png").is_file()
    for name in ("residuals", "validate"):
        shutil.rmtree(out / name)
    rec = json.loads((out / "run.json").read_text())
    for s in rec["stages"]:
        if s["stage"] == "residuals":
            s.update(state="failed", error="residual: no particle labels")
        if s["stage"] == "morphology":
            s["state"] = "stale"
    rec["stages"] = [s for s in rec["stages"] if s["stage"] != "validate"]
    (out / "run.json").write_text(json.dumps(rec))
    html = write_report(out).read_text()
    sec6 = _section(html, 6)
    assert sec6.count("<p") == 1 and "<img" not in sec6
    assert "Not available: residuals/residual_0_&lt;k&gt;.h5 is missing (the residuals stage " \
           "failed: residual: no particle labels)." in sec6
    sec7 = _section(html, 7)
    assert sec7.count("<p") == 1
    assert "validate/metrics.json is missing (the validate stage was not run)" in sec7
    sec2 = _section(html, 2)
    assert "twin" not in sec2.split("<table>")[1]  # no twin columns
    assert "(no twin values)" in sec2
    assert "The morphology stage is stale" in _section(html, 1)
    figs = sorted(p.stem for p in (out / "report" / "figures").iterdir())
    assert figs == sorted(set(FIGURES) - {"residual_classes"})
    assert html.count("data:image/png;base64,") == len(FIGURES) - 1


def test_empty_folder_and_unknown_soc(run_dir, tmp_path):
    """A folder with nothing in it gives one line per section; scans without a state of
    charge fall back to the scan index; a damaged region file is reported, not raised."""
    empty = tmp_path / "empty"
    empty.mkdir()
    html = write_report(empty).read_text()
    assert "data:image" not in html
    for n in range(1, 9):
        sec = _section(html, n)
        assert sec.count("<p class='missing'>") == 1 and "was not run" in sec, n
    assert "run.json holds no stage record" in _section(html, 9)
    assert "run.json is missing" in html
    out = _copy(run_dir, tmp_path / "run", without=("residuals", "validate", "simulate"))
    rec = json.loads((out / "run.json").read_text())
    rec["scans"][1]["soc"] = None
    (out / "run.json").write_text(json.dumps(rec))
    (out / "dvc" / "regions.h5").write_bytes(b"not an HDF5 file")
    html = write_report(out).read_text()
    sec1 = _section(html, 1)
    assert "the x axis is the scan index" in sec1 and "<img" in sec1
    for n in (2, 3, 4):
        assert "Not shown: the dvc output could not be read" in _section(html, n)
    assert "<img" in _section(html, 5)  # the map needs only the cumulative field
    with pytest.raises(InputNotFoundError):
        write_report(tmp_path / "nowhere")


def test_score_tables(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "run", without=("residuals", "validate"))
    (out / "score").mkdir()
    score = {"phantom": "reference", "seed": 3, "scans": [
        {"scan": "T0", "dice": {"si": 0.97, "copper": 0.99},
         "thickness_um": {"pipeline": 20.8, "truth": 21.0, "error": -0.2}, "rnl": None},
        {"scan": "T2", "dice": {"si": 0.91, "copper": 0.98},
         "thickness_um": {"pipeline": 29.3, "truth": 29.6, "error": -0.3},
         "twin_dvc_pearson_j": 0.93}],
        "criteria": [{"name": "dice si >= 0.9", "value": 0.91, "limit": 0.9, "passed": True},
                     {"name": "|thickness error| <= 0.2 um", "value": 0.3, "limit": 0.2,
                      "passed": False}]}
    (out / "score" / "score.json").write_text(json.dumps(score))
    sec = _section(write_report(out).read_text(), 8)
    assert "<b>1 of 2 criteria met</b>" in sec
    assert "<tr><th>scan</th><th>dice.si</th><th>dice.copper</th><th>thickness_um.pipeline" \
           "</th><th>thickness_um.truth</th><th>thickness_um.error</th><th>rnl</th>" \
           "<th>twin_dvc_pearson_j</th></tr>" in sec
    assert "<tr><td>T2</td><td>0.91</td><td>0.98</td><td>29.3</td><td>29.6</td><td>-0.3</td>" \
           "<td>-</td><td>0.93</td></tr>" in sec
    assert "<tr class='pass'><td>dice si &gt;= 0.9</td>" in sec
    assert "<tr class='fail'><td>|thickness error| &lt;= 0.2 um</td>" in sec
    assert "<td>phantom</td><td>reference</td>" in sec and "<td>seed</td><td>3</td>" in sec

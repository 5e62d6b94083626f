"""``anodetwin run``: run files checked before any work, stages keyed by content hashes,
skipped when done, redone when what they read changed, resumed after a stop."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from anodetwin.errors import GridMismatchError, InputNotFoundError, ParameterError
from anodetwin.pipeline import TEMPLATE, load_run, pipeline_status, run_from_dict
from tests.conftest import one_line_error

PHANTOM = """seed = 3
[geometry]
voxel_size_um = 0.25
lateral_um = 10.0
cu_thickness_um = 1.0
separator_thickness_um = 2.0
[composition]
thickness_um = 10.0
areal_loading_mg_cm2 = 1.4285714285714286
[particles]
median_diameter_um = 3.0
min_diameter_um = 1.5
max_diameter_um = 5.0
[series]
soc = [0.0, 0.1667, 0.1111]
"""

S = "ph/series.h5:/steps/T{}/tomogram"
RUN = f"""[scans]
files = ["{S.format(0)}", "{S.format(1)}", "{S.format(2)}"]
double_scan = ["{S.format(2)}", "ph/series.h5:/double_scan/tomogram_b"]
[cell]
model = "quick_cell"
[simulation.solver]
plasticity = false
compaction = false
[dvc]
node_spacing = 8
hws = 8
[resources]
ranks = 1
workers = 1
"""

STAGES = ["segment", "morphology", "dvc", "residuals", "mesh", "simulate", "validate",
          "report"]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """A small phantom series T0..T2 (quick_cell's scans) with its double scan."""
    from anodetwin.phantom import load_config
    from anodetwin.phantom.report import write_phantom

    d = tmp_path_factory.mktemp("run")
    (d / "phantom.toml").write_text(PHANTOM)
    write_phantom(load_config(d / "phantom.toml"), d / "ph")
    return d


def _run_file(folder: Path, text: str = RUN, name: str = "run.toml") -> Path:
    p = folder / name
    p.write_text(text)
    return p


def _anodetwin(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anodetwin.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def done(series) -> Path:
    """The whole run, once."""
    run = _run_file(series)
    res = _anodetwin("run", run, "--out", "out", cwd=series)
    assert res.returncode == 0, res.stderr[-3000:]
    return series


def _numbers(obj, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON tree by path."""
    if isinstance(obj, dict):
        return {k: v for key, x in obj.items() for k, v in _numbers(x, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, x in enumerate(obj) for k, v in _numbers(x, f"{prefix}[{i}]").items()}
    return {prefix: float(obj)} if isinstance(obj, (int, float)) and obj is not None else {}


def _records(out: Path) -> dict[str, dict]:
    return {s: json.loads((out / s / "stage.json").read_text()) for s in STAGES
            if (out / s / "stage.json").is_file()}


# --------------------------------------------------------------------------------------------
# run files

def test_init_writes_a_template_whose_every_key_is_accepted(tmp_path, cli, series):
    res = cli("init", tmp_path / "new")
    assert res.code == 0 and (tmp_path / "new" / "run.toml").read_text() == TEMPLATE
    one_line_error(cli("init", tmp_path / "new"), "exists", "--force")
    # every commented key, uncommented, is a key the run takes with its documented default
    text = re.sub(r"^# (\w+ = )", r"\1", TEMPLATE, flags=re.M)
    text = re.sub(r"^# (\[simulation\.\w+\])", r"\1", text, flags=re.M)
    text = text.replace('files = ["T0.tif", "T1.tif"]',
                        f'files = ["{S.format(0)}", "{S.format(1)}"]')
    text = text.replace('names = ["T0", "T1"]', 'names = ["T0", "T1"]')
    d = __import__("tomllib").loads(text)
    assert d["scans"]["binning"] == 1 and d["dvc"]["hws"] == 10
    cfg = run_from_dict(d, series)
    assert cfg.names == ("T0", "T1") and cfg.cell == "reference_cell"
    assert cfg.dvc.node_spacing == 10 and cfg.segment.h == 1.0 and cfg.mesh.coarsen == 4


def test_search_range_per_axis_as_on_the_command_line(series):
    cfg = load_run(_run_file(series, RUN.replace("hws = 8", "hws = 8\nsearch_range = [4, 2, 2]"),
                             "sr.toml"))
    assert cfg.dvc.search_range == (4, 2, 2)
    cfg = load_run(_run_file(series, RUN.replace("hws = 8", "hws = [4, 8, 8]"), "hws.toml"))
    assert cfg.dvc.hws == (4, 8, 8)


def test_state_of_charge_per_scan_instead_of_a_protocol(series):
    """``[scans] soc`` with no protocol: the cell of ``[cell] model`` goes from scan to scan
    at constant current ``[cell] c_rate``; the twin's state of charge at every scan is the
    one given, the scan times follow from the rate (plus quick_cell's 1-min rest before a
    scan, its scans taking no time), and a discharge and a pause are allowed."""
    from anodetwin.pipeline.runfile import cell_history

    soc = [0.0, 0.2, 0.5, 0.5, 0.3]
    text = RUN.replace("[cell]\nmodel = \"quick_cell\"", "[cell]\nmodel = \"quick_cell\"\n"
                       "c_rate = \"C/2\"").replace(
        "[scans]", f"[scans]\nsoc = {soc}\nnames = ['A', 'B', 'C', 'D', 'E']").replace(
        f'files = ["{S.format(0)}", "{S.format(1)}", "{S.format(2)}"]',
        f'files = ["{S.format(0)}", "{S.format(1)}", "{S.format(2)}", "{S.format(1)}", '
        f'"{S.format(2)}"]')
    cfg = load_run(_run_file(series, text, "soc.toml"))
    hist = cell_history(cfg.cell, cfg.path.parent)
    times = [hist.scans[n] for n in cfg.names]
    np.testing.assert_allclose([hist.soc_at(t) for t in times], soc, atol=1e-9)
    # C/2: 0.2 of the capacity in 24 min, 0.3 in 36 min, a pause of 1 min; each followed by
    # quick_cell's 1-min rest before the scan
    np.testing.assert_allclose(np.diff(times) / 60, [24 + 1, 36 + 1, 1 + 1, 24 + 1])
    assert cfg.names == ("A", "B", "C", "D", "E")
    again = load_run(_run_file(series, text, "soc2.toml"))
    assert again.cell == cfg.cell  # the same protocol file, named by its content


@pytest.mark.parametrize("edit, error, words", [
    (lambda t: t + "[dvcc]\n", ParameterError, ["unknown tables", "dvcc"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nwindow = 3"), ParameterError,
     ["[dvc]", "'window'"]),
    (lambda t: t.replace("hws = 8", "hws = 'big'"), ParameterError, ["[dvc]", "hws"]),
    (lambda t: re.sub(r"files = \[.*\]", f'files = ["{S.format(0)}"]', t), ParameterError,
     ["[scans] files", "at least two"]),
    (lambda t: t.replace(S.format(1), "nope/T1.tif"), InputNotFoundError,
     ["nope/T1.tif", "[scans] scan"]),
    (lambda t: t.replace("quick_cell", "reference_cell").replace(
        "[scans]", '[scans]\nnames = ["T0", "T1", "T11"]'), ParameterError,
     ["[cell]", "no scan T11"]),
    (lambda t: t.replace('"ph/series.h5:/double_scan/tomogram_b"', ""), ParameterError,
     ["double_scan", "1 files"]),
    (lambda t: t.replace("compaction = false", "compaction = 3"), ParameterError,
     ["[solver]", "compaction"]),
    (lambda t: t + "[validation.tolerances]\nmin_pearson_volumetric = -1\n", ParameterError,
     ["min_pearson_volumetric"]),
    (lambda t: t + "[simulation.mesh]\npath = 'x'\n", ParameterError, ["[simulation]", "mesh"]),
    (lambda t: t + "[simulation.solvr]\nx = 1\n", ParameterError,
     ["[simulation]", "solvr"]),
    (lambda t: t.replace("[scans]", '[scans]\nnames = ["T0", "T2", "T1"]'), ParameterError,
     ["not in the order"]),
    (lambda t: re.sub(r"files = \[.*\]", f'files = ["{S.format(1)}", "{S.format(2)}"]', t)
     .replace("[scans]", '[scans]\nnames = ["T1", "T2"]'), ParameterError,
     ["first scan is T1", "starts with T0"]),
    (lambda t: t.replace("[scans]", '[scans]\nroi = "0:500,:,:"'), ParameterError,
     ["[scans] roi"]),
    (lambda t: t.replace("ranks = 1", "ranks = -1"), ParameterError, ["[resources] ranks"]),
    (lambda t: t + "[residuals]\nfloor = -5\n", ParameterError, ["[residuals] floor"]),
    (lambda t: t + 'scheduler = "cluster-a"\n', ParameterError,
     ["[resources] scheduler = 'cluster-a'", "tcp://host:8786"]),
    (lambda t: t.replace("[scans]", "[scans]\nsoc = [0.0, 0.5]"), ParameterError,
     ["[scans] soc", "2 states of charge for 3 scans"]),
    (lambda t: t.replace("[scans]", "[scans]\nsoc = [0.0, 0.5, 1.5]"), ParameterError,
     ["[scans] soc", "leave [0, 1]"]),
    (lambda t: t.replace("hws = 8", "hws = 8\npyramid = [5]"), ParameterError,
     ["[dvc]", "pyramid level(s) [5]"]),
    (lambda t: t.replace("hws = 8", "hws = 300"), ParameterError,
     ["[dvc]", "larger than the volume"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nsearch_range = [1, 2]"), ParameterError,
     ["[dvc] search_range"]),
    (lambda t: t.replace("hws = 8", "hws = [4, 8]"), ParameterError, ["[dvc] hws"]),
    (lambda t: t.replace("hws = 8", "hws = [0, 8, 8]"), ParameterError, ["[dvc] hws", ">= 1"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nengine = 'spam'\ncriterion = 'znssd'"),
     ParameterError, ["[dvc]", "spam minimises SSD"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nengine = 'vic3d'"), ParameterError,
     ["[dvc] engine", "'native'"]),
    (lambda t: t.replace("hws = 8", "hws = 8\ninterpolation = 'quintic'"), ParameterError,
     ["[dvc] interpolation", "'cubic'"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nshape_function = 'cubic'"), ParameterError,
     ["[dvc] shape_function", "'quadratic'"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nrobust = 'yes'"), ParameterError,
     ["[dvc]", "robust"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nengine = 'spam'\nrobust = true"),
     ParameterError, ["[dvc]", "engine 'native'"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nreference_model = 'model'"), ParameterError,
     ["[dvc] reference_model", "'phases'"]),
    (lambda t: t.replace("hws = 8", "hws = 8\nengine = 'spam'\nreference_model = 'phases'"),
     ParameterError, ["[dvc]", "engine 'native'"]),
])
def test_bad_run_files_are_refused_naming_the_key(series, tmp_path, edit, error, words):
    run = _run_file(series, edit(RUN), "bad.toml")
    with pytest.raises(error) as exc:
        load_run(run)
    msg = str(exc.value)
    assert "bad.toml" in msg or isinstance(exc.value, InputNotFoundError)
    for w in words:
        assert w in msg, (w, msg)


def test_scans_of_another_grid_are_refused_before_any_work(series, tmp_path, cli):
    with h5py.File(series / "ph" / "series.h5") as f:
        t1 = f["steps/T1/tomogram"]
        with h5py.File(series / "other.h5", "w") as g:
            g["shape"] = t1[:, :-2]  # two y rows fewer
            g["voxel"] = t1[...]
            g["voxel"].attrs["voxel_size_um"] = [0.5, 0.5, 0.5]
    for ds, words in (("shape", ["shape"]), ("voxel", ["voxel size"])):
        run = _run_file(series, RUN.replace(S.format(1), f"other.h5:/{ds}"), "grid.toml")
        with pytest.raises(GridMismatchError) as exc:
            load_run(run)
        for w in words:
            assert w in str(exc.value)
        res = cli("-q", "run", run, "--out", tmp_path / ds)
        one_line_error(res, "T1")
        assert not (tmp_path / ds).exists()  # refused before any work


def test_keys_follow_content_not_where_the_run_file_is(series):
    """The same settings and files from another folder (paths written differently) give
    the same keys; without a double scan or a floor there is no residual stage."""
    from anodetwin.pipeline import stage_keys
    from anodetwin.pipeline.runner import active_stages

    here = load_run(_run_file(series, RUN, "k1.toml"))
    (series / "sub").mkdir(exist_ok=True)
    there = load_run(_run_file(series / "sub", RUN.replace('"ph/', '"../ph/'), "k2.toml"))
    assert stage_keys(here) == stage_keys(there)
    plain = load_run(_run_file(series, re.sub(r"double_scan = .*\n", "", RUN), "k3.toml"))
    assert "residuals" not in [s.name for s in active_stages(plain)]
    floor = load_run(_run_file(series, re.sub(r"double_scan = .*\n", "", RUN)
                               + "[residuals]\nfloor = 800.0\n", "k4.toml"))
    assert "residuals" in [s.name for s in active_stages(floor)]


# --------------------------------------------------------------------------------------------
# the runner

def test_a_run_does_every_stage_and_records_it(done):
    out = done / "out"
    recs = _records(out)
    assert list(recs) == STAGES
    for name, r in recs.items():
        assert r["status"] == "done" and r["key"].startswith("blake2b:")
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 50, name
    state = json.loads((out / "run.json").read_text())
    scans = {s["name"]: s for s in state["scans"]}
    # quick_cell: a C/3 charge of 30 min, a C/6 discharge of 20 min (after 1 min rests)
    assert scans["T0"]["soc"] == 0 and scans["T1"]["soc"] == pytest.approx(0.5 / 3, abs=2e-3)
    assert scans["T2"]["soc"] == pytest.approx(0.5 / 3 - 1 / 18, abs=2e-3)
    assert [s["state"] for s in state["stages"]] == ["done"] * len(STAGES)
    for k in range(3):
        assert (out / "segment" / f"T{k}.h5").is_file()
    assert (out / "dvc" / "cumulative_0_2.h5").is_file()
    assert (out / "residuals" / "noise_floor.json").is_file()
    assert (out / "residuals" / "residual_0_2.h5").is_file()
    assert (out / "simulate" / "run" / "summary.csv").is_file()
    assert (out / "validate" / "metrics.json").is_file()
    assert (out / "report" / "report.html").is_file()


def test_a_second_run_skips_what_is_done_and_a_changed_table_redoes_what_reads_it(done, cli,
                                                                                  tmp_path):
    out = tmp_path / "out"
    shutil.copytree(done / "out", out)
    before = _records(out)
    res = cli("run", done / "run.toml", "--out", out)
    assert res.code == 0
    assert _records(out) == before  # nothing redone
    # a new DVC node spacing: DVC and what reads it, nothing else
    changed = _run_file(done, RUN.replace("node_spacing = 8", "node_spacing = 6"),
                        "changed.toml")
    status = {s.stage: s.state for s in pipeline_status(out, changed)}
    assert status == {**dict.fromkeys(STAGES, "done"), "dvc": "stale", "residuals": "stale",
                      "validate": "stale", "report": "stale"}
    res = cli("run", changed, "--out", out)
    assert res.code == 0, res.err
    after = _records(out)
    redone = {s for s in STAGES if after[s]["finished"] != before[s]["finished"]
              or after[s]["key"] != before[s]["key"]}
    assert redone == {"dvc", "residuals", "validate", "report"}
    assert after["dvc"]["params"]["node_spacing"] == 6
    res = cli("run", changed, "--out", out, "--status")
    assert res.code == 0 and res.out.count(" done ") == len(STAGES)


def test_a_failed_stage_keeps_the_finished_ones_and_says_where_it_stopped(series, tmp_path,
                                                                          cli):
    run = _run_file(series, RUN, "fail.toml")
    out = tmp_path / "out"
    assert cli("run", run, "--out", out, "--until", "morphology").code == 0
    (out / "morphology" / "stage.json").unlink()
    (out / "segment" / "T1.h5").write_bytes(b"not HDF5")  # a damaged finished file
    res = cli("-q", "run", run, "--out", out, "--until", "morphology")
    one_line_error(res, "stage 'morphology' failed", str(out))
    status = {s.stage: s.state for s in pipeline_status(out)}
    assert status["segment"] == "done" and status["morphology"] == "failed"
    assert status["dvc"] == "pending"


def test_a_run_stopped_anywhere_finishes_with_the_same_results(done, tmp_path):
    """Kill the run in the middle of the DVC, then in the simulation: the resumed run's
    results equal the uninterrupted run's."""
    out = tmp_path / "out"
    run = done / "run.toml"
    for stage in ("dvc", "simulate"):
        proc = subprocess.Popen([sys.executable, "-m", "anodetwin.cli", "run", str(run),
                                 "--out", str(out)], cwd=done, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.time()
        while not (out / stage / ".key").is_file() and time.time() - t0 < 300:
            time.sleep(0.05)
        time.sleep(1.0)
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / stage / "stage.json").exists()
    res = _anodetwin("run", run, "--out", out, cwd=done)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = done / "out"
    with h5py.File(ref / "dvc" / "cumulative_0_2.h5") as a, \
            h5py.File(out / "dvc" / "cumulative_0_2.h5") as b:
        np.testing.assert_array_equal(a["displacement"][...], b["displacement"][...])
    a = json.loads((ref / "validate" / "metrics.json").read_text())
    b = json.loads((out / "validate" / "metrics.json").read_text())
    # segmentation and DVC bit for bit; the resumed simulation to its solver's tolerance
    # (its Newton solve rebuilds the preconditioner it had when stopped)
    fa, fb = _numbers(a["steps"]), _numbers(b["steps"])
    assert list(fa) == list(fb)
    for k, x in fa.items():
        assert fb[k] == pytest.approx(x, rel=1e-6, abs=1e-9), k
    shutil.rmtree(out)


def test_a_stage_redone_upstream_makes_what_reads_it_stale(done, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(done / "out", out)
    shutil.rmtree(out / "dvc")  # e.g. deleted by hand: redone with the same key
    status = {s.stage: s.state for s in pipeline_status(out, done / "run.toml")}
    assert status["dvc"] == "pending"
    assert status["residuals"] == status["validate"] == "stale"
    assert status["segment"] == status["simulate"] == "done"


# --------------------------------------------------------------------------------------------
# Dask: one scan (one pair) per worker, the same files as on this machine's threads

def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[...])
                     if isinstance(v, h5py.Dataset) and v.dtype.kind in "biuf" else None)
    return out


def _same_files(ref: Path, out: Path, names: list[str]) -> None:
    for name in names:
        a, b = _datasets(ref / name), _datasets(out / name)
        assert sorted(a) == sorted(b), name
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")


@pytest.mark.parametrize("workers", [1, 2])
def test_image_stages_on_a_dask_cluster_equal_those_on_threads(done, tmp_path, workers):
    """1 worker: ``scheduler = "local"``; 2 workers: the address of a running scheduler,
    whose task stream shows one task per scan and per pair."""
    from dask.distributed import Client, LocalCluster, get_task_stream

    from anodetwin.pipeline.runner import run_stage

    out = tmp_path / "out"
    shutil.copytree(done / "out" / "dvc", out / "dvc")
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc, \
            Client(lc) as client, get_task_stream(client) as stream:
        where = "local" if workers == 1 else lc.scheduler_address
        run = _run_file(done, RUN.replace("workers = 1", f'workers = {workers}\n'
                                          f'scheduler = "{where}"'), f"dask{workers}.toml")
        run_stage("segment", run, out, "k")
        run_stage("residuals", run, out, "k")
    if workers == 2:
        keys = sorted(t["key"] for t in stream.data)
        assert keys == ["residual-0", "residual-1", "segment-0", "segment-1", "segment-2"]
        assert len({t["worker"] for t in stream.data}) == 2
    ref = done / "out"
    _same_files(ref, out, [f"segment/T{k}.h5" for k in range(3)]
                + ["residuals/residual_0_1.h5", "residuals/residual_0_2.h5"])
    ra = json.loads((ref / "residuals" / "stage.json").read_text())["summary"]
    rb = json.loads((out / "residuals" / "stage.json").read_text())["summary"]
    assert ra == rb


def test_an_unreachable_scheduler_is_named(done, tmp_path):
    from anodetwin.pipeline.runner import run_stage

    run = _run_file(done, RUN.replace("workers = 1", 'workers = 1\n'
                                      'scheduler = "tcp://127.0.0.1:9"'), "gone.toml")
    with pytest.raises(ParameterError) as exc:
        run_stage("segment", run, tmp_path / "out", "k")
    assert "[resources] scheduler 'tcp://127.0.0.1:9'" in str(exc.value)

"""Design studies: study files and their checks, designs, metrics, and runs on Dask that
resume, skip finished cases and survive a failing case."""

from __future__ import annotations

import h5py  # before dolfinx's HDF5
import json
import os
import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from anodetwin.errors import ParameterError
from anodetwin.io.tomlfile import build_dataclass, in_file
from anodetwin.phantom.composition import Recipe, electrode_composition
from anodetwin.phases import ELECTRODE_PHASES
from anodetwin.simulate.fields import weighted_stats
from anodetwin.simulate.protocol import load_protocol
from anodetwin.simulate.run import read_summary
from anodetwin.study import METRICS, read_results, run_study, study_from_dict
from anodetwin.study.report import main_effects
from anodetwin.study.spec import REFERENCE_NP_RATIO, to_toml

from conftest import BIN, run_cli_process

# a 6 x 6 x 6 um electrode of 0.5 um voxels (12^3 cells), elastic, charged to SoC 0.1
TINY = {
    "study": {"name": "tiny", "seed": 3, "coarsen": 1, "charge_soc": 0.1},
    "phantom": {"geometry": {"voxel_size_um": 0.5, "lateral_um": 6.0,
                             "separator_thickness_um": 1.0, "cu_thickness_um": 1.0},
                "composition": {"thickness_um": 6.0},
                "particles": {"median_diameter_um": 3.0, "min_diameter_um": 1.8,
                              "max_diameter_um": 5.0}},
    "simulation": {"solver": {"plasticity": False, "compaction": False, "dtheta_max": 0.02},
                   "output": {"dvc_node_spacing_um": 0.0}},
}


def _study(**over) -> dict:
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    return d


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "; " in msg
    return msg


# --- study files -------------------------------------------------------------------------

@pytest.mark.parametrize("params, design, words", [
    ({"grain_size": [1, 2]}, "full-factorial", "unknown parameter 'grain_size'"),
    ({"porosity": {"min": 0.3, "max": 0.3}}, "latin-hypercube", "is empty"),
    ({"porosity": []}, "full-factorial", "has no levels"),
    ({"porosity": [0.3, 1.2]}, "full-factorial", "outside its physical bounds"),
    ({"stack_pressure_mpa": [-0.1]}, "full-factorial", "outside its physical bounds"),
    ({"c_rate": [0.0]}, "full-factorial", "outside its physical bounds"),
    ({"porosity": [0.3, "high"]}, "full-factorial", "not a number"),
    ({"porosity": [0.3, 0.4]}, "latin-hypercube", "needs a range"),
    ({"porosity": {"min": 0.3, "max": 0.4}}, "full-factorial", "needs levels"),
    ({"si_mass_fraction": [0.8], "binder_mass_fraction": [0.1]}, "full-factorial",
     "vary one of the two"),
    # physical only in combination: checked per case before anything runs
    ({"porosity": [0.3, 0.1]}, "full-factorial", "case 1 (porosity=0.1"),
    ({"median_diameter_um": [3.0, 1.0]}, "full-factorial", "under 3 voxels"),
])
def test_bad_study_is_one_line_error(params, design, words):
    d = _study(parameters=params, study={"design": design, "samples": 4})
    with pytest.raises(ParameterError) as exc:
        study_from_dict(d)
    assert words in _one_line(exc)


def test_bad_study_sections():
    for d, words in ((_study(study={"nmae": "x"}), "unknown key 'nmae'"),
                     (_study(extra={}), "unknown section 'extra'"),
                     (_study(study={"design": "sobol"}), "design = 'sobol'"),
                     (_study(study={"replicates": 0}), "replicates = 0"),
                     (_study(study={"rank_by": "beauty"}), "is not a metric"),
                     (_study(study={"charge_soc": 1.5}), "charge_soc"),
                     (_study(simulation={"mesh": {"path": "x"}}), "[simulation] has section"),
                     (_study(simulation={"solver": {"linear": "magic"}}), "linear = 'magic'"),
                     (_study(study={"design": "list"}), "without [[cases]]")):
        d.setdefault("parameters", {"porosity": [0.3]} if "cases" not in d and
                     d["study"].get("design") != "list" else {})
        with pytest.raises(ParameterError) as exc:
            study_from_dict(d)
        assert words in _one_line(exc), (words, str(exc.value))


def test_cli_bad_study_exits_2(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(to_toml(_study(parameters={"porosity": [0.3, 2.0]})))
    r = run_cli_process("study", p, "--out", tmp_path / "out")
    assert r.code == 2 and "Traceback" not in r.err
    assert "porosity = 2.0" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_designs_expand_and_keys_are_content_hashes():
    d = _study(parameters={"porosity": [0.3, 0.4], "c_rate": [0.2, 0.5, 1.0]},
               study={"replicates": 2})
    s = study_from_dict(d)
    assert len(s.points) == 6 and len(s.cases) == 12
    assert {c.seed for c in s.cases} == {3, 4}
    assert len({c.key for c in s.cases}) == 12
    again = study_from_dict(d)
    assert [c.key for c in again.cases] == [c.key for c in s.cases]
    # a setting no case uses differently keeps the keys; a physics change does not
    d2 = _study(parameters=d["parameters"], study={"replicates": 2, "ranks": 2,
                                                   "rank_by": "asymmetry"})
    assert [c.key for c in study_from_dict(d2).cases] == [c.key for c in s.cases]
    d3 = _study(parameters=d["parameters"], study={"replicates": 2, "charge_soc": 0.2})
    assert not {c.key for c in study_from_dict(d3).cases} & {c.key for c in s.cases}

    lhs = study_from_dict(_study(parameters={"porosity": {"min": 0.25, "max": 0.45},
                                             "stack_pressure_mpa": {"min": 0.1, "max": 1.0}},
                                 study={"design": "latin-hypercube", "samples": 5}))
    for name, (lo, hi) in (("porosity", (0.25, 0.45)), ("stack_pressure_mpa", (0.1, 1.0))):
        u = np.sort([(p[name] - lo) / (hi - lo) for p in lhs.points])
        assert np.all(np.floor(u * 5) == np.arange(5))  # one sample per stratum

    lst = study_from_dict(_study(study={"design": "list"},
                                 cases=[{"porosity": 0.3, "c_rate": 0.5},
                                        {"porosity": 0.4, "c_rate": 1.0}]))
    assert [c.values for c in lst.cases] == [{"porosity": 0.3, "c_rate": 0.5},
                                            {"porosity": 0.4, "c_rate": 1.0}]


def test_levers_set_exact_inputs(tmp_path):
    s = study_from_dict(_study(study={"design": "list"}, cases=[
        {"porosity": 0.42, "median_diameter_um": 2.5, "np_ratio": 4.0, "c_rate": 0.5,
         "stack_pressure_mpa": 0.8, "binder_modulus_gpa": 1.5, "thickness_um": 7.0,
         "si_mass_fraction": 0.8, "network_fraction": 0.4, "penetration_um": 3.0}]))
    c = s.cases[0]
    recipe = Recipe(**c.phantom["composition"])
    comp = electrode_composition(recipe)
    assert comp.porosity == pytest.approx(0.42, abs=1e-12)
    assert recipe.thickness_um == 7.0 and recipe.weight_fractions["si"] == 0.8
    assert sum(recipe.weight_fractions.values()) == pytest.approx(1.0, abs=1e-12)
    p = c.phantom["particles"]
    assert p["median_diameter_um"] == 2.5
    assert p["min_diameter_um"] == pytest.approx(1.8 * 2.5 / 3.0)
    assert p["max_diameter_um"] == pytest.approx(5.0 * 2.5 / 3.0)
    cell = tmp_path / "cell.toml"
    cell.write_text(to_toml(c.cell))
    prot = load_protocol(cell)
    assert prot.theta_full == pytest.approx(1 / 4.0, rel=1e-12)  # theta = SoC / N/P
    assert prot.si_capacity_mah_cm2 == pytest.approx(comp.anode_capacity_mah_cm2, rel=1e-12)
    (seg,) = prot.segments
    assert seg.c_rate == 0.5 and seg.max_minutes * seg.c_rate / 60 == pytest.approx(0.1)
    assert c.simulation["boundary"]["p0_mpa"] == 0.8
    assert c.simulation["lithiation"] == {"seed": 3, "network_fraction": 0.4,
                                          "penetration_um": 3.0}
    assert c.matrix["youngs_modulus_theta0"]["value"] == 1.5
    assert c.matrix["compaction_modulus"]["value"] == pytest.approx(0.03 * 1.5 / 0.3)
    # the reference cell's balance by default
    d = study_from_dict(_study(parameters={"porosity": [0.3]})).cases[0]
    cell.write_text(to_toml(d.cell))
    assert load_protocol(cell).theta_full == pytest.approx(1 / REFERENCE_NP_RATIO)


def test_every_lever_changes_the_case():
    """Each lever of the table, at two levels, gives two cases with different inputs (a
    lever that sets nothing would give one key and run one case twice)."""
    from anodetwin.study.spec import DERIVED_LEVERS, PARAMETERS, simulation_target

    levels = {"median_diameter_um": (2.5, 3.5), "size_spread": (0.2, 0.4),
              "porosity": (0.3, 0.4), "si_mass_fraction": (0.7, 0.8),
              "binder_mass_fraction": (0.05, 0.1), "binder_modulus_gpa": (1.0, 2.0),
              "thickness_um": (6.0, 7.0), "stack_pressure_mpa": (0.1, 0.5),
              "c_rate": (0.2, 0.5), "penetration_um": (2.0, 3.0),
              "network_fraction": (0.1, 0.3), "np_ratio": (2.0, 4.0)}
    assert set(levels) == set(PARAMETERS)
    for name in PARAMETERS:
        assert (name in DERIVED_LEVERS) != (simulation_target(name) is not None), name
    for name, (a, b) in levels.items():
        d = _study(study={"design": "list"}, cases=[{name: a}, {name: b}])
        ca, cb = study_from_dict(d).cases
        assert ca.key != cb.key, name


def test_a_new_simulation_lever_needs_only_its_table_row(monkeypatch):
    """A lever whose row reads ``simulation <section>.<key>`` reaches the case by itself."""
    from anodetwin.study import spec

    row = spec.Parameter("spring_k_mpa_per_um", "MPa/um", 0.0, 100.0, False,
                         "simulation boundary.k_mpa_per_um")
    monkeypatch.setitem(spec.PARAMETERS, row.name, row)
    a, b = study_from_dict(_study(study={"design": "list"},
                                  cases=[{row.name: 0.1}, {row.name: 5.0}])).cases
    assert a.simulation["boundary"]["k_mpa_per_um"] == 0.1
    assert b.simulation["boundary"]["k_mpa_per_um"] == 5.0 and a.key != b.key


def test_repeated_cases_are_refused():
    """Two cases with the same inputs would share a case folder: one-line error."""
    with pytest.raises(ParameterError, match="case 1 .* same inputs as case 0") as e:
        study_from_dict(_study(study={"design": "list"},
                               cases=[{"porosity": 0.3}, {"porosity": 0.3}]))
    _one_line(e)
    with pytest.raises(ParameterError, match="repeats a level"):
        study_from_dict(_study(parameters={"porosity": [0.3, 0.3]}))


def test_read_results_takes_the_folder_or_the_file(tmp_path):
    """``read_results`` reads ``results.csv`` given the study folder or the file, and a
    missing table is a typed error."""
    from anodetwin.errors import InputNotFoundError

    (tmp_path / "results.csv").write_text("key,status,thickness_change\nab,done,0.25\n")
    rows = [{"key": "ab", "status": "done", "thickness_change": 0.25}]
    assert read_results(tmp_path) == rows == read_results(tmp_path / "results.csv")
    with pytest.raises(InputNotFoundError, match="results"):
        read_results(tmp_path / "nothing")


# --- TOML tables -> dataclasses (the builder every configuration, the study's too, uses) ------

@dataclass(frozen=True)
class _Inner:
    porosity: float = 0.4
    label: str = "base"


@dataclass(frozen=True)
class _Outer:
    size_um: float = 1.0
    steps: int = 3
    fast: bool = False
    headroom_um: float | str = "auto"
    origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    times_s: tuple[float, ...] = ()
    modes: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    inner: _Inner = field(default_factory=_Inner)


def test_toml_table_builder_converts_by_field_type():
    got = build_dataclass(_Outer, tomllib.loads(
        'size_um = 2\nsteps = 4.0\nfast = true\nheadroom_um = 1\norigin_um = [1, 2, 3.5]\n'
        'times_s = [0, 60]\nmodes = {a = 1}\nnote = "x"\n[inner]\nporosity = 0\n'), "case")
    assert got == _Outer(2.0, 4, True, 1.0, (1.0, 2.0, 3.5), (0.0, 60.0), {"a": 1.0}, "x",
                         _Inner(0.0, "base"))
    assert type(got.size_um) is float and type(got.steps) is int
    assert type(got.headroom_um) is float and type(got.inner.porosity) is float
    assert build_dataclass(_Outer, {"headroom_um": "auto"}) == _Outer()  # str-or-float
    assert build_dataclass(_Outer, {}, "case") == _Outer()


@pytest.mark.parametrize("table, words", [
    ({"size": 1.0}, "[case] has unknown key 'size'"),
    ({"size_um": "big"}, "[case] size_um = 'big' is not a number"),
    ({"size_um": float("inf")}, "[case] size_um = inf is not a finite number"),
    ({"steps": 2.5}, "[case] steps = 2.5 is not an integer"),
    ({"fast": 1}, "[case] fast = 1 is not true or false"),
    ({"headroom_um": [1.0]}, "[case] headroom_um = [1.0] is not a number or a string"),
    ({"origin_um": [1.0, 2.0]}, "[case] origin_um = [1.0, 2.0] has 2 values; give 3 values"),
    ({"times_s": 5.0}, "[case] times_s must be a list"),
    ({"times_s": [0.0, float("nan")]}, "[case] times_s[1] = nan is not a finite number"),
    ({"modes": {"a": "x"}}, "[case] modes.a = 'x' is not a number"),
    ({"inner": {"porosity": True}}, "[case.inner] porosity = True is not a number"),
    ({"inner": {"pores": 0.1}}, "[case.inner] has unknown key 'pores'"),
    ({"inner": 3}, "[case.inner] is not a table"),
])
def test_toml_table_builder_names_table_key_and_fix(table, words):
    with pytest.raises(ParameterError) as exc:
        build_dataclass(_Outer, table, "case")
    assert words in _one_line(exc)
    with pytest.raises(ParameterError) as exc, in_file("case.toml"):
        build_dataclass(_Outer, table, "case")
    assert _one_line(exc).startswith(f"case.toml: {words.split(';')[0]}")


def test_toml_text_reads_back_equal():
    d = {"name": "x", "n": 3, "f": 0.1, "on": False, "big": float("inf"), "xs": [1, 2.5],
         "tab": {"a": 1, "b": {"c": "d"}}, "rows": [{"k": 1}, {"k": 2, "s": "t"}]}
    assert tomllib.loads(to_toml(d)) == d
    with pytest.raises(TypeError):
        to_toml({"none": None})


# --- metrics -------------------------------------------------------------------------------

def test_weighted_stats_and_main_effects(rng):
    x = rng.normal(size=301)
    w = rng.integers(1, 4, size=301).astype(float) * 0.3
    s = weighted_stats(x, w)
    rep = np.repeat(x, (w / 0.3).astype(int))  # the weights as repeated values
    assert [s["p5"], s["p50"], s["p95"]] == pytest.approx(
        np.percentile(rep, (5, 50, 95), method="inverted_cdf"), abs=0)
    assert s["max"] == x.max() and s["mean"] == pytest.approx(rep.mean(), rel=1e-12)
    # linear metrics: the effect over a lever's range is its slope times the range
    rows = [{"status": "done", "a": a, "b": b,
             **{m: (2 * a - 3 * b + 1 if m == "asymmetry" else None) for m in METRICS}}
            for a in (1.0, 2.0, 4.0) for b in (0.1, 0.5)]
    rows.append({**rows[0], "status": "failed", "asymmetry": 99.0})
    eff = main_effects(rows, ["a", "b"])
    assert set(eff) == {"asymmetry"}
    assert eff["asymmetry"] == pytest.approx({"a": 6.0, "b": -1.2}, abs=1e-12)


# --- runs ----------------------------------------------------------------------------------

FACTORIAL = {"median_diameter_um": [2.6, 3.4], "stack_pressure_mpa": [0.2, 1.0]}


def _check_case_metrics(out: Path, row: dict, charge_soc: float) -> None:
    folder = out / "cases" / row["key"]
    run = folder / "run"
    rows = {r["output"]: r for r in read_summary(run / "summary.csv") if r["output"]}
    # Li inserted exactly as the cell balance says: theta = SoC / (N/P)
    assert row["theta_mean"] == pytest.approx(charge_soc / REFERENCE_NP_RATIO, rel=1e-8)
    assert row["thickness_growth"] == pytest.approx(
        rows["charged"]["thickness_um"] / rows["T0"]["thickness_um"] - 1, rel=1e-6)
    assert row["thickness_growth"] > 0.01
    assert row["volumetric_strain_p5"] <= row["volumetric_strain_p50"] \
        <= row["volumetric_strain_p95"] <= row["volumetric_strain_max"]
    # percentiles from the field file written for ParaView (equal voxel cells)
    with h5py.File(run / "fields" / "charged.h5") as f:
        t = next(iter(f["Function/J"]))
        dj = f[f"Function/J/{t}"][:, 0] - 1
        ph = f[f"Function/phase/{t}"][:, 0]
        smax = f[f"Function/max_principal/{t}"][:, 0]
    x = np.sort(dj[np.isin(ph, ELECTRODE_PHASES)])
    for q in (5, 50, 95):  # the value at q% of the equal cells (either side of a tie)
        k = int(np.ceil(q / 100 * x.size)) - 1
        assert np.isclose(row[f"volumetric_strain_p{q}"], x[k:k + 2], rtol=1e-7).any()
    si = np.isin(ph, (2, 3))
    assert row["si_fraction_above_threshold"] == pytest.approx(
        np.mean(smax[si] > 1000.0), rel=1e-7)
    assert row["max_principal_si_mpa"] == pytest.approx(smax[si].max(), rel=1e-7)


def _count_results(out: Path) -> int:
    return len(list((out / "cases").glob("*/result.json"))) if (out / "cases").is_dir() else 0


def test_study_killed_resumes_and_rerun_skips(tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(to_toml(_study(parameters=FACTORIAL)))
    out = tmp_path / "out"
    cmd = [str(BIN / "anodetwin"), "study", str(study), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "COLUMNS": "120"}
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    t0 = time.monotonic()
    while _count_results(out) < 2:
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() - t0 < 600, "two cases took more than 10 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the study, its Dask workers and their MPI jobs
    proc.wait()
    first = {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())
             for p in (out / "cases").glob("*/result.json")}
    assert len(first) == 2

    r = run_cli_process("study", study, "--out", out, "--workers", "1", timeout=900)
    assert r.code == 0, r.err
    assert "4 cases, 2 finished earlier, 2 to run" in r.err
    after = {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())
             for p in (out / "cases").glob("*/result.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())
    rows = read_results(out / "results.csv")
    assert [r["status"] for r in rows] == ["done"] * 4
    assert {(r["median_diameter_um"], r["stack_pressure_mpa"]) for r in rows} == {
        (a, b) for a in FACTORIAL["median_diameter_um"] for b in FACTORIAL["stack_pressure_mpa"]}
    for row in rows:
        _check_case_metrics(out, row, 0.1)
    # the stack pressure is what the spring carries at the end of the charge
    for row in rows:
        assert row["stack_pressure_end_mpa"] >= row["stack_pressure_mpa"]
    html = (out / "summary.html").read_text()
    assert "data:image/png;base64," in html and "Designs ranked by" in html
    assert (out / "main_effects.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 4 and summary["ran_this_time"] == 2
    assert set(summary["main_effects"]["volumetric_strain_p95"]) == set(FACTORIAL)

    table = (out / "results.csv").read_bytes()
    r = run_cli_process("study", study, "--out", out, "--workers", "1")
    assert r.code == 0 and "4 finished earlier, 0 to run" in r.err
    assert {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())
            for p in (out / "cases").glob("*/result.json")} == after
    assert (out / "results.csv").read_bytes() == table


def test_failing_case_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster

    import anodetwin.study.execute as ex

    real = ex.write_phantom_labels

    def flaky(path, phantom):  # the phantom of seed 4 cannot be made
        if phantom["seed"] == 4:
            raise ParameterError("phantom seed 4 refused", "use another seed")
        return real(path, phantom)

    monkeypatch.setattr(ex, "write_phantom_labels", flaky)
    s = study_from_dict(_study(parameters={"median_diameter_um": [3.0]},
                               study={"replicates": 2}))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = run_study(s, tmp_path / "out", client=client, progress=False)
    assert (res.ran, res.skipped, res.failed) == (2, 0, 1)
    bad, good = sorted(res.rows, key=lambda r: r["status"] == "done")
    assert bad["status"] == "failed" and bad["stage"] == "phantom"
    assert "phantom seed 4 refused" in bad["reason"] and bad["volumetric_strain_p95"] is None
    assert good["status"] == "done" and good["seed"] == 3
    _check_case_metrics(tmp_path / "out", good, 0.1)
    assert "phantom seed 4 refused" in res.summary_html.read_text()
    rows = read_results(tmp_path / "out" / "results.csv")
    assert [r["status"] for r in rows] == ["done", "failed"]
    # a rerun keeps the recorded failure (it would fail again); retry_failed runs it
    res2 = run_study(s, tmp_path / "out", progress=False)
    assert (res2.ran, res2.skipped, res2.failed) == (0, 2, 1)

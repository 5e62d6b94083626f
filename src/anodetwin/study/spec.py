"""Study files: the design levers, the design and the cases it expands to.

A study file (TOML) names the parameters and their levels or ranges, the design, the
replicates and the base twin every case starts from::

    [study]
    name = "particle size and porosity"
    design = "full-factorial"      # full-factorial | latin-hypercube | list
    samples = 8                    # latin-hypercube: number of design points
    seed = 1                       # seeds the design and the microstructures
    replicates = 2                 # microstructures (seed, seed + 1, ...) per design point
    ranks = 1                      # MPI ranks of each case's simulation
    coarsen = 2                    # mesh coarsening of the phantom labels
    charge_soc = 0.5               # every design is charged (CC) to this cell state of charge
    cell = "reference_cell"        # OCV, resistance, Si capacity (models/<name>.toml)
    stress_threshold_mpa = 1000.0  # metric: Si volume share above this principal stress
    rank_by = "volumetric_strain_p95"  # the metric that orders the designs (lowest first)
    timeout_minutes = 0            # per case (0: none)

    [parameters]                   # full-factorial: levels; latin-hypercube: {min, max}
    median_diameter_um = [3.0, 5.0]
    porosity = [0.3, 0.45]

    [[cases]]                      # design = "list": one table per design point
    median_diameter_um = 4.0
    porosity = 0.35

    [phantom]                      # base microstructure: sections of a phantom config
    geometry = {voxel_size_um = 0.25, lateral_um = 12.0}

    [simulation]                   # base case: [lithiation] [boundary] [solver] [output]
    solver = {plasticity = false}  # sections of a case file (no [mesh], no [cell])

The levers (:data:`PARAMETERS`, each with unit and physical bounds):

``median_diameter_um``
    Median volume-equivalent Si particle diameter; the size distribution's bounds scale
    with it (min and max keep their ratio to the median).
``size_spread``
    sigma of the log-normal size distribution (``particles.sigma_ln``).
``porosity``
    Pore fraction of the coating (outside the solids; the CBD's nano-pores count as pores):
    the areal loading follows, ``L = (1 - porosity) t / (10 sum w_i / rho_i)`` (mg/cm2, t in
    um). Without it every case keeps the base porosity: that of ``[phantom.composition]``
    when it gives ``areal_loading_mg_cm2``, else the reference recipe's (0.334).
``si_mass_fraction`` / ``binder_mass_fraction``
    Si mass fraction (the other components scale) or PAA binder mass fraction (Si takes the
    difference); give one of the two.
``binder_modulus_gpa``
    Young's modulus of the carbon-binder matrix (``models/matrix.toml``; its compaction
    modulus keeps its ratio to it).
``thickness_um``
    Coating thickness at the same porosity.
``stack_pressure_mpa``
    Spring preload (``[boundary] p0_mpa``).
``c_rate``
    C-rate of the constant-current charge to ``charge_soc``.
``penetration_um``
    Decay length of the separator-side reaction profile.
``network_fraction``
    Share of particles lithiating along fast defect pathways (lithiation-mode mix).
``np_ratio``
    Anode-to-cathode capacity ratio: the cathode capacity is the Si capacity over it, so
    ``theta = SoC / np_ratio`` (Si utilisation). The default keeps the reference cell's
    (3 mg/cm2 x 0.89 x 3579 mAh/g over 3.5 mAh/cm2 = 2.73) for every design, so designs are
    compared at the same Si utilisation.

Every case is built and checked (phantom config, case sections, cell protocol) before any
case runs; a level outside the physical bounds, an unknown parameter or an empty range is a
one-line error.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from anodetwin.errors import ParameterError

__all__ = ["PARAMETERS", "Parameter", "Study", "CaseSpec", "load_study", "study_from_dict",
           "REFERENCE_NP_RATIO"]

#: Anode/cathode capacity ratio of the reference cell (3 mg/cm2, 89 wt% Si, 3579 mAh/g;
#: 3.5 mAh/cm2 NMC811).
REFERENCE_NP_RATIO = 3.0 * 0.89 * 3.579 / 3.5

_CASE_FORMAT = "anodetwin-study-case-1"


@dataclass(frozen=True)
class Parameter:
    """A design lever: unit, physical bounds and what it sets."""

    name: str
    unit: str
    lower: float
    upper: float
    lower_open: bool
    sets: str

    def check(self, value, where: str) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ParameterError(f"{where}: {self.name} = {value!r} is not a number",
                                 f"give a number in {self.unit}") from None
        if isinstance(value, bool) or not math.isfinite(v) or v > self.upper or v < self.lower \
                or (self.lower_open and v == self.lower):
            lo = "(" if self.lower_open else "["
            raise ParameterError(
                f"{where}: {self.name} = {value} {self.unit} is outside its physical bounds "
                f"{lo}{self.lower:g}, {self.upper:g}]", f"give a level inside {lo}"
                f"{self.lower:g}, {self.upper:g}] {self.unit}")
        return v


PARAMETERS = {p.name: p for p in (
    Parameter("median_diameter_um", "um", 0.0, 100.0, True, "phantom particles"),
    Parameter("size_spread", "1", 0.0, 1.5, False, "phantom particles.sigma_ln"),
    Parameter("porosity", "1", 0.0, 0.95, True, "phantom areal loading"),
    Parameter("si_mass_fraction", "1", 0.0, 1.0, True, "phantom weight fractions"),
    Parameter("binder_mass_fraction", "1", 0.0, 0.9, False, "phantom weight fractions"),
    Parameter("binder_modulus_gpa", "GPa", 0.0, 100.0, True, "matrix Young's modulus"),
    Parameter("thickness_um", "um", 0.0, 1000.0, True, "phantom thickness"),
    Parameter("stack_pressure_mpa", "MPa", 0.0, 100.0, False, "boundary p0_mpa"),
    Parameter("c_rate", "1/h", 0.0, 20.0, True, "charge current"),
    Parameter("penetration_um", "um", 0.0, 1000.0, True, "lithiation penetration_um"),
    Parameter("network_fraction", "1", 0.0, 1.0, False, "lithiation network_fraction"),
    Parameter("np_ratio", "1", 1.0, 20.0, False, "cathode capacity"),
)}

_DESIGNS = ("full-factorial", "latin-hypercube", "list")


@dataclass(frozen=True)
class CaseSpec:
    """One twin of a study: its design point, replicate and every input, resolved.

    ``key`` is a content hash of the inputs (phantom config, case sections, cell protocol,
    matrix model, coarsening): a case with the same key is the same computation.
    """

    index: int
    point: int
    replicate: int
    values: dict
    seed: int
    phantom: dict
    simulation: dict
    cell: dict
    matrix: dict | None
    coarsen: int
    key: str

    @property
    def label(self) -> str:
        v = ", ".join(f"{k}={x:g}" for k, x in self.values.items())
        return f"case {self.index} ({v}; replicate {self.replicate})"

    def inputs(self) -> dict:
        """Everything the case computes from (what the key hashes), JSON-ready."""
        return {"format": _CASE_FORMAT, "phantom": self.phantom, "simulation": self.simulation,
                "cell": self.cell, "matrix": self.matrix, "coarsen": self.coarsen}


@dataclass(frozen=True)
class Study:
    """A validated study (module notes)."""

    name: str
    design: str
    parameters: dict          # name -> levels (list) or (min, max)
    cases: tuple              # CaseSpec, in run order
    points: tuple             # design points: dicts of parameter values
    replicates: int = 1
    seed: int = 0
    ranks: int = 1
    coarsen: int = 2
    charge_soc: float = 0.5
    cell: str = "reference_cell"
    stress_threshold_mpa: float = 1000.0
    rank_by: str = "volumetric_strain_p95"
    timeout_minutes: float = 0.0
    path: Path | None = None
    raw: dict = field(default_factory=dict)


_STUDY_KEYS = {"name": str, "design": str, "samples": int, "seed": int, "replicates": int,
               "ranks": int, "coarsen": int, "charge_soc": float, "cell": str,
               "stress_threshold_mpa": float, "rank_by": str, "timeout_minutes": float}


def _study_section(d: dict) -> dict:
    s = d.get("study", {})
    if not isinstance(s, dict):
        raise ParameterError("[study] is not a table", "write it as [study]")
    unknown = sorted(set(s) - set(_STUDY_KEYS))
    if unknown:
        raise ParameterError(f"[study] has unknown key '{unknown[0]}'",
                             f"use {', '.join(sorted(_STUDY_KEYS))}")
    for k, v in s.items():
        t = _STUDY_KEYS[k]
        ok = isinstance(v, str) if t is str else (
            isinstance(v, (int, float)) and not isinstance(v, bool)
            and (t is float or float(v).is_integer()))
        if not ok:
            raise ParameterError(f"[study] {k} = {v!r} is not a{'n' if t is int else ''} "
                                 f"{t.__name__}", f"give {k} as in the study file docs")
    return s


def _levels(parameters: dict, design: str) -> dict:
    """Validated levels (list) or ranges ((min, max)) per parameter."""
    if not isinstance(parameters, dict):
        raise ParameterError("[parameters] is not a table", "write it as [parameters]")
    out = {}
    for name, spec in parameters.items():
        if name not in PARAMETERS:
            raise ParameterError(f"[parameters] unknown parameter '{name}'",
                                 f"use one of {', '.join(PARAMETERS)}")
        p = PARAMETERS[name]
        where = f"[parameters] {name}"
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"min", "max"})
            if unknown or not {"min", "max"} <= set(spec):
                raise ParameterError(f"{where} range needs exactly min and max",
                                     f"write {name} = {{min = ..., max = ...}}")
            lo, hi = p.check(spec["min"], where), p.check(spec["max"], where)
            if not hi > lo:
                raise ParameterError(f"{where} range [{lo:g}, {hi:g}] is empty",
                                     "give max > min")
            if design != "latin-hypercube":
                raise ParameterError(f"{where} is a range, the {design} design needs levels",
                                     f"give levels, e.g. {name} = [{lo:g}, {hi:g}], or use "
                                     "design = \"latin-hypercube\"")
            out[name] = (lo, hi)
        elif isinstance(spec, list):
            if not spec:
                raise ParameterError(f"{where} has no levels", "give at least one level")
            levels = [p.check(v, where) for v in spec]
            if len(set(levels)) != len(levels):
                raise ParameterError(f"{where} repeats a level", "give distinct levels")
            if design == "latin-hypercube":
                raise ParameterError(f"{where} lists levels, the latin-hypercube design needs "
                                     "a range", f"write {name} = {{min = ..., max = ...}}")
            out[name] = levels
        else:
            raise ParameterError(f"{where} = {spec!r} is neither levels nor a range",
                                 f"write {name} = [a, b] or {{min = a, max = b}}")
    return out


def _points(d: dict, design: str, levels: dict, samples: int | None, seed: int) -> list[dict]:
    if design == "full-factorial":
        if not levels:
            raise ParameterError("[parameters] is empty", "give at least one parameter")
        names = list(levels)
        return [dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(levels[n] for n in names))]
    if design == "latin-hypercube":
        if not levels:
            raise ParameterError("[parameters] is empty", "give at least one parameter range")
        if samples is None or samples < 1:
            raise ParameterError(f"[study] samples = {samples!r} for a latin-hypercube design",
                                 "give samples >= 1")
        from scipy.stats import qmc

        u = qmc.LatinHypercube(d=len(levels), rng=seed).random(samples)
        names = list(levels)
        return [{n: float(levels[n][0] + x * (levels[n][1] - levels[n][0]))
                 for n, x in zip(names, row, strict=True)} for row in u]
    cases = d.get("cases")
    if levels:
        raise ParameterError("design = \"list\" takes its points from [[cases]], not "
                             "[parameters]", "move the values into [[cases]] tables")
    if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
        raise ParameterError("design = \"list\" without [[cases]] tables",
                             "give one [[cases]] table per design point")
    names = list(cases[0])
    out = []
    for i, c in enumerate(cases):
        if list(c) != names and set(c) != set(names):
            raise ParameterError(f"[[cases]] {i} sets {sorted(c)}, case 0 sets {sorted(names)}",
                                 "give every case the same parameters")
        for k in c:
            if k not in PARAMETERS:
                raise ParameterError(f"[[cases]] {i}: unknown parameter '{k}'",
                                     f"use one of {', '.join(PARAMETERS)}")
        out.append({k: PARAMETERS[k].check(c[k], f"[[cases]] {i}") for k in names})
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _recipe(ph: dict, values: dict, base_porosity: float) -> dict:
    """The phantom recipe of a design point (module notes: porosity, mass fractions)."""
    from anodetwin.phantom.composition import Recipe

    comp = _merge({"weight_fractions": Recipe().weight_fractions,
                   "densities_g_cm3": Recipe().densities_g_cm3}, ph.get("composition", {}))
    wf = {k: float(v) for k, v in comp["weight_fractions"].items()}
    if "si_mass_fraction" in values:
        x = values["si_mass_fraction"]
        rest = 1.0 - wf.get("si", 0.0)
        wf = {k: (x if k == "si" else (v * (1 - x) / rest if rest > 0 else 0.0))
              for k, v in wf.items()}
    if "binder_mass_fraction" in values:
        b = values["binder_mass_fraction"]
        if "paa_binder" not in wf:
            raise ParameterError("binder_mass_fraction needs a 'paa_binder' component in "
                                 "[phantom.composition] weight_fractions",
                                 "add paa_binder to the weight fractions")
        wf["paa_binder"] = b
        wf["si"] = 1.0 - sum(v for k, v in wf.items() if k != "si")
        if not wf["si"] > 0:
            raise ParameterError(f"binder_mass_fraction {b} leaves no Si",
                                 "give a smaller binder mass fraction")
    comp["weight_fractions"] = wf
    if "thickness_um" in values:
        comp["thickness_um"] = values["thickness_um"]
    thickness = float(comp.get("thickness_um", Recipe().thickness_um))
    porosity = values.get("porosity", base_porosity)
    s = sum(w / float(comp["densities_g_cm3"][k]) for k, w in wf.items())
    comp["areal_loading_mg_cm2"] = (1.0 - porosity) * thickness / (10.0 * s)
    return comp


def _particles(ph: dict, values: dict) -> dict:
    from anodetwin.phantom.config import Particles

    p = dict(ph.get("particles", {}))
    if "median_diameter_um" in values:
        base = Particles()
        m0 = float(p.get("median_diameter_um", base.median_diameter_um))
        m = values["median_diameter_um"]
        for k in ("min_diameter_um", "max_diameter_um"):
            p[k] = float(p.get(k, getattr(base, k))) * m / m0
        p["median_diameter_um"] = m
    if "size_spread" in values:
        p["sigma_ln"] = values["size_spread"]
    return p


def _cell(cell_model: str, comp: dict, np_ratio: float, c_rate: float, charge_soc: float,
          si_capacity_mah_g: float) -> dict:
    """The cell protocol of a case (a models/*.toml dict): the base cell's OCV and
    resistance, this design's loading, and one CC charge to ``charge_soc``."""
    from anodetwin.simulate.materials import read_model_toml

    _, d = read_model_toml(cell_model, "protocol")
    d = copy.deepcopy(d)
    wf = comp["weight_fractions"]
    anode = wf["si"] * comp["areal_loading_mg_cm2"] * 1e-3 * si_capacity_mah_g
    src = "design study"
    d["name"] = "study_cell"
    d["anode_loading"] = {"value": comp["areal_loading_mg_cm2"], "unit": "mg/cm2",
                          "source": f"{src}: from the porosity and the thickness"}
    d["si_mass_fraction"] = {"value": wf["si"], "unit": "1", "source": src}
    d["si_specific_capacity"] = {"value": si_capacity_mah_g, "unit": "mAh/g",
                                 "source": "as the phantom recipe"}
    d["cathode_capacity"] = {"value": anode / np_ratio, "unit": "mAh/cm2",
                             "source": f"{src}: Si capacity / N/P ratio {np_ratio:g}"}
    d["initial_soc"] = {"value": 0.0, "unit": "1", "source": "pristine cell"}
    d["scan_minutes"] = {"value": 0.0, "unit": "min", "source": "no scan time"}
    d["initial_scan"] = "T0"
    d["segments"] = [{"mode": "cc", "direction": "charge", "c_rate": c_rate,
                      "max_minutes": 60.0 * charge_soc / c_rate, "scan": "charged",
                      "source": f"{src}: CC charge to SoC {charge_soc:g}"}]
    return d


def _matrix(modulus_gpa: float) -> dict:
    from anodetwin.simulate.materials import read_model_toml

    _, d = read_model_toml("matrix", "material")
    d = copy.deepcopy(d)
    e0 = float(d["youngs_modulus_theta0"]["value"])
    for k in ("youngs_modulus_theta0", "youngs_modulus_theta1"):
        d[k] = {"value": modulus_gpa, "unit": "GPa", "source": "design study level"}
    if "compaction_modulus" in d:
        c = float(d["compaction_modulus"]["value"]) * modulus_gpa / e0
        d["compaction_modulus"] = {"value": c, "unit": "GPa",
                                   "source": "design study: the matrix's ratio kept"}
    return d


def _key(inputs: dict) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_case(index: int, point: int, replicate: int, values: dict, seed: int, s: dict,
                base_ph: dict, base_sim: dict, base_porosity: float) -> CaseSpec:
    from anodetwin.phantom.composition import Recipe

    ph = copy.deepcopy(base_ph)
    ph["seed"] = seed
    ph["composition"] = _recipe(ph, values, base_porosity)
    ph["particles"] = _particles(ph, values)
    sim = copy.deepcopy(base_sim)
    sim.setdefault("lithiation", {})["seed"] = seed
    if "penetration_um" in values:
        sim["lithiation"]["penetration_um"] = values["penetration_um"]
    if "network_fraction" in values:
        sim["lithiation"]["network_fraction"] = values["network_fraction"]
    if "stack_pressure_mpa" in values:
        sim.setdefault("boundary", {})["p0_mpa"] = values["stack_pressure_mpa"]
    sim.setdefault("output", {})["stress_threshold_mpa"] = float(
        s.get("stress_threshold_mpa", 1000.0))
    si_cap = float(ph["composition"].get("si_capacity_mah_g", Recipe().si_capacity_mah_g))
    cell = _cell(s.get("cell", "reference_cell"), ph["composition"],
                 values.get("np_ratio", REFERENCE_NP_RATIO), values.get("c_rate", 1.0 / 3.0),
                 float(s.get("charge_soc", 0.5)), si_cap)
    ph["composition"]["cathode_capacity_mah_cm2"] = cell["cathode_capacity"]["value"]
    matrix = _matrix(values["binder_modulus_gpa"]) if "binder_modulus_gpa" in values else None
    c = CaseSpec(index, point, replicate, dict(values), seed, ph, sim, cell, matrix,
                 int(s.get("coarsen", 2)), "")
    return CaseSpec(**{**c.__dict__, "key": _key(c.inputs())})


def _check_case(c: CaseSpec, tmp: Path) -> None:
    """Every input of a case through the validators that will read it (one-line errors
    prefixed with the case)."""
    from anodetwin.errors import AnodetwinError
    from anodetwin.phantom.config import config_from_dict
    from anodetwin.simulate.case import Lithiation, Output, Solver, _build
    from anodetwin.simulate.mechanics import Boundary
    from anodetwin.simulate.protocol import load_protocol

    try:
        config_from_dict(c.phantom)
        for cls, name in ((Lithiation, "lithiation"), (Solver, "solver"), (Output, "output"),
                          (Boundary, "boundary")):
            _build(cls, name, c.simulation.get(name, {}))
        p = tmp / f"cell{c.index}.toml"
        p.write_text(to_toml(c.cell))
        load_protocol(p)
        if c.matrix is not None:
            from anodetwin.simulate.materials import load_material

            q = tmp / f"matrix{c.index}.toml"
            q.write_text(to_toml(c.matrix))
            load_material(q)
    except AnodetwinError as exc:
        raise ParameterError(f"{c.label}: {exc.problem}", exc.fix) from None


def study_from_dict(d: dict, path: Path | None = None) -> Study:
    """Validate a study (the TOML's content) and expand it into its cases; every case's
    inputs are checked before this returns (module notes)."""
    import tempfile

    known = {"study", "parameters", "cases", "phantom", "simulation"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ParameterError(f"study file has unknown section '{unknown[0]}'",
                             f"use {', '.join(sorted(known))}")
    s = _study_section(d)
    design = s.get("design", "full-factorial")
    if design not in _DESIGNS:
        raise ParameterError(f"[study] design = '{design}'", f"use one of {', '.join(_DESIGNS)}")
    seed = int(s.get("seed", 0))
    for k, lo in (("replicates", 1), ("ranks", 1), ("coarsen", 1), ("seed", 0)):
        if int(s.get(k, lo)) < lo:
            raise ParameterError(f"[study] {k} = {s[k]}", f"give {k} >= {lo}")
    soc = float(s.get("charge_soc", 0.5))
    if not 0 < soc <= 1:
        raise ParameterError(f"[study] charge_soc = {soc}", "give a state of charge in (0, 1]")
    if not float(s.get("stress_threshold_mpa", 1000.0)) > 0:
        raise ParameterError(f"[study] stress_threshold_mpa = {s['stress_threshold_mpa']}",
                             "give a positive stress in MPa")
    if float(s.get("timeout_minutes", 0.0)) < 0:
        raise ParameterError(f"[study] timeout_minutes = {s['timeout_minutes']}",
                             "give minutes >= 0 (0: no limit)")
    from anodetwin.study.metrics import METRICS

    rank_by = s.get("rank_by", "volumetric_strain_p95")
    if rank_by not in METRICS:
        raise ParameterError(f"[study] rank_by = '{rank_by}' is not a metric",
                             f"use one of {', '.join(METRICS)}")
    levels = _levels(d.get("parameters", {}), design)
    points = _points(d, design, levels, s.get("samples"), seed)
    names = set(points[0])
    if {"si_mass_fraction", "binder_mass_fraction"} <= names:
        raise ParameterError("the study varies both si_mass_fraction and "
                             "binder_mass_fraction", "vary one of the two")
    base_ph = d.get("phantom", {})
    base_sim = d.get("simulation", {})
    for name, sec in (("phantom", base_ph), ("simulation", base_sim)):
        if not isinstance(sec, dict):
            raise ParameterError(f"[{name}] is not a table", f"write it as [{name}]")
    bad = sorted(set(base_sim) - {"lithiation", "boundary", "solver", "output", "materials"})
    if bad:
        raise ParameterError(f"[simulation] has section '{bad[0]}'",
                             "give lithiation, boundary, solver, output or materials (the "
                             "mesh and the cell come from the study)")
    if "penetration_um" in names and base_sim.get("lithiation", {}).get(
            "profile", "separator") == "uniform":
        raise ParameterError("penetration_um is varied but [simulation.lithiation] profile "
                             "is 'uniform'", "use profile = 'separator' or drop the lever")
    from anodetwin.phantom.composition import Recipe, electrode_composition
    from anodetwin.phantom.config import _build

    comp = base_ph.get("composition", {})
    if not isinstance(comp, dict):
        raise ParameterError("[phantom.composition] is not a table", "write it as a table")
    if "areal_loading_mg_cm2" not in comp:  # the reference recipe's porosity
        comp = {k: v for k, v in comp.items() if k != "thickness_um"}
    try:
        base_porosity = electrode_composition(_build(Recipe, comp, "composition")).porosity
    except ParameterError as exc:
        raise ParameterError(f"[phantom]: {exc.problem}", exc.fix) from None
    cases = []
    for i, values in enumerate(points):
        for r in range(int(s.get("replicates", 1))):
            cases.append(_build_case(len(cases), i, r, values, seed + r, s, base_ph,
                                     base_sim, base_porosity))
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            _check_case(c, Path(tmp))
    return Study(name=str(s.get("name", path.stem if path else "study")), design=design,
                 parameters=levels, cases=tuple(cases), points=tuple(points),
                 replicates=int(s.get("replicates", 1)), seed=seed,
                 ranks=int(s.get("ranks", 1)), coarsen=int(s.get("coarsen", 2)),
                 charge_soc=soc, cell=str(s.get("cell", "reference_cell")),
                 stress_threshold_mpa=float(s.get("stress_threshold_mpa", 1000.0)),
                 rank_by=rank_by, timeout_minutes=float(s.get("timeout_minutes", 0.0)),
                 path=path, raw=d)


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file (module notes)."""
    from anodetwin.io import read_toml

    p = Path(path)
    return study_from_dict(read_toml(p, "study file", "give a TOML study file (README)"), p)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(d: dict) -> str:
    """TOML text of a dict of scalars, lists, tables and arrays of tables (the subset the
    model and case files use)."""
    lines, tables, arrays = [], [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
    for k, v in tables:
        lines += ["", f"[{json.dumps(k)}]"] + [f"{json.dumps(a)} = {_toml_value(b)}"
                                              for a, b in v.items()]
    for k, v in arrays:
        for item in v:
            lines += ["", f"[[{json.dumps(k)}]]"] + [f"{json.dumps(a)} = {_toml_value(b)}"
                                                    for a, b in item.items()]
    return "\n".join(lines) + "\n"

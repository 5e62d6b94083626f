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
from dataclasses import dataclass, field, fields
from pathlib import Path

from anodetwin.errors import ParameterError
from anodetwin.io.tomlfile import build_dataclass, in_file, read_toml
from anodetwin.io.tomlfile import toml_text as to_toml

__all__ = ["PARAMETERS", "DERIVED_LEVERS", "simulation_target", "Parameter", "Study", "StudySettings", "CaseSpec", "load_study",
           "study_from_dict", "to_toml", "REFERENCE_NP_RATIO"]

#: Anode/cathode capacity ratio of the reference cell (3 mg/cm2, 89 wt% Si, 3579 mAh/g;
#: 3.5 mAh/cm2 NMC811).
REFERENCE_NP_RATIO = 3.0 * 0.89 * 3.579 / 3.5

_CASE_FORMAT = "anodetwin-study-case-1"


@dataclass(frozen=True)
class Parameter:
    """A design lever: unit, physical bounds and what it sets.

    Attributes
    ----------
    name, unit : str
        The lever (module notes) and the unit of its levels.
    lower, upper : float
        Its physical bounds; ``upper`` is included, ``lower`` unless ``lower_open``.
    lower_open : bool
        Whether ``lower`` itself is excluded.
    sets : str
        What it sets in the case's inputs.
    """

    name: str
    unit: str
    lower: float
    upper: float
    lower_open: bool
    sets: str

    def check(self, value, where: str) -> float:
        """A level of this lever.

        Parameters
        ----------
        value : object
            The level from the study file.
        where : str
            Where it stands (``"[parameters] porosity"``), for the message.

        Returns
        -------
        float
            The level.

        Raises
        ------
        ParameterError
            It is not a finite number inside the bounds.
        """
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


#: The levers: name, unit, physical bounds (interval) and what each sets (module notes).
#: A lever whose last column reads ``simulation <section>.<key>`` sets that key of the
#: case's simulation tables and needs nothing else; the others are derived quantities
#: applied by :func:`_build_case` (:data:`DERIVED_LEVERS`).
_LEVERS = """
median_diameter_um    um    (0, 100]    phantom particles
size_spread           1     [0, 1.5]    phantom particles.sigma_ln
porosity              1     (0, 0.95]   phantom areal loading
si_mass_fraction      1     (0, 1]      phantom weight fractions
binder_mass_fraction  1     [0, 0.9]    phantom weight fractions
binder_modulus_gpa    GPa   (0, 100]    matrix Young's modulus
thickness_um          um    (0, 1000]   phantom thickness
stack_pressure_mpa    MPa   [0, 100]    simulation boundary.p0_mpa
c_rate                1/h   (0, 20]     charge current
penetration_um        um    (0, 1000]   simulation lithiation.penetration_um
network_fraction      1     [0, 1]      simulation lithiation.network_fraction
np_ratio              1     [1, 20]     cathode capacity
"""


def _lever(row: str) -> Parameter:
    """A :class:`Parameter` from a row of :data:`_LEVERS`."""
    name, unit, lower, upper, sets = row.split(maxsplit=4)
    return Parameter(name, unit, float(lower[1:-1]), float(upper[:-1]), lower[0] == "(", sets)


PARAMETERS = {p.name: p for p in map(_lever, _LEVERS.strip().splitlines())}
#: Levers that change derived inputs (phantom recipe, particles, cell protocol, matrix
#: material) through the helpers of :func:`_build_case`.
DERIVED_LEVERS = frozenset({"median_diameter_um", "size_spread", "porosity",
                            "si_mass_fraction", "binder_mass_fraction", "binder_modulus_gpa",
                            "thickness_um", "c_rate", "np_ratio"})


def simulation_target(name: str) -> tuple[str, str] | None:
    """The (section, key) of the simulation tables a lever sets directly.

    Parameters
    ----------
    name : str
        A lever of :data:`PARAMETERS`.

    Returns
    -------
    tuple of str or None
        ``(section, key)`` when the lever's table row reads ``simulation section.key``;
        None for a derived lever.
    """
    sets = PARAMETERS[name].sets.split()
    if len(sets) == 2 and sets[0] == "simulation" and sets[1].count(".") == 1:
        return tuple(sets[1].split("."))  # type: ignore[return-value]
    return None

_DESIGNS = ("full-factorial", "latin-hypercube", "list")


@dataclass(frozen=True)
class CaseSpec:
    """One twin of a study: its design point, replicate and every input, resolved.

    ``key`` is a content hash of the inputs (phantom config, case sections, cell protocol,
    matrix model, coarsening): a case with the same key is the same computation.

    Attributes
    ----------
    index, point, replicate : int
        The case's place in the run order, its design point and replicate.
    values : dict
        Parameter name -> level of its design point.
    seed : int
        Seed of its microstructure and lithiation (the study's seed + replicate).
    phantom : dict
        Its phantom configuration (:func:`anodetwin.phantom.config_from_dict`).
    simulation : dict
        Its case sections (``lithiation``, ``boundary``, ``solver``, ``output``,
        ``materials``).
    cell : dict
        Its cell model and protocol, as a ``models/*.toml`` file holds them.
    matrix : dict or None
        Its matrix material model when ``binder_modulus_gpa`` is varied.
    coarsen : int
        Mesh coarsening of the phantom labels.
    key : str
        The content hash (16 hex digits).
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
        """``case <index> (<parameter>=<level>, ...; replicate <r>)``, for messages."""
        v = ", ".join(f"{k}={x:g}" for k, x in self.values.items())
        return f"case {self.index} ({v}; replicate {self.replicate})"

    def inputs(self) -> dict:
        """Everything the case computes from (what the key hashes), JSON-ready."""
        return {"format": _CASE_FORMAT, "phantom": self.phantom, "simulation": self.simulation,
                "cell": self.cell, "matrix": self.matrix, "coarsen": self.coarsen}


@dataclass(frozen=True)
class StudySettings:
    """The ``[study]`` table (module notes), checked.

    Raises
    ------
    ParameterError
        An unknown design or metric, fewer than one replicate, rank or coarsening step, a
        negative seed or time limit, a state of charge outside (0, 1], a stress <= 0.
    """

    name: str = ""
    design: str = "full-factorial"
    samples: int | None = None     # latin-hypercube: design points
    seed: int = 0
    replicates: int = 1
    ranks: int = 1
    coarsen: int = 2
    charge_soc: float = 0.5
    cell: str = "reference_cell"
    stress_threshold_mpa: float = 1000.0
    rank_by: str = "volumetric_strain_p95"
    timeout_minutes: float = 0.0

    def __post_init__(self) -> None:
        from anodetwin.study.metrics import METRICS

        if self.design not in _DESIGNS:
            raise ParameterError(f"[study] design = '{self.design}'",
                                 f"use one of {', '.join(_DESIGNS)}")
        for k, lo in (("replicates", 1), ("ranks", 1), ("coarsen", 1), ("seed", 0)):
            if getattr(self, k) < lo:
                raise ParameterError(f"[study] {k} = {getattr(self, k)}", f"give {k} >= {lo}")
        if not 0 < self.charge_soc <= 1:
            raise ParameterError(f"[study] charge_soc = {self.charge_soc}",
                                 "give a state of charge in (0, 1]")
        if not self.stress_threshold_mpa > 0:
            raise ParameterError(f"[study] stress_threshold_mpa = {self.stress_threshold_mpa}",
                                 "give a positive stress in MPa")
        if self.timeout_minutes < 0:
            raise ParameterError(f"[study] timeout_minutes = {self.timeout_minutes}",
                                 "give minutes >= 0 (0: no limit)")
        if self.rank_by not in METRICS:
            raise ParameterError(f"[study] rank_by = '{self.rank_by}' is not a metric",
                                 f"use one of {', '.join(METRICS)}")


@dataclass(frozen=True, kw_only=True)
class Study(StudySettings):
    """A validated study (module notes): its settings, levels, design points and cases."""

    parameters: dict          # name -> levels (list) or (min, max)
    cases: tuple[CaseSpec, ...]   # in run order
    points: tuple[dict, ...]      # design points: parameter name -> value
    path: Path | None = None
    raw: dict = field(default_factory=dict)


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


def _build_case(index: int, point: int, replicate: int, values: dict, s: StudySettings,
                base_ph: dict, base_sim: dict, base_porosity: float) -> CaseSpec:
    """Case ``index``: design point ``point`` (parameter ``values``), replicate
    ``replicate`` (seed ``s.seed + replicate``), from the base tables."""
    from anodetwin.phantom.composition import Recipe

    seed = s.seed + replicate
    ph = copy.deepcopy(base_ph)
    ph["seed"] = seed
    ph["composition"] = _recipe(ph, values, base_porosity)
    ph["particles"] = _particles(ph, values)
    sim = copy.deepcopy(base_sim)
    sim.setdefault("lithiation", {})["seed"] = seed
    for name, value in values.items():
        target = simulation_target(name)
        if target is not None:
            sim.setdefault(target[0], {})[target[1]] = value
    sim.setdefault("output", {})["stress_threshold_mpa"] = s.stress_threshold_mpa
    si_cap = float(ph["composition"].get("si_capacity_mah_g", Recipe().si_capacity_mah_g))
    cell = _cell(s.cell, ph["composition"],
                 values.get("np_ratio", REFERENCE_NP_RATIO), values.get("c_rate", 1.0 / 3.0),
                 s.charge_soc, si_cap)
    ph["composition"]["cathode_capacity_mah_cm2"] = cell["cathode_capacity"]["value"]
    matrix = _matrix(values["binder_modulus_gpa"]) if "binder_modulus_gpa" in values else None
    c = CaseSpec(index, point, replicate, dict(values), seed, ph, sim, cell, matrix,
                 s.coarsen, "")
    return CaseSpec(**{**c.__dict__, "key": _key(c.inputs())})


def _refuse_repeated_cases(cases: list[CaseSpec]) -> None:
    """Two cases with the same inputs would run in one case folder: refuse them."""
    first: dict[str, CaseSpec] = {}
    for c in cases:
        if c.key in first:
            raise ParameterError(f"{c.label} has the same inputs as {first[c.key].label}",
                                 "remove the repeated case or level")
        first[c.key] = c


def _check_case(c: CaseSpec, tmp: Path) -> None:
    """Every input of a case through the validators that will read it (one-line errors
    prefixed with the case)."""
    from anodetwin.errors import AnodetwinError
    from anodetwin.phantom.config import config_from_dict
    from anodetwin.simulate.case import Lithiation, Output, Solver
    from anodetwin.simulate.mechanics import Boundary
    from anodetwin.simulate.protocol import load_protocol

    try:
        config_from_dict(c.phantom)
        for cls, name in ((Lithiation, "lithiation"), (Solver, "solver"), (Output, "output"),
                          (Boundary, "boundary")):
            build_dataclass(cls, c.simulation.get(name, {}), name)
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


def _bases(d: dict, names: set) -> tuple[dict, dict]:
    """The base ``[phantom]`` and ``[simulation]`` tables, checked against the varied
    parameters ``names``."""
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
    return base_ph, base_sim


def _base_porosity(base_ph: dict) -> float:
    """Porosity of the base recipe (module notes: ``porosity``)."""
    from anodetwin.phantom.composition import Recipe, electrode_composition

    comp = base_ph.get("composition", {})
    if not isinstance(comp, dict):
        raise ParameterError("[phantom.composition] is not a table", "write it as a table")
    if "areal_loading_mg_cm2" not in comp:  # the reference recipe's porosity
        comp = {k: v for k, v in comp.items() if k != "thickness_um"}
    try:
        return electrode_composition(build_dataclass(Recipe, comp, "composition")).porosity
    except ParameterError as exc:
        raise ParameterError(f"[phantom]: {exc.problem}", exc.fix) from None


def study_from_dict(d: dict, path: Path | None = None) -> Study:
    """Validate a study and expand it into its cases.

    Parameters
    ----------
    d : dict
        The study file's content (module notes).
    path : Path, optional
        The file: the default name, the provenance.

    Returns
    -------
    Study
        The settings, levels, design points and cases (each design point's replicates in
        turn); every case's inputs have been checked by the validators that will read them.

    Raises
    ------
    ParameterError
        An unknown section, key or parameter, a value of the wrong kind or outside its
        physical bounds, or a case whose inputs do not validate (named by its values).
    """
    import tempfile

    known = {"study", "parameters", "cases", "phantom", "simulation"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ParameterError(f"study file has unknown section '{unknown[0]}'",
                             f"use {', '.join(sorted(known))}")
    s = build_dataclass(StudySettings, d.get("study", {}), "study")
    levels = _levels(d.get("parameters", {}), s.design)
    points = _points(d, s.design, levels, s.samples, s.seed)
    base_ph, base_sim = _bases(d, set(points[0]))
    base_porosity = _base_porosity(base_ph)
    cases = [_build_case(i * s.replicates + r, i, r, values, s, base_ph, base_sim,
                         base_porosity)
             for i, values in enumerate(points) for r in range(s.replicates)]
    _refuse_repeated_cases(cases)
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            _check_case(c, Path(tmp))
    settings = {f.name: getattr(s, f.name) for f in fields(StudySettings)}
    if "name" not in d.get("study", {}):
        settings["name"] = path.stem if path else "study"
    return Study(**settings, parameters=levels, cases=tuple(cases), points=tuple(points),
                 path=path, raw=d)


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file.

    Parameters
    ----------
    path : str or os.PathLike
        The TOML study file (module notes).

    Returns
    -------
    Study
        As :func:`study_from_dict`.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        A missing file, invalid TOML.
    ParameterError
        As :func:`study_from_dict`.
    """
    p = Path(path)
    d = read_toml(p, "study file", "give a TOML study file (README)")
    with in_file(p):
        return study_from_dict(d, p)

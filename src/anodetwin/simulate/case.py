"""Simulation case files (TOML): what to simulate, checked before any work.

A case names the mesh (a folder written by ``anodetwin mesh`` / ``mesh-packing``; relative
paths are taken from the case file's folder), the material of each phase, the cell and its
protocol (``models/<name>.toml``), how Li enters the Si, the boundaries, the solver and
the outputs::

    [mesh]
    path = "mesh"

    [materials]                 # phase name (anodetwin.phases) -> models/<name>.toml
    cbd = "matrix"              # default: every phase from the model files' own lists
    si = "lixsi"

    [cell]
    model = "reference_cell"    # capacity, OCV, resistance and the protocol

    [lithiation]
    diffusivity_um2_s = 0.01    # D of lithiated Si (theta = 1); 1e-14 m2/s
    diffusivity_ratio = 100.0   # D(1) / D(0): sharpness of the core-shell front
    profile = "separator"       # uniform | separator (reaction concentrated there)
    penetration_um = 10.0       # decay length of the separator profile
    network_fraction = 0.0      # share of particles with fast-diffusion defect bands
    network_factor = 100.0      # diffusivity multiplier in the bands
    network_width_um = 0.5      # half-width of a band
    seed = 0
    stress_coupling = false     # hydrostatic stress in the chemical potential (drift)
    temperature_k = 298.15

    [boundary]                  # see anodetwin.simulate.mechanics.Boundary
    collector = "bonded"
    lateral = "rollers"
    top = "spring"
    p0_mpa = 0.3
    k_mpa_per_um = 0.0          # spring stiffness (0: constant stack pressure p0)

    [solver]
    linear = "iterative"        # iterative (CG + GAMG) | direct (MUMPS)
    petsc_options = {}          # PETSc options of the mechanics overriding the defaults
    dtheta_max = 0.01           # largest change of mean theta per step (adaptive steps)
    dt_max_s = 600.0
    dt_min_s = 0.5
    plasticity = true           # plastic flow of the materials that define it (LixSi)
    compaction = true           # compaction stiffening of the materials that define it

    [output]
    times_s = []                # extra output times besides the scans
    scans = []                  # the protocol's scans to simulate to (default: all of them)
    dvc_node_spacing_um = 3.5   # displacement sampled on a DVC grid (0: none)
    dvc_voxel_size_um = 0.0     # voxel of that grid (0: the mesh's voxel)
    dvc_origin_um = []          # centre of voxel 0, (z, y, x) (empty: the mesh's)
    stress_threshold_mpa = 1000.0  # heterogeneity.json: Si volume share above it (MPa)

Every number is checked here, once, for the run and for ``anodetwin simulate --check``
alike: it must be finite (TOML's ``inf`` and ``nan`` are refused, naming ``[section] key``),
integers must be integers, and physical bounds apply where they exist: positive
diffusivities, lengths, temperatures and tolerances, ``0 < dtheta_max <= 1``, a stack
pressure ``0 <= p0_mpa <= 100`` MPa, a spring stiffness ``0 <= k_mpa_per_um <= 1e6``
(stiffer: ``top = "plate"``), output times inside the protocol, and a cell protocol whose
numbers are finite too (``max_minutes`` may be ``inf``: no limit).

A run records the **fingerprint** of its case (:func:`case_values`: every validated value,
the materials and the protocol as read from their model files, and the mesh's content
hash; :func:`case_hash`). A resumed run must have the same fingerprint, except for
:data:`RESUMABLE_KEYS` (``[solver] linear``, ``petsc_options`` and ``dt_min_s``: how a step
is solved and when a failed step gives up, not which steps a successful run takes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.io.tomlfile import build_dataclass, in_file, read_toml, table_values
from anodetwin.phases import PHASE

__all__ = ["Case", "Lithiation", "Solver", "Output", "load_case", "case_from_dict",
           "case_values", "case_hash", "case_changes", "format_changes", "RESUMABLE_KEYS",
           "MAX_STACK_PRESSURE_MPA"]

#: Case keys (``section.key``) that may change when a run is resumed: they change how a
#: step is solved or when a failed step gives up, not the steps of a successful run.
RESUMABLE_KEYS = frozenset({"solver.linear", "solver.dt_min_s", "solver.petsc_options"})
#: Largest stack pressure accepted (MPa); cells run at 0.2-1 MPa, presses at a few MPa.
MAX_STACK_PRESSURE_MPA = 100.0
#: Largest spring stiffness accepted (MPa/um); a stiffer top is a plate (``top = "plate"``).
MAX_SPRING_MPA_PER_UM = 1e6


@dataclass(frozen=True)
class Lithiation:
    """How Li enters and moves in the Si (module notes)."""

    diffusivity_um2_s: float = 0.01
    diffusivity_ratio: float = 100.0
    profile: str = "separator"
    penetration_um: float = 10.0
    network_fraction: float = 0.0
    network_factor: float = 100.0
    network_width_um: float = 0.5
    seed: int = 0
    stress_coupling: bool = False  # hydrostatic stress in the chemical potential
    temperature_k: float = 298.15

    def __post_init__(self) -> None:
        _positive(self, "lithiation", ("diffusivity_um2_s", "diffusivity_ratio",
                                       "penetration_um", "network_factor", "network_width_um",
                                       "temperature_k"))
        if self.profile not in ("uniform", "separator"):
            raise ParameterError(f"[lithiation] profile = '{self.profile}'",
                                 "use 'uniform' or 'separator'")
        if not 0 <= self.network_fraction <= 1:
            raise ParameterError(f"[lithiation] network_fraction = {self.network_fraction}",
                                 "give a share between 0 and 1")
        if not self.diffusivity_um2_s / self.diffusivity_ratio > 0:
            raise ParameterError(f"[lithiation] diffusivity_ratio = {self.diffusivity_ratio:g} "
                                 f"leaves no diffusivity in crystalline Si (diffusivity_um2_s "
                                 f"/ diffusivity_ratio = 0)", "give a smaller ratio")
        if self.seed < 0:
            raise ParameterError(f"[lithiation] seed = {self.seed}", "give a seed >= 0")


@dataclass(frozen=True)
class Solver:
    """Time stepping and linear solver."""

    linear: str = "iterative"
    dtheta_max: float = 0.01
    dt_max_s: float = 600.0
    dt_min_s: float = 0.5
    rtol: float = 1e-9
    plasticity: bool = True   # plastic flow of the materials that define it (LixSi)
    compaction: bool = True   # compaction stiffening of CBD and pores (models' limits)
    # PETSc options of the mechanics solve (without prefix) over
    # anodetwin.simulate.solver.NEWTON's, e.g. {pc_gamg_threshold = 0.05}
    petsc_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.linear not in ("iterative", "direct"):
            raise ParameterError(f"[solver] linear = '{self.linear}'",
                                 "use 'iterative' or 'direct'")
        _positive(self, "solver", ("dtheta_max", "dt_max_s", "dt_min_s", "rtol"))
        if self.dt_min_s > self.dt_max_s:
            raise ParameterError("[solver] dt_min_s > dt_max_s", "give dt_min_s <= dt_max_s")
        if self.dtheta_max > 1:
            raise ParameterError(f"[solver] dtheta_max = {self.dtheta_max:g} exceeds the whole "
                                 "range of theta (0..1)", "give 0 < dtheta_max <= 1, e.g. 0.01")
        if self.rtol >= 1:
            raise ParameterError(f"[solver] rtol = {self.rtol:g}", "give 0 < rtol < 1, e.g. 1e-9")


@dataclass(frozen=True)
class Output:
    """What is written besides the scans."""

    times_s: tuple[float, ...] = ()
    scans: tuple[str, ...] = ()
    dvc_node_spacing_um: float = 3.5
    dvc_voxel_size_um: float = 0.0
    dvc_origin_um: tuple[float, ...] = ()
    stress_threshold_mpa: float = 1000.0

    def __post_init__(self) -> None:
        _finite(self, "output")
        if any(t < 0 for t in self.times_s):
            raise ParameterError("[output] times_s holds negative times", "give times >= 0 s")
        for key in ("dvc_node_spacing_um", "dvc_voxel_size_um"):
            if getattr(self, key) < 0:
                raise ParameterError(f"[output] {key} = {getattr(self, key):g} is negative",
                                     "give a value >= 0 (0: no grid / the mesh's voxel)")
        if not self.stress_threshold_mpa > 0:
            raise ParameterError(f"[output] stress_threshold_mpa = {self.stress_threshold_mpa}",
                                 "give a positive stress in MPa")
        if len(self.dvc_origin_um) not in (0, 3):
            raise ParameterError("[output] dvc_origin_um needs 3 values (z, y, x)",
                                 "give [z, y, x] in um or leave it empty")


@dataclass(frozen=True)
class Case:
    """A validated simulation case (module notes).

    Attributes
    ----------
    path : Path
        The case file (for a case given as a dict: ``<base>/case.toml``).
    mesh : Path
        The mesh folder (or XDMF file).
    materials : dict
        Phase code -> :class:`~anodetwin.simulate.materials.Material`.
    cell : anodetwin.simulate.protocol.Protocol
        The cell and its protocol.
    lithiation, boundary, solver, output
        The checked sections (:class:`Lithiation`,
        :class:`~anodetwin.simulate.mechanics.Boundary`, :class:`Solver`,
        :class:`Output`).
    raw : dict
        The case file's content.
    """

    path: Path
    mesh: Path
    materials: dict            # phase code -> Material
    cell: object               # anodetwin.simulate.protocol.Protocol
    lithiation: Lithiation = field(default_factory=Lithiation)
    boundary: object = None    # anodetwin.simulate.mechanics.Boundary
    solver: Solver = field(default_factory=Solver)
    output: Output = field(default_factory=Output)
    raw: dict = field(default_factory=dict)


def _positive(obj, section: str, names) -> None:
    _finite(obj, section)
    for n in names:
        v = getattr(obj, n)
        if not (isinstance(v, (int, float)) and v > 0):
            raise ParameterError(f"[{section}] {n} = {v!r} is not positive", f"give {n} > 0")


def _finite(obj, section: str) -> None:
    """Every number of a section's dataclass (and of its lists) finite."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        for i, x in enumerate(v if isinstance(v, tuple) else (v,)):
            if isinstance(x, float) and not math.isfinite(x):
                key = f"{f.name}[{i}]" if isinstance(v, tuple) else f.name
                raise ParameterError(f"[{section}] {key} = {x} is not a finite number",
                                     f"give a finite {f.name}")


def _check_boundary(b) -> None:
    """Physical bounds of ``[boundary]`` (beyond :class:`~anodetwin.simulate.mechanics.
    Boundary`'s own checks)."""
    if b.p0_mpa > MAX_STACK_PRESSURE_MPA:
        raise ParameterError(f"[boundary] p0_mpa = {b.p0_mpa:g} MPa is beyond a stack "
                             f"pressure (cells: 0.2-1 MPa)",
                             f"give 0 <= p0_mpa <= {MAX_STACK_PRESSURE_MPA:g} MPa")
    if b.k_mpa_per_um > MAX_SPRING_MPA_PER_UM:
        raise ParameterError(f"[boundary] k_mpa_per_um = {b.k_mpa_per_um:g} MPa/um",
                             f"give 0 <= k_mpa_per_um <= {MAX_SPRING_MPA_PER_UM:g}, or "
                             "top = \"plate\" for a rigid plate")


def _check_protocol(protocol, model: str) -> float:
    """Every number of the cell protocol finite (a segment's ``max_minutes`` may be inf: no
    limit); returns the protocol's end time (s)."""
    from anodetwin.simulate.protocol import simulate_cell

    where = f"[cell] model '{model}'"
    for key, v in asdict(protocol).items():
        if key == "segments":
            continue
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, float) and not math.isfinite(x):
                raise ParameterError(f"{where}: {key} = {x} is not a finite number",
                                     "fix the protocol file")
    for i, seg in enumerate(protocol.segments):
        for key, x in asdict(seg).items():
            if isinstance(x, float) and not math.isfinite(x) and \
                    not (key == "max_minutes" and x == math.inf):
                raise ParameterError(f"{where}: segments[{i}].{key} = {x} is not a finite "
                                     "number", "fix the protocol file")
    return float(simulate_cell(protocol).time_s[-1])


def _check_times(output: Output, end_s: float, model: str, protocol) -> None:
    """Output times inside the protocol ``[0, end_s]``, output scans among its scans."""
    names = ([protocol.initial_scan] if protocol.initial_scan else []) \
        + [g.scan for g in protocol.segments if g.scan]
    unknown = [n for n in output.scans if n not in names]
    if unknown:
        raise ParameterError(f"[output] scans holds {unknown[0]}, not a scan of [cell] model "
                             f"'{model}'", f"give scans among {names}")
    late = [t for t in output.times_s if t > end_s]
    if late:
        raise ParameterError(f"[output] times_s holds {late[0]:g} s, after the end of the "
                             f"protocol of [cell] model '{model}' ({end_s:g} s)",
                             f"give times between 0 and {end_s:g} s")


def case_from_dict(d: dict, base: str | os.PathLike = ".", path: Path | None = None,
                   check_mesh: bool = True) -> Case:
    """Validate a case given as a dict (module notes), reading its mesh, material and cell
    model files.

    Parameters
    ----------
    d : dict
        The sections, e.g. a parsed case file.
    base : str or os.PathLike
        The folder relative paths are taken from.
    path : Path, optional
        The case file, recorded in the case.
    check_mesh : bool
        Require the mesh to exist (False: a mesh that a pipeline will make later).

    Returns
    -------
    Case
        The checked case.

    Raises
    ------
    ParameterError
        An unknown section or key, a value of the wrong kind, not finite or outside its
        bounds, named ``[section] key``.
    InputNotFoundError
        A missing mesh, material or cell model.
    """
    from anodetwin.simulate.materials import default_materials, load_material
    from anodetwin.simulate.mechanics import Boundary
    from anodetwin.simulate.protocol import load_protocol

    sections = {"mesh", "materials", "cell", "lithiation", "boundary", "solver", "output"}
    unknown = sorted(set(d) - sections)
    if unknown:
        raise ParameterError(f"case has unknown sections {unknown}",
                             f"use only {sorted(sections)}")
    mesh = d.get("mesh", {}).get("path")
    if not isinstance(mesh, str):
        raise ParameterError("case lacks [mesh] path", "add [mesh] path = \"<mesh folder>\"")
    mesh_path = Path(base) / mesh
    if check_mesh and not (mesh_path / "mesh.xdmf").is_file() and not mesh_path.is_file():
        raise InputNotFoundError(mesh_path, "mesh", "give the folder written by "
                                 "'anodetwin mesh' in [mesh] path")
    materials = default_materials()
    for name, model in d.get("materials", {}).items():
        if name not in PHASE:
            raise ParameterError(f"[materials] unknown phase '{name}'",
                                 f"use phase names {sorted(PHASE)}")
        if not isinstance(model, str):
            raise ParameterError(f"[materials] {name} = {model!r}",
                                 "give a model name of models/ or a TOML path")
        p = Path(base) / model if model.endswith(".toml") else model
        materials[PHASE[name]] = load_material(p)
    model = table_values(d.get("cell", {}), {"model": str}, "cell").get("model",
                                                                       "reference_cell")
    protocol = load_protocol(Path(base) / model if str(model).endswith(".toml") else model)
    end_s = _check_protocol(protocol, str(model))
    solver = build_dataclass(Solver, d.get("solver", {}), "solver")
    if not solver.compaction:  # the matrix as a plain compressible neo-Hookean solid
        from dataclasses import replace

        materials = {c: replace(m, compaction_modulus_mpa=0.0) for c, m in materials.items()}
    boundary = build_dataclass(Boundary, d.get("boundary", {}), "boundary")
    _check_boundary(boundary)
    output = build_dataclass(Output, d.get("output", {}), "output")
    _check_times(output, end_s, str(model), protocol)
    return Case(path=path or Path(base) / "case.toml", mesh=mesh_path, materials=materials,
                cell=protocol,
                lithiation=build_dataclass(Lithiation, d.get("lithiation", {}), "lithiation"),
                boundary=boundary, solver=solver, output=output, raw=d)


def load_case(path: str | os.PathLike) -> Case:
    """Read and validate a case file (module notes).

    Parameters
    ----------
    path : str or os.PathLike
        The TOML case file; relative paths in it are taken from its folder.

    Returns
    -------
    Case
        As :func:`case_from_dict`.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        A missing case file or model file, invalid TOML.
    ParameterError
        A bad value (:func:`case_from_dict`).
    """
    p = Path(path)
    d = read_toml(p, "case file", "give a TOML case file (see the README)")
    with in_file(p):
        return case_from_dict(d, p.parent, p)


# --------------------------------------------------------------------------------------------
# the case's fingerprint (resume checks)

def _plain(v: Any) -> Any:
    """A JSON value that compares exactly (non-finite floats as text)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _flatten(prefix: str, obj: Any, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], dict):
        for i, v in enumerate(obj):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out[prefix] = _plain(obj)


def _mesh_hash(mesh: Path) -> str:
    """Content hash of the mesh files (``mesh.xdmf`` and its ``mesh.h5``), not their path."""
    from anodetwin.io import content_hash

    xdmf = mesh / "mesh.xdmf" if mesh.is_dir() else mesh
    files = [f for f in (xdmf, xdmf.with_suffix(".h5")) if f.is_file()]
    return ",".join(content_hash(f) for f in files)


def case_values(case: Case) -> dict[str, Any]:
    """The fingerprint of a case, value by value.

    Parameters
    ----------
    case : Case
        A validated case.

    Returns
    -------
    dict
        ``section.key -> value``: every validated value, the materials and the cell
        protocol as read from their model files (``materials.<phase>.<field>``,
        ``cell.<field>``), and ``mesh`` (the content hash of the mesh files); JSON values
        (non-finite floats as text).
    """
    from anodetwin.phases import PHASE

    names = {code: name for name, code in PHASE.items()}
    tables: dict[str, Any] = {"mesh": _mesh_hash(case.mesh)}
    for section in ("lithiation", "boundary", "solver", "output"):
        tables[section] = asdict(getattr(case, section))
    tables["materials"] = {names.get(c, str(c)): {k: v for k, v in asdict(m).items()
                                                  if k != "sources"}
                           for c, m in sorted(case.materials.items())}
    tables["cell"] = {k: v for k, v in asdict(case.cell).items() if k != "sources"}
    out: dict[str, Any] = {}
    _flatten("", tables, out)
    return out


def case_hash(values: dict[str, Any]) -> str:
    """The hash of a case's fingerprint.

    Parameters
    ----------
    values : dict
        :func:`case_values` of the case.

    Returns
    -------
    str
        BLAKE2b (16 bytes) of the sorted JSON, as ``"blake2b:<hex>"``.
    """
    text = json.dumps(values, sort_keys=True, default=str)
    return "blake2b:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def case_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple]:
    """What changed between two fingerprints.

    Parameters
    ----------
    old, new : dict
        :func:`case_values` of two cases.

    Returns
    -------
    dict
        ``key -> (old value, new value)`` for every key whose value differs, sorted by key
        (None where a case lacks the key).
    """
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)}


def format_changes(changes: dict[str, tuple], limit: int = 6) -> str:
    """Changes as text for messages: ``[boundary] p0_mpa 0.3 -> 0.5, ...``.

    Parameters
    ----------
    changes : dict
        As :func:`case_changes` returns.
    limit : int
        Most keys named; the rest are counted (``and 3 more``).

    Returns
    -------
    str
        One line.
    """
    def key(k: str) -> str:
        section, _, rest = k.partition(".")
        return f"[{section}] {rest}" if rest else f"[{section}]"

    def val(v: Any) -> str:
        return "(none)" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    items = [f"{key(k)} {val(a)} -> {val(b)}" for k, (a, b) in changes.items()]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more

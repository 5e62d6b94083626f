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
    linear = "iterative"        # iterative (GMRES + GAMG) | direct (MUMPS)
    dtheta_max = 0.01           # largest change of mean theta per step (adaptive steps)
    dt_max_s = 600.0
    dt_min_s = 0.5
    plasticity = true           # plastic flow of the materials that define it (LixSi)
    plastic_tol = 1e-5          # largest change of Fp^-1 when a step's flow has settled
    compaction = true           # compaction stiffening of the materials that define it

    [output]
    times_s = []                # extra output times besides the scans
    dvc_node_spacing_um = 3.5   # displacement sampled on a DVC grid (0: none)
    dvc_voxel_size_um = 0.0     # voxel of that grid (0: the mesh's voxel)
    dvc_origin_um = []          # centre of voxel 0, (z, y, x) (empty: the mesh's)
    stress_threshold_mpa = 1000.0  # heterogeneity.json: Si volume share above it (MPa)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.phases import PHASE

__all__ = ["Case", "Lithiation", "Solver", "Output", "load_case", "case_from_dict"]


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


@dataclass(frozen=True)
class Solver:
    """Time stepping and linear solver."""

    linear: str = "iterative"
    dtheta_max: float = 0.01
    dt_max_s: float = 600.0
    dt_min_s: float = 0.5
    rtol: float = 1e-9
    plasticity: bool = True   # plastic flow of the materials that define it (LixSi)
    plastic_tol: float = 1e-5  # settled when Fp^-1 changes less (~0.1% of the flow stress)
    compaction: bool = True   # compaction stiffening of CBD and pores (models' limits)

    def __post_init__(self) -> None:
        if self.linear not in ("iterative", "direct"):
            raise ParameterError(f"[solver] linear = '{self.linear}'",
                                 "use 'iterative' or 'direct'")
        _positive(self, "solver", ("dtheta_max", "dt_max_s", "dt_min_s", "rtol",
                                   "plastic_tol"))
        if self.dt_min_s > self.dt_max_s:
            raise ParameterError("[solver] dt_min_s > dt_max_s", "give dt_min_s <= dt_max_s")


@dataclass(frozen=True)
class Output:
    """What is written besides the scans."""

    times_s: tuple = ()
    dvc_node_spacing_um: float = 3.5
    dvc_voxel_size_um: float = 0.0
    dvc_origin_um: tuple = ()
    stress_threshold_mpa: float = 1000.0

    def __post_init__(self) -> None:
        if any(t < 0 for t in self.times_s):
            raise ParameterError("[output] times_s holds negative times", "give times >= 0 s")
        if self.dvc_node_spacing_um < 0 or self.dvc_voxel_size_um < 0:
            raise ParameterError("[output] DVC grid spacing / voxel size is negative",
                                 "give values >= 0 (0: no grid / the mesh's voxel)")
        if not self.stress_threshold_mpa > 0:
            raise ParameterError(f"[output] stress_threshold_mpa = {self.stress_threshold_mpa}",
                                 "give a positive stress in MPa")
        if len(self.dvc_origin_um) not in (0, 3):
            raise ParameterError("[output] dvc_origin_um needs 3 values (z, y, x)",
                                 "give [z, y, x] in um or leave it empty")


@dataclass(frozen=True)
class Case:
    """A validated simulation case (module notes)."""

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
    for n in names:
        v = getattr(obj, n)
        if not (isinstance(v, (int, float)) and v > 0):
            raise ParameterError(f"[{section}] {n} = {v!r} is not positive", f"give {n} > 0")


def _build(cls, section: str, d: dict):
    """A dataclass from a TOML table, rejecting unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ParameterError(f"[{section}] has unknown keys {unknown}",
                             f"use only {sorted(known)}")
    kw = {}
    for k, v in d.items():
        default = known[k].default
        if isinstance(default, tuple):
            if not isinstance(v, list):
                raise ParameterError(f"[{section}] {k} must be a list", f"give {k} = [ ... ]")
            v = tuple(float(x) for x in v)
        elif isinstance(default, bool) or isinstance(default, str):
            if not isinstance(v, type(default)):
                raise ParameterError(f"[{section}] {k} = {v!r} is not a "
                                     f"{type(default).__name__}", f"give {k} as in the docs")
        elif isinstance(default, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParameterError(f"[{section}] {k} = {v!r} is not a number",
                                     f"give {k} as a number")
            v = type(default)(v)
        kw[k] = v
    return cls(**kw)


def case_from_dict(d: dict, base: str | os.PathLike = ".", path: Path | None = None) -> Case:
    """Validate a case given as a dict (the TOML's content); ``base`` resolves relative
    paths."""
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
    if not (mesh_path / "mesh.xdmf").is_file() and not mesh_path.is_file():
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
    cell = d.get("cell", {})
    unknown = sorted(set(cell) - {"model"})
    if unknown:
        raise ParameterError(f"[cell] has unknown keys {unknown}", "use only 'model'")
    model = cell.get("model", "reference_cell")
    protocol = load_protocol(Path(base) / model if str(model).endswith(".toml") else model)
    solver = _build(Solver, "solver", d.get("solver", {}))
    if not solver.compaction:  # the matrix as a plain compressible neo-Hookean solid
        from dataclasses import replace

        materials = {c: replace(m, compaction_mpa=0.0) for c, m in materials.items()}
    return Case(path=path or Path(base) / "case.toml", mesh=mesh_path, materials=materials,
                cell=protocol,
                lithiation=_build(Lithiation, "lithiation", d.get("lithiation", {})),
                boundary=_build(Boundary, "boundary", d.get("boundary", {})),
                solver=solver,
                output=_build(Output, "output", d.get("output", {})), raw=d)


def load_case(path: str | os.PathLike) -> Case:
    """Read and validate a case file (module notes)."""
    from anodetwin.io import read_toml

    p = Path(path)
    d = read_toml(p, "case file", "give a TOML case file (see the README)")
    return case_from_dict(d, p.parent, p)

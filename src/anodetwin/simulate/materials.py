"""Material parameter sets (``models/*.toml``): every parameter with value, unit and source.

A material applies to phase codes (:mod:`anodetwin.phases`) and gives the Young's modulus
at theta = 0 and theta = 1 (linear in between: lithiated Si softens), the Poisson ratio and
the swelling coefficient beta (volume change at theta = 1). Optionally it flows plastically
(:mod:`anodetwin.simulate.plasticity`): flow stress at theta = 0 and 1 (GPa), reference
plastic strain rate (1/s), rate exponent, and the theta below which it stays elastic.
A porous material (the carbon-binder matrix, pores) may stiffen as it compacts: a
compaction modulus (key ``compaction_modulus``, GPa, the bulk stiffness it adds at J = 1;
``compaction_modulus_mpa`` from here to the solver) and the compaction limit (key and name
``compaction_limit``: the volume ratio, its solid fraction, at which its pores are closed;
:func:`anodetwin.simulate.constitutive.volumetric_energy`).
Units in the files: GPa for moduli; inside the solver lengths are um and stresses MPa
(GPa x 1000), so forces are uN.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from anodetwin.errors import InputNotFoundError, ParameterError

__all__ = ["Material", "load_material", "MODELS_DIR", "default_materials"]

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"
_KEYS = {"youngs_modulus_theta0": "GPa", "youngs_modulus_theta1": "GPa",
         "poisson_ratio": "1", "swelling_beta": "1"}
# optional plastic flow and compaction: key -> (unit, Material field, factor to solver units)
_OPTIONAL_KEYS = {"flow_stress_theta0": ("GPa", "flow_stress0_mpa", 1e3),
              "flow_stress_theta1": ("GPa", "flow_stress1_mpa", 1e3),
              "flow_reference_rate": ("1/s", "flow_rate_per_s", 1.0),
              "flow_rate_exponent": ("1", "flow_exponent", 1.0),
              "flow_theta_min": ("1", "flow_theta_min", 1.0),
              # optional compaction of a porous material
              "compaction_modulus": ("GPa", "compaction_modulus_mpa", 1e3),
              "compaction_limit": ("1", "compaction_limit", 1.0)}


@dataclass(frozen=True)
class Material:
    """One material: moduli in MPa (converted from the file's GPa).

    Attributes
    ----------
    name : str
    phases : tuple of int
        Phase codes it applies to.
    E0_mpa, E1_mpa : float
        Young's modulus at theta = 0 and 1 (MPa).
    nu : float
        Poisson ratio.
    beta : float
        Swelling coefficient (volume ratio 1 + beta at theta = 1).
    sources : dict
        File key -> source of the value.
    flow_stress0_mpa, flow_stress1_mpa : float
        Flow stress at theta = 0 and 1 (MPa); ``inf``: elastic.
    flow_rate_per_s, flow_exponent, flow_theta_min : float
        Reference plastic strain rate (1/s), rate exponent, theta below which it stays
        elastic.
    compaction_modulus_mpa : float
        Bulk stiffness compaction adds at J = 1 (MPa); 0: no compaction.
    compaction_limit : float
        Volume ratio (solid fraction) at which the pores are closed, in [0, 1).
    """

    name: str
    phases: tuple[int, ...]
    E0_mpa: float
    E1_mpa: float
    nu: float
    beta: float
    sources: dict
    flow_stress0_mpa: float = math.inf
    flow_stress1_mpa: float = math.inf
    flow_rate_per_s: float = 1.0
    flow_exponent: float = 4.0
    flow_theta_min: float = 0.0
    compaction_modulus_mpa: float = 0.0
    compaction_limit: float = 0.0

    @property
    def plastic(self) -> bool:
        """Whether the material flows (a finite flow stress)."""
        return math.isfinite(self.flow_stress0_mpa) or math.isfinite(self.flow_stress1_mpa)

    @property
    def effective_compaction_limit(self) -> float:
        """The compaction limit that acts in the law: ``compaction_limit`` with a
        compaction modulus, 0 without."""
        return self.compaction_limit if self.compaction_modulus_mpa > 0 else 0.0

    @property
    def lock_volume_ratio(self) -> float:
        """Former name of :attr:`effective_compaction_limit`."""
        return self.effective_compaction_limit

    def __post_init__(self) -> None:
        if not (self.E0_mpa > 0 and self.E1_mpa > 0):
            raise ParameterError(f"material '{self.name}': Young's modulus "
                                 f"{self.E0_mpa / 1e3:g} / {self.E1_mpa / 1e3:g} GPa is not "
                                 "positive", "give moduli > 0 GPa")
        if not -1.0 < self.nu < 0.5:
            raise ParameterError(f"material '{self.name}': Poisson ratio {self.nu} is outside "
                                 "(-1, 0.5)", "give 0 <= nu < 0.5 (compressible)")
        if self.beta < 0:
            raise ParameterError(f"material '{self.name}': swelling beta {self.beta} < 0",
                                 "give beta >= 0")
        if self.plastic and not (self.flow_stress0_mpa > 0 and self.flow_stress1_mpa > 0
                                 and self.flow_rate_per_s > 0 and self.flow_exponent > 0):
            raise ParameterError(f"material '{self.name}': plastic flow parameters must be "
                                 "positive", "give both flow stresses, the reference rate "
                                 "and the exponent > 0")
        if not (self.compaction_modulus_mpa >= 0 and 0 <= self.compaction_limit < 1):
            raise ParameterError(f"material '{self.name}': compaction modulus "
                                 f"{self.compaction_modulus_mpa / 1e3:g} GPa, limit "
                                 f"{self.compaction_limit:g}", "give a modulus >= 0 GPa and "
                                 "a limit (solid volume fraction) in [0, 1)")


def read_model_toml(name_or_path: str | os.PathLike, what: str) -> tuple[Path, dict]:
    """Find a model file and read it.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A shipped model name (``models/<name>.toml``) or the path of a ``.toml`` file.
    what : str
        Kind of model (e.g. ``"material"``), named in the error messages.

    Returns
    -------
    tuple of (Path, dict)
        The file and its parsed content.

    Raises
    ------
    InputNotFoundError
        No such file; the message lists the shipped models.
    CorruptFileError
        The file is not valid TOML.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = MODELS_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        known = sorted(q.stem for q in MODELS_DIR.glob("*.toml"))
        raise InputNotFoundError(p, f"{what} '{name_or_path}'",
                                 f"use one of {', '.join(known)} or a TOML path")
    from anodetwin.io import read_toml

    return p, read_toml(p, f"{what} file")


def model_value(d: dict, key: str, unit: str, path: Path, what: str):
    """The ``value`` of table ``[key]`` of a model file, checked to be given in ``unit``.

    Parameters
    ----------
    d : dict
        Parsed model file.
    key : str
        Table name, e.g. ``"poisson_ratio"``.
    unit : str
        Required unit (e.g. ``"GPa"``, ``"1"``); an entry without ``unit`` is taken as
        given in it.
    path : Path
        The model file, named in the errors.
    what : str
        Kind of model, named in the errors.

    Returns
    -------
    object
        The entry's ``value`` as read (a number for the shipped models).

    Raises
    ------
    ParameterError
        The table or its ``value`` is missing, or its unit is another.
    """
    entry = d.get(key)
    if not isinstance(entry, dict) or "value" not in entry:
        raise ParameterError(f"{what} file '{path}' lacks [{key}] value",
                             f"add [{key}] with value, unit = \"{unit}\" and source")
    if entry.get("unit", unit) != unit:
        raise ParameterError(f"{what} file '{path}': [{key}] unit '{entry.get('unit')}'",
                             f"give it in {unit}")
    return entry["value"]


def load_material(name_or_path: str | os.PathLike) -> Material:
    """Read ``models/<name>.toml`` (or a path) into a :class:`Material`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        Shipped material name (e.g. ``"lixsi"``) or a ``.toml`` path.

    Returns
    -------
    Material
        Moduli converted from GPa to MPa, with the source of each value.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        As for :func:`read_model_toml`.
    ParameterError
        A required value is missing, in the wrong unit or non-physical.
    """
    p, d = read_model_toml(name_or_path, "material")
    vals, sources = {}, {}
    for key, unit in _KEYS.items():
        vals[key] = float(model_value(d, key, unit, p, "material"))
        sources[key] = d[key].get("source", "")
    flow = {}
    for key, (unit, name, factor) in _OPTIONAL_KEYS.items():
        if key in d:
            flow[name] = float(model_value(d, key, unit, p, "material")) * factor
            sources[key] = d[key].get("source", "")
    return Material(str(d.get("name", p.stem)), tuple(int(c) for c in d.get("phases", ())),
                    vals["youngs_modulus_theta0"] * 1e3, vals["youngs_modulus_theta1"] * 1e3,
                    vals["poisson_ratio"], vals["swelling_beta"], sources, **flow)


def default_materials() -> dict[int, Material]:
    """Phase code -> material from the shipped models (pore, CBD matrix, LixSi, copper,
    separator)."""
    out: dict[int, Material] = {}
    for name in ("pore", "matrix", "lixsi", "copper", "separator"):
        m = load_material(name)
        for c in m.phases:
            out[c] = m
    return out

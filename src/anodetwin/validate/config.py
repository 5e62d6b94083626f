"""Validation settings (``validate.toml``): frames, steps, regions and the tolerances of the
pass/fail table, all optional::

    [frame]
    dvc_voxel_size_um = 0.0       # voxel of the DVC reference tomogram (0: from the files)
    dvc_origin_um = [0, 0, 0]     # centre of its voxel 0 in the simulation frame (z, y, x)
    offset_um = [0, 0, 0]         # a known shift of the DVC frame (z, y, x), added
    register = "none"             # "collector": remove the collector's rigid motion per step

    [steps]                       # DVC step k -> simulation output (default: k -> "T<k>")
    1 = "T1"

    [nodes]
    repaired = "exclude"          # DVC nodes repaired from their neighbours: exclude | include
    window_average = true         # average the simulation over each DVC window (like DVC)

    [regions]
    electrode_z_um = []           # [bottom, top] of the electrode (default: the simulation's)

    [microstructure]              # optional: particle-centred VOIs and 3D views
    labels = ""                   # labels file, or a phase volume (series.h5:/steps/T0/phases)
    particles = ""                # particle ids (with a phase volume), same grid
    voi_scale = 1.5               # VOI radius / the particle's equivalent-sphere radius

    [tolerances]                  # checked per step on the electrode (and its halves)
    min_pearson_volumetric = 0.9  # correlation of the nodal (cell) volumetric strain
    max_mean_difference = 0.01    # |mean sim - mean DVC| of J-1 and e_zz (the DVC noise)
    max_wasserstein_volumetric = 0.02
    max_asymmetry_difference = 0.02   # (separator - collector half mean J-1), sim vs DVC
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anodetwin.errors import ParameterError
from anodetwin.io.tomlfile import (build_dataclass, field_types, in_file, read_toml,
                                   table_values)

__all__ = ["ValidateConfig", "Tolerances", "load_config", "config_from_dict", "SECTIONS"]


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail limits (module notes)."""

    min_pearson_volumetric: float = 0.9
    max_mean_difference: float = 0.01
    max_wasserstein_volumetric: float = 0.02
    max_asymmetry_difference: float = 0.02


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of one validation (module notes)."""

    dvc_voxel_size_um: float = 0.0
    dvc_origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_um: tuple[float, float, float] = (0.0, 0.0, 0.0)
    register: str = "none"
    steps: dict[int, str] = field(default_factory=dict)  # DVC step -> simulation output
    repaired: str = "exclude"
    window_average: bool = True
    electrode_z_um: tuple[float, ...] = ()
    labels: str = ""
    particles: str = ""
    voi_scale: float = 1.5
    tolerances: Tolerances = field(default_factory=Tolerances)
    raw: dict = field(default_factory=dict)


#: TOML section -> the :class:`ValidateConfig` fields it holds (``steps``: its own table).
SECTIONS = {"frame": ("dvc_voxel_size_um", "dvc_origin_um", "offset_um", "register"),
            "nodes": ("repaired", "window_average"), "regions": ("electrode_z_um",),
            "microstructure": ("labels", "particles", "voi_scale")}


def _steps(table: object) -> dict[int, str]:
    if not isinstance(table, dict):
        raise ParameterError("[steps] is not a table", "write [steps] with keys")
    steps = {}
    for k, v in table.items():
        if not (str(k).isdigit() and int(k) > 0 and isinstance(v, str)):
            raise ParameterError(f"[steps] {k} = {v!r}",
                                 'map a DVC step number to an output name, e.g. 1 = "T1"')
        steps[int(k)] = v
    return steps


def _check(c: ValidateConfig) -> None:
    """Bounds and choices of the settings."""
    if c.dvc_voxel_size_um < 0:
        raise ParameterError(f"[frame] dvc_voxel_size_um = {c.dvc_voxel_size_um!r}",
                             "give the DVC voxel size in um (> 0) or 0 to read it")
    if c.register not in ("none", "collector"):
        raise ParameterError(f"[frame] register = {c.register!r}", "use 'none' or 'collector'")
    if c.repaired not in ("exclude", "include"):
        raise ParameterError(f"[nodes] repaired = {c.repaired!r}", "use 'exclude' or 'include'")
    ez = c.electrode_z_um
    if ez and (len(ez) != 2 or not ez[0] < ez[1]):
        raise ParameterError(f"[regions] electrode_z_um = {list(ez)}",
                             "give [bottom, top] with bottom < top")
    if c.voi_scale <= 0:
        raise ParameterError(f"[microstructure] voi_scale = {c.voi_scale!r}",
                             "give a number > 0")
    for k, v in asdict(c.tolerances).items():
        if v < 0:
            raise ParameterError(f"[tolerances] {k} = {v!r}", "give a number >= 0")


def config_from_dict(d: dict) -> ValidateConfig:
    """Check and build the validation settings.

    Parameters
    ----------
    d : dict
        The sections (module notes), e.g. a parsed ``validate.toml``; every key is optional.

    Returns
    -------
    ValidateConfig
        The settings; ``raw`` keeps ``d``.

    Raises
    ------
    ParameterError
        An unknown section or key, a value of the wrong kind or outside its bounds, named
        ``[section] key``.
    """
    known = [*SECTIONS, "steps", "tolerances"]
    extra = sorted(set(d) - set(known))
    if extra:
        raise ParameterError(f"unknown sections {extra} in the validation settings",
                             f"use {sorted(known)}")
    types = field_types(ValidateConfig)
    kw = {}
    for sec, names in SECTIONS.items():
        table = d.get(sec, {})
        if not isinstance(table, dict):
            raise ParameterError(f"[{sec}] is not a table", f"write [{sec}] with keys")
        kw.update(table_values(table, {n: types[n] for n in names}, sec))
    cfg = ValidateConfig(**kw, steps=_steps(d.get("steps", {})), raw=d,
                         tolerances=build_dataclass(Tolerances, d.get("tolerances", {}),
                                                    "tolerances"))
    _check(cfg)
    return cfg


def load_config(path: str | os.PathLike | None) -> ValidateConfig:
    """Read ``validate.toml``; relative microstructure paths are taken from its folder.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The settings file; None: the defaults.

    Returns
    -------
    ValidateConfig
        The checked settings.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        A missing file, invalid TOML.
    ParameterError
        A setting of the wrong kind or out of its bounds (:func:`config_from_dict`).
    """
    if path is None:
        return config_from_dict({})
    d = read_toml(path, "validation settings", "give a validate.toml or leave it out")
    ms = d.get("microstructure")
    if isinstance(ms, dict):  # relative paths: from the settings file's folder
        for key in ("labels", "particles"):
            if isinstance(ms.get(key), str) and ms[key] and not Path(ms[key]).is_absolute():
                ms[key] = str(Path(path).parent / ms[key])
    with in_file(path):
        return config_from_dict(d)

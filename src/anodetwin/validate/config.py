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
from dataclasses import dataclass, field, fields

from anodetwin.errors import ParameterError

__all__ = ["ValidateConfig", "Tolerances", "load_config", "config_from_dict"]


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
    dvc_origin_um: tuple = (0.0, 0.0, 0.0)
    offset_um: tuple = (0.0, 0.0, 0.0)
    register: str = "none"
    steps: dict = field(default_factory=dict)   # DVC step (int) -> simulation output name
    repaired: str = "exclude"
    window_average: bool = True
    electrode_z_um: tuple = ()
    labels: str = ""
    particles: str = ""
    voi_scale: float = 1.5
    tolerances: Tolerances = field(default_factory=Tolerances)
    raw: dict = field(default_factory=dict)


def _vector(value, name: str, n: int = 3) -> tuple:
    if not (isinstance(value, (list, tuple)) and len(value) == n
            and all(isinstance(v, (int, float)) for v in value)):
        raise ParameterError(f"{name} = {value!r}", f"give {n} numbers")
    return tuple(float(v) for v in value)


def config_from_dict(d: dict) -> ValidateConfig:
    """Check and build the settings; unknown sections or keys are errors."""
    known = {"frame": {"dvc_voxel_size_um", "dvc_origin_um", "offset_um", "register"},
             "steps": None,
             "nodes": {"repaired", "window_average"}, "regions": {"electrode_z_um"},
             "microstructure": {"labels", "particles", "voi_scale"},
             "tolerances": {f.name for f in fields(Tolerances)}}
    extra = sorted(set(d) - set(known))
    if extra:
        raise ParameterError(f"unknown sections {extra} in the validation settings",
                             f"use {sorted(known)}")
    for sec, keys in known.items():
        if keys is None or sec not in d:
            continue
        if not isinstance(d[sec], dict):
            raise ParameterError(f"[{sec}] is not a table", f"write [{sec}] with keys")
        bad = sorted(set(d[sec]) - keys)
        if bad:
            raise ParameterError(f"[{sec}] unknown keys {bad}", f"use {sorted(keys)}")
    fr = d.get("frame", {})
    vs = fr.get("dvc_voxel_size_um", 0.0)
    if not isinstance(vs, (int, float)) or vs < 0:
        raise ParameterError(f"[frame] dvc_voxel_size_um = {vs!r}",
                             "give the DVC voxel size in um (> 0) or 0 to read it")
    reg = fr.get("register", "none")
    if reg not in ("none", "collector"):
        raise ParameterError(f"[frame] register = {reg!r}", "use 'none' or 'collector'")
    steps = {}
    for k, v in d.get("steps", {}).items():
        if not (str(k).isdigit() and int(k) > 0 and isinstance(v, str)):
            raise ParameterError(f"[steps] {k} = {v!r}",
                                 'map a DVC step number to an output name, e.g. 1 = "T1"')
        steps[int(k)] = v
    rep = d.get("nodes", {}).get("repaired", "exclude")
    if rep not in ("exclude", "include"):
        raise ParameterError(f"[nodes] repaired = {rep!r}", "use 'exclude' or 'include'")
    wa = d.get("nodes", {}).get("window_average", True)
    if not isinstance(wa, bool):
        raise ParameterError(f"[nodes] window_average = {wa!r}", "use true or false")
    ez = d.get("regions", {}).get("electrode_z_um", [])
    ez = _vector(ez, "[regions] electrode_z_um", 2) if ez else ()
    if ez and not ez[0] < ez[1]:
        raise ParameterError(f"[regions] electrode_z_um = {list(ez)}",
                             "give [bottom, top] with bottom < top")
    ms = d.get("microstructure", {})
    for key in ("labels", "particles"):
        if not isinstance(ms.get(key, ""), str):
            raise ParameterError(f"[microstructure] {key} = {ms[key]!r}", "give a path")
    scale = ms.get("voi_scale", 1.5)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ParameterError(f"[microstructure] voi_scale = {scale!r}", "give a number > 0")
    tol = {}
    for k, v in d.get("tolerances", {}).items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ParameterError(f"[tolerances] {k} = {v!r}", "give a number >= 0")
        tol[k] = float(v)
    return ValidateConfig(
        dvc_voxel_size_um=float(vs),
        dvc_origin_um=_vector(fr.get("dvc_origin_um", [0, 0, 0]), "[frame] dvc_origin_um"),
        offset_um=_vector(fr.get("offset_um", [0, 0, 0]), "[frame] offset_um"),
        register=reg,
        steps=steps, repaired=rep, window_average=wa, electrode_z_um=ez,
        labels=ms.get("labels", ""), particles=ms.get("particles", ""),
        voi_scale=float(scale),
        tolerances=Tolerances(**tol), raw=d)


def load_config(path: str | os.PathLike | None) -> ValidateConfig:
    """Read ``validate.toml`` (None: the defaults)."""
    if path is None:
        return config_from_dict({})
    from pathlib import Path

    from anodetwin.io import read_toml

    d = read_toml(path, "validation settings", "give a validate.toml or leave it out")
    ms = d.get("microstructure")
    if isinstance(ms, dict):  # relative paths: from the settings file's folder
        for key in ("labels", "particles"):
            if isinstance(ms.get(key), str) and ms[key] and not Path(ms[key]).is_absolute():
                ms[key] = str(Path(path).parent / ms[key])
    return config_from_dict(d)

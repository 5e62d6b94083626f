"""Phantom configuration: dataclasses with defaults from the reference experiment, TOML
loading and validation (every check runs before any voxel is made).

A configuration file mirrors the sections below; every key is optional::

    seed = 1

    [geometry]
    voxel_size_um = 0.2        # isotropic voxel size
    lateral_um = 20.0          # y and x extent
    cu_thickness_um = 2.0      # copper foil visible at z = 0
    separator_thickness_um = 6.0
    headroom_um = "auto"       # room above the separator for the swelling electrode

    [composition]              # anodetwin.phantom.composition.Recipe
    areal_loading_mg_cm2 = 3.0
    thickness_um = 21.0
    weight_fractions = {si = 0.89, paa_binder = 0.09, carbon_black = 0.018, swcnt = 0.002}

    [particles]
    median_diameter_um = 5.0
    shape = "irregular"        # sphere | ellipsoid | irregular
    cracked_fraction = 0.1     # of the particles near the separator-side surface

    [render]
    resolution_fwhm_um = 0.3
    snr = 8.0

    [series]
    soc = [0.0, 0.12, 0.25, 0.5, 0.62, 0.74, 0.85]   # or protocol = [...]
    reaction_profile = "separator"                   # uniform | separator
    modes = {network = 0.9, core-shell = 0.1}        # lithiation mode mix
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.phantom.composition import Recipe, electrode_composition

__all__ = ["Geometry", "Particles", "Separator", "Render", "Series", "PhantomConfig",
           "load_config", "config_from_dict", "soc_from_protocol", "MAX_SI_FRACTION",
           "LITHIATION_MODES"]

#: Lithiation modes: a sharp front moving inward, or pathways along planar defect bands.
LITHIATION_MODES = ("core-shell", "network")

#: Highest Si volume fraction the packing reaches (overlapping, calendered particles).
MAX_SI_FRACTION = 0.68


@dataclass(frozen=True)
class Geometry:
    """Grid and layers (um)."""

    voxel_size_um: float = 0.2
    lateral_um: float = 20.0
    cu_thickness_um: float = 2.0
    separator_thickness_um: float = 6.0
    headroom_um: float | str = "auto"


@dataclass(frozen=True)
class Particles:
    """Si particle population.

    ``median_diameter_um`` and ``sigma_ln`` define a log-normal distribution of
    volume-equivalent diameters, truncated to [min, max]. ``max_overlap`` is how deep (as a
    fraction of the radius) neighbours may interpenetrate: calendered contacts.
    """

    median_diameter_um: float = 5.0
    sigma_ln: float = 0.35
    min_diameter_um: float = 1.5
    max_diameter_um: float = 12.0
    shape: str = "irregular"
    aspect_spread: float = 0.15
    roughness: float = 0.12
    max_overlap: float = 0.25
    cracked_fraction: float = 0.1
    crack_zone_um: float = 6.0
    crack_width_um: float = 0.3


@dataclass(frozen=True)
class Separator:
    """Porous polymer separator above the anode."""

    porosity: float = 0.45
    fibre_length_um: float = 2.0
    fibre_width_um: float = 0.4


@dataclass(frozen=True)
class Render:
    """Tomogram rendering (16-bit grey values mimicking phase-contrast holotomography)."""

    grey_pore: float = 12000.0
    grey_cbd: float = 15000.0
    grey_si: float = 30000.0
    grey_lithiated: float = 16500.0
    grey_copper: float = 50000.0
    grey_separator: float = 13500.0
    resolution_fwhm_um: float = 0.3
    snr: float = 8.0
    fringe: float = 0.3
    cu_streak_amplitude: float = 3000.0
    cu_streak_decay_um: float = 2.0


@dataclass(frozen=True)
class Series:
    """In situ series: states of charge, lithiation and deformation."""

    soc: tuple = (0.0, 0.12, 0.25, 0.5, 0.62, 0.74, 0.85)
    protocol: tuple = ()
    reaction_profile: str = "separator"
    penetration_depth_um: float = 10.0
    modes: dict = field(default_factory=lambda: {"network": 0.9, "core-shell": 0.1})
    defect_bands: int = 3
    beta: float = 2.8
    pore_absorption: float = 0.1
    displacement_file: str | None = None
    double_scan: bool = True


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that defines a phantom series; same config + seed => same output."""

    seed: int = 0
    geometry: Geometry = field(default_factory=Geometry)
    composition: Recipe = field(default_factory=Recipe)
    particles: Particles = field(default_factory=Particles)
    separator: Separator = field(default_factory=Separator)
    render: Render = field(default_factory=Render)
    series: Series = field(default_factory=Series)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def socs(self) -> list[float]:
        """State of charge of every step T0..Tn."""
        if self.series.protocol:
            return soc_from_protocol(list(self.series.protocol))
        return [float(s) for s in self.series.soc]


_SECTIONS = {"geometry": Geometry, "composition": Recipe, "particles": Particles,
             "separator": Separator, "render": Render, "series": Series}


def soc_from_protocol(segments: list[dict]) -> list[float]:
    """States of charge at the scans of a charge protocol (fraction of the cell capacity).

    Parameters
    ----------
    segments : list of dict
        Each ``{"kind": "cc"|"cv"|"rest", "minutes": t, "c_rate": c, "tau_min": tau,
        "cutoff_c_rate": 0.1, "scan": true}``. CC adds ``c * t / 60`` (negative c discharges);
        CV decays the current exponentially from ``c_rate`` with time constant ``tau_min``
        and stops at ``cutoff_c_rate`` or after ``minutes``; rest adds nothing. A scan is
        taken after each segment with ``scan = true``; the first scan (T0) is at SoC 0.

    Returns
    -------
    list of float
        SoC at T0 and at every scan, clipped to [0, 1].
    """
    soc, out = 0.0, [0.0]
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict):
            raise ParameterError(f"protocol segment {i} is not a table",
                                 'write {kind = "cc", c_rate = 0.33, minutes = 30, scan = true}')
        kind = seg.get("kind")
        t = float(seg.get("minutes", 0.0))
        c = float(seg.get("c_rate", 0.0))
        if t < 0:
            raise ParameterError(f"protocol segment {i} lasts {t} minutes", "give minutes >= 0")
        if kind == "cc":
            soc += c * t / 60.0
        elif kind == "cv":
            tau = float(seg.get("tau_min", 15.0))
            cut = float(seg.get("cutoff_c_rate", 0.1))
            if tau <= 0 or c <= 0:
                raise ParameterError(f"protocol CV segment {i} needs c_rate > 0 and tau_min > 0",
                                     "give the starting C-rate and the decay time in minutes")
            t_end = min(t, tau * math.log(c / cut)) if c > cut else 0.0
            soc += c * tau * (1 - math.exp(-t_end / tau)) / 60.0
        elif kind != "rest":
            raise ParameterError(f"protocol segment {i} has kind {kind!r}",
                                 "use 'cc', 'cv' or 'rest'")
        soc = min(1.0, max(0.0, soc))
        if seg.get("scan", True):
            out.append(soc)
    return out


def _build(cls: type, data: dict, section: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParameterError(f"config [{section}] has unknown key '{unknown[0]}'",
                             f"use one of: {', '.join(sorted(names))}")
    kw = {}
    for k, v in data.items():
        kw[k] = tuple(v) if isinstance(v, list) else v
    base = cls()
    for f in dataclasses.fields(cls):  # keep dict defaults merged (weight fractions etc.)
        if isinstance(getattr(base, f.name), dict) and isinstance(kw.get(f.name), dict):
            kw[f.name] = dict(kw[f.name])
    return cls(**kw)


def config_from_dict(data: dict, seed: int | None = None) -> PhantomConfig:
    """Build and validate a :class:`PhantomConfig` from a dict (e.g. parsed TOML)."""
    data = dict(data)
    unknown = sorted(set(data) - set(_SECTIONS) - {"seed"})
    if unknown:
        raise ParameterError(f"config has unknown section or key '{unknown[0]}'",
                             f"use seed and the sections {', '.join(_SECTIONS)}")
    kw: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sec = data.get(name, {})
        if not isinstance(sec, dict):
            raise ParameterError(f"config [{name}] is not a table", f"write it as [{name}]")
        kw[name] = _build(cls, sec, name)
    s = data.get("seed", 0) if seed is None else seed
    if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63:
        raise ParameterError(f"seed {s!r} is not an integer in 0 .. 2^63 - 1",
                             "give e.g. seed = 1")
    cfg = PhantomConfig(seed=s, **kw)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, seed: int | None = None) -> PhantomConfig:
    """Read a TOML phantom configuration (None: all defaults) and validate it."""
    if path is None:
        return config_from_dict({}, seed)
    from anodetwin.io import read_toml

    return config_from_dict(read_toml(path, "phantom config"), seed)


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} is {value!r}, not a number", "give a number") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ParameterError(f"{name} is {value}", "give a positive value"
                             if not allow_zero else "give a value >= 0")
    return v


def _fraction(value: Any, name: str, upper: float = 1.0) -> float:
    v = _positive(value, name, allow_zero=True)
    if v > upper:
        raise ParameterError(f"{name} is {value}", f"give a value in [0, {upper}]")
    return v


def validate(cfg: PhantomConfig) -> None:
    """Check a configuration; raises :class:`ParameterError` with a one-line message."""
    g, p, s, r, se = cfg.geometry, cfg.particles, cfg.series, cfg.render, cfg.separator
    for name in ("voxel_size_um", "lateral_um", "separator_thickness_um"):
        _positive(getattr(g, name), f"geometry.{name}")
    _positive(g.cu_thickness_um, "geometry.cu_thickness_um", allow_zero=True)
    if g.headroom_um != "auto":
        _positive(g.headroom_um, "geometry.headroom_um", allow_zero=True)
    if g.lateral_um / g.voxel_size_um < 8:
        raise ParameterError(f"geometry.lateral_um {g.lateral_um} is under 8 voxels",
                             "enlarge the patch or use smaller voxels")
    comp = electrode_composition(cfg.composition)
    if comp.si_fraction > MAX_SI_FRACTION:
        raise ParameterError(
            f"Si volume fraction {comp.si_fraction:.3f} is above the reachable packing density "
            f"{MAX_SI_FRACTION}", "lower the loading or raise the thickness")
    for name in ("median_diameter_um", "min_diameter_um", "max_diameter_um", "crack_zone_um",
                 "crack_width_um"):
        _positive(getattr(p, name), f"particles.{name}")
    _positive(p.sigma_ln, "particles.sigma_ln", allow_zero=True)
    if not p.min_diameter_um <= p.median_diameter_um <= p.max_diameter_um:
        raise ParameterError(
            f"particles.median_diameter_um {p.median_diameter_um} is outside "
            f"[{p.min_diameter_um}, {p.max_diameter_um}]", "order min <= median <= max")
    if p.max_diameter_um > cfg.composition.thickness_um:
        raise ParameterError(
            f"particles.max_diameter_um {p.max_diameter_um} exceeds the electrode thickness "
            f"{cfg.composition.thickness_um} um", "lower it below the thickness")
    if p.min_diameter_um < 3 * g.voxel_size_um:
        raise ParameterError(
            f"particles.min_diameter_um {p.min_diameter_um} is under 3 voxels "
            f"({g.voxel_size_um} um)", "raise it or use smaller voxels")
    if p.shape not in ("sphere", "ellipsoid", "irregular"):
        raise ParameterError(f"particles.shape {p.shape!r} is unknown",
                             "use 'sphere', 'ellipsoid' or 'irregular'")
    _fraction(p.aspect_spread, "particles.aspect_spread", 0.5)
    _fraction(p.roughness, "particles.roughness", 0.4)
    _fraction(p.max_overlap, "particles.max_overlap", 0.5)
    _fraction(p.cracked_fraction, "particles.cracked_fraction")
    _fraction(se.porosity, "separator.porosity", 0.95)
    _positive(se.fibre_length_um, "separator.fibre_length_um")
    _positive(se.fibre_width_um, "separator.fibre_width_um")
    for name in ("resolution_fwhm_um", "snr"):
        _positive(getattr(r, name), f"render.{name}")
    for name in ("grey_pore", "grey_cbd", "grey_si", "grey_lithiated", "grey_copper",
                 "grey_separator"):
        v = _positive(getattr(r, name), f"render.{name}", allow_zero=True)
        if v > 65535:
            raise ParameterError(f"render.{name} is {v}", "give a 16-bit grey value <= 65535")
    _positive(r.fringe, "render.fringe", allow_zero=True)
    _positive(r.cu_streak_amplitude, "render.cu_streak_amplitude", allow_zero=True)
    _positive(r.cu_streak_decay_um, "render.cu_streak_decay_um")
    socs = cfg.socs()
    if len(socs) < 1:
        raise ParameterError("series.soc is empty", "give at least T0, e.g. soc = [0.0, 0.5]")
    for i, v in enumerate(socs):
        _fraction(v, f"series.soc[{i}]")
    if s.reaction_profile not in ("uniform", "separator"):
        raise ParameterError(f"series.reaction_profile {s.reaction_profile!r} is unknown",
                             "use 'uniform' or 'separator'")
    _positive(s.penetration_depth_um, "series.penetration_depth_um")
    if not isinstance(s.modes, dict) or not s.modes:
        raise ParameterError("series.modes is not a table of fractions",
                             "write modes = {network = 0.9, core-shell = 0.1}")
    for name, frac in s.modes.items():
        if name not in LITHIATION_MODES:
            raise ParameterError(f"series.modes has unknown lithiation mode {name!r}",
                                 f"use {' or '.join(repr(m) for m in LITHIATION_MODES)}")
        _fraction(frac, f"series.modes.{name}")
    if abs(sum(float(v) for v in s.modes.values()) - 1) > 1e-6:
        raise ParameterError("series.modes fractions do not sum to 1",
                             "make the mode fractions add up to 1")
    if not isinstance(s.defect_bands, int) or s.defect_bands < 1:
        raise ParameterError(f"series.defect_bands is {s.defect_bands!r}",
                             "give an integer >= 1")
    _positive(s.beta, "series.beta")
    _fraction(s.pore_absorption, "series.pore_absorption")
    if s.displacement_file is not None and not Path(s.displacement_file).is_file():
        raise InputNotFoundError(s.displacement_file, "series.displacement_file")

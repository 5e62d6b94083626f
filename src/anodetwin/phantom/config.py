"""Phantom configuration: dataclasses with defaults from the reference experiment, TOML
loading and validation (every check runs before any voxel is made).

A TOML table becomes its section through :func:`anodetwin.io.tomlfile.build_dataclass`
(unknown keys and values of the wrong kind are refused there, naming ``[section] key``);
each numeric field declares its bounds where it is defined (positive, >= 0, a share up to
an upper limit, a 16-bit grey value) and :func:`validate` checks them with the relations
between the values.

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
from functools import partial
from pathlib import Path
from typing import Any

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.io.tomlfile import build_dataclass, in_file, read_toml
from anodetwin.phantom.composition import Recipe, electrode_composition

__all__ = ["Geometry", "Particles", "Separator", "Render", "Series", "PhantomConfig",
           "load_config", "config_from_dict", "validate", "soc_from_protocol",
           "MAX_SI_FRACTION", "LITHIATION_MODES"]

#: Lithiation modes: a sharp front moving inward, or pathways along planar defect bands.
LITHIATION_MODES = ("core-shell", "network")

#: Highest Si volume fraction the packing reaches (overlapping, calendered particles).
MAX_SI_FRACTION = 0.68


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


def _grey(value: Any, name: str) -> float:
    v = _positive(value, name, allow_zero=True)
    if v > 65535:
        raise ParameterError(f"{name} is {v}", "give a 16-bit grey value <= 65535")
    return v


# Fields with their bounds, checked by validate() (the check is the field's metadata).

def _over_zero(default: float) -> Any:
    return field(default=default, metadata={"check": _positive})


def _from_zero(default: float) -> Any:
    return field(default=default, metadata={"check": partial(_positive, allow_zero=True)})


def _share(default: float, upper: float = 1.0) -> Any:
    return field(default=default, metadata={"check": partial(_fraction, upper=upper)})


def _grey_value(default: float) -> Any:
    return field(default=default, metadata={"check": _grey})


@dataclass(frozen=True)
class Geometry:
    """Grid and layers, all in um.

    Attributes
    ----------
    voxel_size_um : float
        Isotropic voxel size (> 0).
    lateral_um : float
        y and x extent of the patch (at least 8 voxels).
    cu_thickness_um : float
        Copper foil at the bottom (z = 0), >= 0.
    separator_thickness_um : float
        Separator above the electrode (> 0).
    headroom_um : float or "auto"
        Empty room above the separator; ``"auto"``: enough for the swelling electrode.
    """

    voxel_size_um: float = _over_zero(0.2)
    lateral_um: float = _over_zero(20.0)
    cu_thickness_um: float = _from_zero(2.0)
    separator_thickness_um: float = _over_zero(6.0)
    headroom_um: float | str = "auto"  # "auto": room for the swelling electrode


@dataclass(frozen=True)
class Particles:
    """Si particle population.

    ``median_diameter_um`` and ``sigma_ln`` define a log-normal distribution of
    volume-equivalent diameters, truncated to [min, max]. ``max_overlap`` is how deep (as a
    fraction of the radius) neighbours may interpenetrate: calendered contacts.
    """

    median_diameter_um: float = _over_zero(5.0)
    sigma_ln: float = _from_zero(0.35)
    min_diameter_um: float = _over_zero(1.5)
    max_diameter_um: float = _over_zero(12.0)
    shape: str = "irregular"
    aspect_spread: float = _share(0.15, 0.5)
    roughness: float = _share(0.12, 0.4)
    max_overlap: float = _share(0.25, 0.5)
    cracked_fraction: float = _share(0.1)
    crack_zone_um: float = _over_zero(6.0)
    crack_width_um: float = _over_zero(0.3)


@dataclass(frozen=True)
class Separator:
    """Porous polymer separator above the anode: a smoothed random field, elongated along y
    (the fibrils), thresholded at the porosity.

    Attributes
    ----------
    porosity : float
        Pore volume fraction, in [0, 0.95].
    fibre_length_um, fibre_width_um : float
        Fibril length (along y) and width (along z and x) of the field: twice its
        smoothing lengths (um, > 0).
    """

    porosity: float = _share(0.45, 0.95)
    fibre_length_um: float = _over_zero(2.0)
    fibre_width_um: float = _over_zero(0.4)


@dataclass(frozen=True)
class Render:
    """Tomogram rendering: 16-bit grey values mimicking phase-contrast holotomography.

    Attributes
    ----------
    grey_pore, grey_cbd, grey_si, grey_lithiated, grey_copper, grey_separator : float
        Mean grey value of each phase, in [0, 65535].
    resolution_fwhm_um : float
        Full width at half maximum of the point spread function (um, > 0).
    snr : float
        Signal-to-noise ratio of the Si/pore contrast (> 0).
    fringe : float
        Strength of the phase-contrast edge fringes (>= 0).
    cu_streak_amplitude : float
        Grey amplitude of the streaks above the copper foil (>= 0).
    cu_streak_decay_um : float
        Decay length of those streaks (um, > 0).
    """

    grey_pore: float = _grey_value(12000.0)
    grey_cbd: float = _grey_value(15000.0)
    grey_si: float = _grey_value(30000.0)
    grey_lithiated: float = _grey_value(16500.0)
    grey_copper: float = _grey_value(50000.0)
    grey_separator: float = _grey_value(13500.0)
    resolution_fwhm_um: float = _over_zero(0.3)
    snr: float = _over_zero(8.0)
    fringe: float = _from_zero(0.3)
    cu_streak_amplitude: float = _from_zero(3000.0)
    cu_streak_decay_um: float = _over_zero(2.0)


@dataclass(frozen=True)
class Series:
    """In situ series: states of charge, lithiation and deformation."""

    soc: tuple[float, ...] = (0.0, 0.12, 0.25, 0.5, 0.62, 0.74, 0.85)
    protocol: tuple[dict, ...] = ()
    reaction_profile: str = "separator"
    penetration_depth_um: float = _over_zero(10.0)
    modes: dict[str, float] = field(default_factory=lambda: {"network": 0.9,
                                                             "core-shell": 0.1})
    defect_bands: int = 3
    beta: float = _over_zero(2.8)
    pore_absorption: float = _share(0.1)
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
        """The configuration as nested dicts (every field, defaults included)."""
        return dataclasses.asdict(self)

    def socs(self) -> list[float]:
        """State of charge of every step T0..Tn."""
        if self.series.protocol:
            return soc_from_protocol(list(self.series.protocol))
        return [float(s) for s in self.series.soc]


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


def config_from_dict(data: dict, seed: int | None = None) -> PhantomConfig:
    """Build and validate a phantom configuration.

    Parameters
    ----------
    data : dict
        The sections (module notes), e.g. a parsed TOML file; every key is optional.
    seed : int, optional
        Overrides ``data["seed"]``.

    Returns
    -------
    PhantomConfig
        The checked configuration.

    Raises
    ------
    ParameterError
        An unknown section or key, a value of the wrong kind (named ``[section] key``), or a
        value outside its physical bounds (:func:`validate`).
    """
    if seed is not None:
        data = {**data, "seed": seed}
    cfg = build_dataclass(PhantomConfig, data)
    if not 0 <= cfg.seed < 2**63:
        raise ParameterError(f"seed {cfg.seed!r} is not an integer in 0 .. 2^63 - 1",
                             "give e.g. seed = 1")
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, seed: int | None = None) -> PhantomConfig:
    """Read a TOML phantom configuration and validate it.

    Parameters
    ----------
    path : str or Path, optional
        The TOML file (module notes); None: all defaults.
    seed : int, optional
        The seed, instead of the file's.

    Returns
    -------
    PhantomConfig
        :func:`config_from_dict` of the file's content.

    Raises
    ------
    InputNotFoundError, CorruptFileError
        A missing file, invalid TOML.
    ParameterError
        As :func:`config_from_dict`.
    """
    if path is None:
        return config_from_dict({}, seed)
    data = read_toml(path, "phantom config")
    with in_file(path):
        return config_from_dict(data, seed)


def _check_fields(section: Any, name: str) -> None:
    """The bounds of a section's fields (their ``check`` metadata)."""
    for f in dataclasses.fields(section):
        if "check" in f.metadata:
            f.metadata["check"](getattr(section, f.name), f"{name}.{f.name}")


def validate(cfg: PhantomConfig) -> None:
    """Check a configuration: every bound and every relation between its values.

    Parameters
    ----------
    cfg : PhantomConfig
        The configuration (e.g. built in Python).

    Raises
    ------
    ParameterError
        A value outside its bounds or an impossible combination, in one line naming
        ``section.key``.
    InputNotFoundError
        ``series.displacement_file`` does not exist.
    """
    g, p, s = cfg.geometry, cfg.particles, cfg.series
    for name in ("geometry", "particles", "separator", "render", "series"):
        _check_fields(getattr(cfg, name), name)
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
    socs = cfg.socs()
    if len(socs) < 1:
        raise ParameterError("series.soc is empty", "give at least T0, e.g. soc = [0.0, 0.5]")
    for i, v in enumerate(socs):
        _fraction(v, f"series.soc[{i}]")
    if s.reaction_profile not in ("uniform", "separator"):
        raise ParameterError(f"series.reaction_profile {s.reaction_profile!r} is unknown",
                             "use 'uniform' or 'separator'")
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
    if s.displacement_file is not None and not Path(s.displacement_file).is_file():
        raise InputNotFoundError(s.displacement_file, "series.displacement_file")

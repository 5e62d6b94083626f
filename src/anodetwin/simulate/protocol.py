"""Cell protocol (``models/<name>.toml``) and an equivalent-circuit cell: SoC versus time.

The cell is ``V = OCV(SoC) + I R`` (I > 0 charging, R in ohm cm2) with a piecewise-linear
open-circuit voltage and ``dSoC/dt = I / Q`` (Q the cathode-limited capacity, mAh/cm2; a
current density ``c_rate * Q`` mA/cm2 moves the SoC by ``c_rate`` per hour). Every regime has an
exact solution that :func:`simulate_cell` evaluates piece by piece: CC is linear in time and
stops exactly where ``OCV(SoC) + I R`` meets the cut-off (inverse interpolation of the
piecewise-linear OCV); on each linear OCV piece (slope k, V per unit SoC) CV is exponential,
``I(t) = I0 exp(-k t / (3.6 R Q))`` (t in s); rests and scans hold the SoC. The SoC is kept in
[0, 1]: a CC charge that would pass SoC 1 stops there (I = 0). The Si's mean Li content is
``theta = SoC * theta_full * (1 - irreversible loss)`` with ``theta_full`` = cathode capacity /
Si capacity (theta = 1 is Li15Si4). ``CellHistory.breakpoints_s`` lists the regime changes
(segment, CC -> CV, rest and scan boundaries) for a time stepper to land on.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anodetwin.errors import ParameterError
from anodetwin.simulate.materials import model_value, read_model_toml

__all__ = ["Segment", "Protocol", "CellHistory", "load_protocol", "simulate_cell",
           "protocol_from_soc"]

_MODES = ("cc", "cv", "cccv", "rest")


@dataclass(frozen=True)
class Segment:
    """One protocol step.

    Parameters
    ----------
    mode : {"cc", "cv", "cccv", "rest"}
        "cc": constant current until the cut-off ``voltage_v`` or ``max_minutes``; "cv": hold
        ``voltage_v`` until ``|I| < until_c_rate`` or ``max_minutes``; "cccv": CC until
        ``voltage_v``, then CV at it for the rest of the segment's ``max_minutes``; "rest": I = 0.
    direction : {"charge", "discharge"}
        Sign of the CC current (charge: I > 0). The CV current's sign follows V - OCV.
    c_rate : float
        CC current magnitude in 1/h (current density = c_rate * Q, mA/cm2).
    voltage_v : float or None
        CC cut-off and/or CV hold voltage (V); a "cc" segment without one runs for its time.
    until_c_rate : float
        CV end current magnitude (1/h); 0: none.
    max_minutes : float
        Time limit of the segment (min); inf: none.
    scan : str or None
        Name of the tomogram taken after the segment (after the protocol's OCV rest).
    """

    mode: str
    direction: str = "charge"
    c_rate: float = 0.0
    voltage_v: float | None = None
    until_c_rate: float = 0.0
    max_minutes: float = math.inf
    scan: str | None = None

    def __post_init__(self) -> None:
        def bad(msg: str, fix: str) -> None:
            raise ParameterError(f"segment ({self.scan or self.mode}): {msg}", fix)

        if self.mode not in _MODES:
            bad(f"unknown mode '{self.mode}'", f"use one of {', '.join(_MODES)}")
        if self.direction not in ("charge", "discharge"):
            bad(f"direction '{self.direction}'", "use 'charge' or 'discharge'")
        for key in ("c_rate", "until_c_rate", "max_minutes"):
            if not getattr(self, key) >= 0:
                bad(f"{key} = {getattr(self, key)} is negative", "give a value >= 0 (rates in "
                    "1/h, times in min)")
        if self.mode in ("cc", "cccv") and not self.c_rate > 0:
            bad(f"{self.mode} segment with c_rate {self.c_rate}", "give c_rate > 0 (1/h)")
        if self.mode in ("cv", "cccv") and self.voltage_v is None:
            bad(f"{self.mode} segment without voltage_v", "give the hold voltage in V")
        if math.isinf(self.max_minutes) and (
                self.mode == "rest" or (self.mode != "cc" and self.until_c_rate == 0)):
            bad(f"{self.mode} segment that never ends (no max_minutes, no until_c_rate)",
                "give max_minutes (or until_c_rate for a CV hold)")

    @property
    def sign(self) -> float:
        """+1 for charge, -1 for discharge."""
        return 1.0 if self.direction == "charge" else -1.0


@dataclass(frozen=True)
class Protocol:
    """A cell (capacities, OCV, resistance) and its protocol.

    Capacities in mAh/cm2, OCV table ``ocv_soc`` (0..1, strictly increasing) -> ``ocv_v`` (V,
    strictly increasing), resistance in ohm cm2, rest/scan durations in min. Before each
    segment scan the cell rests ``rest_minutes`` at open circuit, then the scan lasts
    ``scan_minutes`` (I = 0). ``initial_scan`` is the pristine scan, taken at t = 0.
    """

    name: str
    cathode_capacity_mah_cm2: float
    si_capacity_mah_cm2: float
    ocv_soc: tuple[float, ...]
    ocv_v: tuple[float, ...]
    resistance_ohm_cm2: float
    segments: tuple[Segment, ...]
    rest_minutes: float = 1.0
    scan_minutes: float = 10.0
    initial_soc: float = 0.0
    initial_scan: str | None = "T0"
    irreversible_loss: float = 0.0
    sources: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str, fix: str) -> None:
            raise ParameterError(f"protocol '{self.name}': {msg}", fix)

        if not (self.cathode_capacity_mah_cm2 > 0 and self.si_capacity_mah_cm2 > 0):
            bad("capacities must be > 0", "give cathode and Si capacities in mAh/cm2")
        if not self.resistance_ohm_cm2 > 0:
            bad(f"resistance {self.resistance_ohm_cm2} ohm*cm2", "give R > 0 ohm*cm2")
        s, v = np.asarray(self.ocv_soc, float), np.asarray(self.ocv_v, float)
        if s.ndim != 1 or s.shape != v.shape or s.size < 2:
            bad("ocv_soc and ocv_voltage differ in length or have < 2 points",
                "give two equally long lists")
        if s[0] != 0 or s[-1] != 1 or np.any(np.diff(s) <= 0):
            bad(f"ocv_soc {s.tolist()} must rise strictly from 0 to 1", "fix the SoC column")
        if np.any(np.diff(v) <= 0) or not np.all(np.isfinite(v)):
            bad(f"ocv_voltage {v.tolist()} is not strictly increasing",
                "give a monotonic OCV(SoC) table in V")
        if not 0 <= self.initial_soc <= 1:
            bad(f"initial_soc {self.initial_soc} is outside [0, 1]", "give an SoC in [0, 1]")
        if not 0 <= self.irreversible_loss < 1:
            bad(f"irreversible_loss {self.irreversible_loss} is outside [0, 1)",
                "give a fraction 0 <= loss < 1")
        if not (self.rest_minutes >= 0 and self.scan_minutes >= 0):
            bad("negative rest/scan minutes", "give durations >= 0 min")
        names = [g.scan for g in self.segments if g.scan] + [self.initial_scan or ""]
        if len(set(names)) != len(names):
            bad(f"scan names {names} repeat", "give every scan its own name")
        for i, g in enumerate(self.segments):
            where = f"segments[{i}] ({g.scan or g.mode})"
            if g.mode in ("cv", "cccv") and not v[0] <= g.voltage_v <= v[-1]:
                bad(f"{where}: hold voltage {g.voltage_v} V is outside the OCV range "
                    f"[{v[0]}, {v[-1]}] V", "give a voltage_v inside the OCV table")
            drop = g.c_rate / 3600 * self.r_vs
            end = v[-1] + drop if g.sign > 0 else v[0] - drop
            if g.mode == "cc" and math.isinf(g.max_minutes) and (
                    g.voltage_v is None or (g.voltage_v - end) * g.sign > 0):
                bad(f"{where}: cut-off {g.voltage_v} V is never reached (the voltage ends at "
                    f"{end:.3f} V = OCV +- I*R at SoC {int(g.sign > 0)}) and there is no "
                    "max_minutes", "move the cut-off inside that range or give max_minutes")

    @property
    def theta_full(self) -> float:
        """Mean Si Li content (theta, 1 = Li15Si4) at SoC 1: cathode / Si capacity."""
        return self.cathode_capacity_mah_cm2 / self.si_capacity_mah_cm2

    @property
    def r_vs(self) -> float:
        """Voltage drop per SoC rate: ``V = OCV + (dSoC/dt in 1/s) * r_vs`` (V s)."""
        return 3.6 * self.cathode_capacity_mah_cm2 * self.resistance_ohm_cm2

    def ocv(self, soc):
        """Open-circuit voltage at ``soc`` (piecewise linear).

        Parameters
        ----------
        soc : float or array_like
            State(s) of charge, 0..1.

        Returns
        -------
        float or ndarray
            Voltage, V, the shape of ``soc``.
        """
        return np.interp(soc, self.ocv_soc, self.ocv_v)


#: The columns of ``cell.csv`` (:meth:`CellHistory.to_csv`).
_CELL_CSV_COLUMNS = ("time_s", "time_h", "soc", "current_ma_cm2", "voltage_v", "segment",
                     "phase")


@dataclass(frozen=True)
class CellHistory:
    """Result of :func:`simulate_cell`: dense samples, scan times and the exact pieces.

    ``time_s``, ``soc``, ``current_ma_cm2`` (> 0 charging), ``voltage_v``, ``segment`` (index;
    -1 for the initial scan; a segment's OCV rest and scan carry its index) and ``phase``
    ("cc", "cv", "rest", "ocv", "scan") are dense samples, both sides of every jump included.
    ``scans`` maps scan name -> start time (s); ``breakpoints_s`` are the regime changes.
    ``pieces`` rows are (t0 s, duration s, soc0, rate0 1/s, decay 1/s):
    ``soc = soc0 + rate0 (1 - exp(-decay dt)) / decay`` (``soc0 + rate0 dt`` when decay = 0).
    """

    protocol: Protocol
    time_s: np.ndarray
    soc: np.ndarray
    current_ma_cm2: np.ndarray
    voltage_v: np.ndarray
    segment: np.ndarray
    phase: np.ndarray
    scans: dict[str, float]
    breakpoints_s: np.ndarray
    pieces: np.ndarray

    def _eval(self, t):
        t = np.asarray(t, float)
        p = self.pieces[np.clip(np.searchsorted(self.pieces[:, 0], t, "right") - 1, 0, None)]
        soc, q = _piece_eval(p, np.clip(t - p[..., 0], 0.0, p[..., 1]))
        return soc, q * (t < p[..., 0] + p[..., 1])

    def soc_at(self, t):
        """Exact cell SoC at time(s) ``t``; constant after the end.

        Parameters
        ----------
        t : float or array_like
            Time(s), s.

        Returns
        -------
        float or ndarray
            SoC in [0, 1], the shape of ``t``.
        """
        s = self._eval(t)[0]
        return float(s) if s.ndim == 0 else s

    def current_at(self, t):
        """Exact current density at time(s) ``t``.

        Parameters
        ----------
        t : float or array_like
            Time(s), s; as for :meth:`soc_at`.

        Returns
        -------
        float or ndarray
            mA/cm2 (> 0 charging), the shape of ``t``.
        """
        i = self._eval(t)[1] * 3600 * self.protocol.cathode_capacity_mah_cm2
        return float(i) if i.ndim == 0 else i

    def theta_mean_at(self, t):
        """Mean Li content of the Si at time(s) ``t``.

        Parameters
        ----------
        t : float or array_like
            Time(s) since the start of the protocol, s (any shape).

        Returns
        -------
        float or ndarray
            theta (1 = Li15Si4) ``= soc * theta_full * (1 - irreversible_loss)``, the
            shape of ``t``.
        """
        p = self.protocol
        return self.soc_at(t) * p.theta_full * (1.0 - p.irreversible_loss)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the dense samples as CSV (atomic).

        Parameters
        ----------
        path : str or path-like
            The file: columns ``time_s, time_h, soc, current_ma_cm2, voltage_v, segment,
            phase``.

        Returns
        -------
        Path
            ``path``.
        """
        from anodetwin.io.atomic import atomic_write_text
        from anodetwin.io.table import csv_text

        rows = [{"time_s": f"{t:.6f}", "time_h": f"{t / 3600:.9f}", "soc": f"{s:.12g}",
                 "current_ma_cm2": f"{i:.9g}", "voltage_v": f"{v:.9g}", "segment": g,
                 "phase": ph}
                for t, s, i, v, g, ph in zip(self.time_s, self.soc, self.current_ma_cm2,
                                             self.voltage_v, self.segment, self.phase)]
        return Path(atomic_write_text(path, csv_text(rows, _CELL_CSV_COLUMNS)))


def _piece_eval(rows: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SoC and SoC rate (1/s) ``dt`` seconds into pieces ``rows`` (see :class:`CellHistory`)."""
    lam, q0 = rows[..., 4], rows[..., 3]
    safe = np.where(lam > 0, lam, 1.0)
    phi = np.where(lam > 0, -np.expm1(-safe * dt) / safe, dt)
    return np.clip(rows[..., 2] + q0 * phi, 0.0, 1.0), q0 * np.exp(-lam * dt)


class _PieceBuilder:
    """The exact pieces of a protocol run, built regime by regime (:func:`simulate_cell`).

    State: the time ``t`` (s) and SoC ``s`` reached; ``pieces`` rows as in
    :class:`CellHistory`, ``tags`` (segment index, phase) per piece, the breakpoints and the
    scan start times.
    """

    def __init__(self, p: Protocol):
        self.p = p
        self.sk, self.vk, self.rs = np.asarray(p.ocv_soc), np.asarray(p.ocv_v), p.r_vs
        self.pieces: list[tuple] = []
        self.tags: list[tuple] = []
        self.bps: set[float] = {0.0}
        self.scans: dict[str, float] = {}
        self.t, self.s = 0.0, float(p.initial_soc)

    def add(self, dt: float, q0: float, lam: float, seg: int, phase: str,
            s_end: float | None = None) -> None:
        """A piece of ``dt`` s from the state reached: SoC rate ``q0`` (1/s) decaying at
        ``lam`` (1/s); ``s_end`` the exact SoC at its end where known."""
        if dt > 0:
            self.pieces.append((self.t, dt, self.s, q0, lam))
            self.tags.append((seg, phase))
            phi = dt if lam == 0 else -math.expm1(-lam * dt) / lam
            self.t += dt
            self.s = min(1.0, max(0.0, self.s + q0 * phi if s_end is None else s_end))

    def cc(self, g: Segment, i: int, budget: float) -> tuple[float, bool]:
        """Constant current of segment ``g`` (index ``i``) for at most ``budget`` s: the
        time used and whether the cut-off voltage was reached."""
        p, sk, vk, rs = self.p, self.sk, self.vk, self.rs
        q, s = g.sign * g.c_rate / 3600, self.s
        if g.voltage_v is not None and (p.ocv(s) + q * rs - g.voltage_v) * g.sign >= 0:
            return 0.0, True
        target = math.nan if g.voltage_v is None else g.voltage_v - q * rs
        s_v = float(np.interp(target, vk, sk)) if vk[0] <= target <= vk[-1] else math.nan
        t_v = (s_v - s) / q if s_v == s_v else math.inf
        bound = 1.0 if q > 0 else 0.0
        t_b = (bound - s) / q
        dt = min(t_v, t_b, budget)
        self.add(dt, q, 0.0, i, "cc", s_v if dt == t_v else bound if dt == t_b else None)
        if dt == t_b and dt < min(t_v, budget):  # SoC limit: I = 0 for the rest of the time
            self.bps.add(self.t)
            self.add(budget - dt, 0.0, 0.0, i, "cc")
            return budget, False
        return dt, dt == t_v

    def cv(self, g: Segment, i: int, budget: float) -> None:
        """Constant voltage of segment ``g`` for at most ``budget`` s: exponential pieces,
        one per linear OCV piece crossed, until the end current."""
        sk, vk, rs = self.sk, self.vk, self.rs
        used, until = 0.0, g.until_c_rate / 3600
        while used < budget:
            s = self.s
            q0 = (g.voltage_v - self.p.ocv(s)) / rs
            if abs(q0) <= until or q0 == 0:
                if until == 0:
                    self.add(budget - used, 0.0, 0.0, i, "cv")
                return
            j = min(max(int(np.searchsorted(sk, s, "right" if q0 > 0 else "left")) - 1, 0),
                    len(sk) - 2)
            lam = (vk[j + 1] - vk[j]) / (sk[j + 1] - sk[j]) / rs
            t_ev = math.log(abs(q0) / until) / lam if until > 0 else math.inf
            s_b = sk[j + 1] if q0 > 0 else sk[j]
            x = lam * (s_b - s) / q0
            t_b = -math.log1p(-x) / lam if x < 1 else math.inf
            dt = min(t_ev, t_b, budget - used)
            self.add(dt, q0, lam, i, "cv", float(s_b) if dt == t_b else None)
            used += dt
            if dt != t_b:
                return

    def scan(self, name: str, seg: int) -> None:
        """A scan ``name`` (I = 0) after segment ``seg``."""
        self.scans[name] = float(self.t)
        self.add(self.p.scan_minutes * 60, 0.0, 0.0, seg, "scan")
        self.bps.add(self.t)

    def segment(self, i: int, g: Segment) -> None:
        """Segment ``g`` (index ``i``), then its OCV rest and scan."""
        self.bps.add(self.t)
        budget = g.max_minutes * 60
        if g.mode == "rest":
            self.add(budget, 0.0, 0.0, i, "rest")
        elif g.mode == "cv":
            self.cv(g, i, budget)
        else:
            used, hit = self.cc(g, i, budget)
            if g.mode == "cccv" and hit:
                self.bps.add(self.t)
                self.cv(g, i, budget - used)
        self.bps.add(self.t)
        if g.scan:
            self.add(self.p.rest_minutes * 60, 0.0, 0.0, i, "ocv")
            self.bps.add(self.t)
            self.scan(g.scan, i)

    def history(self, dense_step_s: float) -> CellHistory:
        """The :class:`CellHistory` of the pieces built, sampled at most ``dense_step_s``
        apart."""
        p = self.p
        if not self.pieces:
            self.pieces.append((0.0, 0.0, self.s, 0.0, 0.0))
            self.tags.append((-1, "rest"))
        arr = np.array(self.pieces, float)
        ns = [max(2, math.ceil(dt / dense_step_s) + 1) for dt in arr[:, 1]]
        rows = np.repeat(arr, ns, axis=0)  # each sample on its own piece (both sides of jumps)
        t = np.concatenate([np.linspace(t0, t0 + dt, n) for (t0, dt, *_), n in zip(arr, ns)])
        soc, q = _piece_eval(rows, t - rows[:, 0])
        seg, phase = (np.repeat(np.array(c), ns) for c in zip(*self.tags))
        return CellHistory(p, t, soc, q * 3600 * p.cathode_capacity_mah_cm2,
                           p.ocv(soc) + q * self.rs, seg, phase, self.scans,
                           np.array(sorted(self.bps)), arr)


def simulate_cell(protocol: Protocol, dense_step_s: float = 30.0) -> CellHistory:
    """Run ``protocol`` on the equivalent-circuit cell, piece by exact piece.

    Parameters
    ----------
    protocol : Protocol
        Cell and protocol, e.g. ``load_protocol("reference_cell")``.
    dense_step_s : float
        Largest spacing of the dense samples (s); :meth:`CellHistory.soc_at` is exact anyway.

    Returns
    -------
    CellHistory
        Dense samples (arrays of shape (n,)), scan start times (s), breakpoints (s) and the
        exact pieces (shape (m, 5)).

    Raises
    ------
    ParameterError
        ``dense_step_s`` is not positive.
    """
    if not dense_step_s > 0:
        raise ParameterError(f"dense_step_s = {dense_step_s}", "give a sample spacing > 0 s")
    build = _PieceBuilder(protocol)
    if protocol.initial_scan:
        build.scan(protocol.initial_scan, -1)
    for i, g in enumerate(protocol.segments):
        build.segment(i, g)
    return build.history(dense_step_s)


_CELL = {"cathode_capacity": "mAh/cm2", "anode_loading": "mg/cm2", "si_mass_fraction": "1",
         "si_specific_capacity": "mAh/g", "ocv_soc": "1", "ocv_voltage": "V",
         "resistance": "ohm*cm2", "initial_soc": "1", "rest_minutes": "min",
         "scan_minutes": "min", "irreversible_loss": "1"}
_DEFAULTS = {"initial_soc": 0.0, "rest_minutes": 1.0, "scan_minutes": 10.0,
             "irreversible_loss": 0.0}
_SEG_KEYS = {"mode", "direction", "c_rate", "voltage_v", "until_c_rate", "max_minutes", "scan",
             "source"}


def _rate(v, where: str) -> float:
    """A C-rate in 1/h: a number or ``"C/n"`` / ``"nC"``."""
    m = re.fullmatch(r"\s*(?:C/([0-9.]+)|([0-9.]+)\s*C)\s*", v) if isinstance(v, str) else None
    try:
        return 1.0 / float(m[1]) if m and m[1] else float(m[2] if m else v)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ParameterError(f"{where} = {v!r} is not a C-rate",
                             "give a number in 1/h or a string like \"C/3\"") from None


def load_protocol(name_or_path: str | os.PathLike) -> Protocol:
    """Read ``models/<name>.toml`` (or a ``.toml`` path) into a :class:`Protocol`.

    Every cell parameter is a table with ``value``, ``unit`` and ``source``; the segments are
    an array of tables ``[[segments]]`` with the :class:`Segment` fields (``c_rate`` and
    ``until_c_rate`` as numbers in 1/h or strings like ``"C/3"``, ``voltage_v`` in V,
    ``max_minutes`` in min, absent = no limit).

    Parameters
    ----------
    name_or_path : str or path-like
        A model name of ``models/`` (``"quick_cell"``) or a ``.toml`` path.

    Returns
    -------
    Protocol
        The cell and its segments, with the source of every parameter.

    Raises
    ------
    InputNotFoundError, CorruptFileError, ParameterError
        Missing file, invalid TOML, missing keys, wrong units, non-physical values.
    """
    p, d = read_model_toml(name_or_path, "protocol")
    vals, sources = {}, {}
    for key, unit in _CELL.items():
        entry = d.get(key)
        if entry is None and key in _DEFAULTS:
            vals[key] = _DEFAULTS[key]
            continue
        v = model_value(d, key, unit, p, "protocol")
        try:
            vals[key] = tuple(map(float, v)) if key.startswith("ocv") else float(v)
        except (TypeError, ValueError):
            raise ParameterError(f"protocol file '{p}': [{key}] value {entry['value']!r} is "
                                 "not a number" + (" list" if key.startswith("ocv") else ""),
                                 f"give a number in {unit}") from None
        sources[key] = entry.get("source", "")
    segs, raw = [], d.get("segments", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ParameterError(f"protocol file '{p}': 'segments' is not an array of tables",
                             "write each step as a [[segments]] table")
    for i, r in enumerate(raw):
        where = f"protocol file '{p}': segments[{i}]"
        if unknown := sorted(set(r) - _SEG_KEYS):
            raise ParameterError(f"{where} has unknown keys {unknown}",
                                 f"use only {', '.join(sorted(_SEG_KEYS))}")
        if "mode" not in r:
            raise ParameterError(f"{where} lacks mode", f"give mode = one of {_MODES}")
        kw = {k: v for k, v in r.items() if k != "source"}
        for k in ("c_rate", "until_c_rate"):
            if k in kw:
                kw[k] = _rate(kw[k], f"{where}.{k}")
        try:
            kw.update({k: float(kw[k]) for k in ("voltage_v", "max_minutes") if k in kw})
            segs.append(Segment(**kw))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise ParameterError(f"{where} {exc.problem.removeprefix('segment ')}",
                                     exc.fix) from None
            raise ParameterError(f"{where}: {exc}", "give voltage_v in V and max_minutes in "
                                 "min as numbers") from None
    s_cap = vals["anode_loading"] * vals["si_mass_fraction"] * vals["si_specific_capacity"] / 1e3
    name = str(d.get("name", p.stem))
    try:
        return Protocol(name, vals["cathode_capacity"], s_cap,
                        vals["ocv_soc"], vals["ocv_voltage"], vals["resistance"], tuple(segs),
                        vals["rest_minutes"], vals["scan_minutes"], vals["initial_soc"],
                        d.get("initial_scan", "T0") or None, vals["irreversible_loss"], sources)
    except ParameterError as exc:
        raise ParameterError(f"protocol file '{p}': "
                             f"{exc.problem.removeprefix(f'protocol {name!r}: ')}",
                             exc.fix) from None


def protocol_from_soc(base: str | os.PathLike, names: list[str], soc: list[float],
                      c_rate: Any = "C/3") -> dict:
    """A protocol (as a protocol file's tables) that takes a cell through the states of
    charge of its scans: constant current at ``c_rate`` between them.

    Parameters
    ----------
    base : str or path-like
        The cell model whose cell parameters (capacities, OCV, resistance, rest and scan
        minutes) are kept (:func:`load_protocol`'s argument); its segments are replaced.
    names : list of str
        Scan names, the pristine (first) scan first.
    soc : list of float
        The state of charge (0..1, cathode-limited capacity) at every scan, as many as
        ``names``.
    c_rate : str or float
        Current between scans (1/h, or ``"C/3"``): each segment lasts |dSoC| / c_rate
        hours (a 1-min rest where the SoC does not change).

    Returns
    -------
    dict
        The tables of a protocol file (:func:`load_protocol` reads it once written with
        :func:`anodetwin.io.tomlfile.toml_text`): ``initial_scan`` ``names[0]``,
        ``initial_soc`` ``soc[0]``.

    Raises
    ------
    ParameterError
        Lists of different lengths, fewer than 2 scans, an SoC outside [0, 1], a bad rate.
    """
    if len(names) != len(soc) or len(soc) < 2:
        raise ParameterError(f"{len(soc)} states of charge for {len(names)} scans",
                             "give one SoC per scan, 2 or more")
    s = np.asarray(soc, float)
    if not (np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))):
        raise ParameterError(f"states of charge {list(soc)} leave [0, 1]",
                             "give SoC as fractions of the cell's capacity, 0..1")
    rate = _rate(c_rate, "c_rate")
    if not (np.isfinite(rate) and rate > 0):
        raise ParameterError(f"c_rate {c_rate!r}", "give a current > 0 (1/h or \"C/3\")")
    _, d = read_model_toml(base, "protocol")
    segments = []
    for name, a, b in zip(names[1:], s[:-1], s[1:], strict=True):
        if a == b:
            segments.append({"mode": "rest", "max_minutes": 1.0, "scan": name})
            continue
        segments.append({"mode": "cc", "direction": "charge" if b > a else "discharge",
                         "c_rate": rate, "max_minutes": float(60.0 * abs(b - a) / rate),
                         "scan": name})
    cell = {k: v for k, v in d.items() if k not in ("segments", "name", "initial_scan")}
    return {"name": f"{d.get('name', 'cell')}_soc", "initial_scan": names[0], **cell,
            "initial_soc": {"value": float(s[0]), "unit": "1",
                            "source": "the first scan's state of charge, given per scan"},
            "segments": segments}


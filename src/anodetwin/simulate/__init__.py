"""Chemo-mechanical simulation of electrode microstructures (DOLFINx, MPI).

Running a case (:mod:`anodetwin.simulate.run`):

* :func:`load_case`: a case file (``case.toml``) read and checked into a case;
* :func:`check_case`: everything a run checks before any work (:class:`SetUp`);
* :func:`run_case`: the first (de)lithiation cycle of the cell, step by step, into an output
  folder; returns one :class:`StepRecord` per step (the rows of ``summary.csv``,
  :data:`SUMMARY_COLUMNS`), with the time steps of :class:`StepControl`;
* :func:`read_summary`: the rows of a run's ``summary.csv``.

The cell and its protocol (:mod:`anodetwin.simulate.protocol`):

* :func:`load_protocol`, :class:`Protocol`, :class:`Segment`: a cell model of ``models/``;
* :func:`simulate_cell`, :class:`CellHistory`: SoC, current and voltage versus time.

The physics:

* :func:`solve_swelling`: finite-strain swelling equilibrium with phase materials, bonded
  collector, lateral rollers and a preloaded stack spring;
* :class:`LithiumTransport`, :func:`solve_diffusion`: Li diffusion in the Si particles;
* :func:`stress_factor`, :func:`defect_multiplier`: Si-specific stress drift and defect bands;
* :func:`load_material`, :func:`default_materials`: parameter sets of ``models/``.

Importing this package loads no DOLFINx; the functions that need it import it.
"""

from anodetwin.simulate.case import load_case
from anodetwin.simulate.diffusion import LithiumTransport, solve_diffusion
from anodetwin.simulate.materials import Material, default_materials, load_material
from anodetwin.simulate.mechanics import Boundary, SwellingResult, solve_swelling
from anodetwin.simulate.protocol import (CellHistory, Protocol, Segment, load_protocol,
                                         simulate_cell)
from anodetwin.simulate.run import SetUp, check_case, run_case
from anodetwin.simulate.silicon import defect_multiplier, stress_factor
from anodetwin.simulate.steps import SUMMARY_COLUMNS, StepControl, StepRecord
from anodetwin.simulate.writer import read_summary

__all__ = ["load_case", "check_case", "run_case", "read_summary", "SetUp", "StepRecord",
           "StepControl", "SUMMARY_COLUMNS", "load_protocol", "simulate_cell", "Protocol",
           "Segment", "CellHistory", "Material", "default_materials", "load_material",
           "Boundary", "SwellingResult", "solve_swelling", "LithiumTransport",
           "solve_diffusion", "stress_factor", "defect_multiplier"]

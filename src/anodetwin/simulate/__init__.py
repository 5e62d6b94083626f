"""Chemo-mechanical simulation of electrode microstructures (DOLFINx, MPI).

* :func:`solve_swelling`: finite-strain swelling equilibrium with phase materials, bonded
  collector, lateral rollers and a preloaded stack spring;
* :func:`load_material`, :func:`default_materials`: parameter sets of ``models/``.
"""

from anodetwin.simulate.materials import Material, default_materials, load_material
from anodetwin.simulate.mechanics import Boundary, SwellingResult, solve_swelling

__all__ = ["Material", "default_materials", "load_material", "Boundary", "SwellingResult",
           "solve_swelling"]

"""Phase codes shared by every stage (segmentation, phantoms, meshes, DVC regions).

0 pore/electrolyte, 1 carbon-binder domain (or the merged "CBD+E" that phase contrast
cannot split; lithiated Si that looks like it in the image is 1 too), 2 non-lithiated
silicon, 3 lithiated silicon, 4 copper current collector, 5 separator.

This module is the one definition of the phase set: the codes, their names and the groups
of codes the stages act on. Other modules import these names rather than restating codes.
"""

PHASE = {"pore": 0, "cbd": 1, "si": 2, "lithiated": 3, "copper": 4, "separator": 5}

#: Every phase code, ascending (the classes a labels volume or a pixel classifier may hold).
PHASE_CODES = tuple(sorted(PHASE.values()))

#: Phase name of each code (the inverse of :data:`PHASE`).
PHASE_NAMES = {code: name for name, code in PHASE.items()}

#: Codes of the electrode layer between the collector and the separator.
ELECTRODE_PHASES = (PHASE["pore"], PHASE["cbd"], PHASE["si"], PHASE["lithiated"])

#: Codes of the active particles (silicon, lithiated or not).
PARTICLE_PHASES = (PHASE["si"], PHASE["lithiated"])

#: Codes of the matrix around the particles (pore/electrolyte and carbon-binder domain).
MATRIX_PHASES = (PHASE["pore"], PHASE["cbd"])

__all__ = ["PHASE", "PHASE_CODES", "PHASE_NAMES", "ELECTRODE_PHASES", "PARTICLE_PHASES",
           "MATRIX_PHASES"]

"""anodetwin: a digital twin and measurement-comparison toolkit for silicon-rich Li-ion anodes.

Conventions (see the README): arrays are indexed (z, y, x) with z = 0 on the current-collector
side; lengths are in micrometres; the voxel size travels with every volume and result.
"""

from anodetwin._version import __version__
from anodetwin.errors import AnodetwinError

__all__ = ["__version__", "AnodetwinError"]

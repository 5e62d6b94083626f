"""Digital volume correlation: measured displacement, strain and residual fields (spam).

* :func:`correlate_pair` / :func:`write_pair`: local DVC of two volumes (global registration,
  pyramid, per-node spam registration in batches over processes or Dask, bad-node repair),
  strain on the node grid, result file (layout in :mod:`anodetwin.dvc.pair`);
* :func:`cell_strain`: strain measures (J-1, small strain, Hencky, Green-Lagrange, principal,
  deviatoric) from a gridded displacement field;
* :func:`noise_floor`: the noise of a double scan, which sets the residual threshold.
"""

from anodetwin.dvc.noise import NoiseFloor, noise_floor, scan_difference
from anodetwin.dvc.pair import FLAG, PairResult, correlate_pair, write_pair
from anodetwin.dvc.strain import CellStrain, cell_strain

__all__ = ["NoiseFloor", "noise_floor", "scan_difference", "FLAG", "PairResult",
           "correlate_pair", "write_pair", "CellStrain", "cell_strain"]

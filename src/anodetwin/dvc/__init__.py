"""Digital volume correlation: measured displacement, strain and residual fields.

* :func:`correlate_pair` / :func:`write_pair` / :func:`read_pair`: local DVC of two volumes
  (global registration, pyramid, per-node registration by the native IC-GN engine
  (:mod:`anodetwin.dvc.native`) or spam in batches over threads, processes or Dask,
  bad-node repair), strain on the node grid, result file (layout in
  :mod:`anodetwin.dvc.pair`);
* :func:`correlate_series`: a tomogram series, incremental and cumulative fields and their
  region statistics (:mod:`anodetwin.dvc.series`);
* :func:`region_statistics` / :func:`write_regions`: strain statistics over electrode
  halves, sub-volume cubes and particle VOIs (:mod:`anodetwin.dvc.regions`);
* :func:`correlate_nodes`, :class:`DVCParams`, :class:`NodeResults`, :class:`ReturnStatus`:
  the per-node correlation engine and its status codes (:mod:`anodetwin.dvc.correlate`);
* :func:`cell_strain`: strain measures (J-1, small strain, Hencky, Green-Lagrange,
  principal, deviatoric) from a gridded displacement field, the one strain operator of
  :mod:`anodetwin.strain`;
* :func:`noise_floor`: the noise of a double scan, which sets the residual threshold.
"""

from anodetwin.dvc.correlate import (
    STATUS,
    DVCParams,
    NodeResults,
    ReturnStatus,
    correlate_nodes,
    node_grid,
)
from anodetwin.dvc.noise import NoiseFloor, noise_floor, scan_difference
from anodetwin.dvc.pair import FLAG, PairResult, correlate_pair, read_pair, write_pair
from anodetwin.dvc.regions import RegionStats, region_statistics, write_regions
from anodetwin.dvc.series import correlate_series
from anodetwin.dvc.strain import CellStrain, cell_strain

__all__ = ["NoiseFloor", "noise_floor", "scan_difference", "FLAG", "PairResult",
           "correlate_pair", "read_pair", "write_pair", "correlate_series", "RegionStats",
           "region_statistics", "write_regions", "DVCParams", "NodeResults", "ReturnStatus",
           "STATUS", "correlate_nodes", "node_grid", "CellStrain", "cell_strain"]

"""Run files (TOML) of ``anodetwin run``: an in situ series from its scans to the report.

A run file names the scans and says how each stage treats them; every table but
``[scans]`` is optional. :data:`TEMPLATE` (written by ``anodetwin init DIR``) is the
commented reference of every key. Relative paths are taken from the run file's folder.

Everything is checked here, before any work (:func:`load_run`): unknown tables and keys,
values of the wrong kind, fewer than two scans, scans or a double scan that do not exist or
disagree in shape, voxel size or origin (:func:`anodetwin.io.agree.require_series_grid`:
the file headers only, no voxel is read), a cell protocol whose scans do not include every
scan of the run, a simulation or validation table the ``simulate`` / ``validate`` stages
would refuse. Each failure is one :class:`~anodetwin.errors.ParameterError` (or
:class:`~anodetwin.errors.InputNotFoundError`, :class:`~anodetwin.errors.GridMismatchError`)
naming the run file, the table and the key.

The cell's history (the twin's state of charge in time, the scan times) is the protocol of
``[cell] model``, or, with ``[scans] soc`` (the state of charge of every scan), that cell
taken from scan to scan at constant current ``[cell] c_rate``
(:func:`anodetwin.simulate.protocol.protocol_from_soc`).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.io.formats import volume_file
from anodetwin.io.tomlfile import build_dataclass, in_file, read_toml, table_values

__all__ = ["Scans", "SegmentSettings", "MeshSettings", "DvcSettings", "ResidualSettings",
           "Resources", "RunConfig", "TEMPLATE", "load_run", "run_from_dict", "volume_path",
           "volume_file", "cell_model", "cell_history",
           "scan_times"]


@dataclass(frozen=True)
class Scans:
    """``[scans]``: the series, T0 first (module notes)."""

    files: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    voxel_size_um: float = 0.0
    roi: str = ""
    binning: int = 1
    double_scan: tuple[str, ...] = ()
    soc: tuple[float, ...] = ()


@dataclass(frozen=True)
class SegmentSettings:
    """``[segment]``: :func:`anodetwin.segment.pipeline.segment_volume`'s settings."""

    classifier: str = ""
    annotations: str = ""
    annotation_scan: str = ""
    annotation_slices: tuple[int, ...] = ()
    denoise: str = ""
    normalise: str = ""
    h: float = 1.0
    min_particle_voxels: int = 27
    surface_window_um: float = 10.0


@dataclass(frozen=True)
class MeshSettings:
    """``[mesh]``: the segmented T0 electrode in voxel hexahedra
    (:func:`anodetwin.mesh.voxel.voxel_mesh`)."""

    coarsen: int = 4
    min_speck_voxels: int = 0


@dataclass(frozen=True)
class DvcSettings:
    """``[dvc]``: :func:`anodetwin.dvc.series.correlate_series` and its region statistics
    (node spacing, half-window and pyramid in voxels; cube and VOI sizes in um, 0: auto)."""

    node_spacing: int = 10
    hws: int | tuple[int, ...] = 10
    pyramid: tuple[int, ...] = ()
    search_range: int | tuple[int, ...] = 0
    engine: str = "native"
    interpolation: str = "cubic"
    criterion: str = ""
    robust: bool = False
    shape_function: str = "affine"
    reference_model: str = "grey"
    refine: bool = True
    mask: bool = True
    cube_um: float = 0.0
    voi_um: float = 0.0


@dataclass(frozen=True)
class ResidualSettings:
    """``[residuals]``: residual maps of the cumulative DVC fields
    (:func:`anodetwin.dvc.residual.residual_map`); ``floor`` (grey levels; 0: the noise
    floor of the double scan). Without a double scan and a floor the run has no residual
    stage: an assumed noise level would classify particles on nothing measured."""

    sigma: float = 2.0
    shell_voxels: float = 3.0
    floor: float = 0.0


@dataclass(frozen=True)
class Resources:
    """``[resources]``: MPI ranks of the simulation, processes of the DVC and threads of
    the image stages (0: all cores), the memory ceiling of the image stages, which work
    block by block within it, and the Dask scheduler ("" runs everything on this machine;
    ``"local"`` a local cluster of ``workers`` processes; else a scheduler's address) that
    receives the DVC's node batches and the scans of the image stages, one scan per worker.
    They change how long a run takes, not its results: they are not part of any stage's
    key."""

    ranks: int = 0
    workers: int = 0
    memory_limit: str | int = "4GB"
    scheduler: str = ""


@dataclass(frozen=True)
class RunConfig:
    """A checked run file (module notes); paths are absolute."""

    path: Path
    scans: Scans
    scan_files: tuple[Path, ...]
    double_scan: tuple[Path, ...]
    cell: str
    segment: SegmentSettings
    mesh: MeshSettings
    simulation: dict
    dvc: DvcSettings
    residuals: ResidualSettings
    validation: dict
    resources: Resources
    truth: Path | None = None
    raw: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Scan names, T0 first."""
        return self.scans.names


_TABLES = {"scans": Scans, "segment": SegmentSettings, "mesh": MeshSettings,
           "dvc": DvcSettings, "residuals": ResidualSettings, "resources": Resources}
_FREE = {"cell", "simulation", "validation", "truth"}


def _check_memory(text: str) -> None:
    """Refuse a ``[resources] memory_limit`` that is not a size."""
    from anodetwin.io.blocks import parse_memory

    try:
        parse_memory(text)
    except ParameterError as exc:
        raise ParameterError(f"[resources] memory_limit: {exc.problem}", exc.fix) from None


def image_stage_blocks(cfg_residuals: ResidualSettings, residuals: bool
                       ) -> list[tuple[str, float, int, int | None]]:
    """The block sizing of each image stage of a run: (what, bytes per voxel of a block
    with its halo, halo in voxels, largest block side), as the stages ask
    :func:`anodetwin.io.blocks.block_shape_for`. The residual maps' halo also grows with
    the largest measured displacement (voxels), known only once the DVC is done: it is
    counted here as 0."""
    from anodetwin.dvc import noise, residual
    from anodetwin.segment import particles, phases, tracking

    stages = [("segment (phases)", phases.BYTES_PER_VOXEL, phases._si_halo(2.0, 3, 8),
               phases.MAX_SIDE),
              ("segment (particles)", particles.BYTES_PER_VOXEL, particles.HALO,
               particles.MAX_SIDE),
              ("morphology (tracking)", tracking.LINK_BYTES_PER_VOXEL, 0,
               tracking.LINK_MAX_SIDE)]
    if residuals:
        r = cfg_residuals
        stages += [("residuals (noise floor)", noise.BYTES_PER_VOXEL,
                    math.ceil(4.0 * r.sigma), None),
                   ("residuals (maps)", residual.BYTES_PER_VOXEL,
                    residual._halo(r.sigma, r.shell_voxels) + 3, residual.MAX_SIDE)]
    return stages


def _check_blocks(shape: tuple, res: Resources, cfg_residuals: ResidualSettings,
                  residuals: bool) -> None:
    """Refuse a ``[resources] memory_limit`` in which an image stage cannot fit one block
    of scans of ``shape`` on ``[resources] workers`` threads (before any work: not after
    the stages before it have run)."""
    from anodetwin.io.blocks import block_shape_for

    workers = res.workers or _cores()
    for what, per_voxel, halo, side in image_stage_blocks(cfg_residuals, residuals):
        try:
            block_shape_for(shape, per_voxel, halo, res.memory_limit, workers, max_side=side)
        except ParameterError:
            raise ParameterError(
                f"[resources] memory_limit = '{res.memory_limit}' leaves no room for a block "
                f"of the {what} stage ({halo}-voxel halo, {per_voxel:g} bytes per voxel) on "
                f"{workers} worker{'s' if workers > 1 else ''}"
                + ("" if res.workers else " (workers = 0: all cores)"),
                "raise [resources] memory_limit or lower [resources] workers") from None


def _cores() -> int:
    """Cores this process may use (``[resources] workers = 0``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_scheduler(text: str) -> None:
    """Refuse a ``[resources] scheduler`` that is neither "", "local" nor an address (whether
    a scheduler answers there is seen when a stage connects)."""
    if text in ("", "local"):
        return
    from distributed.comm import get_address_host_port, parse_address

    try:
        if parse_address(text)[0] in ("tcp", "tls"):
            get_address_host_port(text)
    except ValueError as exc:
        raise ParameterError(f"[resources] scheduler = '{text}': not an address ({exc})",
                             'give "" (this machine), "local" (a local cluster) or a '
                             "scheduler's address such as tcp://host:8786") from None


def volume_path(text: str, base: Path) -> Path:
    """A scan's path (``file.h5:/dataset`` keeps its dataset) relative to ``base``."""
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else base / p


def _check_scans(sc: Scans, base: Path) -> tuple[tuple[Path, ...], tuple[Path, ...], tuple]:
    """Scan and double-scan paths, checked to exist and share one grid, and the shape of
    the scans as the run reads them (region and binning)."""
    from anodetwin.io.agree import require_series_grid

    if len(sc.files) < 2:
        raise ParameterError(f"[scans] files lists {len(sc.files)} scan(s)",
                             "give at least two scans, T0 first")
    if sc.names and len(sc.names) != len(sc.files):
        raise ParameterError(f"[scans] names has {len(sc.names)} entries for "
                             f"{len(sc.files)} files", "give one name per file")
    if len(set(sc.names)) != len(sc.names):
        raise ParameterError("[scans] names repeats a name", "give every scan its own name")
    if sc.double_scan and len(sc.double_scan) != 2:
        raise ParameterError(f"[scans] double_scan lists {len(sc.double_scan)} files",
                             "give two scans taken with nothing changed between them")
    if not sc.binning >= 1:
        raise ParameterError(f"[scans] binning = {sc.binning}", "give an integer >= 1")
    files = tuple(volume_path(f, base) for f in sc.files)
    double = tuple(volume_path(f, base) for f in sc.double_scan)
    for p, what in [*((p, "scan") for p in files), *((p, "double scan") for p in double)]:
        if not volume_file(p).exists():
            raise InputNotFoundError(volume_file(p), f"[scans] {what}",
                                     "give paths relative to the run file's folder")
    if sc.voxel_size_um < 0:
        raise ParameterError(f"[scans] voxel_size_um = {sc.voxel_size_um:g}",
                             "give the voxel size in um (> 0), or 0 to take the files'")
    names = [f"scan {n} '{f}'" for n, f in zip(sc.names, sc.files, strict=True)]
    names += [f"double scan '{f}'" for f in sc.double_scan]
    grid = require_series_grid([*files, *double], names, voxel_size=sc.voxel_size_um or None)
    if grid.voxel_size_um is None:
        raise ParameterError(f"scan {sc.names[0]} '{sc.files[0]}' records no voxel size",
                             "give [scans] voxel_size_um (um)")
    _check_given_voxel_size(sc, files[0])
    shape = tuple(grid.shape)
    if sc.roi:
        from anodetwin.io import normalise_roi, parse_roi

        try:
            roi = normalise_roi(parse_roi(sc.roi), grid.shape)
        except ParameterError as exc:
            raise ParameterError(f"[scans] roi = '{sc.roi}': {exc.problem}",
                                 f"give a region inside the scans' {grid.shape} voxels") \
                from None
        shape = tuple(s.stop - s.start for s in roi)
    return files, double, tuple(n // sc.binning for n in shape)


def _check_given_voxel_size(sc: Scans, first: Path) -> None:
    """A given voxel size far from the one the files record is logged (a typo, or the
    files' metadata is wrong: both happen)."""
    from anodetwin.io.agree import grid_of
    from anodetwin.log import get_logger

    if not sc.voxel_size_um:
        return
    try:
        own = grid_of(first).voxel_size_um
    except Exception:  # noqa: BLE001 - the grid check above has opened it already
        return
    if own and not 0.5 < sc.voxel_size_um / min(own) < 2.0:
        get_logger("run").warning(
            "[scans] voxel_size_um = %g um, the files record %s um: the given value is "
            "taken; check it", sc.voxel_size_um, ", ".join(f"{v:g}" for v in own))


def cell_model(cell: str, base: Path) -> str:
    """The cell protocol ``[cell] model`` as ``load_protocol`` takes it: a model name of
    ``models/``, or a ``.toml`` path made absolute from ``base``."""
    return str(volume_path(cell, base)) if cell.endswith(".toml") else cell


@functools.lru_cache(maxsize=8)
def cell_history(cell: str, base: Path):
    """The simulated cell history of ``[cell] model`` (SoC, current and scan times;
    :func:`anodetwin.simulate.protocol.simulate_cell`), computed once per model."""
    from anodetwin.simulate.protocol import load_protocol, simulate_cell

    return simulate_cell(load_protocol(cell_model(cell, base)))


def scan_times(cell: str, base: Path) -> dict[str, float]:
    """Scan name -> time (s) of the cell protocol ``cell`` (a model name or ``.toml``)."""
    return dict(cell_history(cell, base).scans)


def _cell(sc: Scans, table: dict, base: Path) -> str:
    """``[cell] model``; with ``[scans] soc``, a protocol that takes that cell through the
    scans' states of charge at ``[cell] c_rate`` (written once, named by its content, in
    the temporary folder)."""
    import hashlib
    import tempfile

    from anodetwin.io import atomic_write_text
    from anodetwin.io.tomlfile import toml_text
    from anodetwin.log import get_logger
    from anodetwin.simulate.protocol import protocol_from_soc

    cell = table.get("model", "reference_cell")
    if not sc.soc:
        if "c_rate" in table:
            get_logger("run").warning("[cell] c_rate is used with [scans] soc only; the "
                                      "protocol of [cell] model sets the currents")
        return cell
    try:
        text = toml_text(protocol_from_soc(cell_model(cell, base), list(sc.names),
                                           list(sc.soc), table.get("c_rate", "C/3")))
    except ParameterError as exc:
        raise ParameterError(f"[scans] soc: {exc.problem}", exc.fix) from None
    digest = hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    path = Path(tempfile.gettempdir()) / "anodetwin-protocols" / f"soc_{digest}.toml"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return str(path)


def _check_cell(cell: str, names: tuple[str, ...], base: Path) -> None:
    """Every scan a scan of the protocol, the first its initial one (the twin starts from
    the pristine state), in the protocol's order."""
    try:
        times = scan_times(cell, base)
    except ParameterError as exc:
        raise ParameterError(f"[cell] model = '{cell}': {exc.problem}", exc.fix) from None
    missing = [n for n in names if n not in times]
    if missing:
        raise ParameterError(f"[cell] model '{cell}' has no scan {', '.join(missing)} "
                             f"(its scans: {', '.join(times) or 'none'})",
                             "give the cell protocol the series was measured with, or name "
                             "the scans as its protocol does in [scans] names")
    first = min(times, key=times.get)
    if names[0] != first:
        raise ParameterError(f"[scans] the first scan is {names[0]}, the protocol of [cell] "
                             f"model '{cell}' starts with {first}",
                             f"give {first} (the pristine scan the twin starts from) first")
    t = [times[n] for n in names]
    if any(b <= a for a, b in zip(t, t[1:])):
        raise ParameterError(f"[scans] names {list(names)} are not in the order of the "
                             f"protocol's scans", "list the scans in the order they were "
                                                  "taken")


def _check_simulation(d: dict, cell: str, base: Path) -> None:
    """The ``[simulation]`` tables as ``simulate`` will take them (mesh: made by the run)."""
    from anodetwin.simulate.case import case_from_dict

    if "mesh" in d or "cell" in d:
        raise ParameterError("[simulation] holds a mesh or cell table",
                             "the run meshes the segmented T0 and takes [cell] model")
    try:
        case_from_dict({**d, "cell": {"model": cell}, "mesh": {"path": "."}}, base,
                       check_mesh=False)
    except ParameterError as exc:
        raise ParameterError(f"[simulation] {exc.problem}", exc.fix) from None


def _check_segment(s: SegmentSettings, base: Path) -> None:
    if s.denoise not in ("", "median", "nlmeans"):
        raise ParameterError(f"[segment] denoise = '{s.denoise}'",
                             "give 'median', 'nlmeans' or leave it out")
    if s.normalise not in ("", "stretch", "equalise", "equalize"):
        raise ParameterError(f"[segment] normalise = '{s.normalise}'",
                             "give 'stretch', 'equalise' or leave it out")
    if s.classifier and s.annotations:
        raise ParameterError("[segment] gives both classifier and annotations",
                             "give a trained classifier or annotations to train one")
    for key in ("classifier", "annotations"):
        if getattr(s, key) and not volume_file(volume_path(getattr(s, key), base)).exists():
            raise InputNotFoundError(volume_path(getattr(s, key), base), f"[segment] {key}")


def _check_dvc(s: DvcSettings, shape: tuple) -> None:
    """``[dvc]`` as the DVC stage will take it, on scans of ``shape``."""
    from anodetwin.dvc.correlate import (ENGINES, INTERPOLATION_ORDER, REFERENCE_MODELS,
                                         SHAPE_FUNCTIONS)
    from anodetwin.dvc.pair import correlation_levels

    for key, value, allowed in (("engine", s.engine, ENGINES),
                                ("interpolation", s.interpolation, tuple(INTERPOLATION_ORDER)),
                                ("criterion", s.criterion, ("", "znssd", "ssd")),
                                ("shape_function", s.shape_function, SHAPE_FUNCTIONS),
                                ("reference_model", s.reference_model, REFERENCE_MODELS)):
        if value not in allowed:
            raise ParameterError(f"[dvc] {key} = '{value}'",
                                 "give " + " or ".join(f"'{a}'" for a in allowed if a))
    for key, v, low in (("search_range", s.search_range, 0), ("hws", s.hws, 1)):
        values = v if isinstance(v, tuple) else (v,)
        if len(values) not in (1, 3) or min(values) < low:
            raise ParameterError(f"[dvc] {key} = {v}", f"give N or [Z, Y, X] voxels >= {low}")
    sr = s.search_range
    try:
        correlation_levels(shape, s.node_spacing, s.hws, list(s.pyramid) or None, 3, sr, 0.0,
                           {"engine": s.engine, "criterion": s.criterion,
                            "interpolation_order": INTERPOLATION_ORDER[s.interpolation],
                            "robust": s.robust, "shape_function": s.shape_function,
                            "reference_model": s.reference_model})
    except ParameterError as exc:
        raise ParameterError(f"[dvc] {exc.problem} (scans of {shape} voxels)",
                             exc.fix) from None


def run_from_dict(d: dict, base: str | os.PathLike = ".", path: Path | None = None
                  ) -> RunConfig:
    """Check a run given as a dict (module notes) and return it.

    Parameters
    ----------
    d : dict
        The tables, e.g. a parsed run file.
    base : path-like
        The folder relative paths are taken from.
    path : Path, optional
        The run file, recorded in the result.

    Returns
    -------
    RunConfig

    Raises
    ------
    ParameterError, InputNotFoundError, GridMismatchError
        The first problem found (module notes), naming ``[table] key``.
    """
    base = Path(base).resolve()
    unknown = sorted(set(d) - set(_TABLES) - _FREE)
    if unknown:
        raise ParameterError(f"unknown tables {unknown}",
                             f"use {sorted([*_TABLES, *_FREE])}")
    t = {k: build_dataclass(cls, d.get(k, {}), k) for k, cls in _TABLES.items()}
    sc = t["scans"]
    if not sc.names:
        sc = Scans(**{**sc.__dict__, "names": tuple(f"T{k}" for k in range(len(sc.files)))})
    files, double, shape = _check_scans(sc, base)
    cell = _cell(sc, table_values(d.get("cell", {}), {"model": str, "c_rate": str | float},
                                  "cell"), base)
    _check_cell(cell, sc.names, base)
    _check_segment(t["segment"], base)
    _check_dvc(t["dvc"], shape)
    sim = d.get("simulation", {})
    _check_simulation(sim, cell, base)
    validation = d.get("validation", {})
    from anodetwin.validate.config import config_from_dict

    try:
        config_from_dict(validation)
    except ParameterError as exc:
        raise ParameterError(f"[validation] {exc.problem}", exc.fix) from None
    truth = table_values(d.get("truth", {}), {"series": str}, "truth").get("series")
    truth_path = volume_path(truth, base) if truth else None
    if truth_path is not None and not truth_path.is_file():
        raise InputNotFoundError(truth_path, "[truth] series")
    for key, v, low in (("mesh] coarsen", t["mesh"].coarsen, 1),
                        ("dvc] node_spacing", t["dvc"].node_spacing, 1),
                        ("resources] ranks", t["resources"].ranks, 0),
                        ("resources] workers", t["resources"].workers, 0)):
        if v < low:
            raise ParameterError(f"[{key} = {v}", f"give an integer >= {low}"
                                 + (" (0: all cores)" if low == 0 else ""))
    _check_memory(t["resources"].memory_limit)
    _check_scheduler(t["resources"].scheduler)
    if t["residuals"].floor < 0:
        raise ParameterError(f"[residuals] floor = {t['residuals'].floor:g}",
                             "give a grey-value floor > 0, or 0 to take the double scan's")
    _check_blocks(shape, t["resources"], t["residuals"],
                  bool(double) or t["residuals"].floor > 0)
    return RunConfig(path=path or base / "run.toml", scans=sc, scan_files=files,
                     double_scan=double, cell=cell, segment=t["segment"], mesh=t["mesh"],
                     simulation=sim, dvc=t["dvc"], residuals=t["residuals"],
                     validation=validation, resources=t["resources"], truth=truth_path, raw=d)


def load_run(path: str | os.PathLike) -> RunConfig:
    """Read and check a run file (module notes) before any work.

    Parameters
    ----------
    path : path-like
        The run file.

    Returns
    -------
    RunConfig

    Raises
    ------
    InputNotFoundError, CorruptFileError, ParameterError, GridMismatchError
        One line naming the run file, the table and key, and the fix.
    """
    p = Path(path)
    d = read_toml(p, "run file", "write one with 'anodetwin init DIR'")
    with in_file(p):
        return run_from_dict(d, p.resolve().parent, p.resolve())


TEMPLATE = '''# anodetwin run file: an in situ series from its scans to the model-versus-DVC report.
# Run it with:   anodetwin run run.toml --out results
# Its state:     anodetwin run run.toml --out results --status
# Relative paths are taken from this file's folder. Every table but [scans] is optional;
# a key left out takes the value shown. Arrays are (z, y, x), lengths in um.

[scans]
files = ["T0.tif", "T1.tif"]  # T0 first; TIFF, HDF5 ("file.h5:/dataset"), Zarr, npy, raw
# names = ["T0", "T1"]        # default T0, T1, ...: the scan names of the cell protocol
# voxel_size_um = 0.0         # 0: from the files (files that record none: give it here)
# roi = ""                    # region of every scan, voxels "z0:z1,y0:y1,x0:x1"
# binning = 1                 # mean-binning of every scan
# double_scan = []            # two scans with no change between: the noise floor
# soc = []                    # state of charge of every scan (0..1) instead of the
#                             # protocol's segments: constant current at [cell] c_rate

[cell]
# model = "reference_cell"    # cell and protocol (models/<name>.toml or a .toml path);
#                             # its scans must include every name of [scans]
# c_rate = "C/3"              # with [scans] soc: the current between scans (1/h or "C/n")

[segment]
# classifier = ""             # a model from 'anodetwin segment-train' ("": thresholds)
# annotations = ""            # or a label volume to train one (phase codes, 255 elsewhere)
# annotation_scan = ""        # the scan the annotations belong to (default T0)
# annotation_slices = []      # z slices of the annotations to train on (all: [])
# denoise = ""                # median | nlmeans
# normalise = ""              # stretch | equalise
# h = 1.0                     # h-maxima height of the particle watershed (voxels)
# min_particle_voxels = 27
# surface_window_um = 10.0    # lateral window of the electrode-top envelope

[mesh]
# coarsen = 4                 # hexahedra of coarsen^3 voxels
# min_speck_voxels = 0        # merge isolated label specks smaller than this

[simulation]                  # the case tables of 'anodetwin simulate' but mesh and cell
# [simulation.lithiation]
# profile = "separator"
# [simulation.boundary]
# p0_mpa = 0.3
# [simulation.solver]
# plasticity = true

[dvc]
# node_spacing = 10           # voxels
# hws = 10                    # half-window (voxels), or [z, y, x], e.g. [6, 10, 10]
# pyramid = []                # e.g. [100, 70]: coarse levels first
# search_range = 0            # integer search of the first level (voxels)
# engine = "native"           # "native" (anodetwin's IC-GN) or "spam"
# interpolation = "cubic"     # "cubic" (B-spline) or "linear" in the deformed scan
# criterion = ""              # "znssd" (grey-value offset and scale free) or "ssd";
#                             # "": the engine's own (native ZNSSD, spam SSD)
# robust = false              # re-weight each window's voxels by their residual (native):
#                             # for grey values that change, e.g. lithiated Si
# shape_function = "affine"   # "affine", "quadratic" or "quadratic-z" (native; no bias
#                             # in curved fields; -z: d2u/dz2 only, less noise)
# reference_model = "grey"    # "grey" or "phases": T0 -> Tk windows matched to a model of
#                             # T0 from its segmented phases (native; lithiating Si)
# refine = true               # refine T0 -> Tk from the composed increments
# mask = true                 # skip windows mostly outside the material of T0
# cube_um = 0.0               # sub-volume cubes of the region statistics (0: auto)
# voi_um = 0.0                # particle VOIs (0: auto)

[residuals]
# sigma = 2.0                 # Gaussian smoothing of the residual (voxels)
# shell_voxels = 3.0          # shell of the per-particle core/shell classification
# floor = 0.0                 # residual floor, grey levels (0: from [scans] double_scan;
#                             # with neither, the run makes no residual maps)

[validation]                  # the tables of 'anodetwin validate --config' (tolerances ...)

[resources]
# ranks = 0                   # MPI ranks of the simulation (0: all cores)
# workers = 0                 # DVC processes, image-stage threads (0: all cores)
# memory_limit = "4GB"        # memory ceiling of the image stages (block by block),
#                             # per Dask worker with a scheduler
# scheduler = ""              # Dask: "" this machine, "local" a local cluster of `workers`
#                             # processes, or a scheduler's address ("tcp://host:8786");
#                             # one scan per worker, each on the worker's threads
'''

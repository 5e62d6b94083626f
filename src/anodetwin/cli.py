"""The ``anodetwin`` command line.

Every subcommand is a thin layer over library functions. User errors
(:class:`~anodetwin.errors.AnodetwinError`) print one line ``anodetwin: error: ...`` and exit
with status 2, without a traceback unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from anodetwin._version import __version__
from anodetwin.errors import AnodetwinError
from anodetwin.log import configure_logging, get_logger

__all__ = ["main", "build_parser"]

log = get_logger("cli")

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``anodetwin: error: <option and fix>``, exit 2."""

    def error(self, message: str) -> NoReturn:
        import re

        # converters name their option themselves: drop argparse's "argument X: " before it
        message = re.sub(r"^argument ([^:]+): (?=\1 )", "", message)
        self.exit(EXIT_USER_ERROR, f"anodetwin: error: {message} (see '{self.prog} --help')\n")


def value_list(option: str, kind: type = int, n: int | tuple | None = None,
               low: float | None = None, above: bool = False, example: str = "",
               empty: bool = False, single: bool = False, high: float | None = None):
    """An argparse ``type`` for a number or a comma-separated list of numbers.

    Parameters
    ----------
    option : str
        The option's name, for the message (e.g. ``"--pyramid"``).
    kind : int or float
        Type of each value (floats must be finite).
    n : int or tuple of int, optional
        Allowed numbers of values (e.g. ``(1, 3)`` for ``N`` or ``Z,Y,X``).
    low : float, optional
        Smallest value allowed (``above``: values must be larger than it).
    high : float, optional
        Largest value allowed.
    example : str
        A valid value for the fix, e.g. ``"100,70"``.
    empty : bool
        Accept an empty string (an empty list).
    single : bool
        Return the one value instead of a list when exactly one is given.

    Returns
    -------
    callable
        ``text -> list`` (or a number with ``single``); a bad value raises
        :class:`argparse.ArgumentTypeError` whose one-line message names the option, the
        value and the fix (argparse then exits with status 2).
    """
    counts = (n,) if isinstance(n, int) else n
    noun = "integer" if kind is int else "number"
    bound = "" if low is None else f" {'>' if above else '>='} {low:g}"
    if high is not None:
        bound += f"{' and' if bound else ''} <= {high:g}"
    if counts == (1,):
        shape = f"one {noun}{bound}"
    elif counts:
        shape = f"{' or '.join(map(str, counts))} comma-separated {noun}s{bound}"
    else:
        shape = f"comma-separated {noun}s{bound}"

    def convert(text: str):
        shown = text if str(text).strip() and " " not in str(text) else repr(text)

        def fail(why: str):
            return argparse.ArgumentTypeError(f"{option} {shown}: {why}; give {shape}, "
                                              f"e.g. {option} {example}")

        parts = [p.strip() for p in str(text).split(",")] if str(text).strip() else []
        if not parts and not empty:
            raise fail("empty")
        vals = []
        for p in parts:
            try:
                v = kind(p)
            except ValueError:
                raise fail(f"{p!r} is not a{'n' if kind is int else ''} {noun}") from None
            if kind is float and not math.isfinite(v):
                raise fail(f"{p!r} is not a finite number")
            if (low is not None and (v <= low if above else v < low)) or \
                    (high is not None and v > high):
                raise fail(f"{p} is not{bound}")
            vals.append(v)
        if counts and parts and len(vals) not in counts:
            raise fail(f"{len(vals)} value{'s' if len(vals) != 1 else ''}")
        return vals[0] if single and len(vals) == 1 else vals

    convert.__name__ = f"{noun} list"
    return convert


def int_list(option: str, **kw: Any):
    """:func:`value_list` of integers."""
    return value_list(option, int, **kw)


def float_list(option: str, **kw: Any):
    """:func:`value_list` of floats."""
    return value_list(option, float, **kw)


def int_value(option: str, low: float | None = None, example: str = "1", **kw: Any):
    """One integer (:func:`value_list` with one value)."""
    return value_list(option, int, n=1, low=low, example=example, single=True, **kw)


def float_value(option: str, low: float | None = None, example: str = "1", **kw: Any):
    """One finite float (:func:`value_list` with one value)."""
    return value_list(option, float, n=1, low=low, example=example, single=True, **kw)


def jobs_value(option: str = "--jobs"):
    """Parallel jobs: N >= 1, or -1 for all cores (scikit-learn's convention)."""
    base = int_value(option, low=-1, example="4 (or -1: all cores)")

    def convert(text: str) -> int:
        v = base(text)
        if v == 0:
            raise argparse.ArgumentTypeError(f"{option} {text}: no job would run; give N >= 1, "
                                             f"or -1 for all cores, e.g. {option} 4")
        return v

    convert.__name__ = "jobs"
    return convert


def voxel_size_value(option: str = "--voxel-size"):
    """A voxel size in um: one value (isotropic) or Z,Y,X (per axis), all positive."""
    return value_list(option, float, n=(1, 3), low=0, above=True,
                      example="0.05 (or 0.1,0.05,0.05 for z, y, x)", single=True)


def roi_value(text: str) -> str:
    """A region of interest ``Z0:Z1,Y0:Y1,X0:X1``, checked here (not empty, three parts of
    start:stop) and passed on as text; the volume's reader checks that it lies inside."""
    from anodetwin.errors import ParameterError
    from anodetwin.io import parse_roi

    if not str(text).strip():
        raise argparse.ArgumentTypeError(f"--roi {text!r}: empty; give Z0:Z1,Y0:Y1,X0:X1 "
                                         "(':' for a whole axis), e.g. --roi 0:200,:,:, or "
                                         "leave --roi out for the whole volume")
    try:
        parse_roi(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: {exc}") from None
    return text


def _add_common(p: argparse.ArgumentParser, top: bool) -> None:
    d = None if top else argparse.SUPPRESS
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0 if top else d,
                   help="more output (debug logging, tracebacks on errors)")
    g.add_argument("-q", "--quiet", action="store_true", default=False if top else d,
                   help="only warnings and errors, no progress bars")


VOXEL_SIZE_HELP = ("voxel size in um, one value or Z,Y,X, for every input of the command: "
                   "their files' voxel sizes and origins are then not compared (a mismatch "
                   "is logged)")


def _volume_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--roi", type=roi_value, metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="region of interest in voxels of the input (end exclusive), e.g. 0:200,:,:")
    p.add_argument("--bin", dest="binning", type=int_value("--bin", low=1, example="2"),
                   default=1, metavar="N",
                   help="mean-bin by N along each axis after cropping (dtype kept)")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)


def _correlation_options(p: argparse.ArgumentParser, series: bool) -> None:
    """The DVC options shared by ``dvc`` and ``dvc-series`` (grid, windows, search, workers)."""
    what = " for each increment" if series else " run first"
    p.add_argument("--node-spacing", type=int_value("--node-spacing", low=1, example="35"),
                   default=35, help="node spacing in voxels (35)")
    p.add_argument("--hws", type=int_value("--hws", low=1, example="10"),
                   help="half-window size in voxels (default: spacing)")
    p.add_argument("--pyramid", type=int_list("--pyramid", low=1, example="100,70"),
                   help=f"coarser node spacings{what}, e.g. 100,70")
    p.add_argument("--search-range", default="0",
                   type=int_list("--search-range", n=(1, 3), low=0, example="15 (or 15,5,5)"),
                   metavar="N or Z,Y,X",
                   help="integer pixel search +-N voxels (per axis) before the first level "
                        "(0: off)")
    p.add_argument("--processes", type=int_value("--processes", low=1, example="4"),
                   default=1, help="local worker processes (1)")
    p.add_argument("--scheduler", help="Dask scheduler address, or 'local' for a LocalCluster")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)


def _region_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phases", help="phase volume of T0 (anodetwin codes): interfaces of the "
                                    "collector and separator for the electrode halves")
    p.add_argument("--particles", help="particle labels of T0: particle-centred VOIs")
    p.add_argument("--interfaces", metavar="ZC,ZS",
                   type=float_list("--interfaces", n=2, example="10.5,60.5"),
                   help="collector and separator interface z in voxels (instead of --phases)")
    p.add_argument("--cube-um", type=float_value("--cube-um", low=0, example="40"),
                   help="edge of the sub-volume cubes in um, at least one DVC cell (default: "
                        "40 where that is a cell or more, else none; 0: none)")
    p.add_argument("--voi-um", type=float_value("--voi-um", low=0, example="15"),
                   help="edge of the particle-centred VOIs in um, at least one DVC cell "
                        "(default: 15 where that is a cell or more, else none; 0: none)")


def _region_kw(args: argparse.Namespace) -> dict:
    interfaces = tuple(args.interfaces) if args.interfaces else None

    def edge(v: float | None) -> float | str | None:  # None: not given; 0: none
        return "auto" if v is None else (v or None)

    return {"phases": args.phases, "particles": args.particles, "interfaces": interfaces,
            "cube_um": edge(args.cube_um), "voi_um": edge(args.voi_um)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``anodetwin`` with all subcommands."""
    parser = _Parser(
        prog="anodetwin",
        description="Digital twin and measurement comparison for silicon-rich Li-ion anodes "
                    "imaged by in situ X-ray tomography. Arrays are (z, y, x), lengths in um.")
    parser.add_argument("--version", action="version", version=f"anodetwin {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _add_common(p, top=False)
        return p

    p = add("info", "versions of anodetwin, DOLFINx, PETSc, spam, gmsh, numpy; MPI and threads")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = add("convert", "convert a volume between formats, optionally cropped and binned "
                       "(streamed: bounded memory)")
    p.add_argument("input", help="volume: .tif, folder of .tif slices, file.h5:/dataset, "
                                 ".zarr, .npy, .raw (+ .json sidecar)")
    p.add_argument("output", help="output path; the format follows from the extension "
                                  "(a trailing / writes a folder of TIFF slices)")
    _volume_options(p)
    p.add_argument("--format", choices=("tiff", "tiff-dir", "hdf5", "zarr", "npy", "raw"),
                   help="force the output format")
    p.add_argument("--compression", choices=("gzip", "lzf"), help="HDF5 compression")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="accept NaN/inf in float volumes (refused by default)")
    p.set_defaults(func=cmd_convert)

    p = add("inspect", "shape, dtype, voxel size, provenance and grey-value statistics of a volume")
    p.add_argument("input", help="volume path")
    _volume_options(p)
    p.add_argument("--no-stats", action="store_true", help="metadata only, read no voxels")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = add("noise-floor", "noise level of a double scan (two scans, no change between them): "
                           "noise std, drift and the residual-map threshold")
    p.add_argument("scan_a", help="first scan")
    p.add_argument("scan_b", help="second scan (same grid)")
    _volume_options(p)
    p.add_argument("--sigma", type=float_value("--sigma", low=0, example="2"), default=2.0,
                   help="Gaussian blur of the difference in voxels (default 2, as the reference)")
    p.add_argument("--percentile",
                   type=float_value("--percentile", low=0, above=True, high=100, example="99"),
                   default=99.0,
                   help="percentile (0 < p <= 100) of |blurred difference| taken as threshold "
                        "(default 99)")
    p.add_argument("--out", help="write the difference volume (float32) here")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_noise_floor)

    p = add("dvc", "local digital volume correlation of two volumes (spam): displacement, "
                   "strain, node flags")
    p.add_argument("ref", help="reference volume (e.g. T0)")
    p.add_argument("deformed", help="deformed volume (same grid)")
    p.add_argument("--out", required=True, help="result HDF5 (layout: anodetwin.dvc.pair)")
    _correlation_options(p, series=False)
    p.add_argument("--mask", help="labels volume; windows mostly outside material are skipped")
    p.add_argument("--roi", type=roi_value,
                   metavar="Z0:Z1,Y0:Y1,X0:X1", help="correlate only this region")
    p.add_argument("--margin", type=int_value("--margin", low=0, example="3"),
                   default=3, help="search margin in voxels (3)")
    p.add_argument("--no-global", action="store_true", help="skip the global registration")
    p.add_argument("--vtk", help="also write the node grid as VTK ImageData (.vti, ParaView)")
    p.add_argument("--png", help="also write a quick-look PNG (mid-slices of J-1 and e_zz)")
    p.set_defaults(func=cmd_dvc)

    p = add("dvc-series", "DVC of a series T0 T1 ... Tn: incremental and cumulative fields")
    p.add_argument("volumes", nargs="+", help="T0 T1 ... Tn (same grid)")
    p.add_argument("--out", required=True, help="output folder")
    _correlation_options(p, series=True)
    p.add_argument("--no-refine", action="store_true",
                   help="keep the pure composition of increments (no direct T0->Tk refinement)")
    _region_options(p)
    p.add_argument("--no-quicklook", action="store_true", help="skip the quick-look PNGs")
    p.set_defaults(func=cmd_dvc_series)

    p = add("dvc-regions", "strain statistics of DVC results over the electrode halves, "
                           "sub-volume cubes and particle-centred VOIs")
    p.add_argument("results", nargs="+", help="DVC result files on one grid "
                                              "(e.g. cumulative_0_1.h5 ... cumulative_0_n.h5)")
    p.add_argument("--out", required=True, help="regions HDF5 (a .csv table is written beside)")
    _region_options(p)
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)
    p.add_argument("--steps", type=int_list("--steps", low=0, example="1,2,3"),
                   help="step label of each result, all different, e.g. 1,2,3 (default 1..n)")
    p.add_argument("--png-dir", help="also write quick-look PNGs into this folder")
    p.set_defaults(func=cmd_dvc_regions)

    p = add("dvc-residual", "residual map of a DVC pair: REF deformed by the measured field, "
                            "subtracted from DEF, blurred, thresholded at the noise floor")
    p.add_argument("ref", help="reference volume")
    p.add_argument("deformed", help="deformed volume (same grid)")
    p.add_argument("result", help="DVC result of the pair (anodetwin dvc)")
    p.add_argument("--out", required=True, help="output HDF5: /residual volume (+ /particles)")
    p.add_argument("--sigma", type=float_value("--sigma", low=0, example="2"),
                   default=2.0, help="Gaussian blur in voxels (2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--floor", type=float_value("--floor", low=0, example="5000"),
                    help="noise floor in grey levels "
                                               "(default 5000, the reference's 16-bit level)")
    g.add_argument("--double-scan", nargs=2, metavar=("A", "B"),
                   help="estimate the floor from two scans of the unchanged sample")
    p.add_argument("--particles", help="particle labels of REF: per-particle statistics")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)
    p.add_argument("--shell", type=float_value("--shell", low=0, above=True, example="3"),
                   default=3.0,
                   help="surface-shell thickness in voxels (> 0; Euclidean distance from the "
                        "particle boundary, so 1.5 takes diagonal neighbours) for the particle "
                        "statistics (3)")
    p.set_defaults(func=cmd_dvc_residual)

    p = add("segment", "phases (Cu, Si, CBD+E, separator) and particle instances of a tomogram")
    p.add_argument("volume", help="tomogram")
    p.add_argument("--out", required=True, help="labels HDF5 (layout: anodetwin.segment.pipeline)")
    p.add_argument("--model", help="pixel classifier from segment-train (default: unsupervised "
                                   "thresholds)")
    p.add_argument("--denoise", choices=("median", "nlmeans"), help="denoise first")
    p.add_argument("--normalise", choices=("stretch", "equalize"),
                   help="grey-value normalisation first")
    p.add_argument("--align-to", metavar="REF", help="move the volume onto REF (e.g. T0) by "
                                                     "the translation of the copper foil")
    p.add_argument("--h", type=float_value("--h", low=0, above=True, example="1"), default=1.0,
                   help="h-maxima height of the watershed in voxels (1; larger merges more)")
    p.add_argument("--min-particle-voxels",
                   type=int_value("--min-particle-voxels", low=1, example="27"), default=27,
                   help="smallest particle kept (27 voxels)")
    p.add_argument("--surface-window-um",
                   type=float_value("--surface-window-um", low=0, above=True, example="10"),
                   default=10.0,
                   help="lateral window of the electrode-top envelope in um (10)")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)
    p.add_argument("--tiff", action="store_true", help="also write phases/particles as TIFF")
    p.add_argument("--no-resolution", action="store_true",
                   help="skip the edge-profile resolution estimate")
    p.set_defaults(func=cmd_segment)

    p = add("segment-train", "train a pixel classifier (multi-scale filters + random forest) "
                             "from a few annotated slices")
    p.add_argument("volume", help="tomogram")
    p.add_argument("annotations", help="label volume of the same shape: phase codes where "
                                       "annotated, 255 elsewhere")
    p.add_argument("--out", required=True, help="model file (.joblib), e.g. models/si.joblib")
    p.add_argument("--slices", type=int_list("--slices", low=0, example="5,20,35"),
                   help="use only these z slices of the annotations, e.g. 5,20,35")
    p.add_argument("--trees", type=int_value("--trees", low=1, example="100"),
                   default=100, help="random-forest trees (100)")
    p.add_argument("--sigmas", type=float_list("--sigmas", low=0, above=True, example="0.7,1,1.6"),
                   help="filter scales in voxels (default 0.7,1,1.6,3.5,5)")
    p.add_argument("--jobs", type=jobs_value("--jobs"),
                   default=1, help="parallel jobs of the forest: N >= 1, or -1 for all cores (1)")
    p.set_defaults(func=cmd_segment_train)

    p = add("morphology", "thickness, RNL volume, particle sizes and tracks of a segmented "
                          "series")
    p.add_argument("labels", nargs="+", help="labels files of T0 T1 ... (anodetwin segment)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dvc", metavar="DIR", help="dvc-series folder: its increments are the "
                                                "tracking prior")
    p.add_argument("--prior", choices=("thickness", "none"), default="thickness",
                   help="tracking prior without --dvc: uniform swelling along z (default)")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)
    p.set_defaults(func=cmd_morphology)

    p = add("mesh", "hexahedral finite element mesh of labels with phase, particle and "
                    "boundary tags (runs under mpiexec)")
    p.add_argument("labels", help="labels file of 'anodetwin segment', or a phase-code volume "
                                  "(e.g. series.h5:/steps/T0/phases)")
    p.add_argument("--out", required=True, help="output folder: mesh.xdmf/.h5, summary.json")
    p.add_argument("--particles", help="particle-id volume (for a plain phase volume)")
    p.add_argument("--coarsen", type=int_value("--coarsen", low=1, example="2"),
                   default=1, metavar="K",
                   help="majority coarsening by K along each axis (1)")
    p.add_argument("--voxel-size", type=voxel_size_value(), metavar="UM or Z,Y,X",
                   help=VOXEL_SIZE_HELP)
    p.add_argument("--drop-phases", default="",
                   type=int_list("--drop-phases", low=0, example="0,5", empty=True),
                   metavar="CODES",
                   help="phase codes left out of the mesh, e.g. 0 (pores) or 0,5")
    p.add_argument("--min-speck-voxels",
                   type=int_value("--min-speck-voxels", low=0, example="8"), default=0,
                   help="pieces of a phase smaller than this take the phase around them")
    p.add_argument("--smooth", type=int_value("--smooth", low=0, example="3"),
                   default=0, metavar="N",
                   help="N passes of constrained Taubin smoothing of the interfaces (0)")
    p.add_argument("--conforming", action="store_true",
                   help="tetrahedra with shared interfaces (SurfaceNets + TetGen) instead of "
                        "voxel hexahedra")
    p.add_argument("--quality", action="store_true",
                   help="with --conforming: TetGen quality refinement (radius-edge ratio 2)")
    p.add_argument("--preview", metavar="PNG", help="render the mesh off-screen (pyvista)")
    p.set_defaults(func=cmd_mesh)

    p = add("mesh-packing", "tetrahedral mesh of particles as spheres in a box (gmsh OCC): "
                            "single particles, VOIs, small packings")
    p.add_argument("source", help="phantom series.h5, labels file of 'anodetwin segment' "
                                  "(their particle tables) or a CSV with id, centroid_z_um, "
                                  "centroid_y_um, centroid_x_um, equivalent_diameter_um")
    p.add_argument("--out", required=True, help="output folder (as 'anodetwin mesh')")
    p.add_argument("--box", type=float_list("--box", n=6, example="2.5,7,0,4,0,4"),
                   metavar="Z0,Z1,Y0,Y1,X0,X1",
                   help="box in um (default: the electrode layer of a phantom, else the "
                        "volume of a labels file; required for a CSV)")
    p.add_argument("--ids", type=int_list("--ids", low=1, example="3,7"),
                   help="only these particle ids, e.g. 3,7")
    p.add_argument("--mesh-size",
                   type=float_value("--mesh-size", low=0, above=True, example="0.8"),
                   help="largest element (um)")
    p.add_argument("--surface-size",
                   type=float_value("--surface-size", low=0, above=True, example="0.3"),
                   help="element size on particle surfaces (um)")
    p.add_argument("--preview", metavar="PNG", help="render the mesh off-screen (pyvista)")
    p.set_defaults(func=cmd_mesh_packing)

    p = add("simulate", "chemo-mechanical simulation of a meshed electrode through the cell "
                        "protocol (run under mpiexec -n N for MPI)")
    p.add_argument("case", help="case file (TOML): mesh, materials, cell, lithiation, "
                                "boundary, solver, output")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped or killed run from its checkpoint (same case: "
                        "a changed case is refused, except [solver] linear and dt_min_s; a "
                        "run with no finished step starts afresh with or without it)")
    p.add_argument("--allow-case-change", action="store_true",
                   help="with --resume: continue although the case changed (the changes "
                        "are recorded in run.json's case_history)")
    p.add_argument("--max-steps", type=int_value("--max-steps", low=1, example="100"), default=None,
                   help="stop (resumable) after this many steps, e.g. for batch time limits")
    p.add_argument("--check", action="store_true",
                   help="validate the case and its cell protocol, run nothing")
    p.set_defaults(func=cmd_simulate)

    p = add("study", "design what-if study: many twins (phantom -> mesh -> simulation) over "
                     "particle size, porosity, pressure, ... on Dask; resumable")
    p.add_argument("study", help="study file (TOML): parameters, design, replicates, base "
                                 "phantom and simulation")
    p.add_argument("--out", required=True, help="output folder (results.csv, designs.csv, "
                                                "main_effects.png, summary.html, cases/)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler "
                                       "(default: a local cluster)")
    p.add_argument("--workers", type=int_value("--workers", low=1, example="4"),
                   help="local workers, cases at a time "
                                               "(default: cores // ranks per case)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run the cases whose last attempt failed again")
    p.add_argument("--check", action="store_true",
                   help="validate the study and list its cases, run nothing")
    p.set_defaults(func=cmd_study)

    p = add("study-case", "mesh and simulate one prepared case folder of a study (what each "
                          "study task runs under mpiexec)")
    p.add_argument("folder", help="case folder with labels.h5 and case.toml")
    p.add_argument("--coarsen", type=int_value("--coarsen", low=1, example="2"),
                   default=2, metavar="K", help="mesh coarsening (2)")
    p.set_defaults(func=cmd_study_case)

    p = add("validate", "model versus DVC: the simulated and measured fields on one grid, "
                        "metrics, pass/fail table and an HTML report")
    p.add_argument("--sim", required=True, help="folder of 'anodetwin simulate'")
    p.add_argument("--dvc", required=True, help="folder of 'anodetwin dvc-series'")
    p.add_argument("--out", required=True, help="report folder (report.html, metrics.json, "
                                                "metrics.csv, checks.csv, figures/)")
    p.add_argument("--config", help="validate.toml: frame, steps, nodes, regions, tolerances")
    p.set_defaults(func=cmd_validate)

    p = add("phantom", "synthetic Si anode and in situ tomogram series with exact ground truth")
    p.add_argument("out", help="output folder: series.h5, summary.json, preview.png "
                               "(and tiff/T<n>.tif with --tiff)")
    p.add_argument("--config", help="phantom TOML (defaults: the reference electrode)")
    p.add_argument("--seed", type=int_value("--seed", low=0, example="2"),
                   help="random seed (overrides the config's)")
    p.add_argument("--tiff", action="store_true", help="also export every step as TIFF")
    p.set_defaults(func=cmd_phantom)

    p = add("demo", "the main job end to end on built-in data; prints where its output is")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------------------------
# commands

def _print_json(obj: Any) -> None:
    from anodetwin.io.atomic import json_default

    print(json.dumps(obj, indent=2, default=json_default))


def cmd_info(args: argparse.Namespace) -> int:
    from anodetwin.info import environment_info

    info = environment_info()
    mpi = info["mpi"]
    if isinstance(mpi, dict) and mpi.get("rank", 0) != 0:
        return 0
    if args.json:
        _print_json(info)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"anodetwin {info['anodetwin']}", show_header=False)
    t.add_column("item", style="bold")
    t.add_column("value")
    t.add_row("python", info["python"])
    t.add_row("platform", info["platform"])
    fem = info["fem"]
    if isinstance(fem, dict):
        t.add_row("dolfinx", fem["dolfinx"])
        t.add_row("petsc", f"{fem['petsc']} ({fem['petsc_scalar']})")
    else:
        t.add_row("dolfinx / petsc", str(fem))
    for k, v in info["packages"].items():
        t.add_row(k, str(v))
    if isinstance(mpi, dict):
        t.add_row("MPI library", mpi["library"])
        t.add_row("MPI standard / mpi4py", f"{mpi['standard']} / {mpi['mpi4py']}")
        t.add_row("MPI communicator size", str(mpi["size"]))
    else:
        t.add_row("MPI", str(mpi))
    th = info["threads"]
    t.add_row("CPUs (usable / total)", f"{th['cpus_usable']} / {th['cpu_count']}")
    t.add_row("thread variables", ", ".join(f"{k}={v}" for k, v in th["env"].items()) or "none set")
    blas = th["blas"]
    if isinstance(blas, list):
        t.add_row("thread pools", "; ".join(f"{b['library']} ({b['api']}): {b['threads']} threads"
                                            for b in blas) or "none loaded")
    Console().print(t)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from anodetwin.io import detect_format, input_record, make_provenance, open_volume, write_volume

    kind, file, ds = detect_format(args.output, for_writing=True, fmt=args.format)
    with open_volume(args.input, voxel_size=args.voxel_size) as src:
        if Path(src.path).resolve() == Path(file).resolve():
            from anodetwin.errors import OutputError

            raise OutputError(f"output '{args.output}' is the input", "write to another path")
        lazy = src.lazy(args.roi, args.binning)
        prov = make_provenance("convert", [input_record(src.path, src.dataset)],
                               {"roi": args.roi, "binning": args.binning,
                                "voxel_size_um": args.voxel_size, "format": kind})
        out = write_volume(args.output, lazy, provenance=prov, fmt=args.format,
                           finite=not args.allow_nonfinite, compression=args.compression)
    note = lazy.attrs.get("voxel_size_note")  # kept in the output's metadata too
    log.info("wrote %s: shape %s, %s, voxel size %s um%s", out, lazy.shape, lazy.dtype,
             _fmt_vs(lazy.voxel_size), "" if not note else f" (partly assumed: {note})"
             if lazy.voxel_size else f" ({note})")
    print(out)
    return 0


def _fmt_vs(vs: Any) -> str:
    if vs is None:
        return "unknown"
    if len(set(vs)) == 1:
        return f"{vs[0]:g}"
    return "x".join(f"{v:g}" for v in vs)


def cmd_inspect(args: argparse.Namespace) -> int:
    from anodetwin.io import grey_value_stats, open_volume

    with open_volume(args.input, voxel_size=args.voxel_size) as src:
        lazy = src.lazy(args.roi, args.binning)
        rep: dict[str, Any] = {
            "path": src.name, "format": src.format, "stored_shape": list(src.shape),
            "shape": list(lazy.shape), "dtype": str(lazy.dtype),
            "voxel_size_um": list(lazy.voxel_size) if lazy.voxel_size else None,
            # without a voxel size the origin is in voxels: never labelled um
            "origin_um": list(lazy.origin) if lazy.voxel_size else None,
            "origin_voxels": None if lazy.voxel_size else list(lazy.origin),
            "extent_um": [n * v for n, v in zip(lazy.shape, lazy.voxel_size, strict=True)]
            if lazy.voxel_size else None,
            "voxel_size_note": src.voxel_size_note,
            "axes_note": lazy.attrs.get("axes_note"),
            "missing_chunks_note": lazy.attrs.get("missing_chunks_note"),
            "missing_data_note": lazy.attrs.get("missing_data_note"),
            "nbytes": lazy.nbytes,
            "provenance": src.attrs.get("provenance"),
        }
        if len(getattr(src, "series_found", ())) > 1:
            rep["series"] = [{"index": i, "shape": list(s), "dtype": d}
                             for i, s, d in src.series_found]
        if not args.no_stats:
            rep["stats"] = grey_value_stats(lazy)
    if args.json:
        _print_json(rep)
        return 0
    print(f"{rep['path']}  [{rep['format']}]")
    print(f"  shape (z, y, x)  {tuple(rep['shape'])}" + (
        f"  (stored {tuple(rep['stored_shape'])})" if rep["shape"] != rep["stored_shape"] else ""))
    print(f"  dtype            {rep['dtype']}  ({rep['nbytes'] / 2**20:.1f} MiB)")
    note = rep["voxel_size_note"]
    print("  voxel size       " + (f"{_fmt_vs(rep['voxel_size_um'])} um" if rep["voxel_size_um"]
                                   else "unknown (the file's calibration could not be used; "
                                   "give --voxel-size)" if note
                                   else "unknown (not in the file; give --voxel-size)"))
    if note:  # an assumed value must be visibly marked as assumed, ignored metadata named
        print("                   " + (f"partly assumed, not read from the file: {note} "
                                       "(give --voxel-size if this is wrong)"
                                       if rep["voxel_size_um"] else note))
    for key in ("axes_note", "missing_chunks_note", "missing_data_note"):
        if rep[key]:
            print(f"  note             {rep[key]}")
    if "series" in rep:
        print("  TIFF series      " + ", ".join(
            f"{s['index']}: {tuple(s['shape'])} {s['dtype']}" for s in rep["series"])
            + " (choose one with FILE.tif:series=N)")
    if rep["extent_um"]:
        print("  extent           " + " x ".join(f"{e:.4g}" for e in rep["extent_um"]) + " um")
    unit, origin = ("um", rep["origin_um"]) if rep["voxel_size_um"] else ("voxels",
                                                                         rep["origin_voxels"])
    print("  origin           (" + ", ".join(f"{o:.4g}" for o in origin) + f") {unit}")
    prov = rep["provenance"]
    if prov:
        print(f"  written by       {prov.get('tool')} {prov.get('version')} "
              f"({prov.get('command')}, {prov.get('created')})")
    if "stats" in rep:
        st = rep["stats"]
        if st.get("voxels"):
            print(f"  grey values      min {st['min']:.6g}  p1 {st['p1']:.6g}  median "
                  f"{st['p50']:.6g}  p99 {st['p99']:.6g}  max {st['max']:.6g}")
            print(f"                   mean {st['mean']:.6g}  std {st['std']:.6g}"
                  + (f"  non-finite {st['nonfinite']}" if st["nonfinite"] else ""))
    return 0


def cmd_noise_floor(args: argparse.Namespace) -> int:
    from anodetwin.dvc.noise import noise_floor, scan_difference
    from anodetwin.io import input_record, make_provenance, open_volume, write_volume
    from anodetwin.io.agree import require_same_grid
    from anodetwin.io.volume import Volume

    with open_volume(args.scan_a) as sa, open_volume(args.scan_b) as sb:
        grid = require_same_grid(sa, sb, f"scan '{args.scan_a}'", f"scan '{args.scan_b}'",
                                 voxel_size=args.voxel_size)
        sa.voxel_size = sb.voxel_size = grid.voxel_size  # the agreed (or given) voxel size
        sb.origin = sa.origin
        a = sa.read(args.roi, args.binning)
        b = sb.read(args.roi, args.binning)
        inputs = [input_record(sa.path, sa.dataset), input_record(sb.path, sb.dataset)]
    res = noise_floor(a.data, b.data, sigma=args.sigma, percentile=args.percentile)
    if args.out:
        prov = make_provenance("noise-floor", inputs, {"roi": args.roi, "binning": args.binning,
                                                       **res.to_dict()})
        write_volume(args.out, Volume(scan_difference(a.data, b.data), a.voxel_size, a.origin),
                     provenance=prov)
    if args.json:
        _print_json(res.to_dict())
    else:
        print(f"noise std per scan   {res.noise_std:.6g} grey levels")
        print(f"drift (mean B - A)   {res.drift:.6g} grey levels")
        print(f"residual threshold   {res.residual_threshold:.6g} grey levels "
              f"(p{res.percentile:g} of |gaussian(B - A, sigma={res.sigma:g} voxels)|)")
    return 0


def cmd_dvc(args: argparse.Namespace) -> int:
    import numpy as np

    from anodetwin.dvc.pair import correlate_pair, write_pair
    from anodetwin.io import check_output_path, input_record, make_provenance, open_volume
    from anodetwin.io.agree import require_same_grid

    check_output_path(args.out)
    for extra in (args.vtk, args.png):
        if extra:
            check_output_path(extra)
    with open_volume(args.ref) as a, open_volume(args.deformed) as b:
        grid = require_same_grid(a, b, f"reference '{args.ref}'", f"deformed '{args.deformed}'",
                                 voxel_size=args.voxel_size)
        inputs = [input_record(a.path, a.dataset), input_record(b.path, b.dataset)]
        vs = grid.voxel_size
        if args.roi:
            ref, deformed = a.read(args.roi).data, b.read(args.roi).data
            origin = [s.start for s in a.lazy(args.roi).roi]
        else:
            ref, deformed, origin = args.ref, args.deformed, [0, 0, 0]
    mask = None
    if args.mask:
        with open_volume(args.mask) as m:
            require_same_grid(grid, m, f"reference '{args.ref}'", f"mask '{args.mask}'",
                              voxel_size=args.voxel_size)
            mask = m.read(args.roi).data
    res = correlate_pair(ref, deformed, node_spacing=args.node_spacing, hws=args.hws,
                         pyramid=args.pyramid, mask=mask, processes=args.processes,
                         scheduler=args.scheduler, global_registration=not args.no_global,
                         margin=args.margin,
                         search_range=args.search_range,
                         voxel_size_um=vs)
    res.params["roi_origin"] = origin
    res.params["reference_grid"] = {  # the whole reference volume (nodes + roi_origin)
        "shape": list(grid.shape), "voxel_size_um": None if vs is None else list(vs),
        "origin_um": list(grid.origin)}
    prov = make_provenance("dvc", inputs, res.params)
    out = write_pair(args.out, res, vs, prov)
    if args.vtk:
        from anodetwin.dvc.pair import write_pair_vtk

        write_pair_vtk(args.vtk, res, vs)
    if args.png:
        from anodetwin.dvc.quicklook import pair_quicklook

        res.voxel_size_um = vs
        pair_quicklook(args.png, res, title=f"{Path(args.ref).name} -> "
                                            f"{Path(args.deformed).name}")
    n = np.bincount(res.flag, minlength=3)
    log.info("%d nodes: %d measured, %d repaired, %d excluded", len(res.flag), *n)
    print(out)
    return 0


def cmd_dvc_series(args: argparse.Namespace) -> int:
    from anodetwin.dvc.series import check_series_inputs, correlate_series
    from anodetwin.errors import ParameterError
    from anodetwin.io import input_record, open_volume

    if len(args.volumes) < 2:
        raise ParameterError(f"dvc-series got {len(args.volumes)} volume", "give T0 T1 [T2 ...]")
    check_series_inputs(args.volumes, _region_kw(args), args.voxel_size,  # before any work
                        args.node_spacing)
    inputs = []
    for v in args.volumes:
        with open_volume(v) as src:
            inputs.append(input_record(src.path, src.dataset))
    summary = correlate_series(
        list(args.volumes), args.out, args.voxel_size, inputs, refine=not args.no_refine,
        regions=_region_kw(args), quicklook=not args.no_quicklook,
        node_spacing=args.node_spacing, hws=args.hws, pyramid=args.pyramid,
        search_range=args.search_range, processes=args.processes, scheduler=args.scheduler)
    for st in summary["steps"]:
        log.info("T0 -> T%d: %d/%d nodes, mean J-1 %s", st["step"], st["valid_nodes"],
                 st["nodes"], st["mean_volumetric_strain"])
    print(args.out)
    return 0


def cmd_dvc_regions(args: argparse.Namespace) -> int:
    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.regions import region_statistics, write_regions
    from anodetwin.io import check_output_path, input_record, make_provenance

    check_output_path(args.out)
    results = [read_pair(r) for r in args.results]
    names = [f"DVC result '{r}'" for r in args.results]
    rs = region_statistics(results, voxel_size_um=args.voxel_size, steps=args.steps,
                           names=names, **_region_kw(args))
    inputs = [input_record(r) for r in args.results]
    write_regions(args.out, rs, make_provenance("dvc-regions", inputs, rs.params))
    if args.png_dir:
        from anodetwin.dvc.quicklook import pair_quicklook, series_quicklook

        png = Path(args.png_dir)
        png.mkdir(parents=True, exist_ok=True)
        for i, (res, step) in enumerate(zip(results, rs.steps, strict=True)):
            pair_quicklook(png / f"step_{step}.png", res, rs, i, title=f"step {step}")
        series_quicklook(png / "series.png", rs)
    for step in rs.steps:
        log.info("step %s: mean J-1 collector half %.4g, separator half %.4g", step,
                 rs.value(step, "collector_half"), rs.value(step, "separator_half"))
    print(args.out)
    return 0


def cmd_dvc_residual(args: argparse.Namespace) -> int:
    import h5py
    import numpy as np

    from anodetwin.dvc.noise import noise_floor
    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.residual import dense_displacement, particle_residuals, residual_map
    from anodetwin.io import (atomic_path, check_output_path, input_record, make_provenance,
                              read_volume, require_finite)
    from anodetwin.io.agree import require_same_grid

    check_output_path(args.out)
    res = read_pair(args.result)
    name = f"reference '{args.ref}'"
    grid = _residual_inputs_agree(args, res)  # before reading any voxel
    ref, deformed = read_volume(args.ref), read_volume(args.deformed)
    for v, path in ((ref, args.ref), (deformed, args.deformed)):
        require_finite(v.data, f"volume '{path}'")
    floor = args.floor
    if args.double_scan:
        a, b = (read_volume(p) for p in args.double_scan)
        floor = noise_floor(a, b, sigma=args.sigma, voxel_size_um=args.voxel_size,
                            names=[f"double scan '{p}'" for p in args.double_scan]
                            ).residual_threshold
    labels = None
    if args.particles:
        labels = read_volume(args.particles)
        require_same_grid(ref, labels, name, f"particles '{args.particles}'",
                          voxel_size=args.voxel_size)
        labels = labels.data
    nodes = res.nodes + np.asarray(res.params.get("roi_origin", (0, 0, 0)), float)
    u = dense_displacement(nodes, res.grid_shape, res.displacement, ref.shape)
    rmap = residual_map(ref.data, deformed.data, u, sigma=args.sigma, floor=floor)
    inputs = [input_record(p) for p in (args.ref, args.deformed, args.result)]
    prov = make_provenance("dvc-residual", inputs, {"sigma": rmap.sigma, "floor": rmap.floor})
    with atomic_path(args.out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = "anodetwin-dvc-residual"
        f.attrs["format_version"] = 1
        f.attrs["floor"] = rmap.floor
        f.attrs["sigma_voxels"] = rmap.sigma
        f.attrs["provenance"] = json.dumps(prov, default=str)
        d = f.create_dataset("residual", data=rmap.residual, chunks=True)
        if grid.voxel_size is not None:
            d.attrs["element_size_um"] = np.asarray(grid.voxel_size)
        if labels is not None:
            table = particle_residuals(rmap, labels, shell_voxels=args.shell)
            f.create_dataset("particles", data=table)
            log.info("%d particles: %d core-shell-like", len(table),
                     int(table["core_shell_like"].sum()))
    log.info("floor %.6g grey levels, %.3g%% of voxels above", rmap.floor,
             100 * float((rmap.residual > 0).mean()))
    print(args.out)
    return 0


def _residual_inputs_agree(args: argparse.Namespace, result: Any) -> Any:
    """The inputs of ``dvc-residual`` on one grid: reference and deformed (voxel size, shape,
    origin), the DVC result's reference volume, and the double scan (voxel size: its noise
    must come from the same voxels; it may be another region). Returns the common grid."""
    from anodetwin.io.agree import require_same_grid

    name = f"reference '{args.ref}'"
    grid = require_same_grid(args.ref, args.deformed, name, f"deformed '{args.deformed}'",
                             voxel_size=args.voxel_size)
    require_same_grid(grid, result, name, f"the reference volume of DVC result "
                                          f"'{args.result}'", voxel_size=args.voxel_size)
    if args.double_scan:
        a, b = args.double_scan
        require_same_grid(a, b, f"double scan '{a}'", f"double scan '{b}'",
                          voxel_size=args.voxel_size)
        require_same_grid(grid, a, name, f"double scan '{a}'", voxel_size=args.voxel_size,
                          shape=False, origin=False)
    return grid


def cmd_segment(args: argparse.Namespace) -> int:
    from anodetwin.io import check_output_path, input_record, make_provenance, read_volume
    from anodetwin.io.agree import require_same_grid
    from anodetwin.segment.pipeline import segment_volume, write_labels

    check_output_path(args.out)
    if args.align_to:  # before reading any voxel
        require_same_grid(args.volume, args.align_to, f"volume '{args.volume}'",
                          f"--align-to reference '{args.align_to}'", voxel_size=args.voxel_size)
    vol = read_volume(args.volume)
    inputs = [input_record(args.volume)] + ([input_record(args.model)] if args.model else [])
    seg = segment_volume(vol, model=args.model, voxel_size_um=args.voxel_size,
                         denoise=args.denoise,
                         normalise=args.normalise, align_to=args.align_to, h=args.h,
                         min_particle_voxels=args.min_particle_voxels,
                         surface_window_um=args.surface_window_um,
                         resolution=not args.no_resolution)
    write_labels(args.out, seg, make_provenance("segment", inputs, seg.params), tiff=args.tiff)
    log.info("%d particles; collector face %s; resolution %.3g um", len(seg.table),
             seg.collector_face, seg.resolution_fwhm_um)
    print(args.out)
    return 0


def cmd_segment_train(args: argparse.Namespace) -> int:
    from anodetwin.io import check_output_path, read_volume
    from anodetwin.segment.classifier import DEFAULT_SIGMAS, train_classifier

    check_output_path(args.out)
    slices = args.slices or None
    sigmas = tuple(args.sigmas) if args.sigmas else DEFAULT_SIGMAS
    vol = read_volume(args.volume).data
    ann = read_volume(args.annotations).data
    clf = train_classifier(vol, ann, slices=slices, sigmas=sigmas, n_estimators=args.trees,
                           n_jobs=args.jobs)
    clf.save(args.out)
    print(args.out)
    return 0


def cmd_morphology(args: argparse.Namespace) -> int:
    from anodetwin.errors import InputNotFoundError
    from anodetwin.io import input_record, make_provenance
    from anodetwin.segment.morphology import series_morphology, write_morphology

    increments = None
    if args.dvc:
        d = Path(args.dvc)
        increments = [d / f"increment_{k}_{k + 1}.h5" for k in range(len(args.labels) - 1)]
        for p in increments:
            if not p.is_file():
                raise InputNotFoundError(p, "DVC increment",
                                         "give the folder written by 'anodetwin dvc-series' "
                                         "for these steps")
    m = series_morphology(args.labels, prior=args.prior, dvc_increments=increments,
                          voxel_size_um=args.voxel_size)
    inputs = [input_record(p) for p in args.labels]
    write_morphology(args.out, m, make_provenance("morphology", inputs,
                                                  {"prior": args.prior, "dvc": args.dvc}))
    for r in m.steps:
        log.info("T%d: thickness %.2f +- %.2f um, RNL %.3f, %d particles", r["step"],
                 r["thickness_mean_um"], r["thickness_std_um"], r["rnl"], r["particles"])
    print(args.out)
    return 0


def cmd_mesh(args: argparse.Namespace) -> int:
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.errors import ParameterError
    from anodetwin.io import check_output_path, input_record, make_provenance
    from anodetwin.mesh.io import preview, read_labels_volume, write_mesh
    from anodetwin.mesh.voxel import voxel_mesh

    comm = MPI.COMM_WORLD
    check_output_path(args.out)
    if args.preview:
        check_output_path(args.preview)
    drop = tuple(args.drop_phases)
    labels = read_labels_volume(args.labels, args.particles, args.voxel_size)
    if args.conforming:
        from anodetwin.mesh.conforming import conforming_mesh

        if drop or args.smooth or args.min_speck_voxels:
            raise ParameterError("--drop-phases, --smooth and --min-speck-voxels belong to the "
                                 "voxel route", "leave them out with --conforming")
        hm = conforming_mesh(comm, labels, args.coarsen, quality=args.quality)
    else:
        hm = voxel_mesh(comm, labels, args.coarsen, drop, args.min_speck_voxels, args.smooth)
    inputs = [input_record(args.labels.split(":/")[0])] if comm.rank == 0 else []
    prov = make_provenance("mesh", inputs, {"coarsen": args.coarsen, "drop_phases": drop,
                                            "min_speck_voxels": args.min_speck_voxels,
                                            "smooth": args.smooth,
                                            "conforming": args.conforming})
    out = write_mesh(args.out, hm, {"provenance": prov})
    if args.preview:
        preview(args.preview, hm)
    if comm.rank == 0:
        s = hm.summary
        log.info("%d cells, %d vertices on %d rank(s) in %.1f s", s["cells"], s["vertices"],
                 comm.size, s["seconds"])
        print(out)
    return 0


def cmd_mesh_packing(args: argparse.Namespace) -> int:
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.errors import ParameterError
    from anodetwin.io import check_output_path, input_record, make_provenance
    from anodetwin.mesh.io import preview, write_mesh
    from anodetwin.mesh.packing import packing_mesh, read_particle_source, spheres_from_table

    comm = MPI.COMM_WORLD
    check_output_path(args.out)
    table, default_box = read_particle_source(args.source)
    box = default_box
    if args.box:
        b = args.box
        box = [[b[0], b[2], b[4]], [b[1], b[3], b[5]]]
    if box is None:
        raise ParameterError(f"no box for '{args.source}'", "give --box Z0,Z1,Y0,Y1,X0,X1 (um)")
    ids = args.ids or None
    spheres = spheres_from_table(table, box, ids)
    if len(spheres.ids) == 0:
        raise ParameterError("no particle intersects the box", "check --box and --ids")
    tmp_model = Path(args.out).with_name(f".{Path(args.out).name}.model")
    if comm.rank == 0:
        tmp_model.mkdir(exist_ok=True)
    comm.barrier()
    hm = packing_mesh(comm, spheres, args.mesh_size, args.surface_size, tmp_model)
    prov = make_provenance("mesh-packing", [input_record(args.source)] if comm.rank == 0
                           else [], {"box": box, "ids": ids, "mesh_size": args.mesh_size,
                                     "surface_size": args.surface_size})
    out = write_mesh(args.out, hm, {"provenance": prov})
    if comm.rank == 0:
        import shutil

        for f in tmp_model.iterdir():
            shutil.move(str(f), out / f.name)
        tmp_model.rmdir()
    if args.preview:
        preview(args.preview, hm)
    if comm.rank == 0:
        log.info("%d spheres, %d cells in %.1f s", len(spheres.ids), hm.summary["cells"],
                 hm.summary["seconds"])
        print(out)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import anodetwin.fem  # noqa: F401  (h5py, then dolfinx_solver: before dolfinx)
    from mpi4py import MPI

    from anodetwin.simulate.case import load_case
    from anodetwin.simulate.run import check_case, run_case

    if args.allow_case_change and not args.resume:
        from anodetwin.errors import ParameterError

        raise ParameterError("--allow-case-change without --resume",
                             "give it with --resume (a new run takes any case)")
    case = load_case(args.case)
    comm = MPI.COMM_WORLD
    if args.check:  # everything the run checks before its work, writing nothing
        setup = check_case(case, args.out, resume=args.resume, comm=comm,
                           allow_case_change=args.allow_case_change)
        hist = setup.history
        if comm.rank == 0:
            for name, t in hist.scans.items():
                print(f"{name}: t = {t / 3600:.3f} h, SoC {hist.soc_at(t):.3f}, "
                      f"mean theta {hist.theta_mean_at(t):.4f}")
            if setup.restart:
                print(f"'{args.out}' holds a run with no finished step: it starts afresh")
        return 0
    rows = run_case(case, args.out, resume=args.resume, max_steps=args.max_steps, comm=comm,
                    allow_case_change=args.allow_case_change)
    if comm.rank == 0:
        last = rows[-1]
        log.info("%d steps; t = %.2f h, thickness %.2f um, volumetric strain %.4f",
                 int(last["step"]), last["time_h"], last["thickness_um"],
                 last["volumetric_strain"])
        print(args.out)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from anodetwin.study import load_study, run_study

    study = load_study(args.study)  # every case checked before anything runs
    if args.check:
        for c in study.cases:
            print(f"{c.key}  {c.label}")
        return 0
    res = run_study(study, args.out, scheduler=args.scheduler, workers=args.workers,
                    retry_failed=args.retry_failed)
    log.info("%d cases: %d run now, %d finished earlier, %d failed", len(res.rows), res.ran,
             res.skipped, res.failed)
    print(res.summary_html)
    return 0


def cmd_study_case(args: argparse.Namespace) -> int:
    from anodetwin.study.execute import mesh_and_simulate

    mesh_and_simulate(args.folder, args.coarsen)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from anodetwin.validate import load_config, validate_run

    cfg = load_config(args.config)
    res = validate_run(args.sim, args.dvc, args.out, cfg)
    failed = [c for c in res.checks if not c["passed"]]
    log.info("%d steps, %d of %d checks passed%s", len(res.metrics),
             len(res.checks) - len(failed), len(res.checks),
             "" if not failed else "; failed: " + ", ".join(
                 sorted({f"{c['check']} ({c['region']})" for c in failed})))
    print(res.report)
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from anodetwin.phantom import load_config
    from anodetwin.phantom.report import write_phantom

    cfg = load_config(args.config, seed=args.seed)  # validated before any work
    res = write_phantom(cfg, args.out, tiff=args.tiff)
    print(res.path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from anodetwin.demo import run_demo

    result = run_demo(args.out)
    print(f"demo output: {result.out_dir}")
    print(f"summary:     {result.summary_path}")
    if "report" in result.summary.get("validation", {}):
        print(f"report:      {result.out_dir / result.summary['validation']['report']}")
    return 0


# --------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else min(int(args.verbose or 0), 1)
    configure_logging(verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except AnodetwinError as exc:
        if verbosity > 0:
            traceback.print_exc()
        print(f"anodetwin: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("anodetwin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 141
    except Exception:
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and mpi.COMM_WORLD.size > 1:
            traceback.print_exc()  # the other ranks would wait for this one for ever
            sys.stderr.flush()
            mpi.COMM_WORLD.Abort(1)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

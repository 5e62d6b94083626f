"""The DVC stage on the command line (:mod:`anodetwin.dvc`): ``noise-floor``, ``dvc``,
``dvc-series``, ``dvc-regions`` and ``dvc-residual``.

The correlation options (grid, windows, pyramid, search, workers, voxel size) are declared
once, in :func:`correlation_options`, for ``dvc`` and ``dvc-series``; the region options once,
in :func:`region_options`, for ``dvc-series`` and ``dvc-regions``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

from anodetwin.cli.options import (add_command, block_options, flag, float_list, float_value,
                                   int_list, int_value, log, print_json, roi_value,
                                   volume_options, voxel_size_option)

__all__ = ["add_parsers", "correlation_options", "region_options", "region_kw",
           "cmd_noise_floor", "cmd_dvc", "cmd_dvc_series", "cmd_dvc_regions", "cmd_dvc_residual"]


def correlation_options(p: argparse.ArgumentParser, series: bool) -> None:
    """The DVC options shared by ``dvc`` and ``dvc-series`` (grid, windows, search, workers,
    voxel size); ``series`` words the pyramid's help for a series."""
    what = " for each increment" if series else " run first"
    p.add_argument("--node-spacing", type=int_value("--node-spacing", low=1, example="35"),
                   default=35, help="node spacing in voxels (35)")
    p.add_argument("--hws", metavar="N or Z,Y,X",
                   type=int_list("--hws", n=(1, 3), low=1, example="10 (or 6,10,10)",
                                 single=True),
                   help="half-window size in voxels, one or per axis (default: spacing); "
                        "thinner in z than across follows a through-thickness gradient")
    p.add_argument("--pyramid", type=int_list("--pyramid", low=1, example="100,70"),
                   help=f"coarser node spacings{what}, e.g. 100,70")
    p.add_argument("--search-range", default="0",
                   type=int_list("--search-range", n=(1, 3), low=0, example="15 (or 15,5,5)"),
                   metavar="N or Z,Y,X",
                   help="integer pixel search +-N voxels (per axis) before the first level "
                        "(0: off)")
    p.add_argument("--engine", choices=("native", "spam"), default="native",
                   help="per-node registration: anodetwin's IC-GN engine (native, default) "
                        "or spam.DIC.register")
    p.add_argument("--interpolation", choices=("cubic", "linear"), default="cubic",
                   help="interpolation of the deformed volume: cubic B-spline (default) or "
                        "trilinear (faster, ~10x the bias)")
    p.add_argument("--criterion", choices=("znssd", "ssd"), default="",
                   help="matching criterion: ZNSSD (the native engine's default; invariant "
                        "to grey-value offset and scale) or SSD (spam's only one)")
    p.add_argument("--robust", action="store_true",
                   help="native engine: re-weight each window's voxels by their residual "
                        "(Tukey), for scans whose grey values change in part of a window, "
                        "e.g. lithiated Si taking the binder's grey value")
    p.add_argument("--shape-function", choices=("affine", "quadratic", "quadratic-z"),
                   default="affine",
                   help="native engine: the window's map, affine (12 parameters, as spam; "
                        "default), quadratic (30: no bias where the strain changes "
                        "within a window, more noise) or quadratic-z (15: the curvature "
                        "through the thickness, d2u/dz2, only)")
    whose = "T0's, --phases, for the direct T0 -> Tk fields" if series else "--phases"
    p.add_argument("--reference-model", choices=("grey", "phases"), default="grey",
                   help="native engine: the reference windows, the scan's grey values "
                        f"(default) or a model of the scan from its phases ({whose}; the "
                        "point-spread sigma fitted), for phases whose grey value changes "
                        "between the scans, e.g. lithiating Si")
    p.add_argument("--psf-sigma", type=float_value("--psf-sigma", low=0, example="0.8"),
                   help="point-spread sigma of the phase model in voxels (default: fitted "
                        "to the reference scan)")
    p.add_argument("--processes", type=int_value("--processes", low=1, example="4"),
                   default=1, help="local worker processes (1; native engine: threads)")
    p.add_argument("--scheduler", help="Dask scheduler address, or 'local' for a LocalCluster")
    voxel_size_option(p)


def engine_kw(args: argparse.Namespace) -> dict:
    """The engine options of ``dvc`` / ``dvc-series`` as :func:`correlate_pair` keywords.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    dict
        ``engine``, ``interpolation_order``, ``criterion``, ``robust``,
        ``shape_function``.
    """
    from anodetwin.dvc.correlate import INTERPOLATION_ORDER

    return {"engine": args.engine, "criterion": args.criterion,
            "interpolation_order": INTERPOLATION_ORDER[args.interpolation],
            "robust": args.robust, "shape_function": args.shape_function}


def region_options(p: argparse.ArgumentParser) -> None:
    """Where the region statistics are taken: electrode halves (``--phases`` or
    ``--interfaces``), sub-volume cubes and particle-centred VOIs."""
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


def region_kw(args: argparse.Namespace) -> dict:
    """The region options as keyword arguments of :func:`anodetwin.dvc.region_statistics`
    (an edge not given: ``"auto"``; 0: None, no such regions)."""
    interfaces = tuple(args.interfaces) if args.interfaces else None

    def edge(v: float | None) -> float | str | None:  # None: not given; 0: none
        return "auto" if v is None else (v or None)

    return {"phases": args.phases, "particles": args.particles, "interfaces": interfaces,
            "cube_um": edge(args.cube_um), "voi_um": edge(args.voi_um)}


def _sigma_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--sigma``: Gaussian blur of a difference in voxels (default 2, as the reference)."""
    p.add_argument("--sigma", type=float_value("--sigma", low=0, example="2"), default=2.0,
                   help=help)


def _add_noise_floor(sub: Any) -> None:
    p = add_command(sub, "noise-floor", "noise level of a double scan (two scans, no change "
                                        "between them): noise std, drift and the residual-map "
                                        "threshold", cmd_noise_floor,
                    {"scan_a": "first scan", "scan_b": "second scan (same grid)"})
    volume_options(p)
    _sigma_option(p, "Gaussian blur of the difference in voxels (default 2, as the reference)")
    p.add_argument("--percentile",
                   type=float_value("--percentile", low=0, above=True, high=100, example="99"),
                   default=99.0,
                   help="percentile (0 < p <= 100) of |blurred difference| taken as threshold "
                        "(default 99)")
    p.add_argument("--out", help="write the difference volume (float32) here (the scans are "
                                 "then read whole)")
    block_options(p)
    flag(p, "--json", "print JSON")


def _add_pair(sub: Any) -> None:
    p = add_command(sub, "dvc", "local digital volume correlation of two volumes: "
                                "displacement, strain, node flags", cmd_dvc,
                    {"ref": "reference volume (e.g. T0)",
                     "deformed": "deformed volume (same grid)"},
                    out="result HDF5 (layout: anodetwin.dvc.pair)")
    correlation_options(p, series=False)
    p.add_argument("--mask", help="labels volume; windows mostly outside material are skipped")
    p.add_argument("--phases", help="phase codes of the reference (same grid), for "
                                    "--reference-model phases")
    p.add_argument("--roi", type=roi_value,
                   metavar="Z0:Z1,Y0:Y1,X0:X1", help="correlate only this region")
    p.add_argument("--margin", type=int_value("--margin", low=0, example="3"),
                   default=3, help="search margin in voxels (3)")
    flag(p, "--no-global", "skip the global registration")
    p.add_argument("--vtk", help="also write the node grid as VTK ImageData (.vti, ParaView)")
    p.add_argument("--png", help="also write a quick-look PNG (mid-slices of J-1 and e_zz)")


def _add_series(sub: Any) -> None:
    p = add_command(sub, "dvc-series", "DVC of a series T0 T1 ... Tn: incremental and "
                                       "cumulative fields", cmd_dvc_series,
                    {"volumes": "T0 T1 ... Tn (same grid)"}, many=True, out="output folder")
    correlation_options(p, series=True)
    flag(p, "--no-refine",
         "keep the pure composition of increments (no direct T0->Tk refinement)")
    region_options(p)
    flag(p, "--no-quicklook", "skip the quick-look PNGs")


def _add_regions(sub: Any) -> None:
    p = add_command(sub, "dvc-regions", "strain statistics of DVC results over the electrode "
                                        "halves, sub-volume cubes and particle-centred VOIs",
                    cmd_dvc_regions,
                    {"results": "DVC result files on one grid (e.g. cumulative_0_1.h5 ... "
                                "cumulative_0_n.h5)"}, many=True,
                    out="regions HDF5 (a .csv table is written beside)")
    region_options(p)
    voxel_size_option(p)
    p.add_argument("--steps", type=int_list("--steps", low=0, example="1,2,3"),
                   help="step label of each result, all different, e.g. 1,2,3 (default 1..n)")
    p.add_argument("--png-dir", help="also write quick-look PNGs into this folder")


def _add_residual(sub: Any) -> None:
    p = add_command(sub, "dvc-residual", "residual map of a DVC pair: REF deformed by the "
                                         "measured field, subtracted from DEF, blurred, "
                                         "thresholded at the noise floor", cmd_dvc_residual,
                    {"ref": "reference volume", "deformed": "deformed volume (same grid)",
                     "result": "DVC result of the pair (anodetwin dvc)"},
                    out="output HDF5: /residual volume (+ /particles)")
    _sigma_option(p, "Gaussian blur in voxels (2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--floor", type=float_value("--floor", low=0, example="5000"),
                   help="noise floor in grey levels (default 5000, the reference's 16-bit level)")
    g.add_argument("--double-scan", nargs=2, metavar=("A", "B"),
                   help="estimate the floor from two scans of the unchanged sample")
    p.add_argument("--particles", help="particle labels of REF: per-particle statistics")
    voxel_size_option(p)
    p.add_argument("--shell", type=float_value("--shell", low=0, above=True, example="3"),
                   default=3.0,
                   help="surface-shell thickness in voxels (> 0; Euclidean distance from the "
                        "particle boundary, so 1.5 takes diagonal neighbours) for the particle "
                        "statistics (3)")
    block_options(p)


def add_parsers(sub: Any) -> None:
    """Register the DVC subcommands on the subparsers ``sub``."""
    for add in (_add_noise_floor, _add_pair, _add_series, _add_regions, _add_residual):
        add(sub)


# --------------------------------------------------------------------------------------------
# commands

def cmd_noise_floor(args: argparse.Namespace) -> int:
    """Noise std, drift and residual threshold of a double scan (text or ``--json``)."""
    from anodetwin.dvc.noise import noise_floor, scan_difference
    from anodetwin.io import (check_output_path, input_record, make_provenance, open_volume,
                              write_volume)
    from anodetwin.io.agree import require_same_grid
    from anodetwin.io.formats import volume_file
    from anodetwin.io.volume import Volume

    if args.out:  # before any work: never over an input scan
        check_output_path(volume_file(args.out), inputs=[args.scan_a, args.scan_b])
    names = (f"scan A '{args.scan_a}'", f"scan B '{args.scan_b}'")
    with open_volume(args.scan_a) as sa, open_volume(args.scan_b) as sb:
        grid = require_same_grid(sa, sb, *names, voxel_size=args.voxel_size)
        sa.voxel_size_um = sb.voxel_size_um = grid.voxel_size_um  # the agreed (or given) voxel size
        sb.origin = sa.origin
        inputs = [input_record(sa.path, sa.dataset), input_record(sb.path, sb.dataset)]
        kw = dict(sigma=args.sigma, percentile=args.percentile, names=names,
                  voxel_size_um=args.voxel_size, memory_limit=args.memory_limit,
                  workers=args.workers)
        if args.out:
            a = sa.read(args.roi, args.binning)
            b = sb.read(args.roi, args.binning)
            res = noise_floor(a.data, b.data, **kw)
        else:  # block by block from the files
            res = noise_floor(sa.lazy(args.roi, args.binning, progress=False),
                              sb.lazy(args.roi, args.binning, progress=False), **kw)
    if args.out:
        prov = make_provenance("noise-floor", inputs, {"roi": args.roi, "binning": args.binning,
                                                       **res.to_dict()})
        write_volume(args.out, Volume(scan_difference(a.data, b.data), a.voxel_size_um, a.origin),
                     provenance=prov)
    if args.json:
        print_json(res.to_dict())
    else:
        print(f"noise std per scan   {res.noise_std:.6g} grey levels")
        print(f"drift (mean B - A)   {res.drift:.6g} grey levels")
        print(f"residual threshold   {res.residual_threshold:.6g} grey levels "
              f"(p{res.percentile:g} of |gaussian(B - A, sigma={res.sigma:g} voxels)|)")
    return 0


class _PairInputs(NamedTuple):
    """The inputs of ``dvc``, checked on one grid."""

    grid: Any  # the common grid (anodetwin.io.agree.Grid)
    inputs: list  # provenance records of reference and deformed
    ref: Any  # path, or array of the --roi
    deformed: Any  # path, or array of the --roi
    origin: list  # (z, y, x) voxel of the --roi's first voxel
    mask: Any  # array (of the --roi) or None
    phases: Any  # array (of the --roi) or None: the reference's, for its phase model


def _pair_inputs(args: argparse.Namespace) -> _PairInputs:
    """The inputs of ``dvc`` checked on one grid, read where a ``--roi`` is given."""
    from anodetwin.io import input_record, open_volume
    from anodetwin.io.agree import require_same_grid

    with open_volume(args.ref) as a, open_volume(args.deformed) as b:
        grid = require_same_grid(a, b, f"reference '{args.ref}'", f"deformed '{args.deformed}'",
                                 voxel_size=args.voxel_size)
        inputs = [input_record(a.path, a.dataset), input_record(b.path, b.dataset)]
        if args.roi:
            ref, deformed = a.read(args.roi).data, b.read(args.roi).data
            origin = [s.start for s in a.lazy(args.roi).roi]
        else:
            ref, deformed, origin = args.ref, args.deformed, [0, 0, 0]
    labels = {}
    for what in ("mask", "phases"):
        if getattr(args, what):
            with open_volume(getattr(args, what)) as m:
                require_same_grid(grid, m, f"reference '{args.ref}'",
                                  f"{what} '{getattr(args, what)}'", voxel_size=args.voxel_size)
                labels[what] = m.read(args.roi).data if args.roi else getattr(args, what)
                inputs.append(input_record(m.path, m.dataset))
    if (args.reference_model == "phases") != ("phases" in labels):
        from anodetwin.errors import ParameterError

        raise ParameterError("--reference-model phases needs --phases, and --phases is only "
                             "read for it", "give both, or neither")
    return _PairInputs(grid, inputs, ref, deformed, origin, labels.get("mask"),
                       labels.get("phases"))


def _pair_extras(args: argparse.Namespace, res: Any, vs: Any) -> None:
    """The optional VTK grid (``--vtk``) and quick-look PNG (``--png``) of a pair."""
    if args.vtk:
        from anodetwin.dvc.pair import write_pair_vtk

        write_pair_vtk(args.vtk, res, vs)
    if args.png:
        from anodetwin.dvc.quicklook import pair_quicklook

        res.voxel_size_um = vs
        pair_quicklook(args.png, res, title=f"{Path(args.ref).name} -> "
                                            f"{Path(args.deformed).name}")


def cmd_dvc(args: argparse.Namespace) -> int:
    """Correlate a pair and write its result (:func:`anodetwin.dvc.pair.write_pair`)."""
    import numpy as np

    from anodetwin.dvc.pair import correlate_pair, write_pair
    from anodetwin.io import check_output_path, make_provenance

    given = [v for v in (args.ref, args.deformed, args.mask, args.phases) if v]
    for out in (args.out, args.vtk, args.png):
        if out:
            check_output_path(out, inputs=given)
    if args.vtk and Path(args.vtk).suffix.lower() != ".vti":
        from anodetwin.errors import ParameterError

        raise ParameterError(f"--vtk '{args.vtk}' is not a .vti file (VTK XML ImageData)",
                             "name it e.g. grid.vti")
    grid, inputs, ref, deformed, origin, mask, phases = _pair_inputs(args)
    vs = grid.voxel_size_um
    res = correlate_pair(ref, deformed, node_spacing=args.node_spacing, hws=args.hws,
                         pyramid=args.pyramid, mask=mask, processes=args.processes,
                         scheduler=args.scheduler, global_registration=not args.no_global,
                         margin=args.margin,
                         search_range=args.search_range, reference_phases=phases,
                         psf_sigma=args.psf_sigma, voxel_size_um=vs, **engine_kw(args))
    res.params["roi_origin"] = origin
    res.params["reference_grid"] = {  # the whole reference volume (nodes + roi_origin)
        "shape": list(grid.shape), "voxel_size_um": None if vs is None else list(vs),
        "origin_um": list(grid.origin)}
    out = write_pair(args.out, res, vs, make_provenance("dvc", inputs, res.params))
    _pair_extras(args, res, vs)
    n = np.bincount(res.flag, minlength=3)
    log.info("%d nodes: %d measured, %d repaired, %d excluded", len(res.flag), *n)
    print(out)
    return 0


def cmd_dvc_series(args: argparse.Namespace) -> int:
    """Correlate a series T0 ... Tn (:func:`anodetwin.dvc.series.correlate_series`)."""
    from anodetwin.dvc.series import check_series_inputs, correlate_series
    from anodetwin.errors import ParameterError
    from anodetwin.io import input_record, open_volume

    if len(args.volumes) < 2:
        raise ParameterError(f"dvc-series got {len(args.volumes)} volume", "give T0 T1 [T2 ...]")
    check_series_inputs(args.volumes, region_kw(args), args.voxel_size,  # before any work
                        args.node_spacing)
    inputs = []
    for v in [*args.volumes, *(v for v in (args.phases, args.particles) if v)]:
        with open_volume(v) as src:  # the scans, then the labels of T0 they are read with
            inputs.append(input_record(src.path, src.dataset))
    summary = correlate_series(
        list(args.volumes), args.out, args.voxel_size, inputs, refine=not args.no_refine,
        regions=region_kw(args), quicklook=not args.no_quicklook,
        node_spacing=args.node_spacing, hws=args.hws, pyramid=args.pyramid,
        search_range=args.search_range, processes=args.processes, scheduler=args.scheduler,
        reference_model=args.reference_model,
        **({"psf_sigma": args.psf_sigma} if args.psf_sigma is not None else {}),
        **engine_kw(args))
    for st in summary["steps"]:
        log.info("T0 -> T%d: %d/%d nodes, mean J-1 %s", st["step"], st["valid_nodes"],
                 st["nodes"], st["mean_volumetric_strain"])
    print(args.out)
    return 0


def cmd_dvc_regions(args: argparse.Namespace) -> int:
    """Region statistics of DVC results (:func:`anodetwin.dvc.regions.write_regions`)."""
    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.regions import region_statistics, write_regions
    from anodetwin.io import check_output_path, input_record, make_provenance

    check_output_path(args.out, inputs=args.results)
    results = [read_pair(r) for r in args.results]
    names = [f"DVC result '{r}'" for r in args.results]
    rs = region_statistics(results, voxel_size_um=args.voxel_size, steps=args.steps,
                           names=names, **region_kw(args))
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


def _residual_floor(args: argparse.Namespace) -> float | None:
    """The noise floor of ``dvc-residual``: ``--floor``, or the threshold of the
    ``--double-scan`` (block by block from the files), or None (the library's default)."""
    if not args.double_scan:
        return args.floor
    from anodetwin.dvc.noise import noise_floor
    from anodetwin.io import open_volume

    (pa, pb) = args.double_scan
    with open_volume(pa) as a, open_volume(pb) as b:
        return noise_floor(_lazy_finite(a, f"double scan '{pa}'"),
                           _lazy_finite(b, f"double scan '{pb}'"), sigma=args.sigma,
                           voxel_size_um=args.voxel_size,
                           names=[f"double scan '{p}'" for p in args.double_scan],
                           memory_limit=args.memory_limit, workers=args.workers
                           ).residual_threshold


def _lazy_finite(src: Any, name: str) -> Any:
    """A file's volume read lazily, after checking slab by slab that a floating-point one
    has no NaN or inf (counted over the whole volume, named in the error)."""
    import numpy as np

    from anodetwin.io.volume import nonfinite_error

    lazy = src.lazy(progress=False)
    if np.issubdtype(src.dtype, np.floating):
        nan = inf = 0
        for block in lazy.blocks():
            nan, inf = nan + int(np.isnan(block).sum()), inf + int(np.isinf(block).sum())
        if nan or inf:
            raise nonfinite_error(name, nan, inf)
    return lazy


def cmd_dvc_residual(args: argparse.Namespace) -> int:
    """Residual map of a DVC pair (layout of :func:`anodetwin.dvc.residual.write_residual_map`),
    block by block from the files into the map's file."""
    from contextlib import ExitStack

    import numpy as np

    from anodetwin.dvc.pair import read_pair
    from anodetwin.dvc.residual import NodeField, residual_to_file
    from anodetwin.io import check_output_path, input_record, make_provenance, open_volume
    from anodetwin.io.agree import require_same_grid
    from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT

    check_output_path(args.out, inputs=[args.ref, args.deformed, args.result])
    res = read_pair(args.result)
    grid = _residual_inputs_agree(args, res)  # before reading any voxel
    floor = _residual_floor(args)
    with ExitStack() as stack:
        ref, dfm = (stack.enter_context(open_volume(p)) for p in (args.ref, args.deformed))
        labels = None
        if args.particles:
            lab = stack.enter_context(open_volume(args.particles))
            require_same_grid(ref, lab, f"reference '{args.ref}'",
                              f"particles '{args.particles}'", voxel_size=args.voxel_size)
            labels = lab.lazy(progress=False)
        nodes = res.nodes + np.asarray(res.params.get("roi_origin", (0, 0, 0)), float)
        inputs = [input_record(p) for p in (args.ref, args.deformed, args.result)]
        prov = make_provenance("dvc-residual", inputs, {"sigma": args.sigma, "floor": floor})
        names = (f"reference '{args.ref}'", f"deformed '{args.deformed}'")
        rmap = residual_to_file(
            args.out, _lazy_finite(ref, names[0]), _lazy_finite(dfm, names[1]),
            NodeField(nodes, res.grid_shape, res.displacement), prov,
            voxel_size_um=args.voxel_size or grid.voxel_size_um, names=names,
            sigma=args.sigma, floor=floor, labels_ref=labels, shell_voxels=args.shell,
            memory_limit=args.memory_limit or DEFAULT_MEMORY_LIMIT, workers=args.workers)
    if labels is not None:
        log.info("%d particles: %d core-shell-like", len(rmap.particles),
                 int(rmap.particles["core_shell_like"].sum()))
    log.info("floor %.6g grey levels", rmap.floor)
    print(args.out)
    return 0

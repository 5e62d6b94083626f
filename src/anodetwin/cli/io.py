"""``anodetwin convert`` and ``anodetwin inspect``: volumes between formats, and what a
volume holds (:mod:`anodetwin.io`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anodetwin.cli.options import add_command, flag, log, print_json, volume_options

__all__ = ["add_parsers", "cmd_convert", "cmd_inspect"]


def add_parsers(sub: Any) -> None:
    """Register ``convert`` and ``inspect`` on the subparsers ``sub``."""
    from anodetwin.io.formats import FORMATS, HDF5_COMPRESSIONS

    p = add_command(sub, "convert", "convert a volume between formats, optionally cropped and "
                                    "binned (streamed: bounded memory)", cmd_convert,
                    {"input": "volume: .tif, folder of .tif slices, file.h5:/dataset, .zarr, "
                              ".npy, .raw (+ .json sidecar)",
                     "output": "output path; the format follows from the extension (a trailing "
                               "/ writes a folder of TIFF slices)"})
    volume_options(p)
    p.add_argument("--format", choices=FORMATS, help="force the output format")
    p.add_argument("--compression", choices=HDF5_COMPRESSIONS, help="HDF5 compression")
    flag(p, "--allow-nonfinite", "accept NaN/inf in float volumes (refused by default)")

    p = add_command(sub, "inspect", "shape, dtype, voxel size, provenance and grey-value "
                                    "statistics of a volume", cmd_inspect, {"input": "volume path"})
    volume_options(p)
    flag(p, "--no-stats", "metadata only, read no voxels")
    flag(p, "--json", "print JSON")


def format_voxel_size(vs: Any) -> str:
    """A voxel size for people: ``0.5`` (isotropic), ``1x0.5x0.5`` (z, y, x) or ``unknown``."""
    if vs is None:
        return "unknown"
    if len(set(vs)) == 1:
        return f"{vs[0]:g}"
    return "x".join(f"{v:g}" for v in vs)


def cmd_convert(args: argparse.Namespace) -> int:
    """Copy a volume into another format (cropped, binned), streamed; prints the output."""
    from anodetwin.io import (check_output_path, detect_format, input_record, make_provenance,
                              open_volume, write_volume)

    kind, file, ds = detect_format(args.output, for_writing=True, fmt=args.format)
    # before any work: no overlap with the input; an existing folder only of the same kind
    check_output_path(file, inputs=[args.input],
                      kind=kind if kind in ("zarr", "tiff-dir") else "file")
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
             format_voxel_size(lazy.voxel_size_um), "" if not note else
             f" (partly assumed: {note})" if lazy.voxel_size_um else f" ({note})")
    print(out)
    return 0


def _inspect_report(src: Any, lazy: Any, stats: bool) -> dict[str, Any]:
    """What ``inspect`` reports of an open volume ``src`` and its cropped/binned view
    ``lazy`` (its JSON form)."""
    from anodetwin.io import grey_value_stats

    rep: dict[str, Any] = {
        "path": src.name, "format": src.format, "stored_shape": list(src.shape),
        "shape": list(lazy.shape), "dtype": str(lazy.dtype),
        "voxel_size_um": list(lazy.voxel_size_um) if lazy.voxel_size_um else None,
        # without a voxel size the origin is in voxels: never labelled um
        "origin_um": list(lazy.origin) if lazy.voxel_size_um else None,
        "origin_voxels": None if lazy.voxel_size_um else list(lazy.origin),
        "extent_um": [n * v for n, v in zip(lazy.shape, lazy.voxel_size_um, strict=True)]
        if lazy.voxel_size_um else None,
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
    if stats:
        rep["stats"] = grey_value_stats(lazy)
    return rep


def _print_geometry(rep: dict[str, Any]) -> None:
    """Shape, dtype, voxel size (assumed parts marked), notes, series and extent."""
    print(f"{rep['path']}  [{rep['format']}]")
    print(f"  shape (z, y, x)  {tuple(rep['shape'])}" + (
        f"  (stored {tuple(rep['stored_shape'])})" if rep["shape"] != rep["stored_shape"] else ""))
    print(f"  dtype            {rep['dtype']}  ({rep['nbytes'] / 2**20:.1f} MiB)")
    note = rep["voxel_size_note"]
    print("  voxel size       " + (f"{format_voxel_size(rep['voxel_size_um'])} um"
                                   if rep["voxel_size_um"]
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


def _print_origin_and_values(rep: dict[str, Any]) -> None:
    """Origin, provenance and grey-value statistics."""
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


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print a volume's metadata and grey-value statistics (text or ``--json``)."""
    from anodetwin.io import open_volume

    with open_volume(args.input, voxel_size=args.voxel_size) as src:
        rep = _inspect_report(src, src.lazy(args.roi, args.binning), not args.no_stats)
    if args.json:
        print_json(rep)
        return 0
    _print_geometry(rep)
    _print_origin_and_values(rep)
    return 0

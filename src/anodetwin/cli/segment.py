"""The segmentation stage on the command line (:mod:`anodetwin.segment`): ``segment``,
``segment-train`` and ``morphology``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anodetwin.cli.options import (add_command, block_options, flag, float_list, float_value,
                                   int_list, int_value, jobs_value, log, memory_value,
                                   voxel_size_option)

__all__ = ["add_parsers", "cmd_segment", "cmd_segment_train", "cmd_morphology"]


def _add_segment(sub: Any) -> None:
    p = add_command(sub, "segment", "phases (Cu, Si, CBD+E, separator) and particle instances "
                                    "of a tomogram", cmd_segment, {"volume": "tomogram"},
                    out="labels HDF5 (layout: anodetwin.segment.pipeline)")
    p.add_argument("--model", help="pixel classifier from segment-train (default: unsupervised "
                                   "thresholds)")
    p.add_argument("--denoise", choices=("median", "nlmeans"), help="denoise first")
    p.add_argument("--normalise", choices=("stretch", "equalise", "equalize"),
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
    voxel_size_option(p)
    block_options(p)
    flag(p, "--tiff", "also write phases/particles as TIFF")
    flag(p, "--no-resolution", "skip the edge-profile resolution estimate")


def _add_train(sub: Any) -> None:
    p = add_command(sub, "segment-train", "train a pixel classifier (multi-scale filters + "
                                          "random forest) from a few annotated slices",
                    cmd_segment_train,
                    {"volume": "tomogram", "annotations": "label volume of the same shape: "
                                                          "phase codes where annotated, 255 "
                                                          "elsewhere"},
                    out="model file (.joblib), e.g. models/si.joblib")
    p.add_argument("--slices", type=int_list("--slices", low=0, example="5,20,35"),
                   help="use only these z slices of the annotations, e.g. 5,20,35")
    p.add_argument("--trees", type=int_value("--trees", low=1, example="100"),
                   default=100, help="random-forest trees (100)")
    p.add_argument("--sigmas", type=float_list("--sigmas", low=0, above=True, example="0.7,1,1.6"),
                   help="filter scales in voxels (default 0.7,1,1.6,3.5,5)")
    p.add_argument("--jobs", type=jobs_value("--jobs"),
                   default=1, help="parallel jobs of the forest: N >= 1, or -1 for all cores (1)")


def _add_morphology(sub: Any) -> None:
    p = add_command(sub, "morphology", "thickness, RNL volume, particle sizes and tracks of a "
                                       "segmented series", cmd_morphology,
                    {"labels": "labels files of T0 T1 ... (anodetwin segment)"}, many=True,
                    out="output folder")
    p.add_argument("--dvc", metavar="DIR", help="dvc-series folder: its increments are the "
                                                "tracking prior")
    p.add_argument("--prior", choices=("thickness", "none"), default="thickness",
                   help="tracking prior without --dvc: uniform swelling along z (default)")
    voxel_size_option(p)
    p.add_argument("--memory-limit", type=memory_value(), metavar="SIZE", default="4GB",
                   help="read the labels block by block within this memory (4GB)")
    p.add_argument("--workers", type=int_value("--workers", low=1, example="2"), default=1,
                   help="blocks processed at once (threads; 1)")


def add_parsers(sub: Any) -> None:
    """Register the segmentation subcommands on the subparsers ``sub``."""
    for add in (_add_segment, _add_train, _add_morphology):
        add(sub)


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment a tomogram and write its labels (:func:`anodetwin.segment.pipeline.write_labels`)."""
    from anodetwin.io import check_output_path, input_record, make_provenance, read_volume
    from anodetwin.io.agree import require_same_grid
    from anodetwin.segment.phases import check_volume
    from anodetwin.segment.pipeline import segment_volume, write_labels

    check_output_path(args.out, inputs=[v for v in (args.volume, args.align_to, args.model)
                                        if v])
    if args.align_to:  # before reading any voxel
        require_same_grid(args.volume, args.align_to, f"volume '{args.volume}'",
                          f"--align-to reference '{args.align_to}'", voxel_size=args.voxel_size)
    inputs = [input_record(args.volume)] + ([input_record(args.model)] if args.model else [])
    limit = args.memory_limit or (None if args.tiff else _limit_for(args.volume,
                                                                    args.workers))
    if args.tiff and args.workers > 1 and not args.memory_limit:
        log.warning("--workers %d not used: --tiff segments the volume in memory, on one "
                    "thread", args.workers)
    if limit:
        return _segment_blocks(args, limit, inputs)
    vol = read_volume(args.volume, voxel_size=args.voxel_size)  # an origin in voxels -> um
    check_volume(vol, f"volume '{args.volume}'")  # NaN, constant: the message names the file
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


#: Bytes per voxel the in-memory segmentation needs (measured: 66).
IN_MEMORY_BYTES = 70


def _limit_for(path: str, workers: int = 1) -> str | None:
    """The default memory limit when the volume would need more than half of this
    machine's memory in one piece, or when more than one worker is asked for (threads work
    on blocks), else None (in memory)."""
    import numpy as np
    import psutil

    from anodetwin.io import open_volume
    from anodetwin.io.blocks import DEFAULT_MEMORY_LIMIT

    if workers > 1:
        return DEFAULT_MEMORY_LIMIT
    with open_volume(path) as src:
        need = int(np.prod(src.shape)) * IN_MEMORY_BYTES
    if need <= psutil.virtual_memory().total / 2:
        return None
    log.info("volume needs %.1f GB in memory: segmenting block by block within %s",
             need / 1e9, DEFAULT_MEMORY_LIMIT)
    return DEFAULT_MEMORY_LIMIT


def _segment_blocks(args: argparse.Namespace, limit: str, inputs: list) -> int:
    """``segment`` block by block (:func:`anodetwin.segment.pipeline.segment_to_file`)."""
    from anodetwin.errors import ParameterError
    from anodetwin.io import make_provenance
    from anodetwin.segment.pipeline import segment_to_file

    if args.tiff:
        raise ParameterError(
            f"--tiff needs the volume in memory and cannot be combined with block-wise "
            f"segmentation (--memory-limit {limit})",
            "drop --tiff (convert the labels file's /phases and /particles to TIFF with "
            "'anodetwin convert'), or drop --memory-limit for a volume that fits in memory")
    params = {"denoise": args.denoise, "normalise": args.normalise, "model": args.model,
              "h": args.h, "memory_limit": limit,
              "min_particle_voxels": args.min_particle_voxels,
              "surface_window_um": args.surface_window_um, "workers": args.workers}
    seg = segment_to_file(args.volume, args.out, model=args.model,
                          voxel_size_um=args.voxel_size, denoise=args.denoise,
                          normalise=args.normalise, align_to=args.align_to, h=args.h,
                          min_particle_voxels=args.min_particle_voxels,
                          surface_window_um=args.surface_window_um,
                          resolution=not args.no_resolution, memory_limit=limit,
                          workers=args.workers,
                          provenance=make_provenance("segment", inputs, params))
    log.info("%d particles; collector face %s; resolution %.3g um (block by block)",
             len(seg.table), seg.collector_face, seg.resolution_fwhm_um)
    print(args.out)
    return 0


def cmd_segment_train(args: argparse.Namespace) -> int:
    """Train a pixel classifier on annotated slices and save it (both volumes read lazily:
    the annotations a slice at a time, the tomogram around the annotated slices)."""
    from anodetwin.io import check_output_path, open_volume
    from anodetwin.segment.classifier import DEFAULT_SIGMAS, train_classifier

    check_output_path(args.out)
    slices = args.slices or None
    sigmas = tuple(args.sigmas) if args.sigmas else DEFAULT_SIGMAS
    with open_volume(args.volume) as vol, open_volume(args.annotations) as ann:
        clf = train_classifier(vol.lazy(progress=False), ann.lazy(progress=False),
                               slices=slices, sigmas=sigmas, n_estimators=args.trees,
                               n_jobs=args.jobs)
    clf.save(args.out)
    print(args.out)
    return 0


def cmd_morphology(args: argparse.Namespace) -> int:
    """Morphology of a segmented series (:func:`anodetwin.segment.morphology.write_morphology`)."""
    from anodetwin.errors import InputNotFoundError
    from anodetwin.io import check_output_path, input_record, make_provenance
    from anodetwin.segment.morphology import MORPHOLOGY_FILES, series_morphology, write_morphology

    increments = None
    if args.dvc:
        d = Path(args.dvc)
        increments = [d / f"increment_{k}_{k + 1}.h5" for k in range(len(args.labels) - 1)]
        for p in increments:
            if not p.is_file():
                raise InputNotFoundError(p, "DVC increment",
                                         "give the folder written by 'anodetwin dvc-series' "
                                         "for these steps")
    if Path(args.out).parent.is_dir():  # else it is created: nothing there to replace
        check_output_path(args.out, inputs=[*args.labels, *(increments or [])],
                          kind=MORPHOLOGY_FILES)  # before any work
    m = series_morphology(args.labels, prior=args.prior, dvc_increments=increments,
                          voxel_size_um=args.voxel_size, memory_limit=args.memory_limit,
                          workers=args.workers)
    inputs = [input_record(p) for p in args.labels]
    write_morphology(args.out, m, make_provenance("morphology", inputs,
                                                  {"prior": args.prior, "dvc": args.dvc}))
    for r in m.steps:
        log.info("T%d: thickness %.2f +- %.2f um, RNL %.3f, %d particles", r["step"],
                 r["thickness_mean_um"], r["thickness_std_um"], r["rnl"], r["particles"])
    print(args.out)
    return 0

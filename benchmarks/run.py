"""anodetwin benchmarks: speed and memory as ratios against a baseline measured in the same run.

Usage: ``python benchmarks/run.py --out benchmarks/RESULTS.md`` (``make bench``).

Each case runs in a fresh process so that its peak resident memory (VmHWM) is its own; the
time (imports excluded) is the median of ``--repeat`` runs; dirty pages are flushed before
each run so that one case's writeback does not slow the next. Files are read warm (in the page cache), which is
what repeated analysis of one tomogram sees; the ratios compare like with like.

Sections (later pipeline stages append theirs):

* I/O, region of interest: ``read_volume(path, roi=...)`` against the direct library call
  a user would write (tifffile.imread + crop, h5py slicing, numpy.memmap slicing, zarr slicing).
* I/O, binning: ``read_volume(path, binning=2)`` (slab-wise) against loading the whole
  volume and calling ``skimage.transform.downscale_local_mean``.
* I/O, writing: ``write_volume`` against tifffile.imwrite / h5py create_dataset.
* Phantom: a 256 x 256 x 128 voxel, 7-step series (wall time, peak memory) against the
  h5py copy of the same output (the I/O floor).
* DVC: nodes/s of the native engine (trilinear and cubic) against ``spam.DIC.ldic`` called
  directly on the same volume, nodes and windows (hws 8, 16 and 35), with the accuracy
  and peak memory beside it.
* Segmentation: voxels/s of the phase segmentation and of the instance labelling of a
  ~256^3 phantom against a plain Otsu threshold and the textbook distance-map watershed.
* Meshing: cells/s and peak memory of the voxel route for 1x and 2x coarsening of
  256 x 256 x 128 labels on 1 and 2 MPI ranks.
* Scale: the block-wise image stages (phases, particle instances and table, residual maps)
  on a phantom tiled to 256^3, 512^3 and 1024^3 voxels within a 4 GB memory limit: time,
  voxels/s, peak memory, the growth of time with size, the projection to 2048^3; and the DVC
  pair read lazily at the reference's settings (nodes/s per level, peak memory of the process
  tree) with spam.DIC.ldic on a subset of the final level's nodes (``benchmarks/scale.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

SHAPE = (256, 1024, 1024)  # uint16: 512 MiB
ROI = "64:192,256:768,256:768"  # 64 MiB

PRELUDE = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    os.sync()  # no writeback of an earlier case's output runs into this one
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    P = sys.argv[1]
    t0 = time.perf_counter()
""")
POSTLUDE = textwrap.dedent("""
    t = time.perf_counter() - t0
    print(json.dumps({"s": t, "mib": hwm(), "check": float(np.asarray(out).astype(np.float64).sum())}))
""")

CASES = {
    # name: (ours, baseline, file)
    "ROI 64 MiB, multi-page TIFF": (
        "import tifffile\nfrom anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P, roi=%r, progress=False).data" % ROI,
        "import tifffile\nt0 = time.perf_counter()\nout = tifffile.imread(P)[64:192, 256:768, 256:768].copy()",
        "vol.tif"),
    "ROI 64 MiB, TIFF vs tifffile.memmap": (
        "import tifffile\nfrom anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P, roi=%r, progress=False).data" % ROI,
        "import tifffile\nt0 = time.perf_counter()\nout = np.array(tifffile.memmap(P, mode='r')[64:192, 256:768, 256:768])",
        "vol.tif"),
    "ROI 64 MiB, HDF5": (
        "import h5py\nfrom anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P + ':/volume', roi=%r, progress=False).data" % ROI,
        "import h5py\nt0 = time.perf_counter()\nwith h5py.File(P, 'r') as f: out = f['volume'][64:192, 256:768, 256:768]",
        "vol.h5"),
    "ROI 64 MiB, raw": (
        "from anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P, roi=%r, progress=False).data" % ROI,
        "t0 = time.perf_counter()\nmm = np.memmap(P, dtype='<u2', mode='r', shape=%r)\nout = np.array(mm[64:192, 256:768, 256:768])" % (SHAPE,),
        "vol.raw"),
    "ROI 64 MiB, Zarr": (
        "import zarr\nfrom anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P, roi=%r, progress=False).data" % ROI,
        "import zarr\nt0 = time.perf_counter()\nout = zarr.open_array(P, mode='r')[64:192, 256:768, 256:768]",
        "vol.zarr"),
    "bin 2 of 512 MiB, multi-page TIFF": (
        "import tifffile\nfrom anodetwin.io import read_volume\nt0 = time.perf_counter()\nout = read_volume(P, binning=2, progress=False).data",
        "import tifffile\nfrom skimage.transform import downscale_local_mean\n"
        "t0 = time.perf_counter()\nout = np.rint(downscale_local_mean(tifffile.imread(P), (2, 2, 2))).astype(np.uint16)",
        "vol.tif"),
    "write 512 MiB, TIFF": (
        "from anodetwin.io import read_volume, write_volume\nv = read_volume(P, progress=False)\n"
        "t0 = time.perf_counter()\nwrite_volume(P + '.out.tif', v)\nout = v.data[:1]",
        "import tifffile\nv = tifffile.imread(P)\nt0 = time.perf_counter()\n"
        "tifffile.imwrite(P + '.out.tif', v, imagej=True)\nout = v[:1]",
        "vol.tif"),
    "write 512 MiB, HDF5": (
        "from anodetwin.io import read_volume, write_volume\nv = read_volume(P, progress=False)\n"
        "t0 = time.perf_counter()\nwrite_volume(P + '.out.h5', v)\nout = v.data[:1]",
        "import h5py, tifffile\nv = tifffile.imread(P)\nt0 = time.perf_counter()\n"
        "with h5py.File(P + '.out.h5', 'w') as f: f.create_dataset('volume', data=v, chunks=(64, 64, 64))\n"
        "out = v[:1]",
        "vol.tif"),
}


def _random_slab(z0: int, z1: int) -> np.ndarray:
    rng = np.random.default_rng(z0)
    return rng.integers(0, 65535, (z1 - z0,) + SHAPE[1:], dtype=np.uint16)


def _run(code: str, path: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code + POSTLUDE, str(path), *extra],
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_sections(old: str, new: str, marker: str) -> str:
    """``old`` with its header and its ``marker`` section (in place, or appended) taken from
    ``new``; the other stages' ``## `` sections are kept."""
    head_new, _, ours_new = new.partition(marker)
    ours = (marker + ours_new).rstrip()
    parts = old.split("\n## ")
    sections = ["## " + p.rstrip() for p in parts[1:]]
    for i, sec in enumerate(sections):
        if sec.startswith(marker):
            sections[i] = ours
            break
    else:
        sections.append(ours)
    return "\n\n".join([head_new.rstrip(), *sections])


IO_BASELINES = {
    "ROI 64 MiB, multi-page TIFF": "tifffile.imread whole file, then crop",
    "ROI 64 MiB, TIFF vs tifffile.memmap": "tifffile.memmap + slice copy",
    "ROI 64 MiB, HDF5": "h5py dataset slicing",
    "ROI 64 MiB, raw": "numpy.memmap + slice copy",
    "ROI 64 MiB, Zarr": "zarr array slicing",
    "bin 2 of 512 MiB, multi-page TIFF": "tifffile.imread + skimage downscale_local_mean",
    "write 512 MiB, TIFF": "tifffile.imwrite (ImageJ)",
    "write 512 MiB, HDF5": "h5py create_dataset, chunks 64^3",
}
TABLE_HEAD = ["| case | baseline | anodetwin s | baseline s | time ratio | anodetwin MiB | "
              "baseline MiB | memory ratio |", "|---|---|---|---|---|---|---|---|"]


def _compare(case: str, ours: str, base: str, path: Path, repeat: int, check: bool = True,
             *extra: str) -> tuple:
    res: dict[str, list] = {"ours": [], "base": []}
    for _ in range(repeat):
        for key, code in (("base", base), ("ours", ours)):
            res[key].append(_run(code, path, *extra))
    o, b = res["ours"], res["base"]
    if check and abs(o[0]["check"] - b[0]["check"]) > 1e-6 * max(1.0, abs(b[0]["check"])):
        raise RuntimeError(f"{case}: results differ ({o[0]['check']} vs {b[0]['check']})")
    to = statistics.median(r["s"] for r in o)
    tb = statistics.median(r["s"] for r in b)
    mo = max(r["mib"] for r in o)
    mb = max(r["mib"] for r in b)
    print(f"{case:40s} ours {to:7.3f} s {mo:7.0f} MiB | baseline {tb:7.3f} s "
          f"{mb:7.0f} MiB | time x{to / tb:5.2f} memory x{mo / mb:5.2f}", flush=True)
    return case, to, tb, mo, mb


def _rows(rows: list, baselines: dict) -> list[str]:
    return [f"| {case} | {baselines[case]} | {to:.3f} | {tb:.3f} | {to / tb:.2f} | "
            f"{mo:.0f} | {mb:.0f} | {mo / mb:.2f} |" for case, to, tb, mo, mb in rows]


def io_section(repeat: int) -> tuple[str, list[str]]:
    from anodetwin.io import SlabVolume, write_volume

    rows = []
    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        d = Path(tmp)
        for name in ("vol.tif", "vol.h5:/volume", "vol.raw", "vol.zarr"):
            write_volume(f"{d}/{name}", SlabVolume(SHAPE, np.uint16, _random_slab, 0.05))
        for case, (ours, base, fname) in CASES.items():
            rows.append(_compare(case, ours, base, d / fname, repeat))
    marker = "## I/O (`anodetwin.io`)"
    return marker, [f"{marker}, volume 256 x 1024 x 1024 uint16 (512 MiB)", "",
                    *TABLE_HEAD, *_rows(rows, IO_BASELINES)]


#: Phantom benchmark: 256 x 256 lateral, 128 planes (0.3 um voxels), 7 steps.
PHANTOM_CONFIG = {"geometry": {"voxel_size_um": 0.3, "lateral_um": 76.8,
                               "cu_thickness_um": 1.8, "separator_thickness_um": 4.5}}
PHANTOM_OURS = (
    "from anodetwin.phantom import config_from_dict, generate_series\n"
    "cfg = config_from_dict(json.loads(sys.argv[2]), seed=1)\n"
    "t0 = time.perf_counter()\n"
    "r = generate_series(cfg, P, progress=False)\n"
    "out = np.array([r.shape[0] * r.shape[1] * r.shape[2], r.n_steps, r.n_particles])\n")
PHANTOM_BASE = (
    "import h5py\n"
    "src = h5py.File(P, 'r')\n"
    "t0 = time.perf_counter()\n"
    "with h5py.File(P + '.copy.h5', 'w') as dst:\n"
    "    def cp(name, obj):\n"
    "        if isinstance(obj, h5py.Dataset):\n"
    "            dst.create_dataset(name, data=obj[...], chunks=obj.chunks,\n"
    "                               compression=obj.compression, shuffle=obj.shuffle)\n"
    "    src.visititems(cp)\n"
    "out = np.array([0])\n")


def phantom_section(repeat: int) -> tuple[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        path = Path(tmp) / "series.h5"
        cfg = json.dumps(PHANTOM_CONFIG)
        times, mems = [], []
        for _ in range(repeat):
            r = _run(PHANTOM_OURS, path, cfg)
            times.append(r["s"])
            mems.append(r["mib"])
        base = [_run(PHANTOM_BASE, path) for _ in range(repeat)]
        import h5py

        with h5py.File(path) as f:
            shape = f["steps/T0/tomogram"].shape
            n_steps = int(f.attrs["n_steps"])
            n_part = len(f["particles"])
        size = path.stat().st_size / 2**20
    to, mo = statistics.median(times), max(mems)
    tb, mb = statistics.median(r["s"] for r in base), max(r["mib"] for r in base)
    print(f"{'phantom series':40s} ours {to:7.3f} s {mo:7.0f} MiB | baseline {tb:7.3f} s "
          f"{mb:7.0f} MiB | time x{to / tb:5.2f}", flush=True)
    marker = "## Phantom series (`anodetwin.phantom`)"
    return marker, [
        f"{marker}, {shape[2]} x {shape[1]} x {shape[0]} voxels (x, y, z; 0.3 um), "
        f"{n_steps} steps, {n_part} particles, {size:.0f} MiB written",
        "",
        "Target: under 60 s and 4 GiB on 2 cores. Baseline: copying the finished series file "
        "dataset by dataset with h5py (same chunks and compression), i.e. the I/O floor of "
        "writing that much data.",
        "",
        *TABLE_HEAD,
        *_rows([("generate 7-step series", to, tb, mo, mb)],
               {"generate 7-step series": "h5py copy of the written series"}),
    ]


DVC_SETUP = (
    "import importlib.resources, contextlib, io, resource, warnings\n"
    "import spam.datasets, spam.deformation, spam.DIC\n"
    "from scipy import ndimage\n"
    "warnings.simplefilter('ignore')\n"
    "hws, spacing, engine, order = (int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],\n"
    "                               int(sys.argv[5]))\n"
    "im = spam.datasets.loadSnow().astype(np.float32)\n"
    "im = np.pad(im, ((0, 60),) * 3, mode='reflect')  # 160^3\n"
    "Phi = spam.deformation.computePhi({'t': [1.3, -0.7, 0.4], 'z': [1.01, 1.0, 0.995]})\n"
    "c = (np.array(im.shape) - 1) / 2\n"
    "inv = np.linalg.inv(Phi)  # scipy's cubic spline: neither engine's interpolation\n"
    "d = ndimage.affine_transform(im.astype(np.float64), inv[:3, :3],\n"
    "                             c + inv[:3, 3] - inv[:3, :3] @ c, order=3, mode='nearest')\n"
    "rng = np.random.default_rng(0)\n"
    "d = (d + rng.normal(0, 0.01 * im.std(), im.shape)).astype(np.float32)\n"
    "im = im + rng.normal(0, 0.01 * im.std(), im.shape).astype(np.float32)\n"
    "ax = np.arange(spacing, im.shape[0] - hws, spacing, dtype=float)\n"
    "nodes = np.stack(np.meshgrid(ax, ax, ax, indexing='ij'), -1).reshape(-1, 3)\n"
    "nodes = nodes[np.all(nodes + hws <= np.array(im.shape) - 1, axis=1)]\n"
    "true = (nodes - c) @ (Phi[:3, :3] - np.eye(3)).T + Phi[:3, 3]\n")
DVC_CASE = DVC_SETUP + (
    "if engine == 'spam':\n"
    "    t0 = time.perf_counter()\n"
    "    with contextlib.redirect_stdout(io.StringIO()):\n"
    "        r = spam.DIC.ldic(im, d, nodes, np.array([hws] * 3), processes=2,\n"
    "                          interpolationOrder=order)\n"
    "    u = r[0][:, :3, 3]\n"
    "else:\n"
    "    from anodetwin.dvc.correlate import DVCParams, correlate_nodes\n"
    "    engine, *opts = engine.split('+')\n"
    "    p = DVCParams((spacing,) * 3, (hws,) * 3, engine=engine, interpolation_order=order,\n"
    "                  robust='robust' in opts,\n"
    "                  shape_function='quadratic' if 'quadratic' in opts else 'affine')\n"
    "    kw = {}\n"
    "    if 'phases' in opts:  # the model of the reference from its Otsu phases\n"
    "        import dataclasses\n"
    "        from skimage.filters import threshold_otsu\n"
    "        from anodetwin.dvc.model import fit_psf\n"
    "        kw['model'] = (im > threshold_otsu(im)).astype(np.uint8)\n"
    "        p = dataclasses.replace(p, reference_model='phases',\n"
    "                                psf_sigma=fit_psf(im, kw['model']).sigma)\n"
    "    correlate_nodes(im, d, nodes[:1], p, progress=False, **kw)  # compile the kernels\n"
    "    t0 = time.perf_counter()\n"
    "    u = correlate_nodes(im, d, nodes, p, processes=2, progress=False,\n"
    "                        **kw).Phi[:, :3, 3]\n"
    "t = time.perf_counter() - t0\n"
    "inner = np.all((nodes - hws - 5 >= 0) & (nodes + hws + 5 <= np.array(im.shape) - 1), 1)\n"
    "e = np.linalg.norm(u - true, axis=1)[inner]\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
    "print(json.dumps({'s': t, 'mib': hwm() + kids, 'n': len(nodes), 'inner': int(inner.sum()),\n"
    "                  'median': float(np.nanmedian(e)), 'p95': float(np.nanpercentile(e, 95)),\n"
    "                  'measured': float(np.isfinite(e).mean())}))\n")
#: DVC cases: half-window, node spacing (voxels).
DVC_SIZES = ((8, 16), (16, 16), (35, 35))
#: Engines compared: (name in the table, engine with its options after '+', interpolation
#: order); each spam row is the baseline of the native rows with the same interpolation.
DVC_ENGINES = (("spam.DIC.ldic, trilinear", "spam", 1), ("native, trilinear", "native", 1),
               ("spam.DIC.ldic, cubic", "spam", 3), ("native, cubic", "native", 3),
               ("native, cubic, robust", "native+robust", 3),
               ("native, cubic, quadratic", "native+quadratic", 3),
               ("native, cubic, robust, phase model", "native+robust+phases", 3))


def _dvc_case(hws: int, spacing: int, engine: str, order: int, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", PRELUDE + DVC_CASE, "-", str(hws),
                               str(spacing), engine, str(order)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = dict(runs[0])
    out["s"] = statistics.median(r["s"] for r in runs)
    out["mib"] = max(r["mib"] for r in runs)
    print(f"dvc hws {hws} {engine} order {order}: {out['n'] / out['s']:.0f} nodes/s, "
          f"{out['mib']:.0f} MiB, median {out['median']:.4f} p95 {out['p95']:.4f}", flush=True)
    return out


def dvc_section(repeat: int) -> tuple[str, list[str]]:
    marker = "## DVC pair correlation (`anodetwin.dvc`)"
    lines = [f"{marker}, spam snow tomogram mirrored to 160^3 + 1% noise, affine truth, "
             "2 cores", "",
             "Same volume, nodes and windows for every engine; the deformed volume is made "
             "with scipy's cubic spline (neither engine's interpolation). Baseline: "
             "`spam.DIC.ldic` called directly (2 processes) with the same interpolation "
             "(trilinear, or cubic: spam's interpolationOrder 3); the native engine runs on 2 "
             "threads (ZNSSD; the robust, quadratic and phase-model rows are its options "
             "`--robust`, `--shape-function quadratic` and `--reference-model phases` (the "
             "reference's Otsu phases, point-spread sigma fitted before the clock starts), "
             "which this affine truth without grey-value change does not need: they show "
             "their cost). Speed = nodes/s and its ratio to "
             "the baseline; memory = peak "
             "resident of the process and its children; errors (voxels) over the nodes whose "
             "windows stay 5 voxels clear of the faces.", "",
             "| hws, spacing | engine | nodes | nodes/s | speed vs spam (same interpolation) | MiB "
             "| median error | p95 error |",
             "|---|---|---|---|---|---|---|---|"]
    for hws, spacing in DVC_SIZES:
        base = {}
        for label, engine, order in DVC_ENGINES:
            r = _dvc_case(hws, spacing, engine, order, repeat)
            base.setdefault(order, r)
            speed = (r["n"] / r["s"]) / (base[order]["n"] / base[order]["s"])
            lines.append(f"| {hws}, {spacing} | {label} | {r['n']} | {r['n'] / r['s']:.0f} | "
                         f"{speed:.2f} | {r['mib']:.0f} | {r['median']:.4f} | "
                         f"{r['p95']:.4f} |")
    return marker, lines


#: Segmentation benchmark: a phantom T0 of about 256^3 voxels (0.15 um voxels).
SEG_CONFIG = {"geometry": {"voxel_size_um": 0.15, "lateral_um": 38.4},
              "series": {"soc": [0.0]}}
SEG_SETUP = (
    "import warnings\n"
    "warnings.simplefilter('ignore')\n"
    "vol = np.load(P)\n")
SEG_PHASES_OURS = SEG_SETUP + (
    "from anodetwin.segment.phases import segment_phases\n"
    "t0 = time.perf_counter()\n"
    "out = segment_phases(vol, voxel_size_um=0.15).si\n")
SEG_PHASES_BASE = SEG_SETUP + (
    "from skimage.filters import threshold_otsu\n"
    "t0 = time.perf_counter()\n"
    "out = vol > threshold_otsu(vol)\n")
SEG_INST_SETUP = SEG_SETUP + (
    "mask = np.load(P.replace('.npy', '_si.npy'))\n")
SEG_INST_OURS = SEG_INST_SETUP + (
    "from anodetwin.segment.particles import label_particles\n"
    "t0 = time.perf_counter()\n"
    "out = label_particles(mask) > 0\n")
SEG_INST_BASE = SEG_INST_SETUP + (
    "from scipy import ndimage\n"
    "from skimage.feature import peak_local_max\n"
    "from skimage.segmentation import watershed\n"
    "t0 = time.perf_counter()\n"
    "dist = ndimage.distance_transform_edt(mask)\n"
    "peaks = peak_local_max(dist, min_distance=5, labels=ndimage.label(mask)[0])\n"
    "markers = np.zeros(mask.shape, np.int32)\n"
    "markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)\n"
    "out = watershed(-dist, markers, mask=mask) > 0\n")


def segment_section(repeat: int) -> tuple[str, list[str]]:
    from anodetwin.phantom import config_from_dict, generate_series
    from anodetwin.segment.phases import segment_phases

    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        import h5py

        cfg = config_from_dict(SEG_CONFIG, seed=1)
        res = generate_series(cfg, Path(tmp) / "s.h5", progress=False)
        with h5py.File(res.path) as f:
            vol = f["steps/T0/tomogram"][...]
        path = Path(tmp) / "t0.npy"
        np.save(path, vol)
        np.save(Path(tmp) / "t0_si.npy", segment_phases(vol, voxel_size_um=0.15).si)
        rows = [_compare("phases (Cu, Si, CBD+E, separator)", SEG_PHASES_OURS,
                         SEG_PHASES_BASE, path, repeat, False),
                _compare("particle instances", SEG_INST_OURS, SEG_INST_BASE, path, repeat,
                         False)]
    n = int(np.prod(vol.shape))
    marker = "## Segmentation (`anodetwin.segment`)"
    lines = [f"{marker}, phantom T0 {vol.shape[2]} x {vol.shape[1]} x {vol.shape[0]} voxels "
             f"(x, y, z; {n / 1e6:.1f} M voxels, 0.15 um)", "",
             "Baselines: a plain Otsu threshold (skimage) for the phases, which finds neither "
             "the foil nor the separator and places Si edges by class means; the textbook "
             "watershed of the distance map with `peak_local_max` markers (min_distance 5) "
             "for the instances. Voxels/s = voxels / time.", "",
             "| case | anodetwin Mvoxel/s | baseline Mvoxel/s | time ratio | anodetwin MiB | "
             "baseline MiB | memory ratio |", "|---|---|---|---|---|---|---|"]
    for case, to, tb, mo, mb in rows:
        lines.append(f"| {case} | {n / to / 1e6:.2f} | {n / tb / 1e6:.2f} | {to / tb:.2f} | "
                     f"{mo:.0f} | {mb:.0f} | {mo / mb:.2f} |")
    return marker, lines


#: Meshing benchmark: 256 x 256 x 128 phantom labels (0.2 um voxels).
MESH_CONFIG = {"geometry": {"voxel_size_um": 0.2, "lateral_um": 51.2,
                            "separator_thickness_um": 2.6, "headroom_um": 5.0},
               "series": {"soc": [0.0]}}
MESH_CODE = (
    "import dolfinx_solver\n"
    "from mpi4py import MPI\n"
    "from anodetwin.mesh.voxel import Labels, voxel_mesh\n"
    "ph = np.load(P)[:int(sys.argv[3])]\n"
    "k = int(sys.argv[2])\n"
    "MPI.COMM_WORLD.barrier()\n"
    "t0 = time.perf_counter()\n"
    "hm = voxel_mesh(MPI.COMM_WORLD, Labels(ph, None, 0.2), coarsen_by=k,\n"
    "                partition=sys.argv[4])\n"
    "MPI.COMM_WORLD.barrier()\n"
    "t = time.perf_counter() - t0\n"
    "mib = MPI.COMM_WORLD.allreduce(hwm(), op=MPI.SUM)\n"
    "if MPI.COMM_WORLD.rank == 0:\n"
    "    print(json.dumps({'s': t, 'mib': mib, 'cells': hm.summary['cells']}))\n"
    "sys.exit(0)\n")


def _phantom_phases(tmp: str) -> tuple[Path, np.ndarray]:
    """T0 phase labels of the MESH_CONFIG phantom, saved as .npy in ``tmp``."""
    import h5py

    from anodetwin.phantom import config_from_dict, generate_series

    res = generate_series(config_from_dict(MESH_CONFIG, seed=1), Path(tmp) / "s.h5",
                          progress=False)
    with h5py.File(res.path) as f:
        ph = f["steps/T0/phases"][...]
    path = Path(tmp) / "phases.npy"
    np.save(path, ph)
    return path, ph


def mesh_section(repeat: int) -> tuple[str, list[str]]:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    rows = []
    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        path, ph = _phantom_phases(tmp)
        shape = ph[:128].shape
        goal = int(np.ceil(1e7 / (shape[1] * shape[2])))  # layers for 10^7 voxels
        for k, ranks, nz in ((1, 1, 128), (1, 2, 128), (2, 1, 128), (2, 2, 128),
                             (1, 2, goal)):
            row = [k, ranks, nz]
            for partition in ("slab", "graph"):  # graph: DOLFINx's create_mesh (baseline)
                runs = []
                for _ in range(repeat):
                    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, "-c",
                           PRELUDE + MESH_CODE, str(path), str(k), str(nz), partition]
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
                    if proc.returncode != 0:
                        raise RuntimeError(proc.stderr[-2000:])
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                t = statistics.median(r["s"] for r in runs)
                mib = max(r["mib"] for r in runs)
                print(f"mesh k={k} ranks={ranks} layers={nz} {partition}: "
                      f"{runs[0]['cells']} cells {t:.2f} s {mib:.0f} MiB", flush=True)
                row += [runs[0]["cells"], t, mib]
            rows.append(tuple(row))
    n = int(np.prod(shape))
    marker = "## Meshing (`anodetwin.mesh`, voxel route)"
    lines = [f"{marker}, phantom labels {shape[2]} x {shape[1]} x {shape[0]} voxels "
             f"(x, y, z; {n / 1e6:.1f} M voxels)", "",
             "Time from labels in memory to the tagged DOLFINx mesh (coarsening, each rank's "
             "slab of cells with its shared-facet ghosts and process-boundary vertices, "
             "topology and geometry assembled directly from the voxel lattice, facets, cell "
             "and facet tags, volume check). Memory: sum of the ranks' peak resident sets. "
             "Baseline: the same labels through `dolfinx.mesh.create_mesh` with DOLFINx's "
             "graph partitioner and shared-facet ghosts (`partition=\"graph\"`: same cells, "
             "tags and summary). Goal: 10^7 voxels in under 60 s on 2 cores (last row: the "
             f"volume extended to {shape[2]} x {shape[1]} x {goal}).", "",
             "| coarsening | ranks | voxels | cells | anodetwin s | create_mesh s | time ratio "
             "| anodetwin cells/s | anodetwin MiB | create_mesh MiB | memory ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, ranks, nz, cells, t, mib, _, tb, mb in rows:
        lines.append(f"| {k}x | {ranks} | {nz * shape[1] * shape[2]} | {cells} | {t:.2f} | "
                     f"{tb:.2f} | {t / tb:.2f} | {cells / t:.0f} | {mib:.0f} | {mb:.0f} | "
                     f"{mib / mb:.2f} |")
    return marker, lines


def _solver_case(ranks: int, *args: str) -> dict:
    """Run ``benchmarks/solver_case.py`` under ``mpiexec -n ranks``; its JSON line."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    script = Path(__file__).resolve().parent / "solver_case.py"
    proc = subprocess.run([str(mpiexec), "-n", str(ranks), sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"solver {args[0]} ranks={ranks}: {r}", flush=True)
    return r


def _twin_rows(rows: list) -> list[str]:
    """Table rows of a twin's first five charging steps in units of the elastic solve."""
    out = []
    for ranks, u, tw in rows:
        steps = [s for s in tw["steps"] if s["dtheta"] > 0][:5]
        total = sum(s["s"] for s in steps)
        newton = sum(s["newton"] for s in steps)
        krylov = sum(s["krylov"] for s in steps)
        out.append(f"| {ranks} | {u['dofs']} | {u['unit_s']:.2f} | {total:.1f} | "
                   f"{total / u['unit_s']:.1f} | {' + '.join(str(s['newton']) for s in steps)} | "
                   f"{krylov / max(newton, 1):.0f} | {total / max(newton, 1):.2f} | "
                   f"{total / max(newton, 1) / u['unit_s']:.2f} | "
                   f"{tw['mib'] * 1024 / u['dofs']:.2f} |")
    return out


def solver_section(repeat: int) -> tuple[str, list[str]]:
    """The mechanics solver in units of one homogeneous elastic solve of the same mesh:
    the demo electrode's first charging steps and a ~1M-DOF swelling step, 1 and 2 ranks."""
    rows, plastic, big = [], [], []
    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        demo = str(Path(tmp) / "demo_mesh")
        _solver_case(1, "mesh", "reference", demo, "4")
        path, _ = _phantom_phases(tmp)
        large = str(Path(tmp) / "large_mesh")
        _solver_case(1, "mesh", str(path), large, "3")
        for ranks in (1, 2):
            u = _solver_case(ranks, "unit", demo)
            tw = _solver_case(ranks, "twin", demo, str(Path(tmp) / f"twin{ranks}"), "5")
            rows.append((ranks, u, tw))
            ref = _solver_case(ranks, "twin", demo, str(Path(tmp) / f"ref{ranks}"), "10",
                               "reference")
            plastic.append((ranks, u, ref))
            big.append((ranks, _solver_case(ranks, "unit", large),
                        _solver_case(ranks, "step", large)))
    marker = "## Mechanics solver (`anodetwin.simulate`)"
    lines = [f"{marker}, in units of one elastic solve of the same mesh", "",
             "Unit: one homogeneous linear-elastic solve of the mesh (assembly, rigid-body "
             "near-nullspace, GAMG set-up, CG to 1e-8), measured in the same run. Demo "
             "electrode: the reference phantom's T0 electrode in 0.8 um hexahedra (Cu, Si, "
             "CBD, pores), the demo's case with the compacting matrix (quick_cell, "
             "separator-side reaction, elastic LixSi, 0.3 MPa), its first five (charging) "
             "steps, each step's wall time with the Li transport and the outputs. Per Newton "
             "iteration: step time / Newton iterations (the predictor's solve included). "
             "Memory: peak resident sets summed over the ranks, including the mesh and the "
             "interpreter, per displacement DOF. Goals (issue): five steps <= 15 units, "
             "<= 1 unit per Newton iteration, the ~1M-DOF step <= 30 s on 2 ranks with "
             "<= 2 kB per DOF.", ""]
    head = ["| ranks | DOFs | unit s | 5 steps s | units | Newton per step | Krylov per "
            "Newton | s per Newton | units per Newton | kB per DOF |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    lines += head + _twin_rows(rows)
    lines += ["", "With plastic flow: the validation case (validation/reference_electrode/"
              "case.toml: reference protocol, plastic LixSi, compacting matrix) on the same "
              "mesh, its first five charging steps (after the rest before the first charge).",
              ""] + head + _twin_rows(plastic)
    lines += ["", "Swelling step theta 0.002 -> 0.004 in every Si cell of the benchmark "
              "phantom's electrode (0.6 um hexahedra, default materials, spring 0.3 MPa + "
              "0.001 MPa/um), from the tangent predictor of the step before.", "",
              "| ranks | DOFs | unit s | step s | units | Newton | Krylov | kB per DOF |",
              "|---|---|---|---|---|---|---|---|"]
    for ranks, u, st in big:
        s2 = st["steps"][1]
        lines.append(f"| {ranks} | {u['dofs']} | {u['unit_s']:.2f} | {s2['s']:.1f} | "
                     f"{s2['s'] / u['unit_s']:.1f} | {s2['newton']} | {s2['krylov']} | "
                     f"{st['mib'] * 1024 / u['dofs']:.2f} |")
    small_u, large_u = rows[0][1], big[0][1]
    k = np.log(large_u["unit_s"] / small_u["unit_s"]) / np.log(large_u["dofs"] / small_u["dofs"])
    t4 = big[0][2]["steps"][1]["s"] * 4 ** k
    lines += ["", f"Growth with size (1 rank): the unit grows as DOFs^{k:.2f} from "
              f"{small_u['dofs']} to {large_u['dofs']} DOFs; at that rate the ~4M-DOF step "
              f"(0.4 um hexahedra of the same electrode) would take ~{t4:.0f} s on 1 rank "
              "(projected, not run)."]
    return marker, lines


def scale_section(repeat: int) -> tuple[str, list[str]]:
    """Block-wise image stages on a phantom tiled to 256^3, 512^3 and 1024^3 (one run each:
    the 1024^3 runs take minutes; ``repeat`` is not used)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import scale

    with tempfile.TemporaryDirectory(prefix="anodetwin-scale-") as tmp:
        res, dvc = scale.measure(Path(tmp))
    marker = "## Scale (`anodetwin.io.blocks`)"
    lines = [f"{marker}: image stages block by block, phantom tiled to 256^3 - 1024^3 "
             f"(uint16, 0.2 um), {scale.WORKERS} workers, memory limit {scale.MEMORY}", "",
             "A pristine and a 50%-SoC phantom scan (147 x 100 x 100) mirror-tiled to N^3 "
             "(HDF5, written slab by slab). Each stage in a fresh process reads its input from "
             "the file and writes its output into it block by block: phases of the pristine "
             "scan, particle instances of its Si, their table, and the residual maps of the "
             "pair with a smooth node field (spacing 35 voxels) and the per-particle table. "
             "Exponent: slope of log time against log voxels. Projection to 2048^3: the largest "
             "size's time scaled by that exponent; 16 workers: perfect scaling of the "
             "independent blocks (an upper bound).", "",
             *scale.section_lines(res), *scale.dvc_lines(dvc)]
    return marker, lines


SECTIONS = {"io": io_section, "phantom": phantom_section, "dvc": dvc_section,
            "segment": segment_section, "mesh": mesh_section, "solver": solver_section,
            "scale": scale_section}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append",
                    help="run only these sections (others keep their previous numbers)")
    args = ap.parse_args()
    from anodetwin import __version__
    from anodetwin.io import atomic_write_text

    header = [
        "# Benchmarks",
        "",
        f"anodetwin {__version__}, {dt.date.today().isoformat()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}. "
        f"Made by `make bench` (`benchmarks/run.py`); each case in a fresh process, time = "
        f"median of {args.repeat} runs (imports excluded), memory = peak resident set (VmHWM) "
        "including the interpreter and imports. Warm page cache. Ratios < 1 mean anodetwin is "
        "faster / smaller than the baseline measured in the same run. anodetwin's writes are "
        "atomic (temporary file, fsync, rename) and carry provenance; the baselines' are not: "
        "dirty pages are flushed before every run, so anodetwin's write times include putting "
        "the data on disk while the baselines leave it in the page cache.",
        "",
    ]
    out = Path(args.out)
    text = out.read_text() if out.exists() else "\n".join(header)
    for name in args.only or list(SECTIONS):
        marker, lines = SECTIONS[name](args.repeat)
        text = merge_sections(text, "\n".join(header + lines), marker)
    atomic_write_text(out, text.rstrip() + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

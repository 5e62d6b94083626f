"""anodetwin benchmarks: speed and memory as ratios against a baseline measured in the same run.

Usage: ``python benchmarks/run.py --out benchmarks/RESULTS.md`` (``make bench``).

Each case runs in a fresh process so that its peak resident memory (VmHWM) is its own; the
time (imports excluded) is the median of ``--repeat`` runs. Files are read warm (in the page cache), which is
what repeated analysis of one tomogram sees; the ratios compare like with like.

Sections (later pipeline stages append theirs):

* I/O, region of interest: ``read_volume(path, roi=...)`` against the direct library call
  a user would write (tifffile.imread + crop, h5py slicing, numpy.memmap slicing, zarr slicing).
* I/O, binning: ``read_volume(path, binning=2)`` (slab-wise) against loading the whole
  volume and calling ``skimage.transform.downscale_local_mean``.
* I/O, writing: ``write_volume`` against tifffile.imwrite / h5py create_dataset.
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
    import json, sys, time
    import numpy as np
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


def _run(code: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code + POSTLUDE, str(path)],
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_sections(old: str, new: str, marker: str) -> str:
    """Keep the other stages' ``## `` sections of ``old``; header and ``marker`` section from
    ``new``."""
    head_new, _, ours_new = new.partition(marker)
    parts = old.split("\n## ")
    others = ["## " + p.rstrip() for p in parts[1:] if not ("## " + p).startswith(marker)]
    return "\n\n".join([head_new.rstrip(), marker + ours_new.rstrip(), *others])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from anodetwin import __version__
    from anodetwin.io import SlabVolume, write_volume

    rows = []
    with tempfile.TemporaryDirectory(prefix="anodetwin-bench-") as tmp:
        d = Path(tmp)
        for name in ("vol.tif", "vol.h5:/volume", "vol.raw", "vol.zarr"):
            write_volume(f"{d}/{name}", SlabVolume(SHAPE, np.uint16, _random_slab, 0.05))
        for case, (ours, base, fname) in CASES.items():
            path = d / fname
            res = {"ours": [], "base": []}
            for _ in range(args.repeat):
                for key, code in (("base", base), ("ours", ours)):
                    res[key].append(_run(code, path))
            o, b = res["ours"], res["base"]
            if abs(o[0]["check"] - b[0]["check"]) > 1e-6 * max(1.0, abs(b[0]["check"])):
                raise RuntimeError(f"{case}: results differ ({o[0]['check']} vs {b[0]['check']})")
            to = statistics.median(r["s"] for r in o)
            tb = statistics.median(r["s"] for r in b)
            mo = max(r["mib"] for r in o)
            mb = max(r["mib"] for r in b)
            rows.append((case, to, tb, mo, mb))
            print(f"{case:40s} ours {to:7.3f} s {mo:7.0f} MiB | baseline {tb:7.3f} s "
                  f"{mb:7.0f} MiB | time x{to / tb:5.2f} memory x{mo / mb:5.2f}", flush=True)

    baselines = {
        "ROI 64 MiB, multi-page TIFF": "tifffile.imread whole file, then crop",
        "ROI 64 MiB, TIFF vs tifffile.memmap": "tifffile.memmap + slice copy",
        "ROI 64 MiB, HDF5": "h5py dataset slicing",
        "ROI 64 MiB, raw": "numpy.memmap + slice copy",
        "ROI 64 MiB, Zarr": "zarr array slicing",
        "bin 2 of 512 MiB, multi-page TIFF": "tifffile.imread + skimage downscale_local_mean",
        "write 512 MiB, TIFF": "tifffile.imwrite (ImageJ)",
        "write 512 MiB, HDF5": "h5py create_dataset, chunks 64^3",
    }
    lines = [
        "# Benchmarks",
        "",
        f"anodetwin {__version__}, {dt.date.today().isoformat()}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}. "
        f"Made by `make bench` (`benchmarks/run.py`); each case in a fresh process, time = "
        f"median of {args.repeat} runs (imports excluded), memory = peak resident set (VmHWM) including the "
        "interpreter and imports. Warm page cache. Ratios < 1 mean anodetwin is faster / "
        "smaller than the baseline measured in the same run. anodetwin's writes are atomic "
        "(temporary file, fsync, rename) and carry provenance; the baselines' are not.",
        "",
        "## I/O (`anodetwin.io`), volume 256 x 1024 x 1024 uint16 (512 MiB)",
        "",
        "| case | baseline | anodetwin s | baseline s | time ratio | anodetwin MiB | "
        "baseline MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, to, tb, mo, mb in rows:
        lines.append(f"| {case} | {baselines[case]} | {to:.3f} | {tb:.3f} | {to / tb:.2f} | "
                     f"{mo:.0f} | {mb:.0f} | {mo / mb:.2f} |")
    lines.append("")
    text = "\n".join(lines)
    out = Path(args.out)
    marker = "## I/O (`anodetwin.io`)"
    if out.exists():
        text = merge_sections(out.read_text(), text, marker)
    from anodetwin.io import atomic_write_text

    atomic_write_text(out, text.rstrip() + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

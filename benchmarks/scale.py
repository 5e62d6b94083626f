"""Scale benchmark of the block-wise image stages (``python benchmarks/run.py --only scale``).

A pristine and a 50%-SoC phantom scan (147 x 100 x 100 voxels, 0.2 um) are mirror-tiled to
N^3 voxels (uint16 HDF5, written slab by slab) for N = 256, 512 and 1024. Each image stage
then runs in a fresh process on 2 workers under a 4 GB memory ceiling, reading its input
from the file and writing its output into it block by block:

* phases: ``segment_phases`` of the pristine scan (thresholds, copper, Si, separator);
* instances: ``label_particles`` of the Si phase;
* table: ``particle_table`` of the instances;
* residual maps: ``residual_map`` of the pair with a smooth node field (spacing 35 voxels,
  the reference DVC's final level) and the per-particle table.

For each stage: time, M voxels/s, peak resident memory (VmHWM), the exponent of time against
the number of voxels (least squares over the sizes) and the projection to one 2048^3 scan
on 2 cores and on 16 workers (perfect scaling of the independent blocks, an upper bound).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

SIZES = (256, 512, 1024)
VS = 0.2
MEMORY = "4GB"
WORKERS = 2

PRELUDE = textwrap.dedent("""
    import json, sys, time
    import h5py
    import numpy as np
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    P, N = sys.argv[1], int(sys.argv[2])
""")

STAGES = {
    "phases": textwrap.dedent("""
        from anodetwin.io import open_volume
        from anodetwin.segment.phases import segment_phases
        with open_volume(P + ":/T0") as src, h5py.File(P + ".out.h5", "a") as f:
            out = f.require_dataset("phases", (N,) * 3, np.uint8, chunks=(64,) * 3)
            t0 = time.perf_counter()
            segment_phases(src.lazy(progress=False), voxel_size_um=%(vs)r,
                           memory_limit=%(mem)r, workers=%(w)d, out=out)
            t = time.perf_counter() - t0
    """),
    "instances": textwrap.dedent("""
        from anodetwin.segment.particles import label_particles
        with h5py.File(P + ".out.h5", "a") as f:
            out = f.require_dataset("particles", (N,) * 3, np.int32, chunks=(64,) * 3)
            t0 = time.perf_counter()
            label_particles(f["phases"], voxel_size_um=%(vs)r, memory_limit=%(mem)r,
                            workers=%(w)d, out=out, particle_code=2)
            t = time.perf_counter() - t0
    """),
    "table": textwrap.dedent("""
        from anodetwin.segment.particles import particle_table
        with h5py.File(P + ".out.h5", "r") as f:
            t0 = time.perf_counter()
            tab = particle_table(f["particles"], %(vs)r, block_shape=256, workers=%(w)d)
            t = time.perf_counter() - t0
    """),
    "residual maps": textwrap.dedent("""
        from anodetwin.dvc.residual import NodeField, residual_map
        from anodetwin.io import open_volume
        g = np.meshgrid(*[np.arange(17, N, 35)] * 3, indexing="ij")
        nodes = np.stack([a.ravel() for a in g], 1).astype(float)
        rng = np.random.default_rng(0)
        disp = np.stack([0.01 * nodes[:, 0], rng.normal(0, 0.3, len(nodes)),
                         rng.normal(0, 0.3, len(nodes))], 1)
        with open_volume(P + ":/T0") as a, open_volume(P + ":/T1") as b, \\
                h5py.File(P + ".out.h5", "a") as f:
            out = f.require_dataset("residual", (N,) * 3, np.float32, chunks=(64,) * 3)
            t0 = time.perf_counter()
            residual_map(a.lazy(progress=False), b.lazy(progress=False),
                         NodeField(nodes, g[0].shape, disp), floor=1000.0,
                         labels_ref=f["particles"], memory_limit=%(mem)r, workers=%(w)d,
                         out=out)
            t = time.perf_counter() - t0
    """),
}
POSTLUDE = 'print(json.dumps({"s": t, "mib": hwm()}))\n'


def mirror_index(n: int, m: int) -> np.ndarray:
    """Indices 0..n-1 mirror-tiling an axis of length m (0 1 .. m-1 m-1 .. 0 0 1 ..)."""
    i = np.arange(n) % (2 * m)
    return np.where(i < m, i, 2 * m - 1 - i)


def tiled_series(path: Path, n: int, scans: list[np.ndarray]) -> None:
    """Write each scan mirror-tiled to n^3 voxels as /T0, /T1, ... (uint16), slab by slab."""
    import h5py

    with h5py.File(path, "w") as f:
        for k, v in enumerate(scans):
            idx = [mirror_index(n, m) for m in v.shape]
            d = f.create_dataset(f"T{k}", (n,) * 3, np.uint16, chunks=(64,) * 3)
            d.attrs["element_size_um"] = [VS] * 3
            for z in range(0, n, 64):
                zs = idx[0][z:z + 64]
                d[z:z + 64] = v[zs][:, idx[1]][:, :, idx[2]]


def phantom_scans() -> list[np.ndarray]:
    """The pristine and the 50%-SoC scan of the seed-2 reference phantom."""
    import tempfile

    import h5py

    from anodetwin.phantom import config_from_dict, generate_series

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "s.h5"
        generate_series(config_from_dict({"series": {"soc": [0.0, 0.5]}}, seed=2), p,
                        progress=False)
        with h5py.File(p) as f:
            return [f[f"steps/T{k}/tomogram"][...] for k in range(2)]


def run_stage(name: str, path: Path, n: int) -> dict:
    code = PRELUDE + STAGES[name] % {"vs": VS, "mem": MEMORY, "w": WORKERS} + POSTLUDE
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(n)],
                          capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} at {n}^3: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(tmp: Path, sizes: tuple = SIZES) -> dict:
    """{stage: {n: {"s", "mib"}}} over the sizes."""
    scans = phantom_scans()
    res: dict = {s: {} for s in STAGES}
    for n in sizes:
        path = tmp / f"tiled_{n}.h5"
        tiled_series(path, n, scans)
        for name in STAGES:
            r = run_stage(name, path, n)
            res[name][n] = r
            print(f"scale {name:14s} {n}^3: {r['s']:8.1f} s {n ** 3 / r['s'] / 1e6:6.2f} "
                  f"Mvox/s {r['mib']:7.0f} MiB", flush=True)
        path.unlink()
        Path(str(path) + ".out.h5").unlink()
    return res


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(voxels)."""
    return float(np.polyfit(np.log(np.asarray(sizes, float) ** 3), np.log(seconds), 1)[0])


TARGETS = {"phases": 5.0, "instances": 2.0, "residual maps": 10.0}


def section_lines(res: dict) -> list[str]:
    sizes = sorted(next(iter(res.values())))
    lines = ["| stage | " + " | ".join(f"{n}^3 s (Mvox/s, MiB)" for n in sizes)
             + " | time exponent | peak ratio largest/smallest | target Mvox/s "
             "| 2048^3 on 2 cores (h) | 2048^3 on 16 workers (h) |",
             "|---" * (len(sizes) + 6) + "|"]
    for name, per in res.items():
        t = [per[n]["s"] for n in sizes]
        m = [per[n]["mib"] for n in sizes]
        k = exponent(sizes, t) if len(sizes) > 1 else float("nan")
        proj = t[-1] * (2048 ** 3 / sizes[-1] ** 3) ** (k if np.isfinite(k) else 1.0) / 3600
        cells = [f"{s:.1f} ({n ** 3 / s / 1e6:.2f}, {mb:.0f})"
                 for n, s, mb in zip(sizes, t, m, strict=True)]
        target = TARGETS.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {k:.2f} | {m[-1] / m[0]:.2f} | "
                     f"{'-' if target is None else f'>= {target:g}'} | {proj:.2f} | "
                     f"{proj * WORKERS / 16:.2f} |")
    return lines

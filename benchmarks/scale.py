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

DVC pair (:func:`run_dvc`): the tiled pristine scan against itself under a known affine map
(:func:`affine_tiled`), both opened lazily, correlated at the reference's settings (pyramid
100 -> 70 -> 35, half-window = node spacing; the final level only above
:data:`FULL_PYRAMID_MAX`) on 2 threads: time and nodes/s per level, peak memory of the process
tree (psutil, sampled in a thread), error against the truth. At the largest size,
``spam.DIC.ldic`` and the native engine correlate the same subset of final-level nodes from
the same start (:func:`run_subset`).
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
            tab = particle_table(f["particles"], %(vs)r, memory_limit=%(mem)r,
                                 workers=%(w)d)
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

#: The reference's DVC settings: pyramid of node spacings 100 -> 70 -> 35 voxels, half-window
#: = node spacing (50% overlap); anodetwin's defaults otherwise (native engine, cubic).
DVC_SETTINGS = {"node_spacing": 35, "hws": 35, "pyramid": [100, 70]}
#: Largest size run whole, with the whole pyramid. Above it only the final level runs (from
#: the global registration), on the central half of the volume in y and x (all of z): the
#: coarse levels' 141^3 and 201^3 windows took 0.4 and 1.2 s a node at 512^3 on 2 (shared)
#: cores, ~40 min for the 3744 coarse nodes of 1024^3, and its 24389 final nodes took
#: 41 min more. The speed per level does not depend on the volume's size; the time of the
#: whole pyramid on the whole volume is projected from the speed per level at this size.
FULL_PYRAMID_MAX = 512
#: Final-level nodes correlated by both engines for the comparison with spam.DIC.ldic:
#: a block of 5 x 6 x 5 nodes at the centre of the volume.
SUBSET_BLOCK = (5, 6, 5)

#: Peak memory of the process and all its children: their summed resident set sampled every
#: 0.1 s in a thread (psutil), and the process's own VmHWM.
TREE_MEMORY = textwrap.dedent("""
    import threading
    import psutil
    PEAK = [0.0]
    STOP = threading.Event()
    def tree_mib():
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    def sample():
        while True:
            PEAK[0] = max(PEAK[0], tree_mib())
            if STOP.wait(0.1):
                return
    threading.Thread(target=sample, daemon=True).start()
""")

DVC_PAIR = textwrap.dedent("""
    import logging
    from anodetwin.dvc import correlate_pair
    from anodetwin.dvc.correlate import DVCParams, correlate_nodes
    from anodetwin.io import open_volume
    im = np.random.default_rng(0).random((40, 40, 40), np.float32)
    correlate_nodes(im, im, np.array([[20.0, 20, 20]]), DVCParams((20,) * 3, (8,) * 3),
                    progress=False)  # the compiled kernels are loaded before the clock
    MARKS = []
    class Levels(logging.Handler):
        def emit(self, record):
            MARKS.append((time.perf_counter(), record.msg, record.args))
    log = logging.getLogger("anodetwin.dvc")
    log.addHandler(Levels())
    log.setLevel(logging.INFO)
    roi = %(roi)r
    with open_volume(P + ":/T0") as a, open_volume(P + ":/T0_affine") as b:
        t0 = time.perf_counter()
        res = correlate_pair(a.lazy(roi, progress=False), b.lazy(roi, progress=False),
                             processes=%(w)d, progress=False, **%(settings)r)
        t = time.perf_counter() - t0
        offset = np.array([r.start for r in a.lazy(roi).roi])
    STOP.set()
    levels, last = [], t0
    for when, msg, args in MARKS:
        if msg.startswith("global registration"):
            reg, last = when - t0, when
        elif msg.startswith("level spacing"):
            levels.append({"spacing": int(args[0][0]), "nodes": int(args[1]),
                           "measured": int(args[2]), "s": when - last})
            last = when
    nodes = res.nodes + offset  # in voxels of the whole file
    np.savez(P + ".dvc.npz", nodes=nodes, grid_shape=res.grid_shape,
             displacement=res.displacement)
    c = (N - 1) / 2
    truth = (np.asarray(%(F)r) - 1) * (nodes - c) + np.asarray(%(t)r)
    err = np.linalg.norm(res.displacement - truth, axis=1)[res.flag == 0]
    print(json.dumps({"s": t, "mib": max(PEAK[0], hwm()), "hwm": hwm(), "registration_s": reg,
                      "levels": levels, "nodes": len(res.nodes),
                      "converged": int((res.status == 2).sum()),
                      "measured": int((res.flag == 0).sum()),
                      "median_error": float(np.median(err)) if err.size else None}))
""")

DVC_SUBSET = textwrap.dedent("""
    import contextlib, io
    import importlib.resources
    from anodetwin.dvc.correlate import DVCParams, correlate_nodes
    from anodetwin.io import open_volume
    engine, order, block = sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
    r = np.load(P + ".dvc.npz")
    g = r["nodes"].reshape(*r["grid_shape"], 3)
    u = np.nan_to_num(r["displacement"].reshape(*r["grid_shape"], 3))
    block = [min(b, n) for n, b in zip(r["grid_shape"], block)]
    lo = [(n - b) // 2 for n, b in zip(r["grid_shape"], block)]
    sel = tuple(slice(a, a + b) for a, b in zip(lo, block))
    nodes, start = g[sel].reshape(-1, 3), np.round(u[sel].reshape(-1, 3))
    hws = %(hws)d
    pad = hws + 3 + 2 + int(np.abs(start).max())
    a0, a1 = nodes.min(0).astype(int) - pad, nodes.max(0).astype(int) + pad + 1
    roi = ",".join(f"{max(0, a)}:{min(N, b)}" for a, b in zip(a0, a1))
    origin = np.maximum(a0, 0)
    with open_volume(P + ":/T0") as s0, open_volume(P + ":/T0_affine") as s1:
        im1 = s0.read(roi, progress=False).data.astype(np.float32)
        im2 = s1.read(roi, progress=False).data.astype(np.float32)
    phi = np.repeat(np.eye(4)[None], len(nodes), 0)
    phi[:, :3, 3] = start  # the final field rounded to whole voxels: the same start
    local = nodes - origin
    if engine == "spam":
        import spam.DIC
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            out = spam.DIC.ldic(im1, im2, local, np.array([hws] * 3), processes=%(w)d,
                                PhiField=phi, interpolationOrder=order)
        t = time.perf_counter() - t0
        status = out[1]
    else:
        p = DVCParams((hws,) * 3, (hws,) * 3, interpolation_order=order)
        correlate_nodes(im1, im2, local[:1], p, phi[:1], progress=False)  # compiled kernels
        t0 = time.perf_counter()
        status = correlate_nodes(im1, im2, local, p, phi, processes=%(w)d,
                                 progress=False).status
        t = time.perf_counter() - t0
    STOP.set()
    print(json.dumps({"s": t, "mib": max(PEAK[0], hwm()), "n": len(nodes),
                      "converged": int((np.asarray(status) == 2).sum())}))
""")
#: Engines of the subset comparison: (label, engine, interpolation order).
SUBSET_ENGINES = (("spam.DIC.ldic, trilinear (spam's default)", "spam", 1),
                  ("native, trilinear", "native", 1),
                  ("spam.DIC.ldic, cubic", "spam", 3),
                  ("native, cubic (anodetwin's default)", "native", 3))


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


#: The deformed scan of the DVC pair: the tiled pristine scan under this affine map about
#: the volume centre (diagonal F: axial strain +1%, x -0.5%; translation t, voxels z, y, x),
#: by cubic B-spline, with noise of 1% of the grey-value std. (The tiled 50%-SoC scan is no
#: pair for DVC: its swelling, mirrored every 147 slices, is not affine over a window.)
DVC_AFFINE = {"F": (1.01, 1.0, 0.995), "t": (1.3, -0.7, 0.4)}


def _resampling(n: int, m: int, f: float, t: float) -> np.ndarray:
    """(n, m) weights that resample an axis of m voxels, mirror-tiled to n, at the points
    X = c + (x - c - t) / f (c the centre of the n voxels): cubic B-spline, half-sample
    symmetric boundary (the mirror tiling's own extension)."""
    from scipy import ndimage

    c = (n - 1) / 2
    X = c + (np.arange(n) - c - t) / f
    eye = np.eye(m)
    return np.stack([ndimage.map_coordinates(eye[j], [X], order=3, mode="reflect")
                     for j in range(m)], axis=1).astype(np.float32)


def affine_tiled(path: Path, n: int, scan: np.ndarray, seed: int = 0) -> None:
    """Add ``/T0_affine`` to a tiled series: ``scan`` mirror-tiled to n^3 and moved by
    :data:`DVC_AFFINE` (separable: one resampling matrix per axis), uint16, slab by slab."""
    import h5py

    wz, wy, wx = (_resampling(n, m, f, t) for m, f, t in
                  zip(scan.shape, DVC_AFFINE["F"], DVC_AFFINE["t"], strict=True))
    v = scan.astype(np.float32)
    a = v @ wx.T  # (mz, my, n)
    a = np.swapaxes(np.swapaxes(a, 1, 2) @ wy.T, 1, 2)  # (mz, n, n)
    flat = a.reshape(len(v), -1)
    rng = np.random.default_rng(seed)
    sd = 0.01 * float(v.std())
    with h5py.File(path, "a") as f:
        d = f.create_dataset("T0_affine", (n,) * 3, np.uint16, chunks=(64,) * 3)
        d.attrs["element_size_um"] = [VS] * 3
        for z in range(0, n, 64):
            block = (wz[z:z + 64] @ flat).reshape(-1, n, n)
            block += sd * rng.standard_normal(block.shape, dtype=np.float32)
            d[z:z + 64] = np.clip(np.rint(block), 0, 65535).astype(np.uint16)


def affine_truth(nodes: np.ndarray, n: int) -> np.ndarray:
    """Displacement (voxels, z, y, x) of :data:`DVC_AFFINE` at ``nodes`` of an n^3 volume."""
    c = (n - 1) / 2
    return (np.asarray(DVC_AFFINE["F"]) - 1) * (nodes - c) + np.asarray(DVC_AFFINE["t"])


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


def _run(code: str, what: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its last line of output, as JSON."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_stage(name: str, path: Path, n: int) -> dict:
    code = PRELUDE + STAGES[name] % {"vs": VS, "mem": MEMORY, "w": WORKERS} + POSTLUDE
    return _run(code, f"{name} at {n}^3", str(path), str(n))


def dvc_settings(n: int) -> dict:
    """The settings run at n^3: the reference's, without the pyramid above
    :data:`FULL_PYRAMID_MAX`."""
    return {**DVC_SETTINGS, "pyramid": DVC_SETTINGS["pyramid"] if n <= FULL_PYRAMID_MAX
            else None}


def dvc_roi(n: int) -> str | None:
    """The region correlated at n^3: all of it up to :data:`FULL_PYRAMID_MAX`, else the
    central half in y and x (all of z)."""
    if n <= FULL_PYRAMID_MAX:
        return None
    return f"0:{n},{n // 4}:{n - n // 4},{n // 4}:{n - n // 4}"


def run_dvc(path: Path, n: int) -> dict:
    """The DVC pair T0 -> T0_affine of the tiled files at the reference's settings
    (:func:`dvc_settings`), read lazily: time, peak memory of the process tree, time and
    nodes of each level."""
    code = PRELUDE + TREE_MEMORY + DVC_PAIR % {"w": WORKERS, "settings": dvc_settings(n),
                                               "roi": dvc_roi(n), **DVC_AFFINE}
    r = _run(code, f"DVC pair at {n}^3", str(path), str(n))
    r["roi"] = dvc_roi(n)
    lv = ", ".join(f"{x['spacing']}: {x['nodes']} nodes {x['s']:.0f} s" for x in r["levels"])
    print(f"scale DVC pair      {n}^3: {r['s']:8.1f} s {r['nodes'] / r['s']:6.2f} nodes/s "
          f"{r['mib']:7.0f} MiB (tree) | registration {r['registration_s']:.0f} s | {lv}",
          flush=True)
    return r


def run_subset(path: Path, n: int) -> list[dict]:
    """Both engines on the same final-level nodes (:data:`SUBSET_BLOCK`) of the pair, from
    the same start, on the region they need (after :func:`run_dvc`, whose field it uses)."""
    code = PRELUDE + TREE_MEMORY + DVC_SUBSET % {"w": WORKERS,
                                                  "hws": DVC_SETTINGS["hws"]}
    rows = []
    for label, engine, order in SUBSET_ENGINES:
        r = _run(code, f"{label} at {n}^3", str(path), str(n), engine, str(order),
                 json.dumps(SUBSET_BLOCK))
        rows.append({"label": label, "engine": engine, "order": order, **r})
        print(f"scale DVC subset    {label}: {r['n']} nodes {r['s']:.1f} s "
              f"{r['n'] / r['s']:.2f} nodes/s {r['mib']:.0f} MiB", flush=True)
    return rows


def measure(tmp: Path, sizes: tuple = SIZES, dvc: bool = True) -> tuple[dict, dict]:
    """({stage: {n: {"s", "mib"}}}, {"pair": {n: DVC pair}, "subset": rows at the largest
    size}) over the sizes."""
    scans = phantom_scans()
    res: dict = {s: {} for s in STAGES}
    dvc_res: dict = {"pair": {}, "subset": [], "subset_size": max(sizes)}
    for n in sizes:
        path = tmp / f"tiled_{n}.h5"
        tiled_series(path, n, scans)
        for name in STAGES:
            r = run_stage(name, path, n)
            res[name][n] = r
            print(f"scale {name:14s} {n}^3: {r['s']:8.1f} s {n ** 3 / r['s'] / 1e6:6.2f} "
                  f"Mvox/s {r['mib']:7.0f} MiB", flush=True)
        if dvc:
            affine_tiled(path, n, scans[0])
            dvc_res["pair"][n] = run_dvc(path, n)
            if n == max(sizes):
                dvc_res["subset"] = run_subset(path, n)
        for p in (path, Path(str(path) + ".out.h5"), Path(str(path) + ".dvc.npz")):
            p.unlink(missing_ok=True)
    return res, dvc_res


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


def _level_nodes(n: int, spacing: int) -> int:
    return len(np.arange(spacing, n, spacing)) ** 3


def _projection(pair: dict) -> str:
    """Time of the whole pyramid at the sizes run without it, from the per-level speed at
    the largest size run with it (nodes per level / nodes/s there), as a sentence."""
    full = [n for n, r in pair.items() if len(r["levels"]) == 1 + len(DVC_SETTINGS["pyramid"])]
    part = [n for n in pair if n not in full]
    if not full or not part:
        return ""
    base = pair[max(full)]["levels"]
    out = []
    for n in part:
        est = sum(_level_nodes(n, lv["spacing"]) / (lv["nodes"] / lv["s"]) for lv in base)
        out.append(f"{n}^3 ~{est / 60:.0f} min")
    return (f"The whole pyramid on the whole volume, projected from the speed of each level at "
            f"{max(full)}^3 (its nodes at that size / its nodes/s there; not run): "
            f"{', '.join(out)} on {WORKERS} cores.")


def dvc_lines(dvc: dict) -> list[str]:
    """The DVC rows of the scale section: the pair at each size and the engines on the
    subset of final-level nodes."""
    pair = dvc["pair"]
    sizes = sorted(pair)
    spacings = [*DVC_SETTINGS["pyramid"], DVC_SETTINGS["node_spacing"]]
    lines = ["", "### DVC pair, read lazily (`anodetwin.dvc.correlate_pair`)", "",
             "The tiled pristine scan against itself under a known affine map (axial strain "
             f"+1%, x -0.5%, translation {DVC_AFFINE['t']} voxels z, y, x; cubic B-spline, 1% "
             "noise; the tiled 50%-SoC scan's swelling, mirrored every 147 slices, is not "
             "affine over a window). Both volumes are opened lazily from the HDF5 file "
             "(`open_volume(...).lazy()`); every batch of nodes reads the box its windows "
             "touch. The reference's settings: node spacing 100 -> 70 -> 35 voxels, half-window "
             f"= spacing, native engine (ZNSSD, cubic), {WORKERS} threads; sizes above "
             f"{FULL_PYRAMID_MAX}^3 run the final level only (from the global registration) "
             "on the central half of the volume in y and x (the whole pyramid on the whole "
             "1024^3 volume takes over an hour on 2 cores: projection below). "
             "Nodes/s = final-level nodes / total time (global registration, every level, "
             "retries, repair, strain). Memory = peak summed resident set of the process and "
             "its children (sampled every 0.1 s). Error = median |u - truth| (voxels) of the "
             "measured nodes.", "",
             "| size | region (z, y, x) | levels | final nodes (measured) | total s | nodes/s | "
             "registration s | " + " | ".join(f"level {s}: nodes, s, nodes/s" for s in spacings)
             + " | peak MiB | error |",
             "|---" * (9 + len(spacings)) + "|"]
    for n in sizes:
        r = pair[n]
        per = {lv["spacing"]: lv for lv in r["levels"]}
        cells = [f"{per[s]['nodes']}, {per[s]['s']:.0f}, {per[s]['nodes'] / per[s]['s']:.1f}"
                 if s in per else "not run" for s in spacings]
        err = "-" if r["median_error"] is None else f"{r['median_error']:.4f}"
        lines.append(f"| {n}^3 | {r.get('roi') or 'all'} | "
                     f"{' -> '.join(str(lv['spacing']) for lv in r['levels'])} | "
                     f"{r['nodes']} ({r['measured']}) | {r['s']:.0f} | "
                     f"{r['nodes'] / r['s']:.1f} | {r['registration_s']:.0f} | "
                     + " | ".join(cells) + f" | {r['mib']:.0f} | {err} |")
    proj = _projection(pair)
    lines += ["", proj] if proj else []
    if dvc["subset"]:
        lines += _subset_lines(dvc["subset"], dvc["subset_size"])
    return lines


def _subset_lines(rows: list[dict], n: int) -> list[str]:
    """The engines on the same subset of final-level nodes."""
    bx = " x ".join(map(str, SUBSET_BLOCK))
    lines = ["", f"On a subset of the final level at {n}^3 (spam.DIC.ldic ran on this subset "
             f"only, not on the whole grid): the block of (up to) {bx} nodes at the centre "
             f"(spacing {DVC_SETTINGS['node_spacing']}, hws {DVC_SETTINGS['hws']}), both "
             "engines from the same start (the measured field rounded to whole voxels), on "
             f"the region of the two volumes those windows need, read into memory; {WORKERS} "
             "processes (spam) or threads (native).", "",
             "| engine | nodes | s | nodes/s | speed vs spam (same interpolation) | converged "
             "| peak MiB |", "|---|---|---|---|---|---|---|"]
    base = {r["order"]: r for r in rows if r["engine"] == "spam"}
    for r in rows:
        b = base.get(r["order"])
        ratio = (r["n"] / r["s"]) / (b["n"] / b["s"]) if b else float("nan")
        lines.append(f"| {r['label']} | {r['n']} | {r['s']:.1f} | {r['n'] / r['s']:.2f} | "
                     f"{ratio:.2f} | {r['converged']} | {r['mib']:.0f} |")
    return lines

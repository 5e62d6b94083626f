"""DVC of volumes on disk read lazily (issue #22): lazy views with a region of interest and
binning, h5py datasets and paths give results bit for bit equal to the same voxels in
memory, and no volume is ever read whole."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from scipy import ndimage

import anodetwin.dvc.correlate as correlate
import anodetwin.dvc.volumes as volumes
from anodetwin.dvc import correlate_pair
from anodetwin.dvc.series import correlate_series
from anodetwin.dvc.volumes import as_worker_volume
from anodetwin.errors import ParameterError
from anodetwin.io import (LazyVolume, Volume, VolumeSource, bin_volume, open_volume,
                          read_volume, write_volume)
from anodetwin.phases import PHASE
from anodetwin.pipeline.stages import open_scan, read_scan

SRC = (134, 124, 118)  # source scans (z, y, x)
ROI = "4:132,2:122,3:115"  # 128 x 120 x 112, binned 2: 64 x 60 x 56
GRID = (64, 60, 56)
VS = 0.2  # um, source voxels
PAIR_KW = {"node_spacing": 12, "hws": 8, "pyramid": [20], "progress": False}
RESULT_FIELDS = ("nodes", "displacement", "displacement_raw", "Phi", "status", "error",
                 "iterations", "delta_phi_norm", "residual", "flag", "zncc", "uncertainty",
                 "global_phi", "global_centre")


def _texture(rng: np.random.Generator) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(SRC), 1.5)
    return (f - f.mean()) / f.std()


def _deformed(f: np.ndarray, F: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``f`` moved so that the material at X is found at c + F (X - c) + t."""
    c = (np.array(SRC) - 1) / 2
    Fi = np.linalg.inv(F)
    return ndimage.affine_transform(f, Fi, offset=c - Fi @ (c + t), order=3, mode="nearest")


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """Phases (copper, CBD+E with a pore pocket, Si spheres, separator) and particle ids on
    the binned grid."""
    phases = np.full(GRID, PHASE["cbd"], np.uint8)
    phases[:6] = PHASE["copper"]
    phases[58:] = PHASE["separator"]
    phases[20:34, :20, :20] = PHASE["pore"]
    particles = np.zeros(GRID, np.int32)
    zz, yy, xx = np.indices(GRID)
    for i, c in enumerate([(20, 30, 30), (40, 15, 40), (45, 45, 12)], start=1):
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 25
        particles[ball] = i
        phases[ball] = PHASE["si"]
    return phases, particles


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> SimpleNamespace:
    """T0, T1, T2 (uint16, affine steps) in one HDF5 file (chunks 16^3) and as TIFF, and
    a labels file on the binned region."""
    tmp = tmp_path_factory.mktemp("lazy")
    rng = np.random.default_rng(22)
    f = _texture(rng)
    steps = [f, _deformed(f, np.diag([1.01, 1.0, 0.995]), np.array([2.4, -1.6, 1.0])),
             _deformed(f, np.diag([1.02, 1.0, 0.99]), np.array([4.6, -3.0, 2.2]))]
    h5 = tmp / "scans.h5"
    with h5py.File(h5, "w") as fh:
        for k, s in enumerate(steps):
            v = np.clip(20000 + 6000 * s + rng.normal(0, 300, SRC), 0, 65535).astype(np.uint16)
            d = fh.create_dataset(f"T{k}", data=v, chunks=(16, 16, 16))
            d.attrs["element_size_um"] = [VS] * 3
            write_volume(tmp / f"T{k}.tif", Volume(v, VS))
    paths = [f"{h5}:/T{k}" for k in range(3)]
    mem = _in_memory(paths)
    phases, particles = _labels()
    with h5py.File(tmp / "labels.h5", "w") as fh:  # as the segmentation writes them
        for name, a in (("phases", phases), ("particles", particles)):
            d = fh.create_dataset(name, data=a, chunks=(16, 16, 16), compression="lzf")
            d.attrs["element_size_um"] = mem[0].voxel_size_um
            d.attrs["origin_um"] = mem[0].origin
    return SimpleNamespace(dir=tmp, h5=paths, tif=[str(tmp / f"T{k}.tif") for k in range(3)],
                           labels=tmp / "labels.h5", phases=phases, particles=particles,
                           mem=mem)


def _in_memory(paths: list[str]) -> list[Volume]:
    return [read_volume(p, roi=ROI, binning=2, progress=False) for p in paths]


def _assert_same_result(a, b) -> None:
    for name in RESULT_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.strain.volumetric, b.strain.volumetric)
    assert json.dumps(a.params, default=str) == json.dumps(b.params, default=str)
    np.testing.assert_array_equal(a.voxel_size_um, b.voxel_size_um)


def _h5_items(path: Path) -> dict:
    """Every dataset (values) and attribute (but provenance) of an HDF5 file by path."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]
            for k, v in obj.attrs.items():
                if k != "provenance":
                    out[f"{name}@{k}"] = v
        visit("/", f)
        f.visititems(visit)
    return out


def _assert_same_outputs(a: Path, b: Path) -> None:
    """Two series output folders hold the same results (provenance aside)."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"increment_0_1.h5", "cumulative_0_1.h5", "regions.h5", "regions.csv"} <= set(names)
    for name in names:
        if name.endswith(".h5"):
            x, y = _h5_items(a / name), _h5_items(b / name)
            assert sorted(x) == sorted(y), name
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")
    assert (a / "regions.csv").read_text() == (b / "regions.csv").read_text()
    ja, jb = (json.loads((p / "series.json").read_text()) for p in (a, b))
    ja.pop("provenance")
    jb.pop("provenance")
    assert ja == jb


# -- the worker volumes -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["h5", "tif"])
def test_worker_volume_of_a_lazy_view_reads_its_voxels(scans, kind):
    """A lazy view is reopened by its name with its region and binning (picklable, its
    source may be closed): boxes, slabs and the binned copy equal the view's voxels."""
    with open_volume(getattr(scans, kind)[0]) as src:
        lazy = src.lazy(ROI, 2, progress=False)
        full = lazy.read().data
        w = as_worker_volume(lazy)
    assert w.lazy is None and w.path and w.shape == GRID and w.binning == (2, 2, 2)
    box = (slice(3, 40), slice(5, 60), slice(10, 11))
    for v in (w, pickle.loads(pickle.dumps(w))):
        np.testing.assert_array_equal(v.region(box), full[box])
        assert v.read(box).dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([s for _, s in w.slabs(5000)]), full)
    for b in (1, 3):
        np.testing.assert_array_equal(w.binned(b), bin_volume(full, b).astype(np.float32))
    assert as_worker_volume(w) is w


def test_worker_volume_of_datasets_and_other_views(scans):
    """h5py datasets are read box by box with h5py; a view that cannot be reopened by a
    path is read through itself in this process and refuses to be sent to processes."""
    with h5py.File(scans.labels, "r") as f:
        w = as_worker_volume(f["particles"])
        assert (w.path, w.dataset) == (str(scans.labels), "/particles")
        box = (slice(10, 50), slice(0, 60), slice(7, 30))
        np.testing.assert_array_equal(w.region(box), scans.particles[box])
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(w)).region(box),
                                      scans.particles[box])
        assert w.any_nonzero()

    class View:  # the minimal lazy interface
        shape, dtype = GRID, np.dtype(np.uint8)

        def region(self, zs, ys, xs):
            return scans.phases[zs, ys, xs]

    v = as_worker_volume(View())
    np.testing.assert_array_equal(v.region(box), scans.phases[box])
    with pytest.raises(ParameterError, match="cannot be sent"):
        pickle.dumps(v)


# -- pair: lazy views and datasets equal the arrays ----------------------------------------------

@pytest.mark.parametrize("kind", ["h5", "tif"])
def test_pair_from_lazy_views_equals_in_memory(scans, kind):
    """correlate_pair of lazy views (ROI, binning 2) with a mask given as an h5py dataset
    (HDF5 scans) or a lazy view of the labels file (TIFF scans) gives the in-memory result
    bit for bit: nodes, statuses, Phi, residuals, flags, strain, parameters."""
    paths = getattr(scans, kind)[:2]
    mem = correlate_pair(*(scans.mem[:2] if kind == "h5" else _in_memory(paths)),
                         mask=scans.phases, **PAIR_KW)
    assert (mem.flag == 0).sum() > 20 and (mem.status == -5).any()  # the pore is masked
    with open_volume(paths[0]) as s0, open_volume(paths[1]) as s1, \
            h5py.File(scans.labels, "r") as f, \
            open_volume(f"{scans.labels}:/phases") as ph:
        mask = f["phases"] if kind == "h5" else ph.lazy(progress=False)
        lazy = correlate_pair(s0.lazy(ROI, 2, progress=False), s1.lazy(ROI, 2, progress=False),
                              mask=mask, **PAIR_KW)
    _assert_same_result(mem, lazy)


def test_spam_engine_in_worker_processes_reads_lazily(scans):
    """With spam in 2 worker processes the batches carry the views' descriptions (path,
    region, binning), and each worker reads its box: the same as in memory."""
    kw = {"node_spacing": 20, "hws": 8, "engine": "spam", "interpolation_order": 1,
          "processes": 2, "progress": False}
    mem = correlate_pair(*scans.mem[:2], **kw)
    with open_volume(scans.h5[0]) as s0, open_volume(scans.h5[1]) as s1:
        lazy = correlate_pair(s0.lazy(ROI, 2, progress=False), s1.lazy(ROI, 2, progress=False),
                              **kw)
    assert (mem.status == 2).sum() > 5
    _assert_same_result(mem, lazy)


# -- series: how the run's dvc stage should call it ----------------------------------------------

def _run_config() -> SimpleNamespace:
    """The parts of a RunConfig that open_scan and read_scan use."""
    return SimpleNamespace(scans=SimpleNamespace(roi=ROI, binning=2, voxel_size_um=None))


def _series_kw(mask: object) -> dict:
    """The keyword arguments the run's dvc stage passes (quick-looks left out)."""
    return {"refine": True, "node_spacing": 12, "hws": 8, "pyramid": [20], "search_range": 0,
            "mask": mask, "processes": 2, "progress": False, "engine": "native",
            "criterion": "", "interpolation_order": 3, "quicklook": False}


def test_series_as_the_run_stage_calls_it_equals_in_memory(scans, tmp_path):
    """The recommended call of the run's dvc stage: scans as ``open_scan`` views (kept open
    for the call), phases, particles and mask as datasets of the T0 labels file. It writes
    the same increments, cumulative fields, region statistics (HDF5 and CSV) and summary as
    the whole scans and labels in memory."""
    cfg = _run_config()
    regions = {"cube_um": "auto", "voi_um": "auto"}
    vols = [read_scan(cfg, p) for p in scans.h5]  # what the stage does now
    correlate_series(vols, tmp_path / "mem",
                     regions={"phases": scans.phases, "particles": scans.particles, **regions},
                     **_series_kw(scans.phases))
    with open_scan(cfg, scans.h5[0]) as t0, open_scan(cfg, scans.h5[1]) as t1, \
            open_scan(cfg, scans.h5[2]) as t2, h5py.File(scans.labels, "r") as labels:
        assert all(isinstance(v, LazyVolume) for v in (t0, t1, t2))
        correlate_series([t0, t1, t2], tmp_path / "lazy",
                         regions={"phases": labels["phases"], "particles": labels["particles"],
                                  **regions}, **_series_kw(labels["phases"]))
    _assert_same_outputs(tmp_path / "mem", tmp_path / "lazy")
    with h5py.File(tmp_path / "lazy" / "regions.h5", "r") as f:
        assert len(f["particles/id"]) == 3 and f.attrs["interfaces_voxels"][0] == 5.5


# -- nothing is read whole -----------------------------------------------------------------------

@pytest.fixture
def read_sizes(monkeypatch) -> dict:
    """Record the voxels of every block read from a volume file or an h5py dataset; loading
    a whole view or source into memory fails."""
    sizes: dict = {"volume": [], "h5py": {}}
    block = VolumeSource.read_block
    getitem = h5py.Dataset.__getitem__

    def counted_block(self, z, y, x, out=None):
        res = block(self, z, y, x, out)
        sizes["volume"].append(res.size)
        return res

    def counted_getitem(self, args, **kw):
        res = getitem(self, args, **kw)
        sizes["h5py"].setdefault(self.name, []).append(np.size(res))
        return res

    def refuse(*args, **kw):
        raise AssertionError("a whole volume was read")

    monkeypatch.setattr(VolumeSource, "read_block", counted_block)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted_getitem)
    monkeypatch.setattr(LazyVolume, "read", refuse)
    monkeypatch.setattr(VolumeSource, "read", refuse)
    return sizes


def test_no_volume_is_read_whole(scans, tmp_path, monkeypatch, read_sizes):
    """With small batch boxes and slabs, a series (global registration, mask, refinement,
    region statistics) reads the scans and the label datasets in pieces of at most a fifth
    of them, and still equals the in-memory run with the same batches."""
    monkeypatch.setattr(correlate, "BATCH_VOXELS", 30_000)
    monkeypatch.setattr(volumes, "SLAB_VOXELS", 10_000)
    cfg = _run_config()
    kw = {**_series_kw(None), "pyramid": None}
    regions = {"cube_um": "auto", "voi_um": "auto"}
    correlate_series(scans.mem[:2], tmp_path / "mem",
                     regions={"phases": scans.phases, "particles": scans.particles, **regions},
                     **{**kw, "mask": scans.phases})
    read_sizes["volume"].clear()
    read_sizes["h5py"].clear()
    with open_scan(cfg, scans.h5[0]) as t0, open_scan(cfg, scans.h5[1]) as t1, \
            h5py.File(scans.labels, "r") as labels:
        correlate_series([t0, t1], tmp_path / "lazy",
                         regions={"phases": labels["phases"], "particles": labels["particles"],
                                  **regions}, **{**kw, "mask": labels["phases"]})
    _assert_same_outputs(tmp_path / "mem", tmp_path / "lazy")
    source = np.prod([128, 120, 112])  # the ROI of a scan, in file voxels
    assert len(read_sizes["volume"]) > 50 and max(read_sizes["volume"]) <= source / 5
    for name in ("/phases", "/particles"):
        sizes = read_sizes["h5py"][name]
        assert len(sizes) > 10 and max(sizes) <= np.prod(GRID) / 5, name


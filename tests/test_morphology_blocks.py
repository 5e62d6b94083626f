"""Morphology of a series block by block: particle tracking with blocks of any size (smaller
than the particles included) and any number of workers gives the links and track table of
the whole-volume tracker (kept here as the reference, as it was before the block route);
labels files opened lazily give the morphology of the files read whole, and no pass reads
a whole volume."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
from scipy import ndimage

from anodetwin.errors import ParameterError, ShapeMismatchError
from anodetwin.io import normalise_voxel_size
from anodetwin.phases import PHASE
from anodetwin.segment.morphology import series_morphology
from anodetwin.segment.particles import label_particles, particle_table
from anodetwin.segment.pipeline import (Segmentation, interfaces_from_phases, open_labels,
                                        read_labels, write_labels)
from anodetwin.segment.tracking import (LOOKUP_BOX_FACTOR, TRACK_TABLE, label_sums,
                                        link_steps, thickness_prior, track_particles)

VS = 0.2
# blocks far smaller than a particle (~22 voxels across), uneven boxes, slabs, automatic
BLOCKINGS = [((16, 16, 16), 1), ((24, 24, 24), 2), ((40, 50, 33), 2), ((17, 100, 100), 1),
             (None, 2)]


# ------------------------------------------------------------------------------------------
# the whole-volume tracker as it was before the block route (the reference)

def _ref_voxels(labels):
    idx = np.flatnonzero(labels.ravel())
    ids = labels.ravel()[idx]
    order = np.argsort(ids, kind="stable")
    return np.stack(np.unravel_index(idx[order], labels.shape), axis=1), ids[order]


def ref_link_steps(a, b, shift=None, min_overlap=0.1, max_distance=10.0, subsample=1,
                   spacing=1.0):
    pts, ids = _ref_voxels(a)
    if subsample > 1:
        pts, ids = pts[::subsample], ids[::subsample]
    if not len(ids):
        return np.zeros((0, 3))
    sp = np.asarray(normalise_voxel_size(spacing, "spacing"), float)
    uniq, start, count = np.unique(ids, return_index=True, return_counts=True)
    cent = np.array([pts[s: s + c].mean(axis=0) for s, c in zip(start, count, strict=True)])
    d_cent = shift(cent) if shift is not None else np.zeros_like(cent)
    moved = pts.astype(float)
    if shift is not None:
        moved += shift(moved)
    q = np.rint(moved).astype(int)
    inside = np.all((q >= 0) & (q < np.array(b.shape)), axis=1)
    hit = np.zeros(len(q), b.dtype)
    hit[inside] = b[q[inside, 0], q[inside, 1], q[inside, 2]]
    out = []
    ids_b = np.unique(b[b > 0])
    cb = np.array(ndimage.center_of_mass(np.ones(b.shape, np.float32), b, ids_b)) \
        if len(ids_b) else np.zeros((0, 3))
    for i, (pid, s, c) in enumerate(zip(uniq, start, count, strict=True)):
        h = hit[s: s + c]
        h = h[h > 0]
        if h.size:
            vals, n = np.unique(h, return_counts=True)
            j = int(np.argmax(n))
            if n[j] / c >= min_overlap:
                out.append((pid, vals[j], n[j] / c))
                continue
        if len(cb):
            d = np.linalg.norm((cb - (cent[i] + d_cent[i])) * sp, axis=1)
            j = int(np.argmin(d))
            if d[j] <= max_distance:
                out.append((pid, ids_b[j], 0.0))
    return np.array(out, float).reshape(-1, 3)


def ref_track(vols, voxel_size_um=1.0, prior=None, min_overlap=0.1, max_distance_um=2.0,
              subsample=1):
    vs = np.asarray(normalise_voxel_size(voxel_size_um, "voxel size"), float)
    links = []
    for k in range(len(vols) - 1):
        sh = (lambda pts, k=k: prior(k, pts)) if prior is not None else None
        links.append(ref_link_steps(vols[k], vols[k + 1], sh, min_overlap, max_distance_um,
                                    subsample, spacing=vs))
    stats = []
    for v in vols:
        ids = np.unique(v[v > 0])
        com = np.array(ndimage.center_of_mass(np.ones(v.shape, np.float32), v, ids)) \
            if len(ids) else np.zeros((0, 3))
        cnt = np.bincount(v.ravel())[ids] if len(ids) else np.zeros(0)
        cell = float(np.prod(vs))
        stats.append({int(i): (com[n] * vs, cnt[n] * cell) for n, i in enumerate(ids)})
    rows, started, n_tracks = [], {}, 0
    for k in range(len(vols)):
        current, overlap = {}, {}
        if k > 0:
            for a, b, ov in links[k - 1].tolist():
                a, b = int(a), int(b)
                if a in started:
                    current.setdefault(b, []).extend(started[a])
                    overlap[b] = max(overlap.get(b, 0.0), ov)
        for pid in sorted(stats[k]):
            if pid not in current:
                current[pid] = [n_tracks]
                n_tracks += 1
                overlap[pid] = np.nan
        for pid, tracks in current.items():
            c, vol = stats[k][pid]
            for t in tracks:
                rows.append((t, k, pid, *c, vol, 0.0, 0.0, 0.0, overlap.get(pid, np.nan)))
        started = current
    table = np.array(rows, TRACK_TABLE)
    table.sort(order=["track", "step"])
    for t in np.unique(table["track"]):
        sel = np.flatnonzero(table["track"] == t)
        for ax in "zyx":
            table[f"displacement_{ax}_um"][sel] = (table[f"centroid_{ax}_um"][sel]
                                                   - table[sel[0]][f"centroid_{ax}_um"])
    return table, links


# ------------------------------------------------------------------------------------------
# fixtures and helpers

@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Phantom T0, T1 (50% SoC), T2 (85% SoC), 199 x 100 x 100: truth phases, the visible
    cores relabelled per step (ids not carried over; cores split into fragments), and
    labels files of them."""
    from anodetwin.phantom import config_from_dict, generate_series

    tmp = tmp_path_factory.mktemp("morph_blocks")
    path = tmp / "s.h5"
    generate_series(config_from_dict({"series": {"soc": [0.0, 0.5, 0.85]}}, seed=2), path,
                    progress=False)
    with h5py.File(path) as f:
        phases = [f[f"steps/T{k}/phases"][...] for k in range(3)]
    labs = [label_particles(p == PHASE["si"], voxel_size_um=VS) for p in phases]
    files = []
    for k, (ph, lab) in enumerate(zip(phases, labs, strict=True)):
        face, col, sep = interfaces_from_phases(ph, 5)
        seg = Segmentation(ph, lab, particle_table(lab, VS, col), col, sep, (VS,) * 3,
                           collector_face=face)
        write_labels(tmp / f"L{k}.h5", seg, provenance={})
        files.append(tmp / f"L{k}.h5")
    zc = [float(np.nanmean(interfaces_from_phases(p, 5)[1])) for p in phases]
    zs = [float(np.nanmean(interfaces_from_phases(p, 5)[2])) for p in phases]
    return {"phases": phases, "labels": labs, "files": files,
            "prior": thickness_prior(zc, zs)}


def shear(k, pts):
    """A pointwise prior that moves step k strongly along x with z and out of the volume."""
    out = np.zeros_like(pts, dtype=float)
    out[:, 0] = 1.5 + 0.02 * pts[:, 2]
    out[:, 1] = -2.3
    out[:, 2] = 2.5 * pts[:, 0] - 150.0 + 3 * k
    return out


def same_tracks(tracks, ref):
    table, links = ref
    assert len(tracks.links) == len(links)
    for got, want in zip(tracks.links, links, strict=True):
        assert got.shape == want.shape and np.array_equal(got, want)
    assert tracks.table.dtype == table.dtype and len(tracks.table) == len(table)
    for name in table.dtype.names:
        assert np.array_equal(tracks.table[name], table[name],
                              equal_nan=table.dtype[name].kind == "f"), name


class Counting:
    """A read-only volume that records the largest box read from it."""

    def __init__(self, data):
        self.data_ = data
        self.shape, self.dtype = data.shape, data.dtype
        self.largest = 0

    def __getitem__(self, box):
        out = self.data_[box]
        self.largest = max(self.largest, int(np.size(out)))
        return out


# ------------------------------------------------------------------------------------------
# tracking

@pytest.mark.parametrize("block,workers", BLOCKINGS)
def test_tracking_block_by_block_equals_whole_volume(series, block, workers):
    labs = series["labels"]
    for prior in (series["prior"], None):
        got = track_particles(labs, VS, prior, block_shape=block, workers=workers)
        same_tracks(got, ref_track(labs, VS, prior))
    assert got.n_tracks > 59 and any((lk[:, 2] == 0).any() for lk in got.links)


@pytest.mark.parametrize("block,workers", [((16, 16, 16), 2), ((33, 20, 64), 1)])
def test_tracking_with_motion_out_of_the_volume_and_split_reads(series, block, workers):
    """A strong shear carries blocks over boxes larger than the lookup cap (read in
    halves) and many voxels out of the volume; still the whole-volume result, and no read
    larger than the cap."""
    labs = [Counting(v) for v in series["labels"]]
    got = track_particles(labs, VS, shear, min_overlap=0.05, max_distance_um=4.0,
                          block_shape=block, workers=workers)
    same_tracks(got, ref_track(series["labels"], VS, shear, 0.05, 4.0))
    cap = LOOKUP_BOX_FACTOR * int(np.prod(block))
    assert max(v.largest for v in labs) <= cap


def test_link_ties_fallback_gate_and_anisotropic_spacing():
    """Equal overlap counts go to the smallest id of the next step; a particle without
    overlap takes the nearest carried centroid within the gate (physical distance)."""
    a, b = np.zeros((8, 12, 20), np.int32), np.zeros((8, 12, 20), np.int32)
    a[2:4, 2:6, 2:6] = 5  # 32 voxels: half on 7, half on 3
    b[2:4, 2:4, 2:6], b[2:4, 4:6, 2:6] = 7, 3
    a[5:7, 8:10, 8:10] = 2  # no overlap; 1 voxel step along x to id 9
    b[5:7, 8:10, 11:13] = 9
    a[1, 10, 16] = 4  # no overlap; b's nearest centroid is too far
    for block in ((2, 3, 4), (8, 12, 20), None):
        for spacing, gate in ((1.0, 3.5), ((0.5, 0.5, 2.0), 6.5)):
            got = link_steps(a, b, None, 0.1, gate, spacing=spacing, block_shape=block)
            want = ref_link_steps(a, b, None, 0.1, gate, spacing=spacing)
            assert np.array_equal(got, want)
            assert got.tolist() == [[2.0, 9.0, 0.0], [5.0, 3.0, 0.5]]
    assert link_steps(np.zeros_like(a), b).shape == (0, 3)
    with pytest.raises(ShapeMismatchError, match="shapes"):
        link_steps(a, b[:, :, :10])
    with pytest.raises(ParameterError, match="outside"):
        link_steps(-a, b)


def test_subsample_keeps_the_whole_volume_route(series):
    labs = series["labels"]
    got = track_particles(labs, VS, series["prior"], subsample=3, block_shape=16)
    same_tracks(got, ref_track(labs, VS, series["prior"], subsample=3))


def test_label_sums_equal_center_of_mass(series):
    lab = series["labels"][1]
    s = label_sums(lab, block_shape=(16, 40, 23), workers=2)
    ids = np.unique(lab[lab > 0])
    assert np.array_equal(s.ids, ids)
    assert np.array_equal(s.counts, np.bincount(lab.ravel())[ids])
    com = np.array(ndimage.center_of_mass(np.ones(lab.shape, np.float32), lab, ids))
    assert np.array_equal(s.centroids(), com)


# ------------------------------------------------------------------------------------------
# series morphology from labels files

def _same_morphology(m, ref):
    assert m.voxel_size_um == ref.voxel_size_um
    for r, q in zip(m.steps, ref.steps, strict=True):
        assert r.keys() == q.keys()
        for k, v in r.items():
            assert v == q[k] or (np.isnan(v) and np.isnan(q[k])), k
    for a, b in zip(m.thickness_maps, ref.thickness_maps, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    for a, b in zip(m.tables, ref.tables, strict=True):
        for name in b.dtype.names:
            assert np.array_equal(a[name], b[name], equal_nan=b.dtype[name].kind == "f"), name
    same_tracks(m.tracks, (ref.tracks.table, ref.tracks.links))


@pytest.mark.parametrize("workers", [1, 2])
def test_series_morphology_from_files_equals_whole(series, workers):
    files = series["files"]
    whole = [read_labels(p) for p in files]
    assert isinstance(whole[0].particles, np.ndarray)
    ref = series_morphology(whole, prior="thickness")
    m = series_morphology(files, prior="thickness", memory_limit="64MB", workers=workers)
    _same_morphology(m, ref)
    prior = thickness_prior([np.nanmean(s.collector_z) for s in whole],
                            [np.nanmean(s.separator_z) for s in whole])
    same_tracks(m.tracks, ref_track([s.particles for s in whole], VS, prior))
    assert m.steps[0]["rnl"] == 1.0 and m.steps[2]["rnl"] < 1.0 and m.tracks.n_tracks > 59


def test_series_morphology_voxel_size_override_from_files(series):
    files = series["files"]
    ref = series_morphology([read_labels(p) for p in files], prior="none", voxel_size_um=0.25)
    m = series_morphology(files, prior="none", voxel_size_um=0.25, memory_limit="64MB",
                          workers=2)
    _same_morphology(m, ref)
    assert m.voxel_size_um == (0.25,) * 3
    assert m.tables[0]["volume_um3"].sum() == pytest.approx(
        (series["labels"][0] > 0).sum() * 0.25 ** 3)


def test_open_labels_keeps_the_volumes_on_disk(series, tmp_path):
    p = series["files"][1]
    with open_labels(p) as seg:
        assert isinstance(seg.particles, h5py.Dataset) and seg.phases.dtype == np.uint8
        assert np.array_equal(seg.particles[5:9], series["labels"][1][5:9])
        whole = read_labels(p)
        assert np.array_equal(seg.table, whole.table) and seg.params == whole.params
    assert not seg.particles  # closed with the context
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    from anodetwin.errors import CorruptFileError, InputNotFoundError

    with pytest.raises(CorruptFileError), open_labels(tmp_path / "x.h5"):
        pass
    with pytest.raises(InputNotFoundError), open_labels(tmp_path / "none.h5"):
        pass


def test_no_pass_reads_a_whole_volume(series, monkeypatch):
    """Every read of a labels volume by the morphology of a series from files stays under
    a third of the volume (tracking blocks and their lookups, Si counts by slabs, tables
    re-measured by blocks), and tracking from files holds far less than one volume."""
    largest = {}
    read = h5py.Dataset.__getitem__

    def counting(self, key):
        out = read(self, key)
        if self.ndim == 3:
            largest[self.name] = max(largest.get(self.name, 0), int(np.size(out)))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    files = series["files"]
    series_morphology(files, prior="thickness", voxel_size_um=0.25, memory_limit="64MB",
                      workers=2)
    size = series["labels"][0].size
    assert set(largest) == {"/phases", "/particles"}
    assert max(largest.values()) <= size / 3, (largest, size)
    with h5py.File(files[0]) as f0, h5py.File(files[1]) as f1:
        tracemalloc.start()
        track_particles([f0["particles"], f1["particles"]], VS, series["prior"],
                        block_shape=24)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < series["labels"][0].nbytes / 2, peak

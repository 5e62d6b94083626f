"""Image stages block by block: the same result as on the whole volume, for any block size
(blocks that cut particles included) and any number of workers; the kernels against
independent implementations."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from anodetwin.errors import NonFiniteError, ParameterError
from anodetwin.io.blocks import BlockGrid, block_shape_for, parse_memory
from anodetwin.phases import PHASE
from anodetwin.segment.particles import label_particles, particle_table
from anodetwin.segment.phases import segment_phases

VS = 0.2
# (block shape, workers): blocks far smaller than a particle, slabs, columns, uneven sizes
BLOCKINGS = [((24, 24, 24), 1), ((40, 50, 33), 2), ((17, 100, 100), 2), ((147, 100, 30), 1)]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A phantom tomogram (147 x 100 x 100, copper foil, ~60 touching Si particles) on
    disk, with its whole-volume segmentation."""
    from anodetwin.phantom import config_from_dict, generate_series

    path = tmp_path_factory.mktemp("blocks") / "s.h5"
    generate_series(config_from_dict({"series": {"soc": [0.0]}}, seed=2), path,
                    progress=False)
    with h5py.File(path) as f:
        v = f["steps/T0/tomogram"][...]
    seg = segment_phases(v, voxel_size_um=VS)
    lab = label_particles(seg.si, voxel_size_um=VS)
    return {"path": path, "volume": v, "seg": seg, "labels": lab,
            "table": particle_table(lab, VS, seg.collector_z)}


def _same_segmentation(a, b):
    assert np.array_equal(a.phases, b.phases), int((a.phases != b.phases).sum())
    assert a.thresholds == b.thresholds and a.collector_face == b.collector_face
    assert np.array_equal(a.collector_z, b.collector_z)
    assert np.array_equal(a.separator_z, b.separator_z, equal_nan=True)


@pytest.mark.parametrize("block,workers", BLOCKINGS)
def test_phases_block_by_block_equal_the_whole_volume(scan, block, workers):
    seg = segment_phases(scan["volume"], voxel_size_um=VS, block_shape=block,
                         workers=workers)
    _same_segmentation(seg, scan["seg"])
    assert {PHASE["copper"], PHASE["si"], PHASE["cbd"], PHASE["separator"]} <= set(
        np.unique(seg.phases).tolist())


@pytest.mark.parametrize("block,workers", BLOCKINGS)
def test_particles_and_table_block_by_block_equal_the_whole_volume(scan, block, workers):
    whole = scan["labels"]
    n = whole.max()
    owners: dict = {}
    for b in BlockGrid(whole.shape, block):
        for i in np.unique(whole[b.core]):
            owners.setdefault(int(i), set()).add(b.index)
    cut = sum(len(s) > 1 for i, s in owners.items() if i)
    assert n > 40 and cut >= 5, cut  # particles that lie in several blocks
    lab = label_particles(scan["seg"].si, voxel_size_um=VS, block_shape=block,
                          workers=workers)
    assert np.array_equal(lab, whole), int((lab != whole).sum())  # ids too, not only up
    t = particle_table(lab, VS, scan["seg"].collector_z, block_shape=block, workers=workers)
    for name in t.dtype.names:  # to a relabelling: ids are numbered by first voxel
        assert np.array_equal(t[name], scan["table"][name]), name


def test_from_a_file_into_a_file_with_a_memory_limit(scan, tmp_path):
    """Grey values read lazily from HDF5, phases and particles written into HDF5 datasets
    block by block; the memory ceiling sets the blocks."""
    from anodetwin.io import open_volume

    out = tmp_path / "labels.h5"
    with open_volume(f"{scan['path']}:/steps/T0/tomogram") as src, \
            h5py.File(out, "w") as f:
        ph = f.create_dataset("phases", scan["volume"].shape, np.uint8, chunks=(32,) * 3)
        lab = f.create_dataset("particles", scan["volume"].shape, np.int32,
                               chunks=(32,) * 3)
        seg = segment_phases(src.lazy(progress=False), voxel_size_um=VS,
                             memory_limit="200MB", workers=2, out=ph)
        label_particles(ph, voxel_size_um=VS, block_shape=40, workers=2, out=lab,
                        particle_code=PHASE["si"])
        _same_segmentation(seg, scan["seg"])
        assert seg.phases is ph
        assert np.array_equal(lab[...], scan["labels"])


def test_squared_distance_matches_scipy_anisotropic():
    """The separable distance transform against SciPy's feature-transform one."""
    from anodetwin.segment._watershed import squared_edt

    rng = np.random.default_rng(3)
    m = ndimage.binary_opening(rng.random((23, 31, 17)) > 0.3)
    for spacing in ((1.0, 1.0, 1.0), (2.0, 1.0, 0.5), (1.3, 0.7, 1.0)):
        want = ndimage.distance_transform_edt(m, sampling=spacing) ** 2
        got = squared_edt(m, np.array(spacing))
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_distance_on_a_box_flags_exactly_the_voxels_it_gets_right():
    """Cut a box from a volume: where the box's distance is flagged exact it equals the
    whole volume's; a flagged voxel far from the box sides is never wrong."""
    from anodetwin.segment._watershed import exact_region, squared_edt

    zz, yy, xx = np.indices((40, 40, 40))
    m = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2
    sp = np.array([1.0, 1.0, 1.0])
    whole = squared_edt(m, sp)
    box = (slice(10, 30), slice(5, 40), slice(0, 22))
    d = squared_edt(np.ascontiguousarray(m[box]), sp)
    ok = exact_region(d, np.array([True, True, False]), np.array([True, False, True]), sp)
    assert np.array_equal(d[ok], whole[box][ok])
    assert (~ok).any() and (d[~ok] != whole[box][~ok]).any()  # the test can see errors


def test_block_grid_and_memory():
    g = BlockGrid((10, 7, 5), (4, 4, 4), halo=2)
    cover = np.zeros((10, 7, 5), int)
    for b in g:
        cover[b.core] += 1
        assert all(o.start <= c.start and c.stop <= o.stop for o, c in zip(b.outer, b.core))
        assert all(c.start - o.start <= 2 for o, c in zip(b.outer, b.core))
    assert (cover == 1).all() and len(g) == 3 * 2 * 2
    assert parse_memory("4GB") == 4 * 10**9 and parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1E+9") == 10**9 and parse_memory(".5GB") == 5 * 10**8
    for bad in ("lots", "12 parsecs", "1MB", "1e999GB", "1e400", "1.2.3GB", ".", "-4GB",
                "99999999999999999999TB"):
        with pytest.raises(ParameterError):
            parse_memory(bad)
    side = block_shape_for((2048,) * 3, 64, 28, "4GB", workers=2)[0]
    assert 2 * (side + 56) ** 3 * 64 <= 4e9 and side % 16 == 0
    with pytest.raises(ParameterError, match="memory limit"):
        block_shape_for((2048,) * 3, 64, 200, "64MB", workers=4)
    assert block_shape_for((2048,) * 3, 64, 28, "4GB", workers=2, max_side=96) == (96,) * 3
    # a volume that fits one block whole: one slab per worker along its longest axis
    assert block_shape_for((200, 256, 300), 64, 28, "4GB", workers=2) == (200, 256, 160)
    assert block_shape_for((100, 256, 300), 64, 28, "4GB", workers=3) == (100, 256, 112)
    assert block_shape_for((200, 256, 300), 64, 28, "4GB", workers=1) == (200, 256, 300)
    # a small volume that fits whole is cut into slabs even where no 16-voxel core with
    # its halo would fit: (16 + 56)^3 * 64 B = 24 MB per worker > 64 MB * 0.65 / 2
    assert block_shape_for((40, 40, 40), 64, 28, "64MB", workers=2) == (32, 40, 40)
    assert block_shape_for((4, 4, 4), 64, 28, "64MB", workers=2) == (4, 4, 4)


def test_nan_counted_over_all_blocks():
    v = np.random.default_rng(0).random((30, 20, 20)).astype(np.float32)
    v[2, 3, 4] = v[25, 1, 1] = np.nan
    v[14, 5, 5] = np.inf
    with pytest.raises(NonFiniteError, match="2 NaN and 1 inf"):
        segment_phases(v, block_shape=(10, 20, 20))
    with pytest.raises(ParameterError, match="constant"):
        segment_phases(np.ones((20, 20, 20), np.float32), block_shape=8)


def test_bad_grey_values_are_named_by_file_on_both_routes(tmp_path, cli):
    import tifffile

    v = np.random.default_rng(0).random((20, 30, 30)).astype(np.float32)
    v[3, 3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", v)
    tifffile.imwrite(tmp_path / "flat.tif", np.full((20, 30, 30), 7, np.uint16))
    for name, words in (("nan", "contains 1 NaN"), ("flat", "is constant (value 7)")):
        for extra in ((), ("--memory-limit", "1GB")):
            res = cli("segment", tmp_path / f"{name}.tif", "--out", tmp_path / "o.h5",
                      "--voxel-size", "0.5", *extra)
            assert res.code == 2 and f"{name}.tif' {words}" in res.err, res.err
            assert "Traceback" not in res.err and not (tmp_path / "o.h5").exists()


def test_a_constant_alignment_reference_is_named_on_both_routes(tmp_path, cli):
    import tifffile

    v = np.random.default_rng(0).integers(0, 60000, (20, 30, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scan.tif", v)
    tifffile.imwrite(tmp_path / "flat.tif", np.full((20, 30, 30), 7, np.uint16))
    for extra in ((), ("--memory-limit", "1GB")):
        res = cli("segment", tmp_path / "scan.tif", "--out", tmp_path / "o.h5",
                  "--align-to", tmp_path / "flat.tif", "--voxel-size", "0.5", *extra)
        assert res.code == 2 and "--align-to reference" in res.err, res.err
        assert "flat.tif' is constant (value 7)" in res.err, res.err
        assert "Traceback" not in res.err and not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("block,workers", BLOCKINGS[:3])
def test_residual_map_and_particle_table_block_by_block(scan, block, workers):
    """A deformed scan (the reference moved by a smooth node field, with a grey change
    inside a slab) against the reference: map and per-particle table are the same for any
    blocking; the in-memory route gives the map of the dense field."""
    from anodetwin.dvc.residual import NodeField, dense_displacement, residual_map
    from anodetwin.kinematics import inverse_coordinates, sample_linear

    ref = scan["volume"].astype(np.float32)
    g = np.meshgrid(*[np.arange(4, n, 24) for n in ref.shape], indexing="ij")
    nodes = np.stack([a.ravel() for a in g], 1).astype(float)
    rng = np.random.default_rng(1)
    disp = np.stack([0.02 * nodes[:, 0] + rng.normal(0, 0.5, len(nodes)),
                     rng.normal(0, 1, len(nodes)), rng.normal(0, 1, len(nodes))], 1)
    disp[3] = np.nan  # a node that did not converge
    u = dense_displacement(nodes, g[0].shape, disp, ref.shape)
    deformed = sample_linear(ref, inverse_coordinates(u, 1.0))
    deformed[60:70] *= 1.3
    whole = residual_map(ref, deformed, u, floor=800.0, labels_ref=scan["labels"])
    assert whole.residual[60:70].mean() > 10 * whole.residual[:50].mean()
    r = residual_map(ref, deformed, NodeField(nodes, g[0].shape, disp), floor=800.0,
                     labels_ref=scan["labels"], block_shape=block, workers=workers)
    assert r.coords is None
    assert np.array_equal(r.residual, whole.residual)
    assert len(r.particles) == scan["labels"].max()
    for name in r.particles.dtype.names:
        assert np.array_equal(r.particles[name], whole.particles[name], equal_nan=True), name


def test_cli_segment_block_by_block_equals_in_memory(scan, tmp_path, cli):
    """`anodetwin segment --memory-limit` writes the same labels file as the in-memory
    route; options that need the volume in memory are refused in one line."""
    from anodetwin.segment.pipeline import read_labels

    vol = f"{scan['path']}:/steps/T0/tomogram"
    a, b = tmp_path / "mem.h5", tmp_path / "blocks.h5"
    assert cli("segment", vol, "--out", str(a), "--voxel-size", "0.2").code == 0
    res = cli("segment", vol, "--out", str(b), "--voxel-size", "0.2", "--memory-limit",
              "200MB", "--workers", "2")
    assert res.code == 0, res.err
    x, y = read_labels(a), read_labels(b)
    assert np.array_equal(x.phases, y.phases) and np.array_equal(x.particles, y.particles)
    for name in x.table.dtype.names:
        assert np.array_equal(x.table[name], y.table[name]), name
    assert np.array_equal(x.collector_z, y.collector_z)
    assert x.thresholds == y.thresholds and x.voxel_size_um == y.voxel_size_um
    assert 0.2 < y.resolution_fwhm_um < 0.5  # on the central box
    with h5py.File(b) as f:
        assert f["phases"].chunks is not None and f.attrs["format"] == "anodetwin-labels"
    # --workers alone: blocks within the default limit, on threads (recorded in the file)
    res = cli("segment", vol, "--out", str(tmp_path / "w.h5"), "--voxel-size", "0.2",
              "--workers", "2")
    assert res.code == 0, res.err
    w = read_labels(tmp_path / "w.h5")
    assert np.array_equal(x.particles, w.particles) and w.params["memory_limit"] == "4GB"
    bad = cli("segment", vol, "--out", str(tmp_path / "c.h5"), "--memory-limit", "200MB",
              "--tiff")
    assert bad.code == 2 and "--tiff" in bad.err and "Traceback" not in bad.err
    for text in ("lots", "1e999GB", "1.2.3GB"):
        bad = cli("segment", vol, "--out", str(tmp_path / "c.h5"), "--memory-limit", text)
        assert bad.code == 2 and "--memory-limit" in bad.err and "Traceback" not in bad.err
    # the output may not replace the reference it is aligned to
    ref = tmp_path / "ref.h5"
    ref.write_bytes(Path(scan["path"]).read_bytes())
    bad = cli("segment", vol, "--out", str(ref), "--align-to", f"{ref}:/steps/T0/tomogram",
              "--memory-limit", "200MB")
    assert bad.code == 2 and "destroy the input" in bad.err
    assert ref.read_bytes() == Path(scan["path"]).read_bytes()


def test_aligned_block_by_block_equals_in_memory(tmp_path, cli):
    """A later scan moved onto T0 by the copper foil: `segment --align-to` block by block
    (the foil found block by block, planes read a few at a time, the move applied per
    block) gives the in-memory route's shift and labels."""
    from anodetwin.io import Volume, write_volume
    from anodetwin.phantom import config_from_dict, generate_series
    from anodetwin.segment.pipeline import read_labels

    path = tmp_path / "s.h5"
    generate_series(config_from_dict({"series": {"soc": [0.0, 0.5]}}, seed=3), path,
                    progress=False)
    with h5py.File(path) as f:
        t0, t1 = f["steps/T0/tomogram"][...], f["steps/T1/tomogram"][...]
    moved = ndimage.shift(t1.astype(np.float32), (0.6, -1.3, 2.2), order=1, mode="nearest")
    write_volume(tmp_path / "t0.h5", Volume(t0, (0.2,) * 3))
    write_volume(tmp_path / "t1.h5", Volume(moved.astype(np.uint16), (0.2,) * 3))
    out = {}
    for name, extra in (("mem", ()), ("blocks", ("--memory-limit", "200MB", "--workers", "2"))):
        res = cli("segment", str(tmp_path / "t1.h5"), "--align-to", str(tmp_path / "t0.h5"),
                  "--out", str(tmp_path / f"{name}.h5"), *extra)
        assert res.code == 0, res.err
        out[name] = read_labels(tmp_path / f"{name}.h5")
    a, b = out["mem"], out["blocks"]
    assert a.alignment_shift == b.alignment_shift
    assert np.allclose(a.alignment_shift, (0.6, -1.3, 2.2), atol=0.1), a.alignment_shift
    assert np.array_equal(a.phases, b.phases) and np.array_equal(a.particles, b.particles)
    for name in a.table.dtype.names:
        assert np.array_equal(a.table[name], b.table[name]), name


def test_step_morphology_from_the_file_equals_in_memory(scan, tmp_path):
    """The electrode and Si volumes of a step are counted from the labels file slab by
    slab (interfaces column by column) as from the arrays; the electrode count against a
    brute-force count of the voxels between the interfaces."""
    from dataclasses import replace

    from anodetwin.segment.morphology import step_morphology
    from anodetwin.segment.pipeline import read_labels, segment_volume, write_labels

    seg = segment_volume(scan["volume"], voxel_size_um=VS, resolution=False)
    write_labels(tmp_path / "l.h5", seg)
    mem = step_morphology(read_labels(tmp_path / "l.h5"))
    with h5py.File(tmp_path / "l.h5") as f:
        lazy = step_morphology(replace(seg, phases=f["phases"], particles=f["particles"]))
    assert mem.keys() == lazy.keys()
    for k, v in mem.items():
        assert v == lazy[k] or (np.isnan(v) and np.isnan(lazy[k])), k
    z = np.arange(seg.phases.shape[0], dtype=float)[:, None, None]
    lo = np.minimum(seg.collector_z, seg.separator_z)[None]
    hi = np.maximum(seg.collector_z, seg.separator_z)[None]
    n_el = int(((z > lo) & (z < hi) & np.isfinite(hi)).sum())
    n_si = int((seg.phases == PHASE["si"]).sum())
    assert mem["si_fraction"] == pytest.approx(n_si / n_el, rel=1e-12)


def test_an_origin_in_voxels_is_written_in_um_by_both_routes(scan, tmp_path, cli):
    """A file whose origin is in voxels (no voxel size recorded) segmented with
    --voxel-size: both routes write origin_um = origin in voxels x voxel size."""
    import json

    v = h5py.File(scan["path"])["steps/T0/tomogram"][...]
    np.save(tmp_path / "v.npy", v)
    (tmp_path / "v.npy.json").write_text(json.dumps({"origin_voxels": [10, 4, 0]}))
    for name, extra in (("mem", ()), ("blocks", ("--memory-limit", "1GB"))):
        res = cli("segment", tmp_path / "v.npy", "--out", tmp_path / f"{name}.h5",
                  "--voxel-size", "0.5", *extra)
        assert res.code == 0, res.err
        with h5py.File(tmp_path / f"{name}.h5") as f:
            assert list(f["phases"].attrs["origin_um"]) == [5.0, 2.0, 0.0], name


def test_sigterm_removes_the_unfinished_output(scan, tmp_path):
    """A batch system's stop (SIGTERM) during a block-wise segmentation: exit status 143,
    one line, and neither the output nor its temporary file is left."""
    import signal
    import subprocess
    import sys
    import time

    v = h5py.File(scan["path"])["steps/T0/tomogram"][...]
    big = np.tile(v, (2, 3, 3))
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f["v"] = big
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "anodetwin.cli", "segment",
                             f"{tmp_path / 'big.h5'}:/v", "--out", str(out / "L.h5"),
                             "--voxel-size", "0.2", "--memory-limit", "200MB"],
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list(out.iterdir()) and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "anodetwin: terminated" in err, err
    assert "Traceback" not in err and list(out.iterdir()) == []


def test_ascents_longer_than_the_halo_are_followed_across_blocks(monkeypatch):
    """Two overlapping balls (radius 34 and 26 voxels, centres 52 apart): an ascent from
    the big ball's surface runs about 34 voxels to its centre, further than the 16-voxel
    halo of blocks 16 voxels wide, so it is handed from block to block (pending voxels
    resolved by the block that owns them, in chains of several hops). Truth by
    construction: two particles, split at the neck, each ball's centre in its own."""
    from anodetwin.segment import particles as P

    z, y, x = np.mgrid[:76, :76, :124].astype(float)
    big = (z - 38) ** 2 + (y - 38) ** 2 + (x - 38) ** 2 <= 34 ** 2
    small = (z - 38) ** 2 + (y - 38) ** 2 + (x - 90) ** 2 <= 26 ** 2
    hops = []
    climb = P._BasinPass.climb

    def spy(self, b, seeds):
        out = climb(self, b, seeds)
        hops.append(bool(out[1].any()))  # a seed led to a further pending voxel
        return out

    monkeypatch.setattr(P._BasinPass, "climb", spy)
    whole = label_particles(big | small)
    assert not hops  # one block: nothing pending
    for block, workers in (((16, 16, 16), 1), ((10, 30, 17), 2)):
        hops.clear()
        lab = label_particles(big | small, block_shape=block, workers=workers)
        assert np.array_equal(lab, whole), (block, int((lab != whole).sum()))
        assert len(hops) >= 2 and any(hops), (block, hops)
    assert whole.max() == 2
    assert whole[38, 38, 38] == 1 and whole[38, 38, 90] == 2
    inner = (((z - 38) ** 2 + (y - 38) ** 2 + (x - 38) ** 2 <= 30 ** 2) & (x < 60))
    assert np.unique(whole[inner]).tolist() == [1]


def test_labels_output_must_hold_signed_ids_of_the_mask_shape():
    """The first pass keeps basin indices (-1 outside the mask) in ``out``: unsigned or
    narrow integers, or another shape, are refused before any work; int64 is taken."""
    mask = np.zeros((20, 20, 20), bool)
    mask[4:9, 4:9, 4:9] = mask[12:17, 12:17, 12:17] = True
    for bad in (np.zeros(mask.shape, np.uint32), np.zeros(mask.shape, np.int16),
                np.zeros((20, 20, 21), np.int32)):
        with pytest.raises(ParameterError, match="labels output"):
            label_particles(mask, block_shape=8, out=bad)
    out = label_particles(mask, block_shape=8, out=np.full(mask.shape, 7, np.int64))
    assert out.dtype == np.int64 and out.max() == 2 and (out[mask] > 0).all()
    assert (out[~mask] == 0).all()


def test_h_must_be_finite_and_a_solid_mask_is_refused_under_a_memory_limit():
    """A NaN or infinite h is refused. A mask with one background voxel in 160^3 has
    voxels 100+ voxels inside its one "particle": exact distances would need a box of
    nearly the whole volume, far beyond 64MB, so the limit refuses it before the work
    (it used to take 3x the in-memory route's memory); a limit that holds it works."""
    m = np.ones((160, 160, 160), bool)
    m[0, 0, 0] = False
    for h in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ParameterError, match="h-maxima"):
            label_particles(m[:8, :8, :8], h=h)
    with pytest.raises(ParameterError, match="voxels inside a particle.*64MB"):
        label_particles(m, memory_limit="64MB")
    small = m[:48, :48, :48]
    lab = label_particles(small, memory_limit="64MB", block_shape=16)
    assert np.array_equal(lab, label_particles(small)) and lab.max() >= 1

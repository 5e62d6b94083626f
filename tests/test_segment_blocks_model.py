"""The trained classifier, the interfaces from its phases and the grey-value normalisation
block by block: the same values as the in-memory route, bit for bit, for any block size
(blocks that cut particles included) and any number of workers; the command line and
``anodetwin run`` on the block route."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from anodetwin.io.blocks import BlockGrid
from anodetwin.phases import PHASE
from anodetwin.segment.classifier import (
    box_features,
    pixel_features,
    train_classifier,
)
from anodetwin.segment.particles import label_particles, particle_table
from anodetwin.segment.pipeline import interfaces_from_phases, read_labels
from anodetwin.segment.preprocess import PreprocessedVolume, denoise, normalise

VS = 0.2
SIGMAS = (0.7, 1.6, 3.5)  # a 14-voxel halo: blocks of 24 voxels read 3x their core
# (block shape, workers): blocks far smaller than a particle, uneven sizes, columns
BLOCKINGS = [((24, 24, 24), 1), ((40, 37, 29), 2), ((147, 60, 17), 2)]
WINDOW = (9, 7)


def merged(phases: np.ndarray) -> np.ndarray:
    """What phase contrast separates: Si 2, copper 4, separator 5, all else 1."""
    out = np.ones_like(phases)
    for code in (2, 4, 5):
        out[phases == code] = code
    return out


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A phantom tomogram (147 x 60 x 60: copper foil, touching Si particles) in HDF5, a
    small classifier trained on 8 of its slices, and the in-memory results."""
    from anodetwin.io import Volume, write_volume
    from anodetwin.phantom import config_from_dict, generate_series

    d = tmp_path_factory.mktemp("blocks_model")
    generate_series(config_from_dict({"series": {"soc": [0.0]}}, seed=2), d / "s.h5",
                    progress=False)
    with h5py.File(d / "s.h5") as f:
        v = f["steps/T0/tomogram"][:, :60, :60]
        truth = merged(f["steps/T0/phases"][:, :60, :60])
    write_volume(d / "t0.h5", Volume(v, (VS,) * 3))
    clf = train_classifier(v, truth, slices=np.linspace(8, 138, 8).round().astype(int),
                           sigmas=SIGMAS, n_estimators=12, max_samples_per_class=5000,
                           n_jobs=2)
    clf.save(d / "clf.joblib")
    phases = clf.predict(v, progress=False)  # the slab route, in memory
    labels = label_particles(phases == PHASE["si"], voxel_size_um=VS)
    face, col, sep = interfaces_from_phases(phases, WINDOW)
    return {"dir": d, "volume": v, "clf": clf, "phases": phases, "labels": labels,
            "face": face, "col": col, "sep": sep,
            "table": particle_table(labels, VS, col)}


# --------------------------------------------------------------------------------------------
# classifier

def test_block_features_equal_the_whole_volume_features():
    """Every core voxel of every block: the whole volume's features bit for bit, with
    halos clipped at the faces (reflection) and an axis shorter than the halo."""
    rng = np.random.default_rng(4)
    v = (rng.random((30, 9, 26)) * 1000).astype(np.float32)
    whole = pixel_features(v, sigmas=SIGMAS, scale=(100.0, 900.0))
    for block in ((7, 9, 11), (30, 4, 5), (13, 9, 26)):
        for b in BlockGrid(v.shape, block, 14):
            f = box_features(v[b.outer], b.inner, SIGMAS, (100.0, 900.0))
            assert np.array_equal(f, whole[b.core]), (block, b.index)


@pytest.mark.parametrize("block,workers", BLOCKINGS)
def test_classifier_phases_interfaces_particles_block_by_block(scan, tmp_path, block,
                                                              workers):
    """Phases written into an HDF5 dataset block by block, interfaces read from it slab by
    slab, particles and their table block by block: all as in memory."""
    v, whole = scan["volume"], scan["labels"]
    owners: dict = {}
    for b in BlockGrid(whole.shape, block):
        for i in np.unique(whole[b.core]):
            owners.setdefault(int(i), set()).add(b.index)
    assert whole.max() > 10 and sum(len(s) > 1 for i, s in owners.items() if i) >= 5
    with h5py.File(tmp_path / "l.h5", "w") as f:
        ph = f.create_dataset("phases", v.shape, np.uint8, chunks=(16, 16, 16))
        scan["clf"].predict(v, progress=False, out=ph, block_shape=block, workers=workers)
        assert np.array_equal(ph[...], scan["phases"])
        face, col, sep = interfaces_from_phases(ph, WINDOW, slab=block[0] // 2 + 1)
        lab = f.create_dataset("particles", v.shape, np.int32)
        label_particles(ph, voxel_size_um=VS, particle_code=PHASE["si"], block_shape=block,
                        workers=workers, out=lab)
        assert np.array_equal(lab[...], whole)  # the ids too
        table = particle_table(lab, VS, col, block_shape=block, workers=workers)
    assert face == scan["face"] == "low"
    assert np.array_equal(col, scan["col"]) and np.array_equal(sep, scan["sep"])
    for name in table.dtype.names:
        assert np.array_equal(table[name], scan["table"][name]), name


def test_interfaces_by_slabs_equal_the_whole_array(scan):
    """Foil on either face or none, columns with and without Si in their window."""
    ph = scan["phases"].copy()
    ph[:, 10:30, 5:25][ph[:, 10:30, 5:25] == PHASE["si"]] = PHASE["cbd"]  # Si-free patch
    cases = [ph, ph[::-1].copy(), np.where(ph == PHASE["copper"], 1, ph).astype(np.uint8)]
    for arr in cases:
        want = interfaces_from_phases(arr, WINDOW)
        assert np.isnan(want[2]).any() and not np.isnan(want[2]).all()
        for slab in (1, 6, 50, 500):
            got = interfaces_from_phases(arr, WINDOW, slab=slab)
            assert got[0] == want[0]
            assert np.array_equal(got[1], want[1])
            assert np.array_equal(got[2], want[2], equal_nan=True)
    assert [interfaces_from_phases(a, WINDOW)[0] for a in cases] == ["low", "high", None]


def test_grey_range_of_a_lazy_volume_reads_a_strided_sample():
    """The classifier's grey range on a volume read box by box: the percentiles of every
    second voxel (the in-memory sample), reading only every second plane."""
    from anodetwin.segment.classifier import _robust_range

    class Counting:
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.read = a, a.shape, a.dtype, 0

        def region(self, zs, ys, xs):
            self.read += self.a[zs, ys, xs].size
            return self.a[zs, ys, xs]

    a = np.random.default_rng(0).integers(0, 60000, (260, 256, 256), dtype=np.uint16)
    lazy = Counting(a)
    assert _robust_range(lazy) == tuple(np.percentile(a[::2, ::2, ::2], (0.5, 99.5)))
    assert lazy.read == a[::2].size


# --------------------------------------------------------------------------------------------
# normalisation

@pytest.mark.parametrize("method", ["stretch", "equalise"])
@pytest.mark.parametrize("den", [None, "median"])
def test_normalised_values_block_by_block_equal_in_memory(method, den):
    """``normalise(denoise(v))`` of the whole volume against boxes of the block-wise view,
    for uint16 grey values with many repeats and float values with negative ones."""
    rng = np.random.default_rng(1)
    a = rng.normal(1000, 300, (34, 29, 23)).clip(0).astype(np.uint16)
    a[3:7] = 3000  # a bright layer: many equal values
    b = rng.normal(0, 1e-3, (34, 29, 23)).astype(np.float32)
    for v in (a, b):
        want = normalise(v if den is None else denoise(v, den), method)
        for block, workers in ((None, 1), (7, 2), ((13, 29, 5), 1)):
            view = PreprocessedVolume(v, den, method, block_shape=block, workers=workers)
            got = np.concatenate([view.region(slice(z, min(34, z + 9)), slice(0, 29),
                                              slice(0, 23)) for z in range(0, 34, 9)])
            assert got.dtype == np.float32 and np.array_equal(got, want), (block, v.dtype)
            box = (slice(5, 17), slice(3, 28), slice(0, 11))
            assert np.array_equal(view.region(*box), want[box])


def test_normalisation_refuses_bad_volumes():
    from anodetwin.errors import NonFiniteError, ParameterError

    v = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    v[1, 2, 3] = v[15, 1, 1] = np.nan
    with pytest.raises(NonFiniteError, match="2 NaN and 0 inf"):
        PreprocessedVolume(v, None, "stretch", block_shape=8, name="volume 'x.h5'")
    with pytest.raises(ParameterError, match="constant"):
        PreprocessedVolume(np.ones((9, 9, 9), np.uint16), None, "equalise", block_shape=4)
    with pytest.raises(ParameterError, match="unknown normalisation"):
        PreprocessedVolume(v[:10, :10, :10], None, "gamma")


@pytest.mark.parametrize("den,method", [(None, "stretch"), ("median", "equalise")])
def test_threshold_route_on_normalised_values_into_a_file(scan, tmp_path, den, method):
    """`segment_to_file(normalise=...)` writes the labels of `segment_volume`."""
    from anodetwin.io import Volume
    from anodetwin.segment.pipeline import segment_to_file, segment_volume

    mem = segment_volume(Volume(scan["volume"], VS), denoise=den, normalise=method,
                         resolution=False)
    segment_to_file(scan["dir"] / "t0.h5", tmp_path / "b.h5", denoise=den, normalise=method,
                    resolution=False, memory_limit="200MB", workers=2)
    _same_labels(mem, read_labels(tmp_path / "b.h5"))


def _same_labels(a, b) -> None:
    assert np.array_equal(a.phases, b.phases), int((a.phases != b.phases).sum())
    assert np.array_equal(a.particles, b.particles)
    for name in a.table.dtype.names:
        assert np.array_equal(a.table[name], b.table[name]), name
    assert np.array_equal(a.collector_z, b.collector_z)
    assert np.array_equal(a.separator_z, b.separator_z, equal_nan=True)
    assert (a.method, a.collector_face, a.thresholds) == (b.method, b.collector_face,
                                                          b.thresholds)


# --------------------------------------------------------------------------------------------
# command line and run

def test_cli_segment_with_a_model_block_by_block_equals_in_memory(scan, tmp_path, cli):
    vol, model = scan["dir"] / "t0.h5", scan["dir"] / "clf.joblib"
    a, b = tmp_path / "mem.h5", tmp_path / "blocks.h5"
    assert cli("segment", vol, "--out", a, "--model", model).code == 0
    res = cli("segment", vol, "--out", b, "--model", model, "--memory-limit", "200MB",
              "--workers", "2")
    assert res.code == 0, res.err
    x, y = read_labels(a), read_labels(b)
    _same_labels(x, y)
    assert y.method == "classifier" and y.params["memory_limit"] == "200MB"
    assert x.resolution_fwhm_um == y.resolution_fwhm_um  # the central box is the volume
    assert np.array_equal(x.phases, scan["phases"])


def test_run_with_a_classifier_segments_block_by_block(tmp_path):
    """`[segment] annotations`: the classifier is trained reading the scan lazily and every
    scan is segmented on the block route; T0 and the aligned T1 as in memory."""
    from anodetwin.phantom import load_config
    from anodetwin.phantom.report import write_phantom
    from anodetwin.pipeline.runfile import load_run
    from anodetwin.pipeline.runner import run_stage
    from anodetwin.pipeline.stages import read_scan
    from anodetwin.segment.pipeline import segment_volume
    from tests.test_pipeline import PHANTOM, RUN

    (tmp_path / "phantom.toml").write_text(PHANTOM)
    write_phantom(load_config(tmp_path / "phantom.toml"), tmp_path / "ph")
    run = tmp_path / "run.toml"
    run.write_text(RUN.replace("[cell]", '[segment]\nannotations = "ph/series.h5:/steps/T0/'
                                         'phases"\nannotation_slices = [10, 25, 40]\n'
                                         "[cell]"))
    run_stage("segment", run, tmp_path / "out", "k")
    cfg = load_run(run)
    scans = [read_scan(cfg, cfg.scan_files[k]) for k in (0, 1)]
    with h5py.File(tmp_path / "ph" / "series.h5") as f:
        ann = f["steps/T0/phases"][...]
    clf = train_classifier(scans[0].data, ann, slices=[10, 25, 40], n_jobs=2)
    for k in (0, 1):
        got = read_labels(tmp_path / "out" / "segment" / f"T{k}.h5")
        assert got.method == "classifier" and got.params["memory_limit"] == "4GB"
        want = segment_volume(scans[k], model=clf, align_to=None if k == 0 else scans[0],
                              resolution=False, progress=False)
        _same_labels(want, got)
        assert got.alignment_shift == want.alignment_shift


def test_labels_keep_the_note_of_chunks_read_as_the_fill_value(scan, tmp_path):
    """A Zarr store with one chunk lost: the reader notes it, and the labels made from it,
    in memory and block by block, carry that note (missing data never passes unmarked)."""
    import shutil

    import zarr

    from anodetwin.segment.pipeline import segment_to_file, segment_volume, write_labels

    p = tmp_path / "t.zarr"
    z = zarr.create_array(store=str(p), shape=scan["volume"].shape,
                          dtype=scan["volume"].dtype, chunks=(32, 32, 32), zarr_format=2,
                          attributes={"element_size_um": [VS] * 3})
    z[...] = scan["volume"]
    shutil.rmtree(p / "1") if (p / "1").is_dir() else (p / "1.1.1").unlink()
    seg = segment_volume(str(p), resolution=False)
    write_labels(tmp_path / "mem.h5", seg)
    segment_to_file(str(p), tmp_path / "blk.h5", resolution=False, memory_limit="1GB")
    for name in ("mem.h5", "blk.h5"):
        with h5py.File(tmp_path / name) as f:
            note = f.attrs.get("missing_chunks_note", "")
        assert "1 of" in note and "fill value" in note, (name, note)
    seg = segment_volume(scan["volume"], voxel_size_um=VS, resolution=False)
    write_labels(tmp_path / "intact.h5", seg)
    with h5py.File(tmp_path / "intact.h5") as f:
        assert "missing_chunks_note" not in f.attrs

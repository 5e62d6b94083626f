"""Bad input: exit code 2, one line naming the input and the fix, no partial output."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

import anodetwin.io.volume as volmod
from anodetwin.errors import (
    AnodetwinError,
    CorruptFileError,
    DatasetNotFoundError,
    DimensionError,
    InputNotFoundError,
    NonFiniteError,
    ShapeMismatchError,
    SidecarError,
    UnknownFormatError,
)
from anodetwin.io import Volume, read_volume, write_volume
from conftest import listing, run_cli_process


def _check_user_error(res, *names):
    assert res.code == 2, (res.out, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert lines[0].startswith("anodetwin: error: ")
    assert "Traceback" not in res.err
    assert ";" in lines[0], "the message must say how to fix it"
    for n in names:
        assert n in lines[0], (n, lines[0])


def _good_tif(path, shape=(6, 8, 9)):
    data = (np.arange(np.prod(shape)) % 60000).reshape(shape).astype(np.uint16)
    write_volume(path, Volume(data, 0.05))
    return data


# each case: (name, builder(tmp) -> input argument, expected exception type)
def _missing(tmp):
    return str(tmp / "nope.tif")


def _truncated_tif(tmp):
    p = tmp / "trunc.tif"
    _good_tif(p)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return str(p)


def _truncated_compressed_tif(tmp):
    p = tmp / "truncz.tif"
    data = np.random.default_rng(1).integers(0, 4000, (6, 64, 64), dtype=np.uint16)
    tifffile.imwrite(p, data, compression="zlib")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) * 2 // 3])
    return str(p)


def _garbage_tif(tmp):
    p = tmp / "garbage.tif"
    p.write_bytes(b"this is not a tiff file at all" * 10)
    return str(p)


def _two_d(tmp):
    p = tmp / "slice.tif"
    tifffile.imwrite(p, np.zeros((8, 9), np.uint16))
    return str(p)


def _four_d(tmp):
    p = tmp / "series.h5"
    with h5py.File(p, "w") as f:
        f["scans"] = np.zeros((2, 3, 4, 5), np.uint16)
    return str(p) + ":/scans"


def _four_d_npy(tmp):
    p = tmp / "four.npy"
    np.save(p, np.zeros((2, 3, 4, 5), np.float32))
    return str(p)


def _unknown_ext(tmp):
    p = tmp / "scan.xyz"
    p.write_bytes(b"\0" * 64)
    return str(p)


def _missing_dataset(tmp):
    p = tmp / "a.h5"
    write_volume(str(p) + ":/recon", np.zeros((2, 3, 4), np.uint8))
    return str(p) + ":/nope"


def _raw_size(tmp):
    p = tmp / "scan.raw"
    np.zeros((4, 5, 6), np.uint16).tofile(p)
    (tmp / "scan.raw.json").write_text(json.dumps({"shape": [4, 5, 7], "dtype": "uint16"}))
    return str(p)


def _raw_no_sidecar(tmp):
    p = tmp / "lonely.raw"
    np.zeros((4, 5, 6), np.uint16).tofile(p)
    return str(p)


def _nan(tmp):
    p = tmp / "nan.npy"
    a = np.ones((40, 30, 20), np.float32)
    a[-1, -1, -1] = np.nan  # in the last slab: writing has started when it is found
    np.save(p, a)
    return str(p)


def _inf(tmp):
    p = tmp / "inf.h5"
    a = np.ones((40, 30, 20), np.float64)
    a[20, 3, 4] = -np.inf
    write_volume(p, a)
    return str(p)


CASES = {
    "missing file": (_missing, InputNotFoundError),
    "truncated TIFF": (_truncated_tif, CorruptFileError),
    "truncated compressed TIFF": (_truncated_compressed_tif, CorruptFileError),
    "corrupt TIFF": (_garbage_tif, CorruptFileError),
    "2D input": (_two_d, DimensionError),
    "4D HDF5 input": (_four_d, DimensionError),
    "4D npy input": (_four_d_npy, DimensionError),
    "unknown extension": (_unknown_ext, UnknownFormatError),
    "HDF5 dataset missing": (_missing_dataset, DatasetNotFoundError),
    "raw size mismatch": (_raw_size, SidecarError),
    "raw without sidecar": (_raw_no_sidecar, SidecarError),
    "NaN in float volume": (_nan, NonFiniteError),
    "inf in float volume": (_inf, NonFiniteError),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("out", ["out.h5", "out.tif", "out.zarr", "out_slices/"])
def test_convert_bad_input(tmp_path, cli, monkeypatch, case, out):
    monkeypatch.setattr(volmod, "SLAB_BYTES", 4096)  # several slabs: fail mid-way
    builder, exc = CASES[case]
    inp = builder(tmp_path)
    before = listing(tmp_path)
    res = cli("convert", inp, f"{tmp_path}/{out}")
    name = inp.split(":")[0].rsplit("/", 1)[-1]
    _check_user_error(res, name)
    assert listing(tmp_path) == before, "a partial or temporary output was left behind"


@pytest.mark.parametrize("case", sorted(CASES))
def test_library_raises_typed_error(tmp_path, case):
    builder, exc = CASES[case]
    inp = builder(tmp_path)
    with pytest.raises(exc) as info:
        read_volume(inp, finite=True)
    assert isinstance(info.value, AnodetwinError)
    assert "\n" not in str(info.value)


def test_shape_mismatch(tmp_path, cli):
    _good_tif(tmp_path / "a.tif", (6, 8, 9))
    _good_tif(tmp_path / "b.tif", (6, 8, 10))
    before = listing(tmp_path)
    res = cli("noise-floor", tmp_path / "a.tif", tmp_path / "b.tif", "--out", tmp_path / "d.h5")
    _check_user_error(res, "a.tif", "b.tif", "(6, 8, 9)", "(6, 8, 10)")
    assert listing(tmp_path) == before
    with pytest.raises(ShapeMismatchError):
        volmod.require_same_shape((1, 2, 3), (1, 2, 4), "a", "b")


def test_failed_overwrite_keeps_previous_output(tmp_path, cli):
    good = _good_tif(tmp_path / "good.tif")
    cli("convert", tmp_path / "good.tif", tmp_path / "out.h5")
    inp = _nan(tmp_path)
    res = cli("convert", inp, tmp_path / "out.h5")
    assert res.code == 2
    np.testing.assert_array_equal(read_volume(tmp_path / "out.h5").data, good)


def test_unknown_output_format(tmp_path, cli):
    _good_tif(tmp_path / "a.tif")
    res = cli("convert", tmp_path / "a.tif", tmp_path / "a.docx")
    _check_user_error(res, "a.docx")


def test_output_folder_missing(tmp_path, cli):
    _good_tif(tmp_path / "a.tif")
    res = cli("convert", tmp_path / "a.tif", tmp_path / "no" / "such" / "b.h5")
    _check_user_error(res, "no/such")


def test_nonfinite_allowed_when_asked(tmp_path, cli):
    inp = _nan(tmp_path)
    res = cli("convert", inp, tmp_path / "ok.h5", "--allow-nonfinite")
    assert res.code == 0, res.err
    assert np.isnan(read_volume(tmp_path / "ok.h5").data).sum() == 1


def test_real_process_exit_code_and_no_traceback(tmp_path):
    """The installed executable, not just main(): status 2, one line, no traceback."""
    inp = _truncated_tif(tmp_path)
    res = run_cli_process("convert", inp, tmp_path / "o.h5")
    _check_user_error(res, "trunc.tif")
    assert not (tmp_path / "o.h5").exists()


def test_verbose_shows_traceback(tmp_path, cli):
    res = cli("--verbose", "convert", tmp_path / "missing.tif", tmp_path / "o.h5")
    assert res.code == 2
    assert "Traceback" in res.err
    assert res.err.strip().splitlines()[-1].startswith("anodetwin: error: ")


# -- what a new user ran into: grids, outputs, sizes and workers named as given ---------------

def test_dvc_residual_voxel_size_states_the_grid_of_every_input(tmp_path, cli):
    """A deformed scan whose file records another voxel size (a TIFF resolution tag read
    as 5080 um) is refused naming both files, and accepted with --voxel-size, in memory
    and block by block; the map carries the given voxel size."""
    from anodetwin.dvc.pair import write_pair
    from test_dvc_regions import field_result

    rng = np.random.default_rng(4)
    ref = rng.integers(0, 60000, (40, 40, 40)).astype(np.uint16)
    write_volume(tmp_path / "ref.h5", Volume(ref, 0.2))
    write_volume(tmp_path / "def.tif", Volume(ref, 5080.0))
    write_pair(tmp_path / "pair.h5", field_result(lambda n: np.zeros_like(n, float),
                                                  shape=ref.shape, spacing=10, vs=0.2))
    args = ("dvc-residual", tmp_path / "ref.h5", tmp_path / "def.tif", tmp_path / "pair.h5",
            "--floor", "400")
    res = cli(*args, "--out", tmp_path / "bad.h5")
    _check_user_error(res, "ref.h5'", "def.tif'", "5080 um", "--voxel-size")
    for k, extra in enumerate(([], ["--memory-limit", "64MB", "--workers", "2"])):
        out = tmp_path / f"r{k}.h5"
        res = cli(*args, "--voxel-size", "0.2", "--out", out, *extra)
        assert res.code == 0, res.err
        r = read_volume(f"{out}:/residual")
        assert r.voxel_size_um == (0.2, 0.2, 0.2) and r.data.max() == 0  # no motion
    assert not (tmp_path / "bad.h5").exists()


def test_a_volume_thinner_than_three_voxels_is_not_segmented(tmp_path, cli):
    data = np.random.default_rng(0).integers(0, 60000, (1, 80, 80)).astype(np.uint16)
    write_volume(tmp_path / "single.h5", Volume(data, 0.5))
    for extra in ([], ["--memory-limit", "200MB"]):
        res = cli("segment", tmp_path / "single.h5", "--out", tmp_path / "s.h5", *extra)
        _check_user_error(res, "single.h5'", "1 voxel along z")
        assert not (tmp_path / "s.h5").exists()


def test_workers_zero_means_all_cores_on_every_command():
    """``--workers 0`` is all cores, as ``[resources] workers = 0``; negative is refused."""
    import os

    from anodetwin.cli import build_parser

    p = build_parser()
    cores = len(os.sched_getaffinity(0))
    for cmd in (["noise-floor", "a", "b"], ["dvc-residual", "a", "b", "c", "--out", "o.h5"],
                ["segment", "a", "--out", "o.h5"], ["morphology", "a", "--out", "o"]):
        assert p.parse_args([*cmd, "--workers", "0"]).workers == cores, cmd
        assert p.parse_args([*cmd, "--workers", "3"]).workers == 3, cmd
    # the study's own all-cores choice (cores // ranks per case) is its default, None
    assert p.parse_args(["study", "s.toml", "--out", "o", "--workers", "0"]).workers is None
    with pytest.raises(SystemExit):
        p.parse_args(["noise-floor", "a", "b", "--workers", "-1"])


def test_memory_limit_message_counts_workers_and_names_the_run_keys():
    from anodetwin.errors import ParameterError
    from anodetwin.io.blocks import block_shape_for
    from anodetwin.pipeline.runner import run_wording

    with pytest.raises(ParameterError) as one:
        block_shape_for((500, 500, 500), 200, 36, "200MB", 1)
    assert "on 1 worker;" in str(one.value) and "--workers" not in str(one.value)
    with pytest.raises(ParameterError) as two:
        block_shape_for((500, 500, 500), 200, 36, "200MB", 2)
    assert "on 2 workers;" in str(two.value)
    msg = str(run_wording(two.value))
    assert "[resources] memory_limit" in msg and "[resources] workers" in msg
    assert "--" not in msg
    from anodetwin.errors import GridMismatchError
    from anodetwin.io.agree import require_same_grid

    with pytest.raises(GridMismatchError) as grid:
        require_same_grid(Volume(np.zeros((4, 4, 4)), 0.2), Volume(np.zeros((4, 4, 4)), 0.4),
                          "scan T0 'a.h5'", "scan T1 'b.h5'")
    msg = str(run_wording(grid.value))
    assert "[scans] voxel_size_um" in msg and "--voxel-size" not in msg
    assert "library" not in msg


def test_run_check_refuses_a_memory_limit_no_block_fits(tmp_path, cli):
    """``run --check`` asks each image stage's block sizing: 64MB on 2 workers leaves
    0.65 * 64e6 / 2 / 64 bytes = a 68^3 box (325 000 voxels) for the phase segmentation,
    less its 28-voxel halo on both sides: 12 voxels, under the 16 of a block, and the
    30 x 120 x 120 scans (432 000 voxels) do not fit whole. Refused naming the key."""
    from anodetwin.segment.phases import _si_halo

    assert _si_halo(2.0, 3, 8) == 28
    rng = np.random.default_rng(1)
    for k in range(3):
        write_volume(tmp_path / f"t{k}.h5",
                     Volume(rng.integers(0, 60000, (30, 120, 120)).astype(np.uint16), 0.5))
    text = ('[scans]\nfiles = ["t0.h5", "t1.h5", "t2.h5"]\n[cell]\nmodel = "quick_cell"\n'
            '[dvc]\nnode_spacing = 8\nhws = 8\n[resources]\n')
    (tmp_path / "ok.toml").write_text(text + 'memory_limit = "200MB"\nworkers = 1\n')
    res = cli("run", tmp_path / "ok.toml", "--check")
    assert res.code == 0, res.err
    (tmp_path / "bad.toml").write_text(text + 'memory_limit = "64MB"\nworkers = 2\n')
    res = cli("run", tmp_path / "bad.toml", "--check")
    _check_user_error(res, "[resources] memory_limit = '64MB'", "segment (phases)",
                      "2 workers", "[resources] workers")


# -- outputs that would replace a folder, a file or an earlier result ------------------------

def _folder_with_input(tmp):
    v = tmp / "v"
    v.mkdir()
    _good_tif(tmp / "a.tif")
    write_volume(v / "SOME.h5", read_volume(tmp / "a.tif"))
    (v / "other.txt").write_text("x\n")
    return v


@pytest.mark.parametrize("out", [["v/"], ["v"], ["v", "--format", "tiff-dir"],
                                 ["v", "--format", "zarr"]])
def test_convert_never_replaces_a_folder_holding_its_input_or_other_files(tmp_path, cli, out):
    """``convert v/SOME.h5 v/`` used to replace the folder, input included, by slices."""
    v = _folder_with_input(tmp_path)
    before = listing(tmp_path)
    res = cli("convert", v / "SOME.h5", f"{tmp_path}/{out[0]}", *out[1:])
    _check_user_error(res, f"'{v}'", "SOME.h5", "destroy the input")
    res = cli("convert", tmp_path / "a.tif", f"{tmp_path}/{out[0]}", *out[1:])
    _check_user_error(res, f"output '{v}' is an existing folder holding other files",
                      "give a new path or remove it")
    assert listing(tmp_path) == before
    assert (v / "other.txt").read_text() == "x\n"


def test_noise_floor_out_never_replaces_a_folder(tmp_path, cli):
    v = _folder_with_input(tmp_path)
    write_volume(v / "B.h5", read_volume(tmp_path / "a.tif"))
    before = listing(tmp_path)
    res = cli("noise-floor", v / "SOME.h5", v / "B.h5", "--out", v)
    _check_user_error(res, "v'", "SOME.h5")
    assert listing(tmp_path) == before


def _labels(tmp, n):
    """n label files T0..T<n-1> of a tiny electrode (a copper foil, one Si particle)."""
    from anodetwin.segment.particles import particle_table
    from anodetwin.segment.pipeline import Segmentation, write_labels

    ph = np.ones((6, 5, 5), np.uint8)
    ph[0] = 4
    ph[2:4, 1:3, 1:3] = 2
    pa = (ph == 2).astype(np.int32)
    col = np.full((5, 5), 0.5)
    seg = Segmentation(ph, pa, particle_table(pa, (0.2,) * 3, col), col,
                       np.full((5, 5), 4.5), (0.2,) * 3, collector_face="low")
    for k in range(n):
        write_labels(tmp / f"T{k}.h5", seg)
    return [tmp / f"T{k}.h5" for k in range(n)]


def test_morphology_checks_its_output_before_any_work(tmp_path, cli, monkeypatch):
    """An existing file as --out (even one of its inputs) is refused before the series is
    measured: exit 2 and one line, not a traceback after all the work."""
    import anodetwin.segment.morphology as morph

    labels = _labels(tmp_path, 2)
    (tmp_path / "X").write_text("keep")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "mine.txt").write_text("keep")

    def no_work(*a, **kw):
        raise AssertionError("the series was measured before the output was checked")

    monkeypatch.setattr(morph, "series_morphology", no_work)
    before = listing(tmp_path)
    for out, words in ((tmp_path / "X", ("X'", "is an existing file, not a folder")),
                       (labels[1], ("T1.h5'", "destroy the input")),
                       (tmp_path / "mixed", ("mixed'", "holding other files"))):
        res = cli("morphology", *labels, "--out", out, "--prior", "none")
        _check_user_error(res, *words)
    assert listing(tmp_path) == before


def test_morphology_rewrites_its_folder_whole(tmp_path, cli):
    """T0-T2 then T0-T1 into the same folder: the second run's files only, no
    particles_T2.csv of the first."""
    labels = _labels(tmp_path, 3)
    out = tmp_path / "m"
    assert cli("morphology", *labels, "--out", out, "--prior", "none").code == 0
    assert (out / "particles_T2.csv").is_file()
    res = cli("morphology", *labels[:2], "--out", out, "--prior", "none")
    assert res.code == 0, res.err
    names = {p.name for p in out.iterdir()}
    assert {"particles_T0.csv", "particles_T1.csv", "morphology.csv", "summary.json",
            "thickness.h5"} <= names
    assert not any(n.startswith("particles_T2") for n in names), names
    assert len((out / "morphology.csv").read_text().strip().splitlines()) == 1 + 2
    assert not [p for p in listing(tmp_path) if p.startswith(".")]

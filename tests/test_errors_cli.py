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

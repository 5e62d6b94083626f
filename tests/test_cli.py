"""Command-line basics: help, version, verbosity, info, inspect, convert."""

from __future__ import annotations

import json

import numpy as np

import anodetwin
from anodetwin.io import Volume, read_volume, write_volume
from conftest import run_cli_process


def test_help_and_version(cli):
    res = cli("--help")
    assert res.code == 0
    for cmd in ("info", "convert", "inspect", "noise-floor", "demo"):
        assert cmd in res.out
    res = cli("--version")
    assert res.code == 0 and res.out.strip() == f"anodetwin {anodetwin.__version__}"


def test_no_command_prints_help(cli):
    res = cli()
    assert res.code == 2 and "usage" in res.out


def test_unknown_option_exits_2(cli):
    assert cli("convert", "--no-such-flag").code == 2


def test_info_json(cli):
    res = cli("info", "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["anodetwin"] == anodetwin.__version__
    assert info["fem"]["dolfinx"].startswith("0.11")
    assert info["fem"]["petsc"].count(".") == 2
    assert info["packages"]["spam"] and info["packages"]["gmsh"][0].isdigit()
    assert "MPICH" in info["mpi"]["library"] and info["mpi"]["size"] == 1
    assert info["threads"]["cpu_count"] >= 1


def test_info_table_process():
    res = run_cli_process("info")
    assert res.code == 0, res.err
    for key in ("dolfinx", "petsc", "spam", "gmsh", "numpy", "MPI library",
                "MPI communicator size", "thread"):
        assert key in res.out


def test_convert_roi_bin_and_inspect(tmp_path, cli):
    data = (np.arange(20 * 16 * 12) % 5000).reshape(20, 16, 12).astype(np.uint16)
    write_volume(tmp_path / "in.tif", Volume(data, 0.05))
    res = cli("convert", tmp_path / "in.tif", f"{tmp_path}/out.h5:/t0", "--roi", "2:18,:,4:",
              "--bin", "2")
    assert res.code == 0, res.err
    vol = read_volume(f"{tmp_path}/out.h5:/t0")
    assert vol.shape == (8, 8, 4) and vol.voxel_size_um == (0.1, 0.1, 0.1)
    prov = vol.attrs["provenance"]
    assert prov["command"] == "convert" and prov["parameters"]["binning"] == 2
    assert prov["inputs"][0]["hash"].startswith("blake2b:")
    res = cli("inspect", f"{tmp_path}/out.h5:/t0", "--json")
    rep = json.loads(res.out)
    assert rep["shape"] == [8, 8, 4] and rep["dtype"] == "uint16"
    assert rep["stats"]["min"] == float(vol.data.min())
    assert rep["stats"]["max"] == float(vol.data.max())
    assert abs(rep["stats"]["mean"] - vol.data.mean()) < 1e-9 * vol.data.mean()
    res = cli("inspect", tmp_path / "in.tif")
    assert res.code == 0 and "0.05 um" in res.out and "(20, 16, 12)" in res.out


def test_convert_voxel_size_override(tmp_path, cli):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 5), np.uint8))
    assert cli("convert", tmp_path / "a.npy", tmp_path / "b.tif", "--voxel-size", "0.05").code == 0
    assert read_volume(tmp_path / "b.tif").voxel_size_um == (0.05, 0.05, 0.05)


def test_quiet_prints_no_log(tmp_path, cli):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 5), np.uint8))
    res = cli("--quiet", "convert", tmp_path / "a.npy", tmp_path / "b.h5")
    assert res.code == 0 and res.err == ""


def subcommands() -> dict:
    """Name -> parser of every subcommand of ``anodetwin``."""
    import argparse

    from anodetwin.cli import build_parser

    return next(a for a in build_parser()._actions
                if isinstance(a, argparse._SubParsersAction)).choices


def test_every_subcommand_registered_once_by_its_stage_module():
    """Each stage module of the command-line package registers its own subcommands, and the
    top parser lists each subcommand exactly once: the main job first, then the stages in
    pipeline order."""
    sub = subcommands()
    names = list(sub)
    assert names == ["init", "run", "info", "convert", "inspect", "noise-floor", "dvc", "dvc-series",
                     "dvc-regions", "dvc-residual", "segment", "segment-train", "morphology",
                     "mesh", "mesh-packing", "simulate", "study", "study-case", "validate",
                     "phantom", "demo"]
    owner = {name: p.get_default("func").__module__ for name, p in sub.items()}
    assert owner["dvc-residual"] == "anodetwin.cli.dvc"
    assert owner["convert"] == owner["inspect"] == "anodetwin.cli.io"
    assert owner["mesh-packing"] == "anodetwin.cli.mesh"
    assert owner["init"] == owner["run"] == "anodetwin.cli.run"


def test_format_choices_are_the_io_registry(cli):
    """``convert --format`` offers exactly the formats the I/O layer reads and writes."""
    from anodetwin.io.formats import FORMATS, HDF5_COMPRESSIONS

    opts = {a.dest: a for a in subcommands()["convert"]._actions}
    assert tuple(opts["format"].choices) == FORMATS
    assert set(FORMATS) == {"tiff", "tiff-dir", "hdf5", "zarr", "npy", "raw"}
    assert tuple(opts["compression"].choices) == HDF5_COMPRESSIONS
    res = cli("convert", "a.tif", "b.h5", "--format", "png")
    assert res.code == 2 and "invalid choice" in res.err


def test_normalise_choices_are_the_library_ones():
    """``segment --normalise`` offers every normalisation of the library (and the American
    spelling it also accepts), nothing else."""
    from anodetwin.segment.preprocess import NORMALISATIONS

    opts = {a.dest: a for a in subcommands()["segment"]._actions}
    assert set(opts["normalise"].choices) == {*NORMALISATIONS, "equalize"}


def test_dvc_pair_and_series_share_one_set_of_correlation_options():
    """``dvc`` and ``dvc-series`` take the same correlation options, each declared once."""
    sub = subcommands()

    def options(cmd):
        flags = [s for a in sub[cmd]._actions for s in a.option_strings]
        assert len(flags) == len(set(flags)), cmd  # no option twice
        return set(flags)

    shared = {"--node-spacing", "--hws", "--pyramid", "--search-range", "--processes",
              "--scheduler", "--voxel-size"}
    assert shared <= options("dvc") and shared <= options("dvc-series")


def test_residual_map_layout_written_by_the_library(tmp_path):
    """The residual HDF5 layout: written by ``anodetwin.dvc.residual.write_residual_map``."""
    import h5py

    from anodetwin.dvc.residual import RESIDUAL_TABLE, ResidualMap, write_residual_map

    res = np.zeros((2, 3, 4), np.float32)
    res[1, 2, 3] = 7000.0
    rmap = ResidualMap(res, 5000.0, 2.0, np.zeros((3, 2, 3, 4)))
    table = np.zeros(2, RESIDUAL_TABLE)
    table["id"] = [3, 8]
    out = write_residual_map(tmp_path / "r.h5", rmap, (0.4, 0.2, 0.2), {"tool": "t"},
                             particles=table)
    assert out == tmp_path / "r.h5"
    with h5py.File(out) as f:
        assert f.attrs["format"] == "anodetwin-dvc-residual" and f.attrs["format_version"] == 1
        assert f.attrs["floor"] == 5000.0 and f.attrs["sigma_voxels"] == 2.0
        assert json.loads(f.attrs["provenance"]) == {"tool": "t"}
        assert f["residual"].dtype == np.float32 and f["residual"][1, 2, 3] == 7000.0
        assert f["residual"][...].sum() == 7000.0
        assert list(f["residual"].attrs["element_size_um"]) == [0.4, 0.2, 0.2]
        assert list(f["particles"]["id"]) == [3, 8]
    write_residual_map(tmp_path / "bare.h5", rmap)  # no voxel size, no particles
    with h5py.File(tmp_path / "bare.h5") as f:
        assert "element_size_um" not in f["residual"].attrs and "particles" not in f
        assert json.loads(f.attrs["provenance"])["tool"] == "anodetwin"

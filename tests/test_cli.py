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
    assert vol.shape == (8, 8, 4) and vol.voxel_size == (0.1, 0.1, 0.1)
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
    assert read_volume(tmp_path / "b.tif").voxel_size == (0.05, 0.05, 0.05)


def test_quiet_prints_no_log(tmp_path, cli):
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 5), np.uint8))
    res = cli("--quiet", "convert", tmp_path / "a.npy", tmp_path / "b.h5")
    assert res.code == 0 and res.err == ""

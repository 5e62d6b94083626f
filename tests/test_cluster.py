"""Connecting to Dask: a scheduler address that is malformed or answers nowhere is a
one-line ParameterError naming it (and exit 2 on the command line), never a traceback."""

from __future__ import annotations

import socket

import pytest

from anodetwin.cluster import dask_client
from anodetwin.errors import ParameterError


def _closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["notanaddress", "tcp://127.0.0.1", "tcp://:x"])
def test_malformed_scheduler_address(address):
    with pytest.raises(ParameterError, match=f"--scheduler '{address}'.*tcp://host:8786"):
        dask_client(address)


def test_unreachable_scheduler_address():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(ParameterError, match="no Dask scheduler could be reached"):
        dask_client(address)


def test_phantom_seed_out_of_range_leaves_nothing(tmp_path, capsys):
    from anodetwin.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", str(out), "--seed", str(10**23)]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "Traceback" not in err
    assert not out.exists()


def test_failed_phantom_leaves_no_folder(tmp_path, monkeypatch):
    import anodetwin.phantom.report as report
    from anodetwin.phantom import load_config

    def fail(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "generate_series", fail)
    out = tmp_path / "ph"
    with pytest.raises(RuntimeError):
        report.write_phantom(load_config(None, seed=1), out)
    assert not out.exists()
    out.mkdir()  # a folder the user made stays
    with pytest.raises(RuntimeError):
        report.write_phantom(load_config(None, seed=1), out)
    assert out.is_dir()


def test_dvc_with_a_bad_scheduler_exits_2(tmp_path, capsys):
    import numpy as np

    from anodetwin.cli import main
    from anodetwin.io import write_volume

    vol = (np.random.default_rng(0).random((40, 40, 40)) * 60000).astype(np.uint16)
    for name in ("a.h5", "b.h5"):
        write_volume(tmp_path / name, vol, voxel_size=1.0)
    rc = main(["dvc", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out",
               str(tmp_path / "o.h5"), "--node-spacing", "10", "--no-global",
               "--scheduler", "notanaddress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--scheduler 'notanaddress'" in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()

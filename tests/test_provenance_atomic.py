"""Provenance records and atomic writes."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import anodetwin.io.provenance as provmod
from anodetwin.errors import OutputError
from anodetwin.io import atomic_path, atomic_write_json, content_hash, make_provenance
from conftest import listing


def test_content_hash_tracks_content(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 1000)
    h1 = content_hash(a)
    assert h1.startswith("blake2b:") and h1 == content_hash(a)
    a.write_bytes(b"x" * 999 + b"y")
    assert content_hash(a) != h1


def test_folder_hash_includes_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "one").write_bytes(b"1")
    h = content_hash(d)
    (d / "one").rename(d / "two")
    assert content_hash(d) != h


def test_sampled_hash_for_large_files(tmp_path, monkeypatch):
    monkeypatch.setattr(provmod, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(provmod, "_BLOCK", 64)
    a = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 255, 100_000, dtype=np.uint8))
    a.write_bytes(bytes(data))
    h = content_hash(a)
    assert h.startswith("blake2b-sampled:")
    assert content_hash(a, full=True).startswith("blake2b:")
    data[0] ^= 1  # a change in a sampled block
    a.write_bytes(bytes(data))
    assert content_hash(a) != h


def test_make_provenance(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("hello")
    p = make_provenance("test", [f], {"k": 1})
    assert p["tool"] == "anodetwin" and p["command"] == "test"
    assert p["inputs"][0]["path"] == str(f.resolve()) and p["inputs"][0]["bytes"] == 5
    assert p["parameters"] == {"k": 1} and p["created"].endswith("+00:00")


def test_atomic_path_failure_leaves_old_content(tmp_path):
    out = tmp_path / "result.json"
    atomic_write_json(out, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert out.read_text().strip().startswith("{") and '"v": 1' in out.read_text()
    assert listing(tmp_path) == {"result.json"}


def test_atomic_directory(tmp_path):
    out = tmp_path / "store"
    with atomic_path(out, directory=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_path(out, directory=True, kind=re.compile("[ab]")) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError("boom")
    assert listing(tmp_path) == {"store", "store/a"}


def test_no_overwrite(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("keep")
    with pytest.raises(OutputError):
        with atomic_path(out, overwrite=False):
            pass
    assert out.read_text() == "keep"


def test_outputs_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        with atomic_path(tmp_path / "d", directory=True):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


# -- folder outputs, stale temporaries, signals -------------------------------------------------

def test_a_folder_output_replaces_only_a_folder_of_the_same_kind(tmp_path):
    """An existing folder is replaced only when it is empty or the same kind of output
    (a Zarr store, a folder of TIFF slices); one holding anything else is refused and kept
    whole, as is a file where a folder goes and a folder where a file goes."""
    from anodetwin.io import read_volume, write_volume

    a = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    b = a[:3] + 1
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("keep")
    (mixed / "slice_00000.tif").write_text("not mine")
    for path, fmt in ((f"{mixed}/", None), (mixed, None), (mixed, "tiff-dir"), (mixed, "zarr")):
        with pytest.raises(OutputError, match="existing folder holding other files"):
            write_volume(path, a, fmt=fmt)
    assert listing(tmp_path) == {"mixed", "mixed/notes.txt", "mixed/slice_00000.tif"}
    # the same kind: replaced whole (4 slices, then the 3 of the new volume, none left over)
    for out in (f"{tmp_path}/slices/", f"{tmp_path}/s.zarr"):
        write_volume(out, a)
        write_volume(out, b)
        np.testing.assert_array_equal(read_volume(out.rstrip("/")).data, b)
    assert sorted(p.name for p in (tmp_path / "slices").iterdir()) == \
        [f"slice_{k:05d}.tif" for k in range(3)]
    (tmp_path / "empty").mkdir()
    write_volume(tmp_path / "empty", a)  # an empty folder: slices written into its place
    assert len(list((tmp_path / "empty").iterdir())) == 4
    with pytest.raises(OutputError, match="holding other files"):  # slices are not a store
        write_volume(tmp_path / "slices", a, fmt="zarr")
    (tmp_path / "f.zarr").write_text("a file")
    with pytest.raises(OutputError, match="existing file, not a folder"):
        write_volume(tmp_path / "f.zarr", a)
    with pytest.raises(OutputError, match="is a folder"):
        write_volume(tmp_path / "mixed", a, fmt="hdf5")
    assert (tmp_path / "f.zarr").read_text() == "a file"
    assert not [p for p in listing(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_an_output_never_overlaps_an_input(tmp_path):
    """The output may not be an input, hold an input (a folder output around it), or lie
    inside an input folder (a Zarr store, a folder of slices); a sibling is fine."""
    from anodetwin.io import check_output_path, write_volume

    v = tmp_path / "v"
    v.mkdir()
    write_volume(v / "scan.h5:/data", np.zeros((2, 3, 4), np.uint8))
    write_volume(tmp_path / "in.zarr", np.zeros((2, 3, 4), np.uint8))
    write_volume(f"{tmp_path}/in_slices/", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(OutputError, match="holds the input"):
        check_output_path(v, inputs=[f"{v}/scan.h5:/data"])
    with pytest.raises(OutputError, match="holds the input"):
        check_output_path(tmp_path, inputs=[f"{v}/scan.h5:/data"])
    for inp in (f"{tmp_path}/in.zarr:/", tmp_path / "in_slices"):
        with pytest.raises(OutputError, match="lies inside the input"):
            check_output_path(f"{inp}".split(":")[0] + "/out.h5", inputs=[inp])
        with pytest.raises(OutputError, match="destroy the input"):
            check_output_path(f"{inp}".split(":")[0], inputs=[inp])
    assert check_output_path(tmp_path / "out.h5", inputs=[f"{v}/scan.h5:/data",
                                                           tmp_path / "in_slices"])
    # write_volume protects the inputs its provenance names, before writing anything
    prov = make_provenance("test", [v / "scan.h5"])
    with pytest.raises(OutputError, match="holds the input"):
        write_volume(f"{v}/", np.ones((2, 3, 4), np.uint8), provenance=prov)
    assert sorted(p.name for p in v.iterdir()) == ["scan.h5"]


def test_a_write_removes_the_temporaries_a_killed_write_left(tmp_path):
    """A killed process (SIGKILL) cannot clean up; the next write of the same output
    removes the temporaries of that output, and only those."""
    from anodetwin.io import write_volume

    stale = [tmp_path / ".L3.h5.tmp-ab12cd34.h5", tmp_path / ".L3.h5.tmp-x_9k2mzq.h5"]
    for p in stale:
        p.write_bytes(b"partial")
    store = tmp_path / ".out.zarr.tmp-qwer5678"
    (store / "c" / "0").mkdir(parents=True)
    (store / "c" / "0" / "0").write_bytes(b"chunk")
    (tmp_path / ".out.zarr.old-zxcv0987").mkdir()
    others = {".L3.h5x.tmp-ab12cd34.h5", ".other.h5.tmp-ab12cd34.h5", "L3.h5.tmp-ab12cd34.h5",
              ".L3.h5.tmp-notours"}
    for name in others:
        (tmp_path / name).write_bytes(b"someone else's")
    write_volume(tmp_path / "L3.h5", np.zeros((2, 3, 4), np.uint8))
    write_volume(tmp_path / "out.zarr", np.zeros((2, 3, 4), np.uint8))
    hidden = {p for p in listing(tmp_path) if p.startswith(".")}
    assert hidden == others - {"L3.h5.tmp-ab12cd34.h5"}


class _Stop(BaseException):
    """What the command line raises on SIGTERM."""


@pytest.fixture
def sigterm_raises():
    import signal

    def stop(signum, frame):
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_right_after_the_temporary_is_made_removes_it(tmp_path, monkeypatch,
                                                               sigterm_raises):
    """A signal that arrives between creating the temporary and registering it for
    removal (here: the moment it was created) still removes it."""
    import signal

    real_open, real_mkdir = os.open, os.mkdir

    def then_sigterm(real):
        def make(path, *args, **kw):
            out = real(path, *args, **kw)
            if ".tmp-" in os.fspath(path):
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        return make

    monkeypatch.setattr(os, "open", then_sigterm(real_open))
    monkeypatch.setattr(os, "mkdir", then_sigterm(real_mkdir))
    for directory in (False, True):
        with pytest.raises(_Stop):
            with atomic_path(tmp_path / "out", directory=directory):
                pass
        assert listing(tmp_path) == set()


def test_sigterm_between_the_renames_of_a_folder_keeps_an_output(tmp_path, monkeypatch,
                                                                  sigterm_raises):
    """Replacing a folder takes two renames (old aside, new in place); a signal between
    them must not leave the path empty: it is held back until both are done."""
    import signal

    from anodetwin.io import read_volume, write_volume

    write_volume(tmp_path / "s.zarr", np.zeros((2, 3, 4), np.uint8))
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if ".old-" in os.fspath(dst):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Stop):
        write_volume(tmp_path / "s.zarr", np.ones((2, 3, 4), np.uint8))
    monkeypatch.undo()
    assert read_volume(tmp_path / "s.zarr").data.min() == 1  # the new one, complete
    assert not [p for p in listing(tmp_path) if p.startswith(".")]


def test_signals_deferred_delivers_the_signal_at_the_end(sigterm_raises):
    import signal

    from anodetwin.io.atomic import signals_deferred

    done = []
    with pytest.raises(_Stop):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGTERM).__name__ == "stop"  # the handler is back


def test_sigterm_during_convert_leaves_no_temporary(tmp_path):
    """SIGTERM sent to ``anodetwin convert`` at several moments of writing a Zarr store
    (whose chunks another thread writes) or a folder of slices: exit 143 or a complete
    output, never a temporary left behind."""
    import signal
    import subprocess
    import time

    from anodetwin.io import read_volume, write_volume
    from conftest import BIN

    data = np.random.default_rng(0).integers(0, 60000, (40, 256, 256), dtype=np.uint16)
    write_volume(tmp_path / "in.h5", data)  # 5 MiB
    tries = [(".zarr", 0.0), (".zarr", 0.02), (".zarr", 0.06), ("_slices/", 0.01),
             (".zarr", 0.12)]
    for k, (ext, delay) in enumerate(tries):
        out = f"{tmp_path}/o{k}{ext}"
        proc = subprocess.Popen([str(BIN / "anodetwin"), "-q", "convert", str(tmp_path / "in.h5"),
                                 out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while not any(p.name.startswith(f".o{k}") for p in tmp_path.iterdir()) \
                and proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.002)  # until the temporary exists: the write has begun
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 143, -signal.SIGTERM), err
        left = [p for p in listing(tmp_path) if p.startswith(".")]
        assert not left, (ext, delay, proc.returncode, left)
        if os.path.exists(out):  # finished before the signal: complete
            np.testing.assert_array_equal(read_volume(out).data, data)

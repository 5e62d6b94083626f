"""Provenance records and atomic writes."""

from __future__ import annotations

import os

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
        with atomic_path(out, directory=True) as tmp:
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

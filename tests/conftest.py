"""Shared fixtures: command-line runners and test volumes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from anodetwin.cli import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``anodetwin ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def run_cli_process(*args: str, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run the installed ``anodetwin`` executable in a subprocess."""
    exe = BIN / "anodetwin"
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "COLUMNS": "120"})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)


def random_volume(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Random values covering the dtype's range (floats: normal with sign and scale)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def listing(folder: Path) -> set[str]:
    """All paths below ``folder`` (relative), hidden temporaries included."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def one_line_error(res, *words) -> str:
    """Assert a CLI result is a user error: exit 2, one ``anodetwin: error:`` line holding
    every one of ``words``, no traceback; returns that line."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("anodetwin: error:"), res.err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def swap_sensitive_values(shape, dtype, seed: int = 7) -> np.ndarray:
    """Values whose byte-swapped reading differs from the right one (no palindromic bytes)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -30000), min(info.max, 60000), size=shape,
                            dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1e3 + 0.25).astype(dtype)



def two_particle_labels(pore_corner: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Phases and particle ids (8, 6, 6) (z, y, x) of a tiny electrode for simulation tests:
    copper foil, CBD, two Si particles and, with ``pore_corner``, a pore corner at the top."""
    from anodetwin.phases import PHASE

    ph = np.full((8, 6, 6), PHASE["cbd"], np.uint8)
    ph[0] = PHASE["copper"]
    pa = np.zeros(ph.shape, np.int32)
    ph[2:5, 1:3, 1:3] = PHASE["si"]
    pa[2:5, 1:3, 1:3] = 1
    ph[3:6, 3:5, 2:5] = PHASE["si"]
    pa[3:6, 3:5, 2:5] = 2
    if pore_corner:
        ph[6:, 0:2, 4:] = PHASE["pore"]
    return ph, pa

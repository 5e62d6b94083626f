"""The two-command set-up: interpreter discovery and an idempotent install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIND = ROOT / "scripts" / "find-python.sh"


def test_find_python_gives_312_or_newer():
    proc = subprocess.run(["bash", str(FIND)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    exe = proc.stdout.strip()
    ver = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] >= (3, 12))"],
                         capture_output=True, text=True)
    assert ver.stdout.strip() == "True"


def test_find_python_clear_error_when_none(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "none")}
    # hide any python3.12/3.13 in /usr/bin behind a PATH holding only bash and coreutils
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "ls", "sort", "cat", "dirname"):
        src = Path("/bin") / tool if (Path("/bin") / tool).exists() else Path("/usr/bin") / tool
        os.symlink(src, bindir / tool)
    env["PATH"] = str(bindir)
    proc = subprocess.run([str(bindir / "bash"), str(FIND)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Python >= 3.12" in lines[0] and "install" in lines[0]


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs only from the project's own .venv")
def test_second_make_installs_nothing():
    proc = subprocess.run(["make", "-q", "-C", str(ROOT), ".venv/.anodetwin-installed"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "make would reinstall although nothing changed"

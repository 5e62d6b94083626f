"""Reading a 64 MiB region from a >= 1 GiB file keeps peak RSS under 300 MiB.

The volume is written slab by slab (never whole in memory); the read runs in a fresh
process whose peak resident set size (``VmHWM`` of /proc/self/status) is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from anodetwin.io import SlabVolume, write_volume

SHAPE = (512, 1024, 1024)  # uint16: exactly 1 GiB
ROI = "200:328,256:768,256:768"  # 128 x 512 x 512 uint16 = 64 MiB
LIMIT_MIB = 300


def _pattern(z0: int, z1: int) -> np.ndarray:
    """v[z, y, x] = (131 z + 7 y + x) mod 2**16 for planes z0 <= z < z1."""
    _, ny, nx = SHAPE
    plane = (7 * np.arange(ny, dtype=np.uint16)[:, None]
             + np.arange(nx, dtype=np.uint16)[None, :])
    z = np.arange(z0, z1, dtype=np.uint16)
    return (z[:, None, None] * np.uint16(131)) + plane[None]


CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from anodetwin.io import read_volume, parse_roi

    def hwm_mib():
        # peak resident set of this process image (VmHWM; unlike ru_maxrss it is not
        # inherited from the parent across fork + exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    path, roi = sys.argv[1], sys.argv[2]
    base = hwm_mib()
    vol = read_volume(path, roi=roi)
    peak = hwm_mib()
    r = parse_roi(roi)
    z, y, x = np.ogrid[r[0], r[1], r[2]]
    expected = ((131 * z + 7 * y + x) % 65536).astype(np.uint16)
    print(json.dumps({"equal": bool(np.array_equal(vol.data, expected)),
                      "nbytes": vol.data.nbytes, "shape": vol.shape,
                      "import_mib": base, "peak_mib": peak}))
""")


@pytest.mark.parametrize("target", ["big.tif", "big.h5:/volume", "big.raw", "big.zarr"])
def test_roi_of_1gib_file_peak_rss(tmp_path, target):
    path = f"{tmp_path}/{target}"
    written = write_volume(path, SlabVolume(SHAPE, np.uint16, _pattern, voxel_size_um=0.05))
    size = sum(p.stat().st_size for p in ([written] if written.is_file()
                                          else written.rglob("*")) if p.is_file())
    if not target.endswith(".zarr"):  # zarr compresses the pattern
        assert size >= 2**30
    proc = subprocess.run([sys.executable, "-c", CHILD, path, ROI], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["equal"]
    assert res["nbytes"] == 64 * 2**20
    print(f"{target}: file {size / 2**30:.2f} GiB, ROI 64 MiB, peak RSS {res['peak_mib']:.0f} "
          f"MiB (after imports {res['import_mib']:.0f} MiB)")
    assert res["peak_mib"] < LIMIT_MIB

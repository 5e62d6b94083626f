"""Strain components by name on anisotropic grids.

DESIGN.md section 2: arrays are indexed (z, y, x) = (0, 1, 2); a tensor component is named
by its two axis letters (entry (0, 1), z with y, is ``yz``; (0, 2) is ``xz``; (1, 2), y with
x, is ``xy``), six-component order zz, yy, xx, yz, xz, xy; gradients use the voxel size per
axis in um. For each of the nine entries of grad u, a linear displacement with only that
entry non-zero is built here from first principles (coordinates ``np.arange * spacing`` in
um, ``u_i = g X_j``) and every published strain measure is checked by name against values
computed from the hand-built F: in the DVC operator, the pair result's HDF5 and VTK files,
a real correlation of an affinely warped volume with anisotropic voxels (the CLI), the
phantom's truth (:func:`anodetwin.kinematics.strain_fields`) and the simulation's output on
the DVC grid (a DOLFINx field sampled by :mod:`anodetwin.simulate.run`).
"""

from __future__ import annotations

import h5py  # noqa: F401  (before dolfinx's HDF5)
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import itertools

import numpy as np
import pytest
import scipy.linalg
from mpi4py import MPI
from scipy import ndimage

from anodetwin.dvc.correlate import node_grid
from anodetwin.dvc.pair import PairResult, read_pair, write_pair, write_pair_vtk
from anodetwin.dvc.strain import COMPONENTS, cell_strain
from anodetwin.io import Volume, write_volume
from anodetwin.kinematics import inverse_coordinates, strain_fields

AXES = "zyx"  # array axis 0, 1, 2
LETTER = {"z": 0, "y": 1, "x": 2}
ORDER = ("zz", "yy", "xx", "yz", "xz", "xy")  # DESIGN.md: the six-component order
SPACING_UM = np.array([0.4, 0.2, 0.1])  # node spacing along z, y, x (um)
G = 0.03
ENTRIES = list(itertools.product(range(3), range(3)))


def name_of(i: int, j: int) -> str:
    """Component name of entry (i, j): its two axis letters in alphabetical order."""
    return "".join(sorted(AXES[i] + AXES[j]))


def entry_of(name: str) -> tuple[int, int]:
    return LETTER[name[0]], LETTER[name[1]]


def expected(i: int, j: int, g: float = G) -> dict:
    """Every strain measure of F = I + g e_i e_j^T, from the hand-built F (scipy's logm
    for Hencky, eigenvalues of the hand-built symmetric matrix for the principal strains)."""
    F = np.eye(3)
    F[i, j] += g
    eps = 0.5 * (F + F.T) - np.eye(3)
    C = F.T @ F
    E = 0.5 * (C - np.eye(3))
    H = 0.5 * scipy.linalg.logm(C).real
    dev = eps - np.trace(eps) / 3 * np.eye(3)
    out = {"volumetric": np.linalg.det(F) - 1, "deviatoric": np.sqrt((dev * dev).sum()),
           "principal": np.linalg.eigvalsh(eps), "hencky_volumetric": np.log(np.linalg.det(F))}
    for n in ORDER:
        a, b = entry_of(n)
        out[f"e{n}"], out[f"green_lagrange_{n}"], out[f"hencky_{n}"] = eps[a, b], E[a, b], H[a, b]
    # the hand-computed facts, stated plainly
    n = name_of(i, j)
    if i == j:
        assert out[f"e{n}"] == pytest.approx(g) and out["volumetric"] == pytest.approx(g)
        assert out[f"green_lagrange_{n}"] == pytest.approx(g + g * g / 2)
        assert out[f"hencky_{n}"] == pytest.approx(np.log(1 + g))
    else:
        assert out[f"e{n}"] == pytest.approx(g / 2) and out["volumetric"] == pytest.approx(0)
        assert out[f"green_lagrange_{n}"] == pytest.approx(g / 2)
        jj = name_of(j, j)  # simple shear stretches the column axis: E_jj = g^2 / 2
        assert out[f"green_lagrange_{jj}"] == pytest.approx(g * g / 2)
        np.testing.assert_allclose(out["principal"], [-g / 2, 0, g / 2], atol=1e-15)
    return out


def measures_of(s) -> dict:
    """The named measures of a CellStrain."""
    out = {"volumetric": s.volumetric, "deviatoric": s.deviatoric, "principal": s.principal,
           "hencky_volumetric": s.hencky_volumetric, **s.small}
    for k, n in enumerate(ORDER):
        out[f"hencky_{n}"] = s.hencky[..., k]
        out[f"green_lagrange_{n}"] = s.green_lagrange[..., k]
    return out


def measures_of_file(f) -> dict:
    """The named measures in a pair result's HDF5 file."""
    st = f["strain"]
    out = {k: st[k][...] for k in ("volumetric", "deviatoric", "principal", "hencky_volumetric")}
    for k, n in enumerate(ORDER):
        out[f"e{n}"] = st[f"e{n}"][...]
        out[f"hencky_{n}"] = st["hencky"][..., k]
        out[f"green_lagrange_{n}"] = st["green_lagrange"][..., k]
    return out


def assert_measures(got: dict, want: dict, atol: float = 1e-12, where: str = "") -> None:
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for k, v in want.items():
        a = np.asarray(got[k], float)
        if k == "principal":
            a = a.reshape(-1, 3)
        np.testing.assert_allclose(a, np.broadcast_to(v, a.shape), atol=atol,
                                   err_msg=f"{where}: {k}")


def node_coordinates(shape=(3, 4, 5), spacing=SPACING_UM) -> np.ndarray:
    """(gz, gy, gx, 3) node positions in um, (z, y, x) components."""
    return np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing,
                                                                    strict=True)),
                                indexing="ij"), axis=-1)


def linear_field(X: np.ndarray, i: int, j: int, g: float = G) -> np.ndarray:
    """u_i = g X_j, the other components zero (X: (..., 3) in um)."""
    u = np.zeros_like(X)
    u[..., i] = g * X[..., j]
    return u


def test_published_order_is_the_design_order():
    assert tuple(COMPONENTS) == ORDER


# -- (a) DVC -----------------------------------------------------------------------------------

@pytest.mark.parametrize("i, j", ENTRIES)
def test_cell_strain_names_every_gradient_entry(i, j):
    """The Q8 operator in um, and from voxels with an anisotropic voxel size."""
    X = node_coordinates()
    want = expected(i, j)
    assert_measures(measures_of(cell_strain(linear_field(X, i, j), SPACING_UM)), want,
                    where=f"um, d u_{AXES[i]} / d {AXES[j]}")
    # the same field measured in voxels of (0.2, 0.1, 0.025) um, nodes every (2, 2, 4)
    vs = np.array([0.2, 0.1, 0.025])
    ns = SPACING_UM / vs
    u_vox = linear_field(X, i, j) / vs
    assert_measures(measures_of(cell_strain(u_vox, ns, voxel_size_um=vs)), want,
                    where=f"voxels, d u_{AXES[i]} / d {AXES[j]}")


def pair_result(i: int, j: int, vs: np.ndarray, ns=(2, 2, 4), shape=(4, 5, 6)) -> PairResult:
    """A DVC pair result (voxels) of the field u_i = g X_j (um) on voxels ``vs``; its
    in-memory strain is the voxel-unit one (isotropic voxels assumed), which the writers must
    not trust: a file's strain is recomputed from its displacement in um."""
    n_nodes = np.prod(shape)
    nodes = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, ns, strict=True)),
                                 indexing="ij"), axis=-1).reshape(-1, 3).astype(float)
    u = linear_field(nodes * vs, i, j) / vs
    z = np.zeros(n_nodes)
    params = {"levels": [{"node_spacing": list(ns), "hws": list(ns)}]}
    return PairResult(nodes, shape, u, u, np.tile(np.eye(4), (n_nodes, 1, 1)), z + 2, z, z, z,
                      z, z.astype(np.uint8), cell_strain(u.reshape(*shape, 3), ns),
                      params, np.eye(4), np.zeros(3), vs)


@pytest.mark.parametrize("i, j", ENTRIES)
def test_pair_files_name_every_gradient_entry(tmp_path, i, j):
    """The pair result's HDF5 (written and read back) and VTK files carry each component
    under its name, the strain in um over um."""
    import pyvista as pv

    vs = np.array([0.2, 0.1, 0.025])
    res = pair_result(i, j, vs)
    want = expected(i, j)
    write_pair(tmp_path / "p.h5", res)
    with h5py.File(tmp_path / "p.h5") as f:
        assert_measures(measures_of_file(f), want, where="HDF5")
        assert f["strain"].attrs["length_unit"] == "um"
        assert f["strain"].attrs["components"] == " ".join(ORDER)
    assert_measures(measures_of(read_pair(tmp_path / "p.h5").strain), want, where="read back")
    write_pair_vtk(tmp_path / "p.vti", res)
    img = pv.read(tmp_path / "p.vti")
    vtk = {k: img.cell_data[k] for k in img.cell_data.keys()}
    assert_measures(vtk, {k: v for k, v in want.items() if k != "principal"}, where="VTK")


@pytest.mark.parametrize("i, j", [(2, 0), (0, 1), (1, 2)])
def test_vtk_strain_is_in_the_unit_of_its_displacement(tmp_path, i, j):
    """The strain in the VTK file is the gradient of the displacement stored beside it, over
    the point coordinates stored there (all in um), for anisotropic voxels."""
    import pyvista as pv

    res = pair_result(i, j, np.array([0.4, 0.2, 0.2]), ns=(3, 3, 3))
    write_pair_vtk(tmp_path / "p.vti", res)
    img = pv.read(tmp_path / "p.vti")
    assert img.field_data["length_unit"][0] == "um"
    xyz = np.asarray(img.points)  # (x, y, z) um
    u = np.asarray(img.point_data["displacement"])  # (u_x, u_y, u_z) um
    A = np.linalg.lstsq(np.c_[xyz, np.ones(len(xyz))], u, rcond=None)[0][:3].T  # du_a / dx_b
    grad = A[::-1, ::-1]  # (x, y, z) -> (z, y, x) on both indices
    for n in ORDER:
        a, b = entry_of(n)
        np.testing.assert_allclose(img.cell_data[f"e{n}"], 0.5 * (grad[a, b] + grad[b, a]),
                                   atol=1e-12, err_msg=n)
    np.testing.assert_allclose(img.cell_data["volumetric"], np.linalg.det(np.eye(3) + grad) - 1,
                               atol=1e-12)


def _render_pair(shape, vs, A, rng):
    """A textured volume and its copy deformed by x = X + A (X - c) (um, z y x), on voxels
    ``vs`` (um): the deformed volume samples the reference at the inverse map (cubic)."""
    noise = rng.standard_normal(shape)
    ref = ndimage.gaussian_filter(noise, sigma=0.5 / vs)  # ~0.5 um grains on every axis
    ref = (ref - ref.min()) / np.ptp(ref)
    M = np.eye(3) + np.diag(1 / vs) @ A @ np.diag(vs)  # the map in voxel coordinates
    Minv = np.linalg.inv(M)
    c = (np.array(shape) - 1) / 2
    deformed = ndimage.affine_transform(ref, Minv, offset=c - Minv @ c, order=3,
                                        mode="nearest")
    return [(np.clip(v, 0, 1) * 60000 + 2000).astype(np.uint16) for v in (ref, deformed)]


def test_dvc_cli_of_an_anisotropic_pair_gives_the_true_exz(tmp_path, cli, rng):
    """The issue's example: voxels (0.4, 0.2, 0.2) um, u_x = 0.02 z, u_z = 0.01 z (um):
    `anodetwin dvc` reports exz = 0.010 and ezz = 0.010 (before: exz = 0.020), in the HDF5
    result and in the VTK file."""
    import pyvista as pv

    vs = np.array([0.4, 0.2, 0.2])
    A = np.zeros((3, 3))
    A[0, 0], A[2, 0] = 0.01, 0.02  # d u_z / d z, d u_x / d z
    ref, deformed = _render_pair((48, 64, 64), vs, A, rng)
    write_volume(tmp_path / "t0.tif", Volume(ref, tuple(vs)))
    write_volume(tmp_path / "t1.tif", Volume(deformed, tuple(vs)))
    r = cli("dvc", tmp_path / "t0.tif", tmp_path / "t1.tif", "--out", tmp_path / "p.h5",
            "--vtk", tmp_path / "p.vti", "--node-spacing", "8", "--hws", "8",
            "--processes", "2")
    assert r.code == 0, r.err
    want = {"ezz": 0.01, "eyy": 0.0, "exx": 0.0, "eyz": 0.0, "exz": 0.01, "exy": 0.0}
    with h5py.File(tmp_path / "p.h5") as f:
        got = {k: float(np.nanmedian(f[f"strain/{k}"][...])) for k in want}
        vol = float(np.nanmedian(f["strain/volumetric"][...]))
        measured = int((f["flag"][...] == 0).sum())
    for k, v in want.items():
        assert abs(got[k] - v) < 0.002, (k, got)
    assert abs(vol - 0.01) < 0.002
    assert measured >= 100  # of 245 nodes; windows beyond the faces are excluded
    img = pv.read(tmp_path / "p.vti")
    assert abs(float(np.nanmedian(img.cell_data["exz"])) - 0.01) < 0.002


# -- (b) phantom truth -------------------------------------------------------------------------

@pytest.mark.parametrize("i, j", ENTRIES)
def test_phantom_truth_names_every_gradient_entry(i, j):
    """:func:`strain_fields` of a dense field (3, z, y, x) on voxels (0.4, 0.2, 0.1) um."""
    X = node_coordinates((5, 6, 7))  # voxel centres, um
    u = np.moveaxis(linear_field(X, i, j), -1, 0)
    got = strain_fields(u, tuple(SPACING_UM))
    want = expected(i, j)
    for n in ORDER:
        np.testing.assert_allclose(got[f"e{n}"], want[f"e{n}"], atol=1e-7, err_msg=n)
    np.testing.assert_allclose(got["volumetric"], want["volumetric"], atol=1e-7)


def test_phantom_inverse_mapping_uses_the_voxel_size_per_axis():
    """A uniform displacement (um) moves every voxel by u / voxel size on each axis."""
    vs = (0.4, 0.2, 0.1)
    u_um = np.array([0.2, -0.1, 0.05])  # 0.5 voxel along every axis
    disp = np.broadcast_to(u_um[:, None, None, None], (3, 6, 7, 8)).copy()
    X = inverse_coordinates(disp, vs)
    x = np.indices((6, 7, 8), dtype=float)
    for a in range(3):
        np.testing.assert_allclose(X[a], x[a] - u_um[a] / vs[a], atol=1e-6)
    np.testing.assert_allclose(inverse_coordinates(None, vs, np.full(6, 0.2))[1:5],
                               np.arange(1, 5) - 0.5, atol=1e-12)


# -- (c) simulation on the DVC grid ------------------------------------------------------------

@pytest.fixture(scope="module")
def fe_space():
    import dolfinx.fem as fem
    import dolfinx.mesh as dmesh

    mesh = dmesh.create_box(MPI.COMM_SELF, [np.zeros(3), np.full(3, 4.0)], [4, 4, 4],
                            dmesh.CellType.hexahedron)
    return fem.functionspace(mesh, ("Lagrange", 1, (3,)))


@pytest.mark.parametrize("vs", [0.25, (0.4, 0.2, 0.1)], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("i, j", ENTRIES)
def test_simulation_dvc_grid_names_every_gradient_entry(tmp_path, fe_space, i, j, vs):
    """A linear FE displacement in mesh order (x, y, z) with d u_i / d X_j = g (DVC axes),
    sampled on the DVC grid by the simulation run: its file holds the displacement in
    (z, y, x) voxels and every strain measure under the right name."""
    import dolfinx.fem as fem

    from anodetwin.simulate import run as simrun

    u = fem.Function(fe_space)
    gi, gj = 2 - i, 2 - j  # DVC axis -> mesh coordinate (x, y, z) = (2, 1, 0)

    def field(x):  # x: (3, n) mesh coordinates
        out = np.zeros_like(x)
        out[gi] = G * x[gj]
        return out

    u.interpolate(field)
    vsa = np.broadcast_to(np.asarray(vs, float), (3,))
    shape = tuple(int(round(4.0 / v)) for v in vsa)  # the mesh's box in DVC voxels
    nodes, gshape = node_grid(shape, 4)
    origin = vsa / 2
    simrun._write_dvc(tmp_path / "T1.h5", (nodes, gshape, 4, vs, origin), u, {})
    want = expected(i, j)
    with h5py.File(tmp_path / "T1.h5") as f:
        assert_measures(measures_of_file(f), want, atol=1e-10, where="simulation file")
        d = f["displacement"][...]
    X = origin + nodes * vsa  # (z, y, x) um
    np.testing.assert_allclose(d * vsa, linear_field(X, i, j), atol=1e-10)
    assert_measures(measures_of(read_pair(tmp_path / "T1.h5").strain), want, atol=1e-10,
                    where="read back")

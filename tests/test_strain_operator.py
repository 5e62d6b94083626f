"""One strain operator for the DVC, the phantom truth and the simulation output.

Analytic displacement fields are sampled on a node grid (the DVC's Q8 cell-centre gradient)
and on a voxel grid (the phantom truth's central differences), both anisotropic, and every
strain measure is compared by component name with values derived here from first
principles: the small strain is sym(grad u), J - 1 is det F - 1, Green-Lagrange is
(F^T F - I) / 2, and Hencky is checked against closed forms (a pure stretch diag(a, b, c):
log a, log b, log c; a simple shear of amount g: principal values +-asinh(g / 2)) and, for
a general F, by exp(2 H) = F^T F (scipy's matrix exponential).

The Q8 cell-centre gradient of a quadratic field is exact (the mean of the four edge
differences of X_j X_k or X_j^2 is the derivative at the centre), and so are central
differences at interior voxels; one-sided differences at the faces are not, so only
interior voxels are compared.

A second group checks that the stages call the same functions: the names the DVC, the
phantom and the simulation use resolve to :mod:`anodetwin.strain`.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import anodetwin.strain as strain

AXES = "zyx"
NAMES = ("zz", "yy", "xx", "yz", "xz", "xy")
ENTRY = {"zz": (0, 0), "yy": (1, 1), "xx": (2, 2), "yz": (0, 1), "xz": (0, 2), "xy": (1, 2)}
NODE_SPACING = np.array([2.0, 3.0, 4.0])  # um, z, y, x
VOXEL_UM = np.array([0.4, 0.2, 0.1])
#: A homogeneous F with stretch and shear in every plane (rows: u_z, u_y, u_x).
F_GENERAL = np.array([[1.02, 0.03, -0.01],
                      [0.01, 0.97, 0.02],
                      [0.015, -0.02, 1.05]])
#: Quadratic field u_i = A[i, j, k] X_j X_k / 2 (A symmetric in j, k): grad u = A . X.
A_QUAD = np.zeros((3, 3, 3))
A_QUAD[0, 1, 2] = A_QUAD[0, 2, 1] = 0.004
A_QUAD[1, 0, 0] = 0.006
A_QUAD[2, 2, 2] = -0.003
A_QUAD[2, 0, 1] = A_QUAD[2, 1, 0] = 0.002


def node_positions(shape=(5, 6, 7)) -> np.ndarray:
    """(gz, gy, gx, 3) node positions (um)."""
    axes = [np.arange(n) * s for n, s in zip(shape, NODE_SPACING, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def voxel_positions(shape=(9, 10, 11)) -> np.ndarray:
    axes = [np.arange(n) * s for n, s in zip(shape, VOXEL_UM, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def homogeneous(X: np.ndarray, F: np.ndarray) -> np.ndarray:
    return X @ (F - np.eye(3)).T


def quadratic(X: np.ndarray) -> np.ndarray:
    return 0.5 * np.einsum("ijk,...j,...k->...i", A_QUAD, X, X)


def quadratic_gradient(X: np.ndarray) -> np.ndarray:
    return np.einsum("ijk,...k->...ij", A_QUAD, X)


def expected(grad: np.ndarray) -> dict:
    """Measures of grad u (..., 3, 3) by hand: sym, det, F^T F."""
    F = grad + np.eye(3)
    C = np.swapaxes(F, -1, -2) @ F
    out = {"volumetric": np.linalg.det(F) - 1}
    for n, (i, j) in ENTRY.items():
        out[f"e{n}"] = 0.5 * (grad[..., i, j] + grad[..., j, i])
        out[f"green_lagrange_{n}"] = 0.5 * (C[..., i, j] - (i == j))
    return out


def measures(s: strain.CellStrain) -> dict:
    out = {"volumetric": s.volumetric, **s.small}
    for k, n in enumerate(NAMES):
        out[f"green_lagrange_{n}"] = s.green_lagrange[..., k]
    return out


def q8_strain(field) -> tuple[dict, np.ndarray]:
    """Cell strain of ``field`` on the node grid and the cell centres."""
    X = node_positions()
    return measures(strain.cell_strain(field(X), NODE_SPACING)), strain.cell_mean(X)


def voxel_strain(field) -> tuple[dict, np.ndarray]:
    """Measures of the central-difference gradient of ``field`` at interior voxels."""
    X = voxel_positions()
    u = np.moveaxis(field(X), -1, 0)  # (3, z, y, x)
    inner = (slice(1, -1),) * 3
    grad = strain.voxel_gradient(u, VOXEL_UM)[inner].astype(np.float64)
    return measures(strain.strain_from_F(grad + np.eye(3))), X[inner]


def assert_same(got: dict, want: dict, atol: float) -> None:
    for k, v in want.items():
        np.testing.assert_allclose(got[k], np.broadcast_to(v, np.shape(got[k])), atol=atol,
                                   err_msg=k)


@pytest.mark.parametrize("path, atol", [(q8_strain, 1e-12), (voxel_strain, 2e-6)])
def test_homogeneous_shear_gives_the_analytic_strain(path, atol):
    got, _ = path(lambda X: homogeneous(X, F_GENERAL))
    assert_same(got, expected(F_GENERAL - np.eye(3)), atol)


@pytest.mark.parametrize("path, atol", [(q8_strain, 1e-12), (voxel_strain, 2e-6)])
def test_quadratic_field_gives_the_analytic_strain_at_every_point(path, atol):
    got, X = path(quadratic)
    assert_same(got, expected(quadratic_gradient(X)), atol)


def test_voxel_truth_fields_match_the_q8_cells_by_name():
    """The phantom truth (strain_fields) and the DVC cells of one homogeneous field agree
    component by component."""
    X = voxel_positions()
    truth = strain.strain_fields(np.moveaxis(homogeneous(X, F_GENERAL), -1, 0), VOXEL_UM)
    cells, _ = q8_strain(lambda Y: homogeneous(Y, F_GENERAL))
    for name in ("volumetric",) + tuple(f"e{n}" for n in NAMES):
        assert truth[name].dtype == np.float32
        np.testing.assert_allclose(truth[name], cells[name][0, 0, 0], atol=2e-6, err_msg=name)


@pytest.mark.parametrize("path", [q8_strain, voxel_strain])
def test_hencky_of_a_pure_stretch_is_the_log_of_the_stretches(path):
    a, b, c = 1.1, 0.9, 1.25
    s = _cell_strain_of(path, np.diag([a, b, c]))
    want = {"zz": np.log(a), "yy": np.log(b), "xx": np.log(c), "yz": 0, "xz": 0, "xy": 0}
    for k, n in enumerate(NAMES):
        np.testing.assert_allclose(s.hencky[..., k], want[n], atol=2e-6, err_msg=n)
    np.testing.assert_allclose(s.hencky_volumetric, np.log(a * b * c), atol=5e-6)


@pytest.mark.parametrize("path", [q8_strain, voxel_strain])
@pytest.mark.parametrize("i, j", [(0, 1), (2, 0), (1, 2)])
def test_hencky_of_a_simple_shear_has_the_closed_form(path, i, j):
    """F = I + g e_i e_j^T: C has eigenvalues exp(+-2 s), s = asinh(g / 2), so
    H = s / cosh(s) [[-g/2, 1], [1, g/2]] in the (e_i, e_j) plane, zero elsewhere."""
    g = 0.3
    F = np.eye(3)
    F[i, j] += g
    s = np.arcsinh(g / 2)
    H = np.zeros((3, 3))
    H[i, i], H[j, j] = -g / 2 * s / np.cosh(s), g / 2 * s / np.cosh(s)
    H[i, j] = H[j, i] = s / np.cosh(s)
    got = _cell_strain_of(path, F)
    for k, n in enumerate(NAMES):
        np.testing.assert_allclose(got.hencky[..., k], H[ENTRY[n]], atol=2e-6, err_msg=n)
    np.testing.assert_allclose(np.sort(got.principal.reshape(-1, 3)[0]),
                               np.linalg.eigvalsh(0.5 * (F + F.T) - np.eye(3)), atol=2e-6)


def test_small_strain_tensor_and_its_named_components():
    H = F_GENERAL - np.eye(3)
    eps = strain.small_strain_tensor(H)
    np.testing.assert_array_equal(eps, eps.T)
    np.testing.assert_allclose(eps + eps.T, H + H.T, atol=1e-15)
    for name, value in strain.small_strain(H).items():
        assert value == pytest.approx(eps[ENTRY[name[1:]]], abs=1e-15), name


def test_hencky_of_a_general_F_exponentiates_to_C():
    H = strain.hencky_strain(F_GENERAL)
    np.testing.assert_allclose(scipy.linalg.expm(2 * H), F_GENERAL.T @ F_GENERAL, atol=1e-12)
    np.testing.assert_allclose(np.trace(H), np.log(np.linalg.det(F_GENERAL)), atol=1e-12)


def _cell_strain_of(path, F: np.ndarray) -> strain.CellStrain:
    """Full strain measures of the homogeneous field of F by one of the two gradients."""
    if path is q8_strain:
        X = node_positions()
        return strain.cell_strain(homogeneous(X, F), NODE_SPACING)
    X = voxel_positions()
    grad = strain.voxel_gradient(np.moveaxis(homogeneous(X, F), -1, 0), VOXEL_UM)
    return strain.strain_from_F(grad.astype(np.float64) + np.eye(3))


def test_q8_gradient_in_voxels_with_a_voxel_size_equals_the_gradient_in_um():
    X = node_positions()
    u = homogeneous(X, F_GENERAL)
    vs = np.array([0.5, 2.0, 1.5])
    in_um = strain.cell_strain(u, NODE_SPACING)
    in_voxels = strain.cell_strain(u / vs, NODE_SPACING / vs, voxel_size_um=vs)
    np.testing.assert_allclose(in_voxels.F, in_um.F, atol=1e-12)
    np.testing.assert_allclose(strain.node_spacing_um(NODE_SPACING / vs, vs), NODE_SPACING)
    # 2 um over 0.5 um voxels: 4 voxels; 3 um over 2 um: 1.5 -> 2; 4 um over 1.5 um: 2.67 -> 3
    assert strain.node_spacing_voxels(NODE_SPACING, vs).tolist() == [4, 2, 3]
    assert strain.node_spacing_voxels(0.1, 1.0).tolist() == [1, 1, 1]  # at least one voxel


# -- one function object for every stage ------------------------------------------------------

def test_dvc_phantom_and_simulation_use_the_one_strain_module():
    import anodetwin.dvc as dvc
    import anodetwin.dvc.pair as pair
    import anodetwin.dvc.series as series
    import anodetwin.dvc.strain as dvc_strain
    import anodetwin.kinematics as kinematics
    import anodetwin.phantom.generate as generate

    assert dvc_strain.cell_strain is strain.cell_strain  # also what the simulation imports
    assert dvc.cell_strain is strain.cell_strain
    assert pair.cell_strain is strain.cell_strain and series.cell_strain is strain.cell_strain
    assert dvc_strain.CellStrain is strain.CellStrain
    assert dvc_strain.deformation_gradient_q8 is strain.deformation_gradient_q8
    assert dvc_strain.strain_from_F is strain.strain_from_F
    assert dvc_strain.cell_mean is strain.cell_mean
    assert kinematics.strain_fields is strain.strain_fields
    assert generate.strain_fields is strain.strain_fields


def test_every_stage_reaches_the_same_measure_functions(monkeypatch):
    """Replacing a measure in :mod:`anodetwin.strain` changes what the DVC cells, the
    phantom truth and the simulation's Hencky strain report."""
    from anodetwin.simulate.fields import hencky_strain

    calls = []

    def spy(name):
        real = getattr(strain, name)

        def wrapped(*a, **k):
            calls.append(name)
            return real(*a, **k)
        return wrapped

    for name in ("small_strain", "volumetric_strain", "hencky_strain"):
        monkeypatch.setattr(strain, name, spy(name))
    strain.cell_strain(np.zeros((2, 2, 2, 3)), 1.0)
    assert sorted(calls) == ["hencky_strain", "small_strain", "volumetric_strain"]
    calls.clear()
    strain.strain_fields(np.zeros((3, 3, 3, 3), np.float32), 1.0)
    assert sorted(calls) == ["small_strain", "volumetric_strain"]
    calls.clear()
    H = hencky_strain(F_GENERAL[None])
    assert calls == ["hencky_strain"]
    np.testing.assert_allclose(scipy.linalg.expm(2 * H[0]), F_GENERAL.T @ F_GENERAL,
                               atol=1e-12)

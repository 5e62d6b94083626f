"""The material law is defined once: the Cauchy stress the solver reports is the derivative
of its stored energy (central finite differences of the assembled energy at random
deformation states), matches closed forms written out by hand, and the Kirchhoff deviator
the plastic return map uses is that of the same energy."""

from __future__ import annotations

import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import numpy as np
import pytest
from mpi4py import MPI

from anodetwin.mesh.voxel import Labels, voxel_mesh
from anodetwin.phases import PHASE
from anodetwin.simulate import Boundary
from anodetwin.simulate.materials import Material

COMM = MPI.COMM_SELF
SI = PHASE["si"]
COMPONENTS = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "xy": (0, 1), "yx": (1, 0),
              "xz": (0, 2), "zx": (2, 0), "yz": (1, 2), "zy": (2, 1)}


@pytest.fixture(scope="module")
def cell():
    """One hexahedral cell, the unit cube (um)."""
    return voxel_mesh(COMM, Labels(np.full((1, 1, 1), SI, np.uint8), None, (1.0, 1.0, 1.0)))


def _problem(cell, mat: Material, theta: float, F: np.ndarray, Fp_inv=None):
    """A swelling problem on the cell at the affine displacement ``u = (F - I) x`` (so
    grad u = F - I exactly), with ``theta`` and, with plastic flow, ``Fp_inv``."""
    from anodetwin.simulate.mechanics import SwellingProblem

    sp = SwellingProblem(cell.mesh, cell.phases, cell.facets, {SI: mat},
                         Boundary(collector="rollers", lateral="free", top="free"),
                         plastic=Fp_inv is not None, linear_solver="direct")
    sp.theta.x.array[:] = theta
    if Fp_inv is not None:
        sp.Fp_inv.x.array.reshape(-1, 9)[:] = Fp_inv.ravel()
    _set_F(sp, F)
    return sp


def _set_F(sp, F: np.ndarray) -> None:
    G = F - np.eye(3)
    sp.u.interpolate(lambda x: G @ x)


def _energy(sp, F: np.ndarray) -> float:
    """The stored energy of the unit cell (uJ = MPa um^3) at the affine state F."""
    _set_F(sp, F)
    return sp.total_energy()


def _material(rng, compaction: bool, plastic: bool) -> Material:
    flow = {"flow_stress0_mpa": 1e3, "flow_stress1_mpa": 800.0} if plastic else {}
    comp = {"compaction_modulus_mpa": float(rng.uniform(5, 500)),
            "compaction_limit": float(rng.uniform(0.1, 0.5))} if compaction else {}
    return Material("random", (SI,), float(rng.uniform(50, 2e5)), float(rng.uniform(50, 2e5)),
                    float(rng.uniform(0.0, 0.45)), float(rng.uniform(0.0, 3.0)), {},
                    **flow, **comp)


def _isochoric(rng) -> np.ndarray:
    G = np.eye(3) + 0.1 * rng.standard_normal((3, 3))
    return G / np.cbrt(np.linalg.det(G))


def _random_state(rng, mat: Material):
    """F near the identity and theta in [0, 1] with det F > 0 and the elastic volume ratio
    well above the compaction limit."""
    while True:
        F = np.eye(3) + 0.15 * rng.standard_normal((3, 3))
        theta = float(rng.uniform(0, 1))
        Je = np.linalg.det(F) / (1 + mat.beta * theta)
        if np.linalg.det(F) > 0.3 and Je > mat.effective_compaction_limit + 0.2:
            return F, theta


def _assert_components(sigma: np.ndarray, expected: np.ndarray, rtol: float, what: str):
    scale = np.abs(expected).max()
    for name, (i, j) in COMPONENTS.items():
        assert sigma[i, j] == pytest.approx(expected[i, j], rel=rtol, abs=rtol * scale), \
            f"{what}: sigma_{name} {sigma[i, j]:.12g}, expected {expected[i, j]:.12g}"


@pytest.mark.parametrize("plastic", [False, True])
@pytest.mark.parametrize("compaction", [False, True])
def test_cauchy_stress_is_the_derivative_of_the_energy(cell, compaction, plastic):
    """At random F, theta, constants (and Fp^-1 with plastic flow): the reported Cauchy
    stress equals P F^T / det F with P_ij = dW/dF_ij by central differences of the energy
    assembled on a one-cell mesh at the affine displacement."""
    rng = np.random.default_rng(19 + 2 * compaction + plastic)
    h = 1e-6
    for trial in range(4):
        mat = _material(rng, compaction, plastic)
        F, theta = _random_state(rng, mat)
        sp = _problem(cell, mat, theta, F, _isochoric(rng) if plastic else None)
        assert sp.plastic == plastic
        sigma = sp.cell_stress()[0]
        P = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                E = np.zeros((3, 3))
                E[i, j] = h
                P[i, j] = (_energy(sp, F + E) - _energy(sp, F - E)) / (2 * h)
        expected = P @ F.T / np.linalg.det(F)
        _assert_components(sigma, expected, 1e-6, f"trial {trial} ({mat}, theta {theta})")


def test_uniaxial_stretch_matches_the_closed_form(cell):
    """F = diag(a, 1, 1), no swelling, no compaction: by hand from psi = mu / 2 (tr C - 3)
    - mu ln J + lam / 4 (J^2 - 1 - 2 ln J), with J = a: sigma = (mu (B - I) + lam / 2
    (J^2 - 1) I) / J, so sigma_xx = (mu + lam / 2)(a^2 - 1) / a, sigma_yy = sigma_zz = lam /
    2 (a^2 - 1) / a and no shear."""
    E, nu, a = 1000.0, 0.3, 1.2
    mat = Material("neo-Hooke", (SI,), E, 3 * E, nu, 0.5, {})
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    sp = _problem(cell, mat, 0.0, np.diag([a, 1.0, 1.0]))  # theta 0: E0, no swelling
    sigma = sp.cell_stress()[0]
    lateral = lam / 2 * (a * a - 1) / a
    expected = np.diag([(mu + lam / 2) * (a * a - 1) / a, lateral, lateral])
    assert sigma[0, 0] == pytest.approx(246.7948717949, rel=1e-10)  # (mu + lam / 2) 0.44/1.2
    _assert_components(sigma, expected, 1e-10, "uniaxial stretch")


def test_hydrostatic_state_with_swelling_and_compaction(cell):
    """F = f I, theta with swelling, a compacting material: Je = f^3 / Js, be = Je^(2/3) I,
    and by hand sigma = (mu (Je^(2/3) - 1) + lam / 2 (Je^2 - 1) + Kc Je a (Je - 1) / (Je -
    Jmin)) / Je I with a = 1 - Jmin, E = E0 + (E1 - E0) theta."""
    E0, E1, nu, beta, kc, jmin = 800.0, 300.0, 0.25, 0.6, 40.0, 0.4
    mat = Material("porous", (SI,), E0, E1, nu, beta, {}, compaction_modulus_mpa=kc,
                   compaction_limit=jmin)
    f, theta = 0.93, 0.5
    E = E0 + (E1 - E0) * theta
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    Je = f ** 3 / (1 + beta * theta)
    s = (mu * (Je ** (2 / 3) - 1) + lam / 2 * (Je * Je - 1)
         + kc * Je * (1 - jmin) * (Je - 1) / (Je - jmin)) / Je
    sp = _problem(cell, mat, theta, f * np.eye(3))
    _assert_components(sp.cell_stress()[0], s * np.eye(3), 1e-10, "hydrostatic")
    assert s < 0  # compressed: the swelling outgrows the deformation


def test_return_map_deviator_is_that_of_the_energy(cell):
    """The principal Kirchhoff deviator the return map uses (kirchhoff_deviator) equals the
    deviator of the Kirchhoff stress of the reported stress, tau = Je sigma (per
    intermediate volume, Je = det F / Js), at random states with Fp^-1."""
    from anodetwin.simulate.constitutive import kirchhoff_deviator

    rng = np.random.default_rng(7)
    for trial in range(3):
        mat = _material(rng, compaction=bool(trial % 2), plastic=True)
        F, theta = _random_state(rng, mat)
        Fp_inv = _isochoric(rng)
        sp = _problem(cell, mat, theta, F, Fp_inv)
        Js = 1 + mat.beta * theta
        tau = np.linalg.det(F) / Js * sp.cell_stress()[0]  # per intermediate volume: Je sigma
        dev = tau - np.trace(tau) / 3 * np.eye(3)
        Fe = F @ Fp_inv / np.cbrt(Js)
        w = np.linalg.eigvalsh(Fe @ Fe.T)
        law = sp.cell_parameters()  # every constant of the law, as the return map gets it
        ours = kirchhoff_deviator(law, np.array([theta]), w[None, :])[0]
        assert np.allclose(np.sort(ours), np.linalg.eigvalsh(dev), rtol=1e-8,
                           atol=1e-8 * np.abs(dev).max()), trial


def test_snes_reasons_are_petsc_s():
    """The named SNES outcomes carry PETSc's own codes; unknown codes are kept."""
    from petsc4py import PETSc

    from anodetwin.simulate.solver import SNESReason

    petsc = PETSc.SNES.ConvergedReason
    for reason in SNESReason:
        assert getattr(petsc, reason.name) == reason.value, reason.name
    assert SNESReason.DIVERGED_LINEAR_SOLVE == -3 and SNESReason.DIVERGED_MAX_IT == -5
    assert SNESReason.of(3).converged and not SNESReason.of(-3).converged
    assert SNESReason.of(-99).describe() == "REASON_-99 (-99)"

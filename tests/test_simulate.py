"""Simulation: finite-strain swelling mechanics against exact solutions, materials files."""

from __future__ import annotations

import h5py  # before gmsh loads its own HDF5 (h5py then fails with "Not a datatype")
import dolfinx_solver  # noqa: F401  (before dolfinx / petsc4py)
import numpy as np
import pytest
from mpi4py import MPI
from scipy.optimize import brentq

from anodetwin.errors import InputNotFoundError, ParameterError
from anodetwin.mesh.voxel import Labels, voxel_mesh
from anodetwin.phases import PHASE
from anodetwin.simulate import Boundary, default_materials, load_material, solve_swelling
from anodetwin.simulate.materials import Material

from elastic_check import constants as _constants, nominal_zz as _nominal_zz

COMM = MPI.COMM_SELF
SI = Material("si", (2,), 150e3, 35e3, 0.24, 2.8, {})


def _block(shape=(6, 3, 3), vs=1.0):
    hm = voxel_mesh(COMM, Labels(np.full(shape, PHASE["si"], np.uint8), None, vs))
    return hm, shape[0] * vs  # mesh, height (um)


def _stress(u, mat, theta):
    """Cauchy stress at the cell midpoints (MPa, 3x3 per cell) of the solved field."""
    import dolfinx.fem as fem
    import ufl

    mesh = u.function_space.mesh
    F = ufl.Identity(3) + ufl.grad(u)
    Js, s, lam, mu = _constants(mat, theta)
    Fe = F / s
    Je = ufl.det(Fe)
    dpsi = mu * Fe - mu * ufl.inv(Fe).T + lam / 2 * (Je * Je - 1) * ufl.inv(Fe).T
    P = Js * dpsi / s
    sigma = P * F.T / ufl.det(F)
    expr = fem.Expression(sigma, np.array([[0.5, 0.5, 0.5]]))
    n = mesh.topology.index_map(3).size_local
    return expr.eval(mesh, np.arange(n, dtype=np.int32)).reshape(n, 3, 3), \
        fem.Expression(ufl.det(F), np.array([[0.5, 0.5, 0.5]])).eval(
            mesh, np.arange(n, dtype=np.int32)).ravel()


def test_free_swelling_is_stress_free():
    """(1) Homogeneous block, uniform theta, symmetry planes only: no stress, J = 1 + beta
    theta."""
    hm, _ = _block()
    theta = 0.3
    res = solve_swelling(hm.mesh, hm.phases, hm.facets, {2: SI}, theta,
                         Boundary(collector="rollers", lateral="symmetry", top="free"),
                         steps=2)
    sigma, J = _stress(res.u, SI, theta)
    assert np.abs(sigma).max() < 1e-6 * SI.E1_mpa
    assert np.allclose(J, 1 + SI.beta * theta, rtol=1e-8)


def test_volumetric_energy_is_convex_and_its_pressure_exact():
    """The volumetric energy: zero with zero slope at J = 1, the pressure is J dU/dJ (finite
    differences), convex for every J > J_min (the (ln J)^2 form is not beyond J = e), and
    the compaction stiffness grows without bound towards J_min."""
    from anodetwin.simulate.constitutive import kirchhoff_pressure, volumetric_energy

    lam, kc, jmin = 170.0, 30.0, 0.5
    J = np.linspace(jmin + 0.01, 10.0, 400)
    h = 1e-6
    U = volumetric_energy(J, lam, kc, jmin)
    dU = (volumetric_energy(J + h, lam, kc, jmin) - volumetric_energy(J - h, lam, kc, jmin)
          ) / (2 * h)
    assert volumetric_energy(1.0, lam, kc, jmin) == 0 and U.min() >= 0
    assert np.allclose(J * dU, kirchhoff_pressure(J, lam, kc, jmin), rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(dU) > 0)  # convex
    d2 = np.diff(lam / 2 * np.log(J) ** 2, 2)
    assert d2[J[1:-1] > np.e + 0.05].max() < 0  # what the old form did

    def stiffness(j):  # d2U/dJ2 of the compaction term
        return (kirchhoff_pressure(j + h, 0.0, kc, jmin) / (j + h)
                - kirchhoff_pressure(j - h, 0.0, kc, jmin) / (j - h)) / (2 * h)

    assert stiffness(1.0) == pytest.approx(kc, rel=1e-6)
    assert stiffness(jmin + 0.05) == pytest.approx(100 * kc, rel=1e-6)


def test_porous_matrix_locks_at_its_solid_fraction():
    """Compaction: a Si layer swelling between rigid plates (lateral rollers) crushes a
    porous matrix layer above it. Uniaxial strain in both layers with one axial stress and
    a fixed total height: the exact stretches follow from one equation. With a compaction
    limit J_min = 0.5 the matrix stops just above it (Si takes the load); without, the same
    swelling crushes it below its solid fraction."""
    shape = (6, 2, 2)
    lab = np.full(shape, PHASE["si"], np.uint8)
    lab[3:] = PHASE["cbd"]
    hm = voxel_mesh(COMM, Labels(lab, None, 1.0))
    for kc, theta in ((30.0, 0.6), (0.0, 0.6)):
        cbd = Material("cbd", (1,), 300.0, 300.0, 0.3, 0.0, {}, compaction_modulus_mpa=kc,
                       compaction_limit=0.5)
        res = solve_swelling(hm.mesh, hm.phases, hm.facets, {1: cbd, 2: SI}, theta,
                             Boundary(top="plate"), steps=12, linear_solver="direct")
        _, J = _stress(res.u, SI, theta)
        lo = 0.5 + 1e-12 if kc else 1e-3
        lz = brentq(lambda m: _nominal_zz(2 - m, SI, theta) - _nominal_zz(m, cbd, 0.0),
                    lo, 1.0, xtol=1e-15)
        matrix = np.zeros(len(J), bool)
        matrix[hm.phases.indices[hm.phases.values == PHASE["cbd"]]] = True
        assert matrix.sum() == 12
        assert np.allclose(J[matrix], lz, rtol=1e-6), (kc, J[matrix].min(), lz)
        assert np.allclose(J[~matrix], 2 - lz, rtol=1e-6)
        assert (lz > 0.5) if kc else (lz < 0.45)


def test_step_control_keeps_the_fraction_of_the_margin_to_the_compaction_limit():
    """The fraction to the boundary of a uniform uniaxial compression of a porous block:
    u_z = -c z gives J = 1 - alpha c at every point, so the margin J - J_min keeps
    ``keep`` of its value at alpha = 0 up to alpha* = (1 - J_min)(1 - keep) / c. Halving
    from 1 finds 1/4 (1/2 is past alpha*), three bisections of [1/4, 1/2] then 13/32."""
    from anodetwin.simulate.mechanics import SwellingProblem
    from anodetwin.simulate.solver import NEWTON

    lab = np.full((3, 2, 2), PHASE["cbd"], np.uint8)
    lab[0] = PHASE["si"]  # Si (J_min 0) allows alpha < (1 - keep) / c: the matrix governs
    hm = voxel_mesh(COMM, Labels(lab, None, 1.0))
    cbd = Material("cbd", (1,), 300.0, 300.0, 0.3, 0.0, {}, compaction_modulus_mpa=30.0,
                   compaction_limit=0.5)
    sp = SwellingProblem(hm.mesh, hm.phases, hm.facets, {1: cbd, 2: SI},
                         Boundary(top="plate"))
    c, keep = 0.9, 0.25
    du = np.zeros((sp.V.dofmap.index_map.size_local, 3))
    du[:, 2] = -c * sp.V.tabulate_dof_coordinates()[:du.shape[0], 2]
    alpha = sp.admissible_fraction(du.ravel(), keep=keep)
    exact = (1 - 0.5) * (1 - keep) / c  # 0.41667
    assert NEWTON.bisections == 3
    assert alpha == 13 / 32
    assert exact - 0.25 / 8 <= alpha < exact
    assert sp.admissible_fraction(du.ravel() * 0.3, keep=keep) == 1.0  # alpha* > 1
    # c = 2.5: alpha* = 0.15; halving to 1/8, then 3/16 and 5/32 are past it, 9/64 is not
    assert sp.admissible_fraction(du.ravel() / c * 2.5, keep=keep) == 9 / 64


def test_uniaxial_strain_between_plates_and_against_a_spring():
    """(2) Lateral rollers, bonded collector: between rigid plates F = I and the stress is
    exact; against a preloaded spring the top settles where P_zz = -(p0 + k u_top)."""
    hm, H = _block()
    theta = 0.2
    res = solve_swelling(hm.mesh, hm.phases, hm.facets, {2: SI}, theta,
                         Boundary(top="plate"), steps=2, linear_solver="direct")
    sigma, J = _stress(res.u, SI, theta)
    exact = _nominal_zz(1.0, SI, theta)  # F = I: Cauchy = nominal
    assert np.allclose(np.abs(res.u.x.array).max(), 0, atol=1e-10)
    assert np.allclose(sigma[:, 2, 2], exact, rtol=1e-8)
    assert np.allclose(sigma[:, 0, 0], exact, rtol=1e-8)  # isotropic: fully confined
    p0, k = 0.3, 50.0  # MPa, MPa/um (a stiff stack, to test the coupling)
    res = solve_swelling(hm.mesh, hm.phases, hm.facets, {2: SI}, theta,
                         Boundary(top="spring", p0_mpa=p0, k_mpa_per_um=k), steps=2)
    lz = brentq(lambda lz: _nominal_zz(lz, SI, theta) + p0 + k * H * (lz - 1), 1.0, 2.0,
                xtol=1e-14)
    assert res.top_displacement_um == pytest.approx(H * (lz - 1), rel=1e-6)
    assert res.stack_pressure_mpa == pytest.approx(p0 + k * H * (lz - 1), rel=1e-6)
    uz = res.u.x.array.reshape(-1, 3)[:, 2]
    assert uz.max() == pytest.approx(H * (lz - 1), rel=1e-6)
    assert res.spring_passes >= 2  # the spring settles inside Newton (lagged pressure)


def test_materials_files():
    mats = default_materials()
    assert set(mats) == {0, 1, 2, 3, 4, 5}
    si = load_material("lixsi")
    assert si.E0_mpa == 150e3 and si.beta == 2.8 and "Obrovac" in si.sources["swelling_beta"]
    with pytest.raises(InputNotFoundError, match="lixsi"):
        load_material("unobtainium")
    with pytest.raises(ParameterError, match="Poisson"):
        Material("x", (2,), 1.0, 1.0, 0.5, 0.0, {})
    with pytest.raises(ParameterError, match="not positive"):
        Material("x", (2,), -1.0, 1.0, 0.3, 0.0, {})
    cbd = load_material("matrix")
    assert cbd.phases == (1,) and cbd.effective_compaction_limit == 0.25 and \
        cbd.compaction_modulus_mpa == 30.0
    assert mats[0].name == "pore" and mats[0].effective_compaction_limit == 0.1
    with pytest.raises(ParameterError, match="compaction"):
        Material("x", (1,), 1.0, 1.0, 0.3, 0.0, {}, compaction_modulus_mpa=30.0,
                 compaction_limit=1.0)
    assert Material("x", (1,), 1.0, 1.0, 0.3, 0.0, {}, compaction_limit=0.5
                    ).effective_compaction_limit == 0  # no modulus, no limit
    hm, _ = _block()
    with pytest.raises(ParameterError, match="no material"):
        solve_swelling(hm.mesh, hm.phases, hm.facets, {1: si}, 0.1, Boundary())


def _eshelby(inc, mat, e_star):
    """Eshelby's interior hydrostatic stress of a dilating sphere in an infinite matrix:
    -12 K1 mu2 e / (3 K1 + 4 mu2), e the linear eigenstrain of Js = 1 + 3 e*."""
    K1 = inc.E0_mpa / (3 * (1 - 2 * inc.nu))
    mu2 = mat.E0_mpa / (2 * (1 + mat.nu))
    return -12 * K1 * mu2 * ((1 + 3 * e_star) ** (1 / 3) - 1) / (3 * K1 + 4 * mu2)


def test_eshelby_spherical_inclusion():
    """(3) A swelling sphere in a large matrix (one octant, symmetry planes, free outer
    faces): the interior stress is uniform and hydrostatic, sigma = -12 K1 mu2 e* /
    (3 K1 + 4 mu2) (Eshelby), within 2% (small strain: e* = 1e-3)."""
    from anodetwin.mesh.packing import Spheres, packing_mesh

    a, L = 1.0, 8.0
    hm = packing_mesh(COMM, Spheres([1], [[0, 0, 0]], [a], [[0, 0, 0], [L, L, L]]),
                      mesh_size=0.4, surface_size=0.06)  # stress of P1: O(h), 1.1% here
    e_star = 1e-3
    inc = Material("inclusion", (2,), 150e3, 150e3, 0.24, 3 * e_star * 10, {})
    mat = Material("matrix", (1,), 70e3, 70e3, 0.3, 0.0, {})
    theta = 0.1  # Js = 1 + beta theta = 1 + 3 e*  (linear eigenstrain e*)
    res = solve_swelling(hm.mesh, hm.phases, hm.facets, {2: inc, 1: mat}, theta,
                         Boundary(collector="rollers", lateral="symmetry", top="free"))
    sigma, _ = _stress(res.u, inc, theta)
    inside = hm.phases.indices[hm.phases.values == 2]
    s_in = sigma[inside]
    hyd = np.trace(s_in, axis1=1, axis2=2) / 3
    exact = _eshelby(inc, mat, e_star)
    assert np.median(hyd) == pytest.approx(exact, rel=0.02), (np.median(hyd), exact)
    dev = s_in - hyd[:, None, None] * np.eye(3)
    assert np.median(np.linalg.norm(dev, axis=(1, 2))) < 0.05 * abs(exact)  # hydrostatic


def _crank_sphere(t, D, a, terms=200):
    """Crank (1975) eq. 6.20: uptake of a sphere at constant surface concentration."""
    n = np.arange(1, terms + 1)[:, None]
    return 1 - 6 / np.pi**2 * np.sum(np.exp(-D * n**2 * np.pi**2 * np.asarray(t) / a**2)
                                     / n**2, axis=0)


def test_diffusion_into_a_sphere_matches_crank():
    """(4) theta = 1 held on the surface of a sphere (octant, insulated symmetry planes):
    the uptake M(t)/M_inf follows Crank's series within 2%."""
    from anodetwin.mesh.packing import Spheres, packing_mesh
    from anodetwin.simulate.diffusion import solve_diffusion

    a, D = 1.0, 1.0
    hm = packing_mesh(COMM, Spheres([1], [[0, 0, 0]], [a], [[0, 0, 0], [1.3, 1.3, 1.3]]),
                      mesh_size=0.1, surface_size=0.03)
    times = np.geomspace(2e-4, 0.2, 120)
    def on_sphere(x):  # the curved surface, not the symmetry planes' rim
        return (np.abs(np.linalg.norm(x, axis=0) - a) < 0.05 * a) & (x.min(axis=0) > 1e-9)

    res = solve_diffusion(hm.mesh, hm.phases, (2,), on_sphere, times, D0_um2_s=D)
    assert res.volume_um3 == pytest.approx(np.pi / 6 * a**3, rel=0.01)
    exact = _crank_sphere(times, D, a)
    # the first element layer at the surface takes theta = 1 at once (P1): the earliest
    # uptake is over-estimated by up to ~3 h / (2 a)
    check = times >= 0.01
    assert np.allclose(res.mean_theta[check], exact[check], rtol=0.02), \
        np.max(np.abs(res.mean_theta[check] / exact[check] - 1))
    # a prescribed flux instead: the uptake grows linearly, surface area x flux x t
    res = solve_diffusion(hm.mesh, hm.phases, (2,), on_sphere, [0.01, 0.02], D0_um2_s=D,
                          mode="flux", value=0.5)
    area = np.pi / 2 * a**2  # octant of the sphere surface
    assert res.mean_theta * res.volume_um3 == pytest.approx(area * 0.5 * np.array(
        [0.01, 0.02]), rel=0.02)
    with pytest.raises(ParameterError):
        solve_diffusion(hm.mesh, hm.phases, (2,), lambda x: x[0] > 0, [0.1], D0_um2_s=-1)


SWELL_MPI = """
import dolfinx_solver
import json, sys
import numpy as np
from mpi4py import MPI
from anodetwin.mesh.voxel import Labels, voxel_mesh
from anodetwin.simulate import Boundary, default_materials, solve_swelling
ph = np.load(sys.argv[1])
hm = voxel_mesh(MPI.COMM_WORLD, Labels(ph, None, 0.4))
res = solve_swelling(hm.mesh, hm.phases, hm.facets, default_materials(), 0.05,
                     Boundary(p0_mpa=0.3, k_mpa_per_um=0.05), steps=2)
if MPI.COMM_WORLD.rank == 0:
    print(json.dumps({"u_top": res.top_displacement_um, "p": res.stack_pressure_mpa}))
"""


def test_one_and_two_ranks_agree(tmp_path):
    """(5) The swelling solve of a phantom (Si, binder, pores, copper, separator; stack
    spring) gives the same top displacement and stack pressure on 1 and 2 MPI ranks."""
    import json
    import subprocess
    import sys

    from anodetwin.phantom import config_from_dict, generate_series
    from test_mpi import _mpiexec

    cfg = config_from_dict({"geometry": {"lateral_um": 4.0, "voxel_size_um": 0.4},
                            "series": {"soc": [0.0]}}, seed=5)
    s = generate_series(cfg, tmp_path / "s.h5", progress=False)
    with h5py.File(s.path) as f:
        np.save(tmp_path / "ph.npy", f["steps/T0/phases"][...])
    script = tmp_path / "swell.py"
    script.write_text(SWELL_MPI)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "ph.npy")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = _mpiexec(sys.executable, str(script), str(tmp_path / "ph.npy"))
    assert two.returncode == 0, two.stderr
    a = json.loads(one.stdout.strip().splitlines()[-1])
    b = json.loads(two.stdout.strip().splitlines()[-1])
    assert a["u_top"] > 0 and a["p"] > 0.3
    for key in ("u_top", "p"):
        assert b[key] == pytest.approx(a[key], rel=1e-6), (a, b)


def test_eshelby_mesh_convergence_order():
    """(6) The error of the inclusion stress falls with the element size at the order of
    P1 stresses (about 1)."""
    from anodetwin.mesh.packing import Spheres, packing_mesh

    a, L, e_star = 1.0, 8.0, 1e-3
    inc = Material("inclusion", (2,), 150e3, 150e3, 0.24, 3 * e_star * 10, {})
    mat = Material("matrix", (1,), 70e3, 70e3, 0.3, 0.0, {})
    exact = _eshelby(inc, mat, e_star)
    sizes, errors = [], []
    for h, hs in ((1.0, 0.12), (0.6, 0.08), (0.4, 0.06)):
        hm = packing_mesh(COMM, Spheres([1], [[0, 0, 0]], [a], [[0, 0, 0], [L, L, L]]),
                          mesh_size=h, surface_size=hs)
        res = solve_swelling(hm.mesh, hm.phases, hm.facets, {2: inc, 1: mat}, 0.1,
                             Boundary(collector="rollers", lateral="symmetry", top="free"))
        sigma, _ = _stress(res.u, inc, 0.1)
        inside = hm.phases.indices[hm.phases.values == 2]
        hyd = np.trace(sigma[inside], axis1=1, axis2=2) / 3
        sizes.append(hs)
        errors.append(abs(np.median(hyd) / exact - 1))
    order = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert errors[0] > errors[1] > errors[2]
    assert 0.7 <= order <= 1.6, (order, errors)


def _film_state(mat, theta, sign):
    """Exact elastic stretches (a in-plane, c axial) of a laterally confined film on the
    yield surface: sigma_zz = 0 and sigma_xx - sigma_zz = sign sigma_y(theta)."""
    from scipy.optimize import fsolve

    _, _, lam, mu = _constants(mat, theta)
    s_y = mat.flow_stress0_mpa + (mat.flow_stress1_mpa - mat.flow_stress0_mpa) * theta

    def eqs(x):
        a, c = x
        je = a * a * c
        return [mu * (c * c - 1) + lam / 2 * (je * je - 1),
                mu * (a * a - c * c) - sign * s_y * je]

    a, c = fsolve(eqs, [1.0, 1.0], xtol=1e-12)
    return a, c, s_y


def test_plastic_film_flows_at_the_flow_stress():
    """Plastic flow: a homogeneous LixSi film, laterally confined (rollers), top free,
    charged then discharged with uniform theta. Rate-independent: once yielding, the
    in-plane stress is -sigma_y(theta) on charge and +sigma_y on discharge (reverse
    flow), sigma_zz = 0, and the thickness is H Je Js with Je from the yield condition
    (exact to 1e-6); the plastic flow is isochoric. With a rate-dependent flow rule each
    step satisfies the overstress law sigma_e = sigma_y (1 + (deps_p / (rate0 dt))^(1/m))."""
    from anodetwin.simulate.mechanics import SwellingProblem

    mat = Material("lixsi", (2,), 150e3, 35e3, 0.24, 2.8, {}, flow_stress0_mpa=1750.0,
                   flow_stress1_mpa=1000.0, flow_rate_per_s=1e-3, flow_exponent=4.0)
    hm, H = _block((3, 2, 2))
    bc = Boundary(collector="rollers", lateral="rollers", top="free")
    sp = SwellingProblem(hm.mesh, hm.phases, hm.facets, {2: mat}, bc, plastic=True,
                         linear_solver="direct")
    assert sp.plastic
    for theta, sign in ((0.05, -1), (0.1, -1), (0.2, -1), (0.3, -1), (0.2, 1), (0.1, 1)):
        sp.theta.x.array[:] = theta
        newton, _, _ = sp.solve(f"theta {theta}")
        sp.commit()
        assert sum(newton) <= 6  # the consistent tangent: Newton's own rate
        a, cz, s_y = _film_state(mat, theta, sign)
        sig = sp.cell_stress()
        assert np.allclose(sig[:, 0, 0], sign * s_y, rtol=1e-6), (theta, sig[0], s_y)
        assert np.allclose(sig[:, 2, 2], 0, atol=1e-6 * s_y)
        assert sp.mean_top() == pytest.approx(H * (a * a * cz * (1 + mat.beta * theta) - 1),
                                              rel=1e-6)
        assert np.allclose(np.linalg.det(sp.cell_Fp_inv()), 1, atol=1e-10)
    # rate-dependent flow: one more charge step of 600 s
    before = sp.plastic_strain.x.array.copy()
    sp.theta.x.array[:] = 0.25
    sp.solve("rate-dependent", dt=600.0)
    deps = sp.plastic_strain.x.array - before
    sig = sp.cell_stress()
    hyd = np.trace(sig, axis1=1, axis2=2) / 3
    dev = sig - hyd[:, None, None] * np.eye(3)
    vm = np.sqrt(1.5 * np.einsum("nij,nij->n", dev, dev))
    s_y = mat.flow_stress0_mpa + (mat.flow_stress1_mpa - mat.flow_stress0_mpa) * 0.25
    assert deps.min() > 0
    assert np.allclose(vm, s_y * (1 + (deps[:len(vm)] / (1e-3 * 600)) ** 0.25), rtol=1e-6)
    assert vm.min() > 1.1 * s_y  # a real overstress
    # a fresh tangent (after a restore or a rollback) leaves the plastic state alone
    sp.commit()
    state = sp.cell_Fp_inv().copy(), sp.plastic_strain.x.array.copy()
    sp.refresh_tangent()
    assert np.array_equal(sp.cell_Fp_inv(), state[0])
    assert np.array_equal(sp.plastic_strain.x.array, state[1])


def test_plastic_tangent_is_the_derivative_of_the_residual():
    """The Newton tangent with plastic flow (the return inside the residual) is the
    derivative of that residual: J d against central differences of R along a random
    direction d, at a homogeneous flowing state of a confined film (to 1e-6; the plain
    elastic tangent misses by > 10%)."""
    import dolfinx.fem.petsc as fp

    from anodetwin.simulate.mechanics import SwellingProblem

    mat = Material("lixsi", (2,), 150e3, 35e3, 0.24, 2.8, {}, flow_stress0_mpa=1750.0,
                   flow_stress1_mpa=1000.0, flow_rate_per_s=1e-3, flow_exponent=4.0)
    hm, _ = _block((3, 2, 2))
    sp = SwellingProblem(hm.mesh, hm.phases, hm.facets, {2: mat}, Boundary(
        collector="rollers", lateral="rollers", top="free"), plastic=True,
        linear_solver="direct")
    sp.theta.x.array[:] = 0.05
    snes, p, bcs = sp.problem.solver, sp.problem, sp._boundary_conditions(hm.facets)
    x, d = p.x.duplicate(), p.x.duplicate()
    X = sp.V.tabulate_dof_coordinates()[:, :3]
    n = x.array.size
    x.array[:] = (X * [0.0, 0.0, 0.04]).ravel()[:n]  # u_z = 0.04 z: the film flows
    d.array[:] = np.random.default_rng(1).standard_normal(n) * 1e-3
    fp.set_bc(d, bcs)  # d keeps the boundary conditions
    snes.computeFunction(x, p.b)
    snes.computeJacobian(x, p.A, p.A)
    assert sp.plastic_strain.x.array.min() > 0.01
    Jd = x.duplicate()
    p.A.mult(d, Jd)
    h, r = 1e-5, []
    for sign in (1, -1):
        xs, b = x.copy(), x.duplicate()
        xs.axpy(sign * h, d)
        snes.computeFunction(xs, b)
        r.append(b.array.copy())
    fd = (r[0] - r[1]) / (2 * h)
    assert np.linalg.norm(Jd.array - fd) <= 1e-6 * np.linalg.norm(fd)
    sp.dFp_inv.x.array[:] = 0.0  # the tangent without the return's derivative
    p.A.zeroEntries()
    fp.assemble_matrix(p.A, p.J, bcs, diag=1.0)
    p.A.assemble()
    p.A.mult(d, Jd)
    assert np.linalg.norm(Jd.array - fd) > 0.1 * np.linalg.norm(fd)


def test_a_problem_does_not_inherit_the_options_of_an_earlier_one():
    """PETSc options of one mechanics problem do not reach the next of the same prefix: a
    direct solve after an iterative one has no multigrid options (and no preconditioner
    lag: a lagged LU would make its Newton a chord method)."""
    from petsc4py import PETSc

    from anodetwin.simulate.mechanics import SwellingProblem

    hm, _ = _block((2, 2, 2))
    args = (hm.mesh, hm.phases, hm.facets, default_materials(), Boundary())
    SwellingProblem(*args, prefix="inherit_", petsc_options={"ksp_monitor_short": None,
                                                             "snes_lag_preconditioner": 3})
    db = PETSc.Options()
    assert db.hasName("inherit_snes_lag_preconditioner")
    assert db.hasName("inherit_mg_levels_pc_type")
    assert db.hasName("inherit_ksp_monitor_short")
    SwellingProblem(*args, prefix="inherit_", linear_solver="direct")
    assert not db.hasName("inherit_snes_lag_preconditioner")
    assert not db.hasName("inherit_mg_levels_pc_type")
    assert not db.hasName("inherit_ksp_monitor_short")
    assert db.getString("inherit_pc_type") == "lu"


class _FakeKSP:
    """The last linear solve's iterations and reason, and the PC's reuse flag."""

    def __init__(self):
        self.its, self.reason, self.reuse = 0, 0, None

    def getIterationNumber(self):
        return self.its

    def getConvergedReason(self):
        return self.reason

    def getPC(self):
        return self

    def setReusePreconditioner(self, flag):
        self.reuse = flag


def test_preconditioner_is_rebuilt_when_the_solves_slow_down():
    """The adaptive rebuild: built before the first solve, kept while a solve needs at most
    twice the iterations of the first solve after the build, rebuilt after a slower or a
    failed solve and on request; CG's stop at negative curvature (reason -10) keeps it."""
    from anodetwin.simulate.solver import PreconditionerReuse

    pr, ksp = PreconditionerReuse(ratio=2.0), _FakeKSP()
    # (iterations, reason) of the solve before each decision -> rebuilt?
    for its, reason, rebuilt in [(0, 0, True),      # first solve: build
                                 (6, 2, False),     # reference 6
                                 (12, 2, False),    # 12 <= 2 x 6
                                 (7, -10, False),   # negative curvature: not the PC
                                 (13, 2, True),     # 13 > 12: rebuild
                                 (20, 2, False),    # new reference 20
                                 (40, 2, False),
                                 (41, 2, True),
                                 (9, 2, False),     # reference 9
                                 (1000, -3, True),  # iteration limit
                                 (8, 2, False)]:
        ksp.its, ksp.reason = its, reason
        assert pr.decide(ksp) is rebuilt, (its, reason)
        assert ksp.reuse is (not rebuilt)
    assert pr.reference == 8 and pr.builds == 4
    pr.rebuild_next()
    ksp.its, ksp.reason = 8, 2
    assert pr.decide(ksp) is True


def test_return_map_leaves_elastic_cells_alone():
    """The local return: states below the flow stress and crystalline cells are untouched;
    a returned state lies on the flow surface with an isochoric Fp."""
    from anodetwin.simulate.plasticity import FlowRule, return_map

    rng = np.random.default_rng(0)
    F = np.eye(3) + 0.05 * rng.standard_normal((50, 3, 3))
    from anodetwin.simulate.constitutive import LawParameters

    law = LawParameters(E0_mpa=100e3, E1_mpa=100e3, nu=0.25, beta=0.0)
    rule = FlowRule(np.full(50, 1000.0), np.full(50, 1000.0), 1.0, 4.0, theta_min=0.02)
    theta = np.where(np.arange(50) < 10, 0.0, 0.3)
    s_y = rule.flow_stress(theta)
    assert np.isinf(s_y[:10]).all()
    r = return_map(F, np.broadcast_to(np.eye(3), (50, 3, 3)).copy(), law, theta,
                   s_y, 1.0, 4.0, np.inf)
    elastic = r.dgamma == 0
    assert elastic[:10].all() and (~elastic).sum() > 10
    assert np.allclose(r.Fp_inv[elastic], np.eye(3))
    assert np.allclose(r.von_mises[~elastic], 1000.0, rtol=1e-9)
    assert np.allclose(np.linalg.det(r.Fp_inv), 1, atol=1e-12)


def test_stress_drift_reaches_the_boltzmann_equilibrium():
    """Optional stress coupling: Li in a closed Si bar under a hydrostatic stress that
    rises along z (-150 .. +150 MPa, from cell values as the mechanics gives them) drifts to
    the tensile end and settles where the flux vanishes, ln(theta / (1 - theta)) - kappa
    sigma_h = const (to 1e-3 against a range of ~1), conserving Li (1e-10)."""
    from anodetwin.simulate.diffusion import LithiumTransport
    from anodetwin.simulate.run import stress_factor

    hm = voxel_mesh(COMM, Labels(np.full((20, 2, 2), PHASE["si"], np.uint8), None, 0.5))
    kappa = stress_factor(2.8, 298.15)
    assert kappa == pytest.approx(9.0e-6 * 1e6 / (8.314 * 298.15), rel=0.01)  # Omega ~ 9e-6
    tr = LithiumTransport(hm.mesh, hm.phases, (PHASE["si"],),
                          lambda x: np.zeros(x.shape[1], bool), D0_um2_s=1.0, mode="flux",
                          value=0.0, theta0=0.3, stress_factor=kappa)
    mesh = hm.mesh
    n = mesh.topology.index_map(3).size_local
    zc = mesh.geometry.x[mesh.geometry.dofmaps[0][:n], 2].mean(axis=1)
    tr.set_hydrostatic(300.0 * (zc - 4.75) / 9.5)
    for dt in (20, 50, 100, 200, 500, 1e3, 1e4, 1e5, 1e6):
        tr.step(dt)
    th = tr.theta.x.array
    zv = tr.V.tabulate_dof_coordinates()[:, 2]
    g = np.log(th / (1 - th)) - kappa * tr.sigma_h.x.array
    assert np.ptp(kappa * tr.sigma_h.x.array) > 0.9
    assert np.ptp(g) < 1e-3, np.ptp(g)
    assert th[zv > 9].mean() > 0.4 > 0.25 > th[zv < 0.5].mean()  # up the stress gradient
    assert tr.mean_theta() == pytest.approx(0.3, abs=1e-10)


def test_iterative_newton_scheme_matches_a_direct_solve():
    """The default scheme (tangent predictor, CG truncated at negative curvature, GAMG
    rebuilt every few Jacobians, step control) reaches the solution Newton with MUMPS LU
    reaches, step by step, to Newton's tolerance: a tiny electrode with compacting CBD and
    pores, the stack spring and three swelling steps of its Si."""
    from conftest import two_particle_labels

    from anodetwin.simulate.mechanics import SwellingProblem

    ph, _ = two_particle_labels()
    hm = voxel_mesh(COMM, Labels(np.tile(ph, (1, 2, 2)), None, 1.0))
    n = hm.mesh.topology.index_map(3).size_local
    si = hm.phases.indices[(hm.phases.values == PHASE["si"]) & (hm.phases.indices < n)]
    mats = default_materials()
    assert mats[PHASE["cbd"]].compaction_modulus_mpa > 0
    solutions, krylov = {}, {}
    for linear in ("iterative", "direct"):
        sp = SwellingProblem(hm.mesh, hm.phases, hm.facets, mats,
                             Boundary(p0_mpa=0.3, k_mpa_per_um=0.001),
                             prefix=f"scheme_{linear}_", linear_solver=linear)
        sp.refresh_tangent()
        dof = sp.Q.dofmap.list[:, 0]
        solutions[linear], krylov[linear] = [], []
        for theta in (0.05, 0.1, 0.15):
            sp.theta.x.array[dof[si]] = theta
            sp.theta.x.scatter_forward()
            _, k, _ = sp.solve(f"theta {theta}")
            solutions[linear].append(sp.u.x.array.copy())
            krylov[linear].append(sum(k))
    for it, direct in zip(solutions["iterative"], solutions["direct"], strict=True):
        scale = np.abs(direct).max()
        assert scale > 1e-3  # the electrode swells
        assert np.abs(it - direct).max() <= 1e-6 * scale
    assert min(krylov["iterative"]) > 0  # the iterative path ran its Krylov solver

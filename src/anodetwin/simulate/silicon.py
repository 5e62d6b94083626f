"""Silicon-specific physics of a run: the stress-drift factor and fast-diffusion defect bands.

* :func:`stress_factor`: ``kappa = Omega / (R T)`` (1/MPa), the factor of the hydrostatic
  stress in the Li chemical potential (``[lithiation] stress_coupling``);
* :func:`defect_multiplier`: the diffusivity multiplier per cell of planar defect bands
  through chosen particles (``[lithiation] network_fraction``, ``network_factor``,
  ``network_width_um``): network-like rather than core-shell lithiation.

Constants: :data:`R_GAS` (J/(mol K)), :data:`SI_MOL_PER_M3` (crystalline Si, mol/m3) and
:data:`LI_PER_SI_FULL` (Li per Si atom at theta = 1, Li15Si4).
"""

from __future__ import annotations

import numpy as np

from anodetwin.errors import ParameterError

__all__ = ["R_GAS", "SI_MOL_PER_M3", "LI_PER_SI_FULL", "stress_factor", "defect_multiplier"]

#: Gas constant, J / (mol K).
R_GAS = 8.314462618
#: Si atoms per volume of crystalline Si (2.329 g/cm3, 28.0855 g/mol), mol/m3.
SI_MOL_PER_M3 = 2.329e6 / 28.0855
#: Li per Si atom at theta = 1 (Li15Si4).
LI_PER_SI_FULL = 3.75


def stress_factor(beta: float, temperature_k: float) -> float:
    """The stress factor ``kappa = Omega / (R T)`` of the Li chemical potential.

    The partial molar volume of Li is ``Omega = beta / c_max`` (m3/mol) with ``c_max`` the Li
    content at theta = 1 (3.75 Li per Si atom: ~3.1e5 mol/m3; Omega ~ 9e-6 m3/mol for
    beta = 2.8; the README's model section).

    Parameters
    ----------
    beta : float
        Linear-in-theta volume expansion coefficient of the Si (``J = 1 + beta theta``), 1.
    temperature_k : float
        Temperature, K.

    Returns
    -------
    float
        kappa in 1/MPa.
    """
    omega = beta / (LI_PER_SI_FULL * SI_MOL_PER_M3)
    return omega * 1e6 / (R_GAS * temperature_k)


def defect_multiplier(mesh, phases, particles, fraction: float, factor: float,
                      width_um: float, seed: int = 0) -> np.ndarray | None:
    """Diffusivity multiplier per local cell of planar defect bands (fast-diffusion pathways).

    In a share ``fraction`` of the particles (chosen by ``seed``), two planes through the
    particle's centroid with random normals carry ``factor`` times the diffusivity within
    ``width_um`` of the plane; every other cell keeps 1.

    Parameters
    ----------
    mesh : dolfinx.mesh.Mesh
        The electrode mesh (coordinates in um).
    phases : dolfinx.mesh.MeshTags
        Phase code per cell (unused; the particle labels select the cells).
    particles : dolfinx.mesh.MeshTags or None
        Particle instance per cell (0: none).
    fraction : float
        Share of the particles with defect bands, in [0, 1].
    factor : float
        Diffusivity multiplier inside a band.
    width_um : float
        Half-width of a band (distance from its plane), um.
    seed : int
        Seed of the choice of particles and normals (the same on every rank).

    Returns
    -------
    ndarray of float, shape (n_local_cells,), or None
        The multiplier per owned cell; None when ``fraction`` is 0.

    Raises
    ------
    ParameterError
        ``fraction`` > 0 without particle labels.
    """
    from mpi4py import MPI

    if fraction <= 0:
        return None
    if particles is None:
        raise ParameterError("[lithiation] network_fraction > 0 needs particle labels",
                             "mesh labels with particle instances, or set it to 0")
    n = mesh.topology.index_map(3).size_local
    lab = np.zeros(n, np.int64)
    own = particles.indices < n
    lab[particles.indices[own]] = particles.values[own]
    x = mesh.geometry.x[mesh.geometry.dofmaps[0][:n]].mean(axis=1)
    ids = np.unique(np.concatenate(mesh.comm.allgather(np.unique(lab[lab > 0]))))
    sums = np.zeros((ids.size, 4))
    k = np.searchsorted(ids, lab)
    sel = lab > 0
    np.add.at(sums, k[sel], np.c_[x[sel], np.ones(sel.sum())])
    sums = mesh.comm.allreduce(sums, op=MPI.SUM)
    centre = sums[:, :3] / np.maximum(sums[:, 3:], 1)
    rng = np.random.default_rng(seed)
    chosen = rng.random(ids.size) < fraction
    normals = rng.normal(size=(ids.size, 2, 3))
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    m = np.ones(n)
    for j in range(2):
        dist = np.abs(np.einsum("nd,nd->n", x - centre[k], normals[k, j]))
        m[sel & chosen[k] & (dist <= width_um)] = factor
    return m

"""Rate-dependent plastic flow of lithiated Si: the local (per cell) return map.

Kinematics: ``F = Fe Fp Fs`` with the isochoric plastic part ``Fp`` (det Fp = 1) and the
isotropic swelling ``Fs = Js^(1/3) I``; the elastic part ``Fe`` carries the stored energy
of :mod:`anodetwin.simulate.constitutive`, whose Kirchhoff stress deviator, which drives
the flow, is :func:`~anodetwin.simulate.constitutive.kirchhoff_deviator` (``mu dev(be)``
with ``be = Fe Fe^T``, from the neo-Hookean shear part; the volumetric energy only adds a
pressure) and whose shear modulus is that of
:func:`~anodetwin.simulate.constitutive.lame_constants`.

Flow rule (Perzyna overstress, J2, associative; as used for LixSi by Bower, Guduru &
Sethuraman, J. Mech. Phys. Solids 59 (2011) 804): the equivalent plastic strain rate is

    d(eps_p)/dt = rate0 ((sigma_e / sigma_y(theta)) - 1)^m   for sigma_e > sigma_y,

with ``sigma_e`` the von Mises Cauchy stress and a flow stress linear in theta between
``sigma_y0`` and ``sigma_y1`` (Sethuraman et al., J. Power Sources 195 (2010) 5062: ~1.75
GPa early in the first lithiation, ~1 GPa later). Cells below ``theta_min`` are crystalline
Si and stay elastic.

Integration: backward Euler with the exponential map. Given the total ``F`` at the end of a
step and ``Fp`` at its start, the trial state ``be_tr`` is returned along the fixed flow
direction ``N = dev(eps_tr) / eps_eq`` of the trial elastic log strain ``eps_tr = 1/2 ln
be_tr`` (coaxial with ``be_tr``; for the isotropic law and elastic strains of a few percent
it is the normal of the von Mises surface): ``be = exp(-2 dgamma N) be_tr``. The von Mises
stress falls monotonically along this path, to zero at ``dgamma = eps_eq``, so the
increment ``dgamma`` (the equivalent plastic strain) is the unique root in ``[0, eps_eq]``
of

    q(dgamma) / Je = sigma_y (1 + (dgamma / (rate0 dt))^(1/m)).

``Je`` is unchanged (tr N = 0), so the flow is isochoric. The return is then
``Fp^-1 <- F^-1 M F Fp^-1`` with ``M = exp(-dgamma N)`` in the principal frame of
``be_tr``. In the rate-independent limit (rate0 dt -> infinity) the stress lies on the yield
surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodetwin.simulate.constitutive import LawParameters, kirchhoff_deviator, swelling_ratio

__all__ = ["FlowRule", "ReturnResult", "return_map", "return_tangent"]


@dataclass(frozen=True)
class FlowRule:
    """Per-cell flow parameters (arrays of the cells' length, or scalars).

    Attributes
    ----------
    sigma_y0, sigma_y1 : array
        Flow stress at theta = 0 and 1 (MPa); ``inf`` for elastic cells.
    rate0 : array
        Reference plastic strain rate (1/s).
    m : array
        Rate exponent (1).
    theta_min : float
        Below this theta a cell is crystalline and elastic.
    """

    sigma_y0: np.ndarray
    sigma_y1: np.ndarray
    rate0: np.ndarray
    m: np.ndarray
    theta_min: float = 0.0

    def flow_stress(self, theta: np.ndarray) -> np.ndarray:
        """Flow stress ``sigma_y(theta)``, linear between ``sigma_y0`` and ``sigma_y1``.

        Parameters
        ----------
        theta : ndarray, shape (n,)
            Li content of the cells (1).

        Returns
        -------
        ndarray, shape (n,)
            Flow stress, MPa; ``inf`` where the cell is elastic (``theta < theta_min`` or
            no finite flow stress).
        """
        with np.errstate(invalid="ignore"):
            s = self.sigma_y0 + (self.sigma_y1 - self.sigma_y0) * theta
        return np.where((theta >= self.theta_min) & np.isfinite(s), s, np.inf)


@dataclass(frozen=True)
class ReturnResult:
    """The returned state: ``Fp_inv`` (n, 3, 3), the plastic increment ``dgamma`` (n,) and
    the von Mises Cauchy stress after the return (n,), MPa."""

    Fp_inv: np.ndarray
    dgamma: np.ndarray
    von_mises: np.ndarray


def _principal(be: np.ndarray):
    w, Q = np.linalg.eigh(be)
    return np.maximum(w, 1e-300), Q


def _illinois(g, lo: np.ndarray, hi: np.ndarray, gtol: np.ndarray, iterations: int
              ) -> np.ndarray:
    """The roots of the decreasing functions ``g`` (vectorised, one per entry) bracketed by
    ``g(lo) >= 0 >= g(hi)``: regula falsi with the Illinois modification (superlinear;
    the bracket never grows), to ``|g| <= gtol`` or a bracket of round-off width."""
    g_lo, g_hi = g(lo, None), g(hi, None)
    x = lo.copy()
    side = np.zeros(lo.size, dtype=np.int8)
    act = np.flatnonzero(g_lo > gtol)  # entries still to solve
    for _ in range(iterations):
        if act.size == 0:
            break
        a, b, ga, gb = lo[act], hi[act], g_lo[act], g_hi[act]
        xa = np.clip((a * gb - b * ga) / (gb - ga), a, b)
        gx = g(xa, act)
        x[act] = xa
        pos = gx > 0
        lo[act] = np.where(pos, xa, a)
        hi[act] = np.where(pos, b, xa)
        # Illinois: halve the far end's value when the same end moves twice
        g_lo[act] = np.where(pos, gx, np.where(side[act] == -1, 0.5 * ga, ga))
        g_hi[act] = np.where(pos, np.where(side[act] == 1, 0.5 * gb, gb), gx)
        side[act] = np.where(pos, 1, -1)
        done = (np.abs(gx) <= gtol[act]) | (hi[act] - lo[act] <= 4e-16 * hi[act])
        act = act[~done]
    return x


def return_map(F: np.ndarray, Fp_inv_n: np.ndarray, law: LawParameters, theta: np.ndarray,
               sigma_y: np.ndarray, rate0: np.ndarray, m: np.ndarray,
               dt: float, iterations: int = 80) -> ReturnResult:
    """Backward-Euler return of every cell (module notes).

    Parameters
    ----------
    F : (n, 3, 3) array
        Total deformation gradient at the end of the step.
    Fp_inv_n : (n, 3, 3) array
        Inverse plastic part at the start of the step.
    law : LawParameters
        The material constants of each cell (arrays (n,) or floats): the swelling and the
        Kirchhoff deviator come from :mod:`anodetwin.simulate.constitutive`.
    theta : (n,) array
        Li content of each cell (1).
    sigma_y : (n,) array
        Flow stress (MPa), ``inf`` for elastic cells.
    rate0, m : (n,) arrays or float
        Reference plastic strain rate (1/s) and rate exponent.
    dt : float
        Step length (s); ``inf`` gives the rate-independent return.
    iterations : int
        Largest number of root-finding steps of the plastic increment (regula falsi,
        Illinois; to a stress residual of 1e-12 of the flow stress).

    Returns
    -------
    ReturnResult
        The returned ``Fp^-1`` (n, 3, 3), the increment of the equivalent plastic strain
        (n,) and the von Mises Cauchy stress (n,), MPa.
    """
    n = F.shape[0]
    theta = np.broadcast_to(np.asarray(theta, dtype=float), (n,))
    sigma_y = np.broadcast_to(sigma_y, (n,))
    rate0, m = np.broadcast_to(rate0, (n,)), np.broadcast_to(m, (n,))
    Js = np.broadcast_to(swelling_ratio(law, theta), (n,))
    Fe = F @ Fp_inv_n / np.cbrt(Js)[:, None, None]
    w, Q = _principal(Fe @ np.swapaxes(Fe, 1, 2))
    Je = np.sqrt(np.prod(w, axis=1))

    def von_mises(dev):
        return np.sqrt(1.5 * np.sum(dev * dev, axis=1))

    vm = von_mises(kirchhoff_deviator(law, theta, w)) / Je  # the trial state
    flow = np.isfinite(sigma_y) & (vm > sigma_y)
    dgamma = np.zeros(n)
    Fp_inv = Fp_inv_n.copy()
    if not flow.any():
        return ReturnResult(Fp_inv, dgamma, vm)
    idx = np.flatnonzero(flow)
    # flow direction: the trial deviatoric elastic log strain (coaxial with be_tr)
    eps = 0.5 * np.log(w[idx])
    e = eps - eps.mean(axis=1, keepdims=True)
    eq = np.sqrt(2 / 3 * np.sum(e * e, axis=1))  # returning by eq makes be isotropic
    N = e / eq[:, None]
    s_y, je, mm, scale = sigma_y[idx], Je[idx], m[idx], rate0[idx] * dt
    law_f, theta_f, w_f = law.take(idx), theta[idx], w[idx]

    def deviator(dg, sub=slice(None)):  # Kirchhoff deviator (principal) after a return
        return kirchhoff_deviator(law_f.take(sub), theta_f[sub],
                                  w_f[sub] * np.exp(-2 * dg[:, None] * N[sub]))

    def g(dg, sub):  # stress minus flow stress with overstress: decreases along the return
        sub = slice(None) if sub is None else sub
        over = (dg / scale[sub]) ** (1.0 / mm[sub]) if np.isfinite(dt) else 0.0
        return von_mises(deviator(dg, sub)) / je[sub] - s_y[sub] * (1 + over)

    dg = _illinois(g, np.zeros(idx.size), eq.copy(), 1e-12 * s_y, iterations)
    dgamma[idx] = dg
    vm[idx] = von_mises(deviator(dg)) / je
    M = (Q[idx] * np.exp(-dg[:, None] * N)[:, None, :]) @ np.swapaxes(Q[idx], 1, 2)
    Fp_inv[idx] = np.linalg.solve(F[idx], M @ F[idx] @ Fp_inv_n[idx])
    return ReturnResult(Fp_inv, dgamma, vm)


def return_tangent(F: np.ndarray, Fp_inv_n: np.ndarray, law: LawParameters,
                   theta: np.ndarray, sigma_y: np.ndarray, rate0: np.ndarray,
                   m: np.ndarray, dt: float, step: float = 1e-7
                   ) -> tuple[ReturnResult, np.ndarray]:
    """The return of every cell and its derivative ``d(Fp^-1)/dF``: the algorithmic
    (consistent) tangent of the flow, by forward differences of :func:`return_map` in each
    component of ``F`` (the return is solved to round-off, so a step of 1e-7 gives the
    derivative to ~1e-7).

    Parameters
    ----------
    F, Fp_inv_n, law, theta, sigma_y, rate0, m, dt
        As in :func:`return_map`.
    step : float
        Difference step in each component of ``F`` (1).

    Returns
    -------
    ReturnResult
        The return at ``F``.
    ndarray, shape (n, 3, 3, 3, 3)
        ``D[c, i, j, k, l] = d(Fp^-1)_ij / dF_kl`` of cell ``c``; 0 in cells that do not
        flow (their ``Fp^-1`` stays that of the step's start).
    """
    n = F.shape[0]
    r = return_map(F, Fp_inv_n, law, theta, sigma_y, rate0, m, dt)
    D = np.zeros((n, 3, 3, 3, 3))
    idx = np.flatnonzero(r.dgamma > 0)
    if idx.size == 0:
        return r, D
    args = (Fp_inv_n[idx], law.take(idx), np.broadcast_to(theta, (n,))[idx],
            np.broadcast_to(sigma_y, (n,))[idx], np.broadcast_to(rate0, (n,))[idx],
            np.broadcast_to(m, (n,))[idx], dt)
    for k in range(3):
        for l in range(3):  # noqa: E741 (the index of the derivative's component)
            Fk = F[idx].copy()
            Fk[:, k, l] += step
            D[idx, :, :, k, l] = (return_map(Fk, *args).Fp_inv - r.Fp_inv[idx]) / step
    return r, D

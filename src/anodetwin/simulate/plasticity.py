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

__all__ = ["FlowRule", "ReturnResult", "return_map"]


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
        Bisection steps of the plastic increment.

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

    def deviator(dg):  # Kirchhoff deviator (principal) after a return by dg
        return kirchhoff_deviator(law_f, theta_f, w_f * np.exp(-2 * dg[:, None] * N))

    def g(dg):  # stress minus flow stress with overstress: decreases along the return
        over = (dg / scale) ** (1.0 / mm) if np.isfinite(dt) else 0.0
        return von_mises(deviator(dg)) / je - s_y * (1 + over)

    hi = eq.copy()  # g(eq) < 0: no deviator left
    lo = np.zeros(idx.size)
    for _ in range(iterations):  # bisection
        mid = 0.5 * (lo + hi)
        pos = g(mid) > 0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
    dg = 0.5 * (lo + hi)
    dgamma[idx] = dg
    vm[idx] = von_mises(deviator(dg)) / je
    M = (Q[idx] * np.exp(-dg[:, None] * N)[:, None, :]) @ np.swapaxes(Q[idx], 1, 2)
    Fp_inv[idx] = np.linalg.solve(F[idx], M @ F[idx] @ Fp_inv_n[idx])
    return ReturnResult(Fp_inv, dgamma, vm)

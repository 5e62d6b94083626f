"""The material law of every phase, defined once: a stored energy, and what derives from it.

Kinematics: ``F = Fe Fp Fs`` with the isotropic swelling ``Fs = Js^(1/3) I``, ``Js = 1 +
beta theta`` (theta: normalised Li content, 1 = Li15Si4), and an isochoric plastic part
``Fp`` (the identity unless plastic flow is on, :mod:`anodetwin.simulate.plasticity`), so
``Fe = F Fp^-1 / Js^(1/3)`` and ``Je = det F / Js``. Every phase has the same law with its
own constants (:class:`LawParameters`, one cell value each in the solver): a compressible
neo-Hookean energy per unit intermediate volume

    psi(Fe) = mu / 2 (tr(Fe^T Fe) - 3) - mu ln Je + U(Je),

with the convex volumetric energy ``U`` of :func:`volumetric_energy` (compaction of porous
phases included), stored per reference volume as ``W(F) = Js psi(Fe)``
(:func:`stored_energy`). Lame constants from ``E(theta) = E0 + (E1 - E0) theta``
(lithiated Si softens) and ``nu`` (:func:`lame_constants`). Units: um, MPa.

Everything else derives from ``W``: the first Piola-Kirchhoff stress ``P = dW/dF`` by UFL
differentiation (:func:`first_piola`), the Cauchy stress ``sigma = P F^T / det F``
(:func:`cauchy_stress`), evaluated on cells by ``fem.Expression`` of that UFL; the residual
and the Newton tangent by ``ufl.derivative`` of the integrated ``W``
(:class:`~anodetwin.simulate.mechanics.SwellingProblem`).

The plastic return map works cell by cell in NumPy on principal values and needs the
deviator of the Kirchhoff stress ``tau = P F^T`` at trial states, many times per cell. It
takes it from :func:`kirchhoff_deviator`, the closed form of the shear part of ``psi``
(``mu / 2 (tr be - 3) - mu ln Je``: ``dev tau = mu dev(be)``, ``be = Fe Fe^T``); the
volumetric energy ``U(Je)`` adds only to the pressure, so any ``U`` leaves the return map
valid. A test checks :func:`kirchhoff_deviator` against the UFL derivative of ``W`` at
random states, so a change of the shear energy that is not carried there fails it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["LawParameters", "cauchy_stress", "first_piola", "kinematics",
           "kirchhoff_deviator", "kirchhoff_pressure", "lame_constants", "stored_energy",
           "swelling_ratio", "volumetric_energy"]


@dataclass(frozen=True)
class LawParameters:
    """The constants of the law: floats, NumPy arrays (one value per cell) or UFL
    expressions (DG0 functions of the cells), under the names of
    :class:`~anodetwin.simulate.materials.Material`.

    Attributes
    ----------
    E0_mpa, E1_mpa : float, array or UFL
        Young's modulus at theta = 0 and theta = 1 (MPa).
    nu : float, array or UFL
        Poisson ratio (1).
    beta : float, array or UFL
        Swelling coefficient: volume ratio ``1 + beta`` at theta = 1.
    compaction_modulus_mpa : float, array or UFL
        Bulk stiffness that compaction adds at Je = 1 (MPa); 0 for a solid phase.
    compaction_limit : float, array or UFL
        Elastic volume ratio (solid fraction) at which the pores are closed; 0 where
        ``compaction_modulus_mpa`` is 0.
    """

    E0_mpa: object
    E1_mpa: object
    nu: object
    beta: object
    compaction_modulus_mpa: object = 0.0
    compaction_limit: object = 0.0

    def take(self, cells) -> LawParameters:
        """The constants of some states: every array indexed by ``cells`` (floats kept).

        Parameters
        ----------
        cells : index array or slice
            The states to keep.

        Returns
        -------
        LawParameters
        """
        return LawParameters(**{f.name: (np.asarray(getattr(self, f.name))[cells]
                                         if np.ndim(getattr(self, f.name)) else
                                         getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def of(cls, material) -> LawParameters:
        """The constants of a :class:`~anodetwin.simulate.materials.Material`.

        Parameters
        ----------
        material : Material
            Phase material; its compaction limit is taken only where it has a compaction
            modulus (``effective_compaction_limit``).

        Returns
        -------
        LawParameters
            Floats: moduli in MPa, ``nu``, ``beta`` and the compaction constants.
        """
        return cls(material.E0_mpa, material.E1_mpa, material.nu, material.beta,
                   material.compaction_modulus_mpa, material.effective_compaction_limit)


def lame_constants(p: LawParameters, theta):
    """Lame constants at Li content ``theta``.

    Parameters
    ----------
    p : LawParameters
        Constants (floats, arrays (n,) or UFL).
    theta : float, array (n,) or UFL
        Li content (1).

    Returns
    -------
    lam, mu : like ``theta``
        Lame's first constant and the shear modulus (MPa) of ``E(theta) = E0 + (E1 - E0)
        theta`` and ``nu``.
    """
    E = p.E0_mpa + (p.E1_mpa - p.E0_mpa) * theta
    lam = E * p.nu / ((1 + p.nu) * (1 - 2 * p.nu))
    mu = E / (2 * (1 + p.nu))
    return lam, mu


def swelling_ratio(p: LawParameters, theta):
    """Swelling volume ratio ``Js = 1 + beta theta``.

    Parameters
    ----------
    p : LawParameters
        Constants; only ``beta`` is used.
    theta : float, array (n,) or UFL
        Li content (1; 1 = Li15Si4).

    Returns
    -------
    like ``theta``
        Stress-free volume ratio (1).
    """
    return 1 + p.beta * theta


def volumetric_energy(Je, lam, compaction_modulus_mpa=0.0, compaction_limit=0.0, ln=np.log):
    """Volumetric stored energy per intermediate volume (MPa).

    ``U = lam / 4 (Je^2 - 1 - 2 ln Je) + K_c a ((Je - 1) - a ln((Je - J_min) / a))`` with
    ``K_c`` the compaction modulus, ``J_min`` the compaction limit and ``a = 1 - J_min``.
    Both terms vanish with zero slope at Je = 1 and are convex: the first has ``U'' = lam /
    2 (1 + Je^-2)`` (bulk modulus lam + 2 mu / 3 at Je = 1 with the isochoric part), the
    second adds the compaction stiffness ``K_c (a / (Je - J_min))^2``: K_c at Je = 1, 100
    K_c when a tenth of the pore volume is left, unbounded at J_min. (The common ``lam / 2
    (ln Je)^2`` is not convex beyond Je = e, where a stretched soft matrix loses
    ellipticity.)

    Parameters
    ----------
    Je : array or UFL expression
        Elastic volume ratio.
    lam, compaction_modulus_mpa : array, float or UFL expression
        Lame's first constant and the compaction modulus (MPa).
    compaction_limit : array, float or UFL expression
        Solid volume fraction, where the pores are closed (0 <= limit < 1).
    ln : callable
        The logarithm (``numpy.log``, or ``ufl.ln`` for forms).

    Returns
    -------
    like ``Je``
        ``U`` (MPa); NaN past the limit (Je < J_min).
    """
    a = 1 - compaction_limit
    # ln x written as 2 ln x^(1/2): its derivative (the residual) holds x^(1/2) and so is
    # NaN past the limit, where the plain 1/x would lead Newton to the energy's mirror
    # branch (J < J_min); a NaN residual makes the step control cut the step instead
    return lam / 4 * (Je ** 2 - 1 - 2 * ln(Je)) + \
        compaction_modulus_mpa * a * ((Je - 1) - 2 * a * ln(((Je - compaction_limit) / a)
                                                            ** 0.5))


def kirchhoff_pressure(Je, lam, compaction_modulus_mpa=0.0, compaction_limit=0.0):
    """``Je dU/dJe`` (MPa) of :func:`volumetric_energy`: the volumetric part of the
    Kirchhoff stress, ``lam / 2 (Je^2 - 1) + K_c Je a (Je - 1) / (Je - J_min)``.

    Parameters and units as :func:`volumetric_energy`; returns an array like ``Je``.
    """
    return lam / 2 * (Je ** 2 - 1) + compaction_modulus_mpa * Je * (1 - compaction_limit) \
        * (Je - 1) / (Je - compaction_limit)


def kinematics(F, p: LawParameters, theta, Fp_inv=None):
    """Swelling ratio, elastic deformation gradient and elastic volume ratio (UFL).

    Parameters
    ----------
    F : UFL (3, 3)
        Deformation gradient ``I + grad u``.
    p : LawParameters
    theta : UFL scalar
        Li content (times the load factor).
    Fp_inv : UFL (3, 3) or None
        Inverse plastic part (isochoric); None: no plastic flow.

    Returns
    -------
    Js, Fe, Je : UFL
        ``1 + beta theta``, ``F Fp^-1 / Js^(1/3)`` and ``det F / Js``.
    """
    import ufl

    Js = swelling_ratio(p, theta)
    Fe = F / Js ** (1 / 3) if Fp_inv is None else F * Fp_inv / Js ** (1 / 3)
    return Js, Fe, ufl.det(F) / Js


def stored_energy(F, p: LawParameters, theta, Fp_inv=None):
    """The stored energy per reference volume ``W = Js psi(Fe)`` (UFL, MPa = uJ/um^3;
    module notes): the one definition of the material law.

    Parameters
    ----------
    F : UFL (3, 3)
        Deformation gradient (a ``ufl.variable`` to differentiate by).
    p : LawParameters
    theta : UFL scalar
        Li content (times the load factor).
    Fp_inv : UFL (3, 3) or None
        Inverse plastic part; None: no plastic flow.

    Returns
    -------
    UFL scalar
    """
    import ufl

    Js, Fe, Je = kinematics(F, p, theta, Fp_inv)
    lam, mu = lame_constants(p, theta)
    psi = mu / 2 * (ufl.tr(Fe.T * Fe) - 3) - mu * ufl.ln(Je) + \
        volumetric_energy(Je, lam, p.compaction_modulus_mpa, p.compaction_limit, ln=ufl.ln)
    return Js * psi


def first_piola(F, p: LawParameters, theta, Fp_inv=None):
    """First Piola-Kirchhoff stress ``P = dW/dF`` of :func:`stored_energy`.

    Parameters
    ----------
    F, p, theta, Fp_inv
        As for :func:`stored_energy`; ``F`` must be a ``ufl.variable``.

    Returns
    -------
    UFL (3, 3)
        Stress per reference area, MPa.
    """
    import ufl

    return ufl.diff(stored_energy(F, p, theta, Fp_inv), F)


def cauchy_stress(F, p: LawParameters, theta, Fp_inv=None):
    """Cauchy stress ``sigma = P F^T / det F`` of :func:`stored_energy`.

    Parameters
    ----------
    F : UFL (3, 3)
        Deformation gradient; must be a ``ufl.variable`` (see :func:`first_piola`).
    p : LawParameters
        Material constants.
    theta : UFL scalar
        Li content (1).
    Fp_inv : UFL (3, 3) or None, optional
        Inverse plastic part; None without plastic flow.

    Returns
    -------
    UFL (3, 3)
        True stress in the current configuration, MPa.
    """
    import ufl

    return first_piola(F, p, theta, Fp_inv) * F.T / ufl.det(F)


def kirchhoff_deviator(p: LawParameters, theta, be):
    """Deviator of the Kirchhoff stress of :func:`stored_energy` in principal form (MPa):
    ``mu dev(be)``, from its shear part ``mu / 2 (tr be - 3) - mu ln Je`` (module notes).

    It takes all the law's constants, so a term added to the shear energy with new
    constants is carried here with them (a test compares this with the UFL derivative of
    :func:`stored_energy` at random constants).

    Parameters
    ----------
    p : LawParameters
        The constants of each state: arrays (n,) or floats.
    theta : array (n,) or float
        Li content (1).
    be : array (n, 3)
        Principal values of the elastic left Cauchy-Green tensor ``Fe Fe^T``.

    Returns
    -------
    array (n, 3)
        Principal deviatoric Kirchhoff stress (MPa).
    """
    _, mu = lame_constants(p, theta)
    tau = np.broadcast_to(np.asarray(mu, dtype=float), (len(be),))[:, None] * be
    return tau - tau.mean(axis=1, keepdims=True)

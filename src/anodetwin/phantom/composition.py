"""Electrode composition: from a recipe (weight fractions, densities, loading, thickness) to
volume fractions and areal capacities.

Defaults follow the reference anode (89 wt% micron Si, 9 wt% PAA binder, 1.8 wt% carbon black
Super C65, 0.2 wt% SWCNT; 3 mg/cm2; calendered to ~21 um) paired with a 3.5 mAh/cm2 NMC811
cathode (cathode-limited). Densities (g/cm3): crystalline Si 2.33; PAA ~1.22 (dry polymer);
carbon black ~1.9 (skeletal; C65 1.8-2.1); SWCNT ~1.5 (bundles 1.3-1.6). Si specific
capacity 3579 mAh/g to Li15Si4 (Obrovac & Christensen 2004).

The carbon-binder domain (CBD) seen in tomograms holds nano-pores: its volume is the solid
binder + carbon volume divided by ``1 - cbd_nanoporosity`` (default 0.5; values of 0.4-0.6
are reported for CBD, e.g. Zielke et al. 2015).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from anodetwin.errors import ParameterError

__all__ = ["Recipe", "Composition", "electrode_composition", "SI_CAPACITY_MAH_G"]

#: Specific capacity of Si lithiated to Li15Si4 (Li3.75Si), mAh/g.
SI_CAPACITY_MAH_G = 3579.0


@dataclass(frozen=True)
class Recipe:
    """Anode recipe and cell balance.

    Attributes
    ----------
    weight_fractions : dict
        Mass fraction per component; must contain ``"si"``; the others form the CBD.
    densities_g_cm3 : dict
        Density per component (g/cm3).
    areal_loading_mg_cm2 : float
        Dry coating mass per area (mg/cm2).
    thickness_um : float
        Coating thickness after calendering (um).
    cathode_capacity_mah_cm2 : float
        Areal capacity of the cathode (mAh/cm2); the cell is cathode-limited if it is below
        the anode's.
    cbd_nanoporosity : float
        Pore fraction inside the carbon-binder domain (0 <= value < 1).
    si_capacity_mah_g : float
        Si specific capacity (mAh/g) at full lithiation (theta = 1).
    """

    weight_fractions: dict = field(default_factory=lambda: {
        "si": 0.89, "paa_binder": 0.09, "carbon_black": 0.018, "swcnt": 0.002})
    densities_g_cm3: dict = field(default_factory=lambda: {
        "si": 2.33, "paa_binder": 1.22, "carbon_black": 1.9, "swcnt": 1.5})
    areal_loading_mg_cm2: float = 3.0
    thickness_um: float = 21.0
    cathode_capacity_mah_cm2: float = 3.5
    cbd_nanoporosity: float = 0.5
    si_capacity_mah_g: float = SI_CAPACITY_MAH_G


@dataclass(frozen=True)
class Composition:
    """Volume fractions (of the coating) and capacities computed from a :class:`Recipe`.

    Attributes
    ----------
    si_fraction : float
        Si volume fraction of the coating.
    cbd_solid_fraction : float
        Binder + carbon solid volume fraction.
    cbd_fraction : float
        Carbon-binder domain volume fraction (solid + its nano-pores), the CBD phase.
    porosity : float
        Total pore fraction (1 - si - cbd_solid).
    pore_fraction : float
        Pores outside the CBD (1 - si - cbd), the electrolyte-filled pore phase.
    anode_capacity_mah_cm2, cathode_capacity_mah_cm2 : float
        Areal capacities.
    si_utilisation : float
        Fraction of the Si capacity used at 100% cell state of charge (theta at full charge).
    cathode_limited : bool
    """

    si_fraction: float
    cbd_solid_fraction: float
    cbd_fraction: float
    porosity: float
    pore_fraction: float
    anode_capacity_mah_cm2: float
    cathode_capacity_mah_cm2: float
    si_utilisation: float
    cathode_limited: bool
    component_volume_fractions: dict

    def to_dict(self) -> dict:
        """The composition as a plain dict (field name to value), e.g. for JSON.

        Returns
        -------
        dict
            Every field; ``component_volume_fractions`` stays a dict of fractions.
        """
        return asdict(self)


def electrode_composition(recipe: Recipe | None = None) -> Composition:
    """Volume fractions and areal capacities of an anode coating.

    Parameters
    ----------
    recipe : Recipe, optional
        The recipe; defaults to the reference anode.

    Returns
    -------
    Composition

    Raises
    ------
    ParameterError
        Negative or missing values, weight fractions not summing to 1, or solids that do not
        fit in the coating volume (loading too high for the thickness).
    """
    r = recipe or Recipe()
    wf, rho = dict(r.weight_fractions), dict(r.densities_g_cm3)
    if "si" not in wf:
        raise ParameterError("composition weight_fractions lack 'si'", "add the Si mass fraction")
    for k, v in wf.items():
        if not (0 <= float(v) <= 1):
            raise ParameterError(f"weight fraction of '{k}' is {v}", "give a value in [0, 1]")
        if k not in rho or not float(rho[k]) > 0:
            raise ParameterError(f"density of '{k}' is missing or not positive",
                                 "give densities_g_cm3 for every component (g/cm3)")
    total = sum(float(v) for v in wf.values())
    if abs(total - 1.0) > 1e-6:
        raise ParameterError(f"weight fractions sum to {total:.6g}, not 1",
                             "make the component mass fractions add up to 1")
    for name in ("areal_loading_mg_cm2", "thickness_um", "cathode_capacity_mah_cm2",
                 "si_capacity_mah_g"):
        if not float(getattr(r, name)) > 0:
            raise ParameterError(f"composition {name} is {getattr(r, name)}", "give a positive value")
    if not (0 <= r.cbd_nanoporosity < 1):
        raise ParameterError(f"cbd_nanoporosity is {r.cbd_nanoporosity}", "give a value in [0, 1)")
    coating_cm3 = r.thickness_um * 1e-4  # per cm2
    vol = {k: float(wf[k]) * r.areal_loading_mg_cm2 * 1e-3 / float(rho[k]) / coating_cm3
           for k in wf}
    si = vol["si"]
    cbd_solid = sum(v for k, v in vol.items() if k != "si")
    cbd = cbd_solid / (1.0 - r.cbd_nanoporosity)
    if si + cbd_solid >= 1.0 or si + cbd > 1.0:
        raise ParameterError(
            f"{r.areal_loading_mg_cm2} mg/cm2 does not fit in {r.thickness_um} um "
            f"(Si {si:.3f} + CBD {cbd:.3f} of the volume)",
            "lower the loading, raise the thickness or the CBD nano-porosity")
    anode = float(wf["si"]) * r.areal_loading_mg_cm2 * 1e-3 * r.si_capacity_mah_g
    cathode = float(r.cathode_capacity_mah_cm2)
    return Composition(
        si_fraction=si, cbd_solid_fraction=cbd_solid, cbd_fraction=cbd,
        porosity=1.0 - si - cbd_solid, pore_fraction=1.0 - si - cbd,
        anode_capacity_mah_cm2=anode, cathode_capacity_mah_cm2=cathode,
        si_utilisation=min(1.0, cathode / anode), cathode_limited=cathode < anode,
        component_volume_fractions=vol)

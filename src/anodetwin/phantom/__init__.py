"""Digital electrode phantoms: synthetic Si anodes and in situ tomogram series with exact
ground truth (composition, microstructure, lithiation, deformation, rendering).

Quick use::

    from anodetwin.phantom import load_config, generate_series
    cfg = load_config("phantom.toml", seed=1)      # or load_config() for the defaults
    res = generate_series(cfg, "series.h5")        # layout: anodetwin.phantom.generate

    from anodetwin.io import read_volume
    t3 = read_volume("series.h5:/steps/T3/tomogram")
"""

from anodetwin.phantom.composition import Composition, Recipe, electrode_composition
from anodetwin.phantom.config import PhantomConfig, config_from_dict, load_config, soc_from_protocol
from anodetwin.phantom.generate import SeriesResult, generate_series
from anodetwin.phantom.microstructure import PHASE, Microstructure, make_microstructure

__all__ = ["Composition", "Recipe", "electrode_composition", "PhantomConfig",
           "config_from_dict", "load_config", "soc_from_protocol", "SeriesResult",
           "generate_series", "PHASE", "Microstructure", "make_microstructure"]

"""Digital electrode phantoms: synthetic Si anodes and in situ tomogram series with exact
ground truth (composition, microstructure, lithiation, deformation, rendering).

Quick use::

    from anodetwin.phantom import load_config, generate_series
    cfg = load_config("phantom.toml", seed=1)      # or load_config() for the defaults
    res = generate_series(cfg, "series.h5")        # layout: anodetwin.phantom.generate

    from anodetwin.io import read_volume
    t3 = read_volume("series.h5:/steps/T3/tomogram")

or, as ``anodetwin phantom`` does, a folder with the series, a summary and a preview:
``write_phantom(cfg, "out/")``.
"""

from anodetwin.phantom.composition import Composition, Recipe, electrode_composition
from anodetwin.phantom.config import (Geometry, Particles, PhantomConfig, Render, Separator,
                                      Series, config_from_dict, load_config, soc_from_protocol,
                                      validate)
from anodetwin.phantom.generate import SeriesResult, generate_series
from anodetwin.phantom.microstructure import PHASE, Microstructure, make_microstructure
from anodetwin.phantom.report import PhantomOutput, write_phantom

__all__ = ["Composition", "Recipe", "electrode_composition", "PhantomConfig", "Geometry",
           "Particles", "Separator", "Render", "Series", "config_from_dict", "load_config",
           "validate", "soc_from_protocol", "SeriesResult", "generate_series", "PHASE",
           "Microstructure", "make_microstructure", "PhantomOutput", "write_phantom"]

"""Phase codes shared by every stage (segmentation, phantoms, meshes, DVC regions).

0 pore/electrolyte, 1 carbon-binder domain (or the merged "CBD+E" that phase contrast
cannot split; lithiated Si that looks like it in the image is 1 too), 2 non-lithiated
silicon, 3 lithiated silicon, 4 copper current collector, 5 separator.
"""

PHASE = {"pore": 0, "cbd": 1, "si": 2, "lithiated": 3, "copper": 4, "separator": 5}

#: Codes of the electrode layer between the collector and the separator.
ELECTRODE_PHASES = (PHASE["pore"], PHASE["cbd"], PHASE["si"], PHASE["lithiated"])

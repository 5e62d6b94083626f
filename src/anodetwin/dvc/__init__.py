"""Digital volume correlation: measured displacement, strain and residual fields (spam).

Available now: the noise floor of a double scan (:func:`noise_floor`), which sets the
threshold below which residual-map values are noise.
"""

from anodetwin.dvc.noise import NoiseFloor, noise_floor, scan_difference

__all__ = ["NoiseFloor", "noise_floor", "scan_difference"]

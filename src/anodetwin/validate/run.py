"""One validation from the folders to the report: :func:`validate_run`.

It reads an ``anodetwin simulate`` folder (run.json, summary.csv, dvc/<T>.h5) and an
``anodetwin dvc-series`` folder (cumulative_0_<k>.h5), pairs DVC step k with the simulation
output ``T<k>`` (or the ``[steps]`` map), brings the simulation to the DVC nodes
(:mod:`anodetwin.validate.compare`), computes the metrics and checks
(:mod:`anodetwin.validate.metrics`) and writes the report folder
(:mod:`anodetwin.validate.report`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from anodetwin.validate.compare import SimulationRun, StepPair, load_simulation, pair_steps
from anodetwin.validate.config import ValidateConfig, config_from_dict
from anodetwin.validate.metrics import (Check, ParticleSphere, StepMetrics, checks,
                                        particle_spheres, step_metrics)

__all__ = ["ValidationResult", "validate_run"]


@dataclass(frozen=True)
class ValidationResult:
    """What one validation found and where its report is.

    Attributes
    ----------
    steps : tuple of StepMetrics
        Per DVC step, in step order.
    checks : tuple of Check
        The pass/fail table (rows read as mappings too: ``c["passed"]``).
    passed : bool
        Every check passed.
    report : Path
        The report's HTML file (``report.html`` in the report folder).
    """

    steps: tuple[StepMetrics, ...]
    checks: tuple[Check, ...]
    passed: bool
    report: Path

    @property
    def metrics(self) -> list[dict]:
        """The per-step metrics as plain dicts: what ``metrics.json`` holds under ``steps``.
        """
        return [m.as_dict() for m in self.steps]


def _particles(cfg: ValidateConfig) -> tuple[object | None, list[ParticleSphere] | None]:
    """The labels of ``[microstructure]`` and their particles (None, None without)."""
    if not cfg.labels:
        return None, None
    from anodetwin.errors import ParameterError
    from anodetwin.mesh.io import read_labels_volume

    labels = read_labels_volume(cfg.labels, cfg.particles or None)
    if labels.particles is None:
        raise ParameterError(f"labels '{cfg.labels}' hold no particle ids",
                             "give [microstructure] particles (a particle-id volume)")
    return labels, particle_spheres(labels)


def _record(sim: SimulationRun, sim_dir: str | os.PathLike, dvc_dir: str | os.PathLike,
            pairs: list[StepPair], cfg: ValidateConfig) -> dict:
    """Inputs, frame, settings, both inputs' parameters and provenance (``metrics.json``)."""
    from anodetwin.io import make_provenance

    series = Path(dvc_dir) / "series.json"
    extra = {
        "inputs": {"simulation": str(sim_dir), "dvc": str(dvc_dir)},
        "frame": {"dvc_origin_um": list(cfg.dvc_origin_um), "offset_um": list(cfg.offset_um),
                  "dvc_voxel_size_um": pairs[0].dvc_voxel_um,
                  "transform": "translation (DVC voxels -> simulation um)" + (
                      ", then per step the collector's rigid motion removed"
                      if cfg.register == "collector" else ""),
                  "registration": {p.output: p.registration for p in pairs
                                   if p.registration is not None},
                  "electrode_z_um": list(pairs[0].electrode_z_um)},
        "settings": {**{k: v for k, v in asdict(cfg).items() if k != "raw"}},
        "settings_file": cfg.raw,  # as given: config_from_dict(settings_file) rebuilds them
        "simulation_case": sim.run.get("case", {}),
        "dvc_parameters": json.loads(series.read_text()).get("parameters", {})
        if series.is_file() else {},
        "provenance": make_provenance("validate", [str(sim_dir), str(dvc_dir)], cfg.raw)}
    extra["settings"]["steps"] = {str(k): v for k, v in cfg.steps.items()}
    return extra


def validate_run(sim_dir: str | os.PathLike, dvc_dir: str | os.PathLike,
                 out: str | os.PathLike, config: ValidateConfig | None = None,
                 figures: bool = True) -> ValidationResult:
    """Validate a simulation against a DVC series and write the report folder.

    Parameters
    ----------
    sim_dir : path-like
        Folder of ``anodetwin simulate`` (run.json, summary.csv, dvc/<T>.h5).
    dvc_dir : path-like
        Folder of ``anodetwin dvc-series`` (cumulative_0_<k>.h5, series.json).
    out : path-like
        Report folder (created; files replaced atomically), layout in
        :mod:`anodetwin.validate.report`.
    config : ValidateConfig, optional
        The settings (default: all defaults, :func:`config_from_dict` of ``{}``).
    figures : bool
        Draw the figures (PNG) and embed them in the HTML.

    Returns
    -------
    ValidationResult
        Per-step metrics, checks, overall verdict and the HTML's path.

    Raises
    ------
    InputNotFoundError
        A folder or file of the inputs is missing.
    InputError
        The inputs have no step or no region in common, or cannot be registered.
    ParameterError
        Voxel sizes disagree with no transform given, or the labels hold no particle ids.
    """
    from anodetwin.validate.report import write_figures, write_html, write_tables

    cfg = config or config_from_dict({})
    sim = load_simulation(sim_dir)
    pairs = pair_steps(sim, dvc_dir, cfg)
    labels, particles = _particles(cfg)
    metrics = [step_metrics(p, particles, cfg.voi_scale) for p in pairs]
    table = checks(metrics, cfg.tolerances)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = _record(sim, sim_dir, dvc_dir, pairs, cfg)
    write_tables(out, metrics, table, extra)
    figs = write_figures(out, pairs, metrics, labels) if figures else []
    report = write_html(out, metrics, table, figs, extra)
    return ValidationResult(tuple(metrics), tuple(table), all(c.passed for c in table), report)

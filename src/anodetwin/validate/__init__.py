"""Model-versus-DVC validation: the simulated and the measured displacement on one grid,
with one strain operator, compared per step and region, with a pass/fail table and a
self-contained HTML report.

    anodetwin validate --sim SIM_DIR --dvc DVC_DIR --out REPORT_DIR [--config validate.toml]

:func:`validate_run` reads an ``anodetwin simulate`` folder (run.json, summary.csv,
dvc/<T>.h5) and an ``anodetwin dvc-series`` folder (cumulative_0_<k>.h5), pairs DVC step k
with the simulation output ``T<k>`` (or the ``[steps]`` map), brings the simulation to the
DVC nodes (:mod:`anodetwin.validate.compare`), computes the metrics and checks
(:mod:`anodetwin.validate.metrics`) and writes the report (:mod:`anodetwin.validate.report`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from anodetwin.validate.compare import StepPair, load_simulation, pair_steps
from anodetwin.validate.config import ValidateConfig, config_from_dict, load_config
from anodetwin.validate.metrics import checks, particle_table, step_metrics

__all__ = ["ValidationResult", "validate_run", "load_config", "config_from_dict",
           "ValidateConfig", "StepPair"]


@dataclass
class ValidationResult:
    """Per-step metrics, the checks, whether all passed, and the report's path."""

    metrics: list[dict]
    checks: list[dict]
    passed: bool
    report: Path


def validate_run(sim_dir: str | os.PathLike, dvc_dir: str | os.PathLike,
                 out: str | os.PathLike, config: ValidateConfig | None = None,
                 figures: bool = True) -> ValidationResult:
    """Validate a simulation against a DVC series and write the report folder."""
    from anodetwin.io import make_provenance
    from anodetwin.validate.report import write_figures, write_html, write_tables

    cfg = config or config_from_dict({})
    sim = load_simulation(sim_dir)
    pairs = pair_steps(sim, dvc_dir, cfg)
    labels, particles = None, None
    if cfg.labels:
        from anodetwin.errors import ParameterError
        from anodetwin.mesh.io import read_labels_volume

        labels = read_labels_volume(cfg.labels, cfg.particles or None)
        if labels.particles is None:
            raise ParameterError(f"labels '{cfg.labels}' hold no particle ids",
                                 "give [microstructure] particles (a particle-id volume)")
        particles = particle_table(labels)
    metrics = [step_metrics(p, particles, cfg.voi_scale) for p in pairs]
    table = checks(metrics, cfg.tolerances)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    write_tables(out, metrics, table, extra)
    figs = write_figures(out, pairs, metrics, labels) if figures else []
    report = write_html(out, metrics, table, figs, extra)
    return ValidationResult(metrics, table, all(c["passed"] for c in table), report)

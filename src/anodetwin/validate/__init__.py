"""Model-versus-DVC validation: the simulated and the measured displacement on one grid,
with one strain operator, compared per step and region, with a pass/fail table and a
self-contained HTML report.

    anodetwin validate --sim SIM_DIR --dvc DVC_DIR --out REPORT_DIR [--config validate.toml]

* :func:`validate_run` (:mod:`~anodetwin.validate.run`): folders in, report folder out,
  a :class:`ValidationResult`;
* :func:`load_config`, :func:`config_from_dict`, :class:`ValidateConfig`
  (:mod:`~anodetwin.validate.config`): the settings;
* :class:`StepPair` (:mod:`~anodetwin.validate.compare`): one step of both fields on the
  DVC grid;
* :class:`StepMetrics`, :class:`Check` (:mod:`~anodetwin.validate.metrics`): the
  results; :mod:`~anodetwin.validate.report` writes them, :mod:`~anodetwin.validate.loop`
  closes the loop on phantoms.
"""

from anodetwin.validate.compare import StepPair
from anodetwin.validate.config import ValidateConfig, config_from_dict, load_config
from anodetwin.validate.metrics import Check, StepMetrics
from anodetwin.validate.run import ValidationResult, validate_run

__all__ = ["ValidationResult", "validate_run", "load_config", "config_from_dict",
           "ValidateConfig", "StepPair", "StepMetrics", "Check"]

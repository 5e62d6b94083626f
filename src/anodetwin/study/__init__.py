"""Design what-if studies: many twins over particle size, porosity, pressure, ... on Dask.

``load_study`` reads and checks a study file (:mod:`anodetwin.study.spec`), ``run_study``
runs its cases on Dask, each case phantom -> mesh -> simulation as an MPI job
(:mod:`anodetwin.study.execute`), resumable, and writes the results table, main effects and
an HTML summary (:mod:`anodetwin.study.run`, :mod:`anodetwin.study.report`).
"""

from anodetwin.study.execute import CaseResult, execute_case, write_phantom_labels
from anodetwin.study.metrics import METRICS, case_metrics
from anodetwin.study.report import design_table, main_effects, write_report
from anodetwin.study.run import StudyResult, read_results, run_study
from anodetwin.study.spec import (PARAMETERS, CaseSpec, Parameter, Study, StudySettings,
                                  load_study, study_from_dict)

__all__ = ["PARAMETERS", "METRICS", "Parameter", "Study", "StudySettings", "CaseSpec",
           "StudyResult", "load_study", "study_from_dict", "run_study", "read_results",
           "CaseResult", "execute_case", "write_phantom_labels", "case_metrics", "main_effects",
           "design_table", "write_report"]

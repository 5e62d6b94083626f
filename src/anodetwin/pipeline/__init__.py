"""``anodetwin run``: an in situ series from its scans to the model-versus-DVC report, as one
resumable command.

The run file (:mod:`~anodetwin.pipeline.runfile`) names the scans and the settings of every
stage; :func:`run_pipeline` runs the stages (:mod:`~anodetwin.pipeline.stages`) in order,
each into its own folder, each keyed by a content hash of what it depends on
(:mod:`~anodetwin.pipeline.runner`), so that a second run redoes only what changed.

Output layout::

    OUT/
      run.json              scans (file, SoC and time of the protocol), every stage's state
      segment/T<k>.h5       labels of every scan, on T0's collector (anodetwin segment layout)
      morphology/           thickness, RNL volume, particles, tracks (anodetwin morphology)
      dvc/                  increments, cumulative fields, regions.h5/.csv (anodetwin dvc-series)
      residuals/            noise_floor.json (with a double scan), residual_0_<k>.h5
      mesh/                 the segmented T0 electrode (anodetwin mesh)
      simulate/             case.toml and run/ (anodetwin simulate, resumable)
      validate/             metrics, checks, report.html (anodetwin validate)
      score/score.json      the pipeline against the phantom's truth ([truth] only)
      report/report.html    the self-contained report of the run
      <stage>/stage.json    key, time, peak memory, settings, inputs and summary of the stage
"""

from anodetwin.pipeline.runfile import TEMPLATE, RunConfig, load_run, run_from_dict
from anodetwin.pipeline.runner import (PipelineResult, StageState, pipeline_status,
                                       run_pipeline, stage_keys)

__all__ = ["TEMPLATE", "RunConfig", "load_run", "run_from_dict", "PipelineResult",
           "StageState", "pipeline_status", "run_pipeline", "stage_keys"]

"""Running a study on Dask: every case a task, each task an MPI job; resumable.

Output folder::

    study.json        the study file's content, its design points and cases (key, values,
                      replicate, seed), provenance
    cases/<key>/      one folder per case (anodetwin.study.execute)
    results.csv       one row per case: case, point, replicate, seed, key, status, the
                      parameter values, every metric (anodetwin.study.metrics.METRICS),
                      seconds, stage and reason of a failure (results.parquet too when
                      pyarrow is installed)
    designs.csv       one row per design point: mean and std over its replicates, rank
    main_effects.png  each metric against each parameter
    summary.html      the ranking, the main effects, the failures and the provenance
    summary.json      counts, the largest main effect per metric, files

A case whose ``result.json`` holds its key is never recomputed (failed cases neither, unless
``retry_failed``); a killed study started again runs only what is missing, and a case killed
half-way resumes its simulation from the checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from anodetwin.errors import ParameterError
from anodetwin.io.table import csv_text
from anodetwin.log import get_logger, progress_bar
from anodetwin.study.execute import CaseResult

__all__ = ["run_study", "StudyResult", "read_results"]

log = get_logger("study")


@dataclass(frozen=True)
class StudyResult:
    """What a study run did and where its outputs are.

    Attributes
    ----------
    out_dir : Path
        The study's output folder (module notes).
    rows : list of dict
        One per case, as written to ``results.csv`` (metrics None where a case failed).
    ran, skipped, failed : int
        Cases run now, finished by an earlier run, and failed (now or earlier).
    table : Path
        ``results.csv``.
    summary_html : Path
        ``summary.html``.
    """

    out_dir: Path
    rows: list
    ran: int
    skipped: int
    failed: int
    table: Path
    summary_html: Path


def _finished(folder: Path, key: str, retry_failed: bool) -> CaseResult | None:
    """The recorded result of a case, if it counts as finished."""
    p = folder / "result.json"
    if not p.is_file():
        return None
    try:
        r = CaseResult.from_json(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError, TypeError):  # unreadable or incomplete
        return None
    if r.key != key or (r.status == "failed" and retry_failed):
        return None
    return r


def _row(study, case, result: CaseResult | None) -> dict:
    """The ``results.csv`` row of a case (``pending`` without a result)."""
    from anodetwin.study.metrics import METRICS

    r = result or CaseResult(case.key, "pending")
    row = {"case": case.index, "point": case.point, "replicate": case.replicate,
           "seed": case.seed, "key": case.key, "status": r.status}
    row.update({k: case.values.get(k) for k in study.points[0]})
    m = r.metrics or {}
    row.update({k: m.get(k) for k in METRICS})
    row.update({"seconds": r.seconds, "stage": r.stage, "reason": r.reason})
    return row


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a study's ``results.csv``.

    Parameters
    ----------
    path : str or os.PathLike
        The file, or the study's output folder that holds it.

    Returns
    -------
    list of dict
        Column -> value: numbers as float, empty cells as None (``stage`` and ``reason``:
        empty strings), ``key`` and ``status`` as text.

    Raises
    ------
    InputNotFoundError
        There is no such file.
    """
    from anodetwin.errors import InputNotFoundError

    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise InputNotFoundError(path, "study results table")

    def conv(k, v):
        if v == "" or k in ("key", "status", "stage", "reason"):
            return None if v == "" and k not in ("stage", "reason") else v
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as fh:
        return [{k: conv(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _write_table(out: Path, rows: list[dict]) -> Path:
    from anodetwin.io import atomic_path, atomic_write_text

    path = atomic_write_text(out / "results.csv", csv_text(rows))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return path
    with atomic_path(out / "results.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    return path


def _client(scheduler: str | None, workers: int):
    from anodetwin.cluster import dask_client

    return dask_client(scheduler, workers, memory_limit=0)


def _write_study_json(out: Path, study, provenance: dict) -> None:
    """``study.json``: the study file's content, its design points and cases."""
    from anodetwin.io import atomic_write_json

    atomic_write_json(out / "study.json", {
        "name": study.name, "design": study.design, "study": study.raw,
        "parameters": {k: list(v) for k, v in study.parameters.items()},
        "points": list(study.points),
        "cases": [{"case": c.index, "point": c.point, "replicate": c.replicate,
                   "seed": c.seed, "key": c.key, "values": c.values} for c in study.cases],
        "provenance": provenance})


def _log_case(case, res: CaseResult, t0: float) -> None:
    failure = f" at {res.stage}: {res.reason}" if res.status == "failed" else ""
    log.info("%s: %s%s (%.0f s)", case.label, res.status, failure,
             res.seconds or time.perf_counter() - t0)


def _run_pending(study, out: Path, pending: list, client, on_result, progress: bool) -> None:
    """Submit the ``pending`` cases to ``client`` and pass each case and its result to
    ``on_result`` as they finish; a lost task (not the case) is recorded as failed."""
    from dask.distributed import as_completed

    from anodetwin.io import atomic_write_json
    from anodetwin.study.execute import execute_case

    timeout = study.timeout_minutes * 60.0 or None
    futures = {}
    for c in pending:
        inputs = {**c.inputs(), "values": c.values, "label": c.label}
        f = client.submit(execute_case, str(out / "cases" / c.key), inputs, study.ranks,
                          timeout, key=f"case-{c.index}-{c.key}", pure=False)
        futures[f] = c
    t0 = time.perf_counter()
    with progress_bar("study cases", total=len(pending), enabled=progress,
                      min_total=1) as advance:
        for f in as_completed(futures):
            c = futures[f]
            try:
                res = f.result()
            except Exception as exc:  # noqa: BLE001  (a lost worker, not the case)
                res = CaseResult(c.key, "failed", stage="scheduler",
                                 reason=f"{type(exc).__name__}: {exc}")
                atomic_write_json(out / "cases" / c.key / "result.json", res.to_json())
            on_result(c, res)
            advance(1)
            _log_case(c, res, t0)


def run_study(study, out: str | os.PathLike, scheduler: str | None = None,
              workers: int | None = None, retry_failed: bool = False, client=None,
              progress: bool = True) -> StudyResult:
    """Run the cases of a study that have no result yet, then write the tables, the plots
    and the summary (module notes).

    Parameters
    ----------
    study : anodetwin.study.Study
        A validated study (:func:`anodetwin.study.load_study`).
    out : str or os.PathLike
        The output folder (module notes); a folder of an earlier run of the same study
        resumes it.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default: a LocalCluster.
    workers : int, optional
        LocalCluster workers (cases at a time); default: CPU cores // ranks per case.
    retry_failed : bool
        Run the cases whose last attempt failed again.
    client : dask.distributed.Client, optional
        An existing client (then ``scheduler`` and ``workers`` are not used).
    progress : bool
        Show a progress bar.

    Returns
    -------
    StudyResult
        The rows of ``results.csv``, the counts, the table and the summary page.

    Raises
    ------
    ParameterError
        ``workers`` < 1.
    """
    from anodetwin.io import make_provenance
    from anodetwin.study.report import write_report

    out = Path(out)
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers {workers}", "give at least 1 worker")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    prov = make_provenance("study", [str(study.path)] if study.path else [], study.raw)
    _write_study_json(out, study, prov)
    results = {c.index: _finished(out / "cases" / c.key, c.key, retry_failed)
               for c in study.cases}
    pending = [c for c in study.cases if results[c.index] is None]
    skipped = len(study.cases) - len(pending)
    log.info("study '%s': %d cases, %d finished earlier, %d to run", study.name,
             len(study.cases), skipped, len(pending))

    def table() -> list[dict]:
        rows = [_row(study, c, results[c.index]) for c in study.cases]
        _write_table(out, rows)
        return rows

    def record(case, res: CaseResult) -> None:
        results[case.index] = res
        table()

    table()
    if pending:
        own = client is None
        cluster = None
        if own:
            n = workers or max(1, (os.cpu_count() or 1) // study.ranks)
            client, cluster = _client(scheduler, min(n, len(pending)))
        try:
            _run_pending(study, out, pending, client, record, progress)
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    rows = table()
    html = write_report(out, study, rows, {"ran": len(pending), "skipped": skipped,
                                           "provenance": prov})
    failed = sum(r["status"] == "failed" for r in rows)
    return StudyResult(out, rows, len(pending), skipped, failed, out / "results.csv", html)

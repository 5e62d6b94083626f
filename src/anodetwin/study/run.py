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

__all__ = ["run_study", "StudyResult", "read_results"]

log = get_logger("study")


@dataclass(frozen=True)
class StudyResult:
    """What a study run did and where its outputs are."""

    out_dir: Path
    rows: list
    ran: int
    skipped: int
    failed: int
    table: Path
    summary_html: Path


def _finished(folder: Path, key: str, retry_failed: bool) -> dict | None:
    p = folder / "result.json"
    if not p.is_file():
        return None
    try:
        r = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if r.get("key") != key or (r.get("status") == "failed" and retry_failed):
        return None
    return r


def _row(study, case, result: dict | None) -> dict:
    from anodetwin.study.metrics import METRICS

    r = result or {}
    row = {"case": case.index, "point": case.point, "replicate": case.replicate,
           "seed": case.seed, "key": case.key, "status": r.get("status", "pending")}
    row.update({k: case.values.get(k) for k in study.points[0]})
    m = r.get("metrics") or {}
    row.update({k: m.get(k) for k in METRICS})
    row.update({"seconds": r.get("seconds"), "stage": r.get("stage", ""),
                "reason": r.get("reason", "")})
    return row


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``results.csv`` (numbers as float, empty cells as None)."""
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


def run_study(study, out: str | os.PathLike, scheduler: str | None = None,
              workers: int | None = None, retry_failed: bool = False, client=None,
              progress: bool = True) -> StudyResult:
    """Run the cases of a validated study (:func:`anodetwin.study.load_study`) that have
    no result yet, then write the tables, the plots and the summary (module notes).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default: a LocalCluster.
    workers : int, optional
        LocalCluster workers (cases at a time); default: CPU cores // ranks per case.
    retry_failed : bool
        Run the cases whose last attempt failed again.
    client : dask.distributed.Client, optional
        An existing client (then ``scheduler`` and ``workers`` are not used).
    """
    from anodetwin.io import atomic_write_json, make_provenance
    from anodetwin.study.execute import execute_case
    from anodetwin.study.report import write_report

    out = Path(out)
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers {workers}", "give at least 1 worker")
    (out / "cases").mkdir(parents=True, exist_ok=True)
    prov = make_provenance("study", [str(study.path)] if study.path else [], study.raw)
    atomic_write_json(out / "study.json", {
        "name": study.name, "design": study.design, "study": study.raw,
        "parameters": {k: list(v) for k, v in study.parameters.items()},
        "points": list(study.points),
        "cases": [{"case": c.index, "point": c.point, "replicate": c.replicate,
                   "seed": c.seed, "key": c.key, "values": c.values} for c in study.cases],
        "provenance": prov})
    results: dict[int, dict | None] = {}
    pending = []
    for c in study.cases:
        results[c.index] = _finished(out / "cases" / c.key, c.key, retry_failed)
        if results[c.index] is None:
            pending.append(c)
    skipped = len(study.cases) - len(pending)
    log.info("study '%s': %d cases, %d finished earlier, %d to run", study.name,
             len(study.cases), skipped, len(pending))

    def table() -> list[dict]:
        rows = [_row(study, c, results[c.index]) for c in study.cases]
        _write_table(out, rows)
        return rows

    table()
    if pending:
        ncpu = os.cpu_count() or 1
        n = workers or max(1, ncpu // study.ranks)
        own = client is None
        cluster = None
        if own:
            client, cluster = _client(scheduler, min(n, len(pending)))
        timeout = study.timeout_minutes * 60.0 or None
        try:
            from dask.distributed import as_completed

            futures = {}
            for c in pending:
                inputs = {**c.inputs(), "values": c.values, "label": c.label}
                f = client.submit(execute_case, str(out / "cases" / c.key), inputs,
                                  study.ranks, timeout, key=f"case-{c.index}-{c.key}",
                                  pure=False)
                futures[f] = c
            t0 = time.perf_counter()
            with progress_bar("study cases", total=len(pending), enabled=progress,
                              min_total=1) as advance:
                for f in as_completed(futures):
                    c = futures[f]
                    try:
                        res = f.result()
                    except Exception as exc:  # noqa: BLE001  (a lost worker, not the case)
                        res = {"key": c.key, "status": "failed", "stage": "scheduler",
                               "reason": f"{type(exc).__name__}: {exc}"}
                        atomic_write_json(out / "cases" / c.key / "result.json", res)
                    results[c.index] = res
                    table()
                    advance(1)
                    log.info("%s: %s%s (%.0f s)", c.label, res["status"],
                             f" at {res.get('stage')}: {res.get('reason')}"
                             if res["status"] == "failed" else "",
                             res.get("seconds") or time.perf_counter() - t0)
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


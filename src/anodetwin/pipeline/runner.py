"""The stage runner of ``anodetwin run``: each stage keyed by a content hash, run in its own
process, skipped when done.

**Keys.** A stage's key hashes its name, the settings it depends on, the content of its
input files (:func:`anodetwin.io.content_hash`: every byte up to 2 GiB, a sample beyond)
and the keys of the stages it reads (:data:`anodetwin.pipeline.stages.STAGES`). A stage
whose folder holds a ``stage.json`` with its key is done and skipped; changing e.g. the
``[dvc]`` table changes the keys of ``dvc`` and of every stage that reads it, so a second
run redoes DVC, residuals, validation, score and report and nothing else.
``[resources]`` (ranks, workers) is in no key.

**Processes.** Each stage runs as ``python -m anodetwin.pipeline STAGE RUN OUT KEY``: its
memory is returned when it ends, its peak resident set is measured alone (the largest of
its own and its child processes', e.g. the MPI ranks of the simulation), and a crash ends
that stage only. A stage writes into its folder; its ``stage.json`` is written last, so a
stage stopped at any point is not done. A stopped stage is redone from an empty folder,
except the resumable ones with the same key: ``segment`` continues with the scans it has
not written, ``simulate`` from its checkpoint. A failed stage raises
:class:`~anodetwin.errors.NumericalError` naming the stage; the finished stages stay.

**State.** ``OUT/run.json`` lists the scans (name, file, state of charge and time of the
cell protocol) and each stage's state, seconds and peak memory: ``done``, ``stale`` (done
with another key), ``partial`` (started, not finished), ``failed`` or ``pending``
(:func:`pipeline_status`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from anodetwin.errors import NumericalError, ParameterError
from anodetwin.io import atomic_write_json, content_hash
from anodetwin.log import get_logger
from anodetwin.pipeline.runfile import RunConfig, load_run, volume_file
from anodetwin.pipeline.stages import STAGES, Stage, stage_named

__all__ = ["StageState", "PipelineResult", "active_stages", "stage_keys", "pipeline_status",
           "run_pipeline", "run_stage", "run_wording", "STATE_FILE", "RECORD"]

log = get_logger("run")

#: The run's state file in the output folder.
STATE_FILE = "run.json"
#: A stage's record in its folder, written when it is done.
RECORD = "stage.json"
_KEYFILE = ".key"  # the key a started stage was started with


@dataclass(frozen=True)
class StageState:
    """Where one stage stands.

    Attributes
    ----------
    stage : str
        Its name.
    state : str
        ``done``, ``stale``, ``partial``, ``failed`` or ``pending``.
    key : str
        Its key for the run file (empty when listed without one).
    seconds, peak_rss_mb : float or None
        Wall time and the peak resident set of its largest process (done stages).
    error : str or None
        Why it failed.
    """

    stage: str
    state: str
    key: str = ""
    seconds: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class PipelineResult:
    """A finished run: its folder, the stages and the report (None without one)."""

    out_dir: Path
    stages: tuple[StageState, ...]
    report: Path | None


def active_stages(cfg: RunConfig) -> list[Stage]:
    """The stages this run has, in order."""
    return [s for s in STAGES if s.optional is None or s.optional(cfg)]


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return "blake2b:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def stage_keys(cfg: RunConfig) -> dict[str, str]:
    """The key of every stage of the run (module notes), in order.

    Parameters
    ----------
    cfg : RunConfig
        The checked run file.

    Returns
    -------
    dict
        Stage name -> ``"blake2b:<hex>"``.
    """
    hashes: dict[Path, str] = {}
    keys: dict[str, str] = {}
    for s in active_stages(cfg):
        files = []
        for p in s.inputs(cfg):
            f = volume_file(p)
            if f not in hashes:
                hashes[f] = content_hash(f)
            files.append(hashes[f])  # content only: the run may move
        keys[s.name] = _digest({"stage": s.name, "params": s.params(cfg), "files": files,
                                "needs": [keys.get(n, "") for n in s.needs]})
    return keys


def _record(out: Path, name: str) -> dict | None:
    p = out / name / RECORD
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _stamp(rec: dict | None) -> str | None:
    """What identifies one completion of a stage."""
    return None if rec is None else f"{rec.get('key')}@{rec.get('finished')}"


def _upstream(out: Path, stage: Stage) -> dict:
    """The completions of the stages ``stage`` reads (recorded with it: redone upstream
    stages make it stale even where their keys did not change)."""
    return {n: _stamp(_record(out, n)) for n in stage.needs}


def _state(out: Path, name: str, key: str | None, failed: dict) -> StageState:
    rec = _record(out, name)
    if rec is not None:
        same = key is None or rec.get("key") == key
        if same and "upstream" in rec:
            same = rec["upstream"] == _upstream(out, stage_named(name))
        return StageState(name, "done" if same else "stale", key or rec.get("key", ""),
                          rec.get("seconds"), rec.get("peak_rss_mb"))
    if name in failed:
        return StageState(name, "failed", key or "", error=failed[name])
    started = (out / name).is_dir()
    return StageState(name, "partial" if started else "pending", key or "")


def pipeline_status(out_dir: str | os.PathLike, run_file: str | os.PathLike | None = None
                    ) -> list[StageState]:
    """The state of every stage of a run's output folder.

    Parameters
    ----------
    out_dir : path-like
        The folder of ``anodetwin run``.
    run_file : path-like, optional
        The run file: done stages whose key differs from its keys are ``stale``. Default:
        the run file ``run.json`` names, if it still exists.

    Returns
    -------
    list of StageState

    Raises
    ------
    InputNotFoundError
        ``out_dir`` holds no run.
    """
    from anodetwin.errors import InputNotFoundError

    out = Path(out_dir)
    state = out / STATE_FILE
    if not state.is_file():
        raise InputNotFoundError(state, "run state", "give the --out folder of 'anodetwin run'")
    saved = json.loads(state.read_text())
    failed = {s["stage"]: s.get("error") for s in saved.get("stages", [])
              if s.get("state") == "failed"}
    path = run_file or saved.get("run_file")
    if path and Path(path).is_file():
        cfg = load_run(path)
        keys = stage_keys(cfg)
    else:
        keys = {s["stage"]: None for s in saved.get("stages", [])}
    return [_state(out, name, key, failed) for name, key in keys.items()]


def _scans(cfg: RunConfig) -> list[dict]:
    from anodetwin.pipeline.runfile import cell_history

    hist = cell_history(cfg.cell, cfg.path.parent)
    return [{"name": n, "file": str(f), "time_s": float(hist.scans[n]),
             "soc": float(hist.soc_at(hist.scans[n]))}
            for n, f in zip(cfg.names, cfg.scan_files, strict=True)]


def _write_state(out: Path, cfg: RunConfig, states: list[StageState]) -> None:
    from anodetwin.errors import OutputError

    try:
        atomic_write_json(out / STATE_FILE, {
            "run_file": str(cfg.path), "scans": _scans(cfg),
            "double_scan": [str(p) for p in cfg.double_scan] or None,
            "stages": [asdict(s) for s in states]})
    except OSError as exc:
        raise OutputError(f"cannot write the run's state in '{out}' ({exc.strerror})",
                          "give a writable --out folder") from None


def _check_owner(out: Path, cfg: RunConfig) -> None:
    """Log that ``out`` holds the stages of another run file: they are reused where their
    keys match and redone where not."""
    try:
        before = json.loads((out / STATE_FILE).read_text()).get("run_file")
    except (OSError, ValueError):
        return
    if before and Path(before) != cfg.path:
        log.warning("'%s' was run from '%s': its stages are reused where their keys match, "
                    "redone where they do not", out, before)


def _spawn(stage: Stage, cfg: RunConfig, out: Path, key: str) -> int:
    """Run one stage in its own process; its exit status."""
    cmd = [sys.executable, "-m", "anodetwin.pipeline", stage.name, str(cfg.path), str(out),
           key]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.call(cmd, env=env)


def _prepare(stage: Stage, folder: Path, key: str) -> None:
    """An empty folder for a stage, or the stopped one it resumes (resumable, same key)."""
    keyfile = folder / _KEYFILE
    same = keyfile.is_file() and keyfile.read_text() == key
    if folder.exists() and not (stage.resumable and same):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keyfile.write_text(key)
    if (folder / RECORD).exists():
        (folder / RECORD).unlink()


def run_pipeline(run_file: str | os.PathLike, out_dir: str | os.PathLike,
                 until: str | None = None) -> PipelineResult:
    """Run (or resume) a run file into ``out_dir``: every stage that is not done.

    Parameters
    ----------
    run_file : path-like
        The run file (:mod:`anodetwin.pipeline.runfile`), checked before any work.
    out_dir : path-like
        The output folder (created); what a previous run finished there is kept.
    until : str, optional
        Stop after this stage.

    Returns
    -------
    PipelineResult

    Raises
    ------
    ParameterError, InputNotFoundError, GridMismatchError
        A bad run file (before any work).
    NumericalError
        A stage failed; the message names it, the finished stages are kept.
    """
    cfg = load_run(run_file)
    out = Path(out_dir).resolve()
    stages = active_stages(cfg)
    names = [s.name for s in stages]
    if until is not None and until not in names:
        raise ParameterError(f"--until {until}: no such stage", f"use one of {names}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from anodetwin.errors import OutputError

        raise OutputError(f"cannot create --out '{out}' ({exc.strerror})",
                          "give a writable folder") from None
    _check_owner(out, cfg)
    keys = stage_keys(cfg)
    states = {s.name: _state(out, s.name, keys[s.name], {}) for s in stages}
    _write_state(out, cfg, list(states.values()))
    for s in stages:
        states[s.name] = _state(out, s.name, keys[s.name], {})  # upstream may be redone
        if states[s.name].state == "done":
            log.info("%-10s done (skipped)", s.name)
        else:
            states[s.name] = _run_one(s, cfg, out, keys[s.name], states)
        if s.name == until:
            break
    report = out / "report" / "report.html"
    return PipelineResult(out, tuple(states.values()), report if report.is_file() else None)


def _run_one(s: Stage, cfg: RunConfig, out: Path, key: str, states: dict) -> StageState:
    log.info("%-10s running", s.name)
    _prepare(s, out / s.name, key)
    t0 = time.perf_counter()
    rc = _spawn(s, cfg, out, key)
    if rc != 0 or _record(out, s.name) is None:
        msg = out / s.name / "error.txt"
        err = msg.read_text() if msg.is_file() else f"exit status {rc}, messages above"
        states[s.name] = StageState(s.name, "failed", key, error=err)
        _write_state(out, cfg, list(states.values()))
        raise NumericalError(f"stage '{s.name}' failed: {err}; the finished stages are kept "
                             f"in '{out}'", "fix the cause and run the same command again: "
                                            "it resumes there")
    st = _state(out, s.name, key, {})
    log.info("%-10s done in %.1f s (%.0f MB peak)", s.name, time.perf_counter() - t0,
             st.peak_rss_mb or 0)
    states[s.name] = st
    _write_state(out, cfg, list(states.values()))
    return st


#: Command-line options in a stage's messages and the run file's keys that set them.
RUN_KEYS = ((r" \(library: [^)]*\)", ""), (r"--voxel-size\b", "[scans] voxel_size_um"),
            (r"--memory-limit\b", "[resources] memory_limit"),
            (r"--workers\b", "[resources] workers"), (r"--roi\b", "[scans] roi"),
            (r"--bin\b", "[scans] binning"))


def run_wording(exc: Exception) -> Exception:
    """A stage's error worded for the run: the command-line options its message names
    (``--memory-limit``, ``--workers``, ``--voxel-size``, ``--roi``, ``--bin``) become the
    run file's keys that set them (``[resources] memory_limit``, ...).

    Parameters
    ----------
    exc : Exception
        The error (an :class:`~anodetwin.errors.AnodetwinError`: its problem and fix are
        reworded; any other error is returned as it is).

    Returns
    -------
    Exception
        The same error, reworded.
    """
    import re

    from anodetwin.errors import AnodetwinError

    if not isinstance(exc, AnodetwinError):
        return exc

    def keys(text: str | None) -> str | None:
        for pattern, key in RUN_KEYS:
            text = None if text is None else re.sub(pattern, key, text)
        return text

    exc.problem, exc.fix = keys(exc.problem), keys(exc.fix)
    exc.args = (exc.problem + (f"; {exc.fix}" if exc.fix else ""),)
    return exc


def _peak_rss_mb() -> float:
    """Peak resident set (MB) of this process (VmHWM: from its exec on; getrusage's maxrss
    would carry over the parent's) and of its largest waited-for child (e.g. an MPI
    rank)."""
    import resource

    own = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = float(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # kB


def run_stage(name: str, run_file: str | os.PathLike, out_dir: str | os.PathLike,
              key: str) -> Path:
    """Run one stage in this process and write its record (the worker of
    :func:`run_pipeline`; ``python -m anodetwin.pipeline``).

    Parameters
    ----------
    name : str
        The stage.
    run_file, out_dir : path-like
        The run file and the output folder.
    key : str
        The stage's key, written into its record.

    Returns
    -------
    Path
        The stage's record (``stage.json``).
    """
    from datetime import datetime, timezone

    from anodetwin.io import input_record

    cfg = load_run(run_file)
    stage = stage_named(name)
    out = Path(out_dir)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    summary = stage.run(cfg, out, folder)
    return atomic_write_json(folder / RECORD, {
        "stage": name, "key": key, "status": "done", "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
        "params": stage.params(cfg), "upstream": _upstream(out, stage),
        "inputs": [input_record(volume_file(p)) for p in stage.inputs(cfg)],
        "summary": summary})

"""Finished runs reused from an earlier report's ``results.json`` (``reproduce.py --reuse FILE``).

A report's ``results.json`` stores, for every run, the ``train.json`` and ``eval.json`` that run
wrote, each stamped with the run's identity (:func:`~.profiles.run_identity`: the hash of its
resolved configs, less what changes no number). A stored run stands for a planned run exactly when
the identities are equal: for instance the SimCLR and DINO runs of a report made with other
captions, which those methods never read, or cpu-quick's runs in cpu-full. A reused run is written
into its run directory, stamped ``reused_from`` (file, commit, date), so later calls
(``--report-only`` included) find it done and the report says how many runs came from where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import RESULTS_FORMAT
from .runner import Run, run_status, write_json

__all__ = ["read_results", "reuse_runs"]


def read_results(path: Path) -> dict[str, Any]:
    """A ``results.json`` of this version's format.

    Raises:
        ValueError: naming ``path`` when it cannot be read, is not a report, or is of an older format
            (with the command that converts it).
    """
    try:
        record = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"--reuse {path}: cannot read it ({e.strerror})") from e
    except ValueError as e:
        raise ValueError(f"--reuse {path}: cannot read it as JSON ({e})") from e
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise ValueError(f"--reuse {path}: not a reproduce.py results.json (no list of runs)")
    if record.get("format") != RESULTS_FORMAT:
        raise ValueError(
            f"--reuse {path}: made by an older version (format {record.get('format', 1)}, not "
            f"{RESULTS_FORMAT}); convert it once with `python benchmarks/upgrade_results.py {path}`"
        )
    return record


def reuse_runs(
    runs: list[Run], files: list[Path], tasks: tuple[str, ...], write: bool = True
) -> dict[str, Any]:
    """Write into ``runs``' directories the finished runs that ``files`` hold for them.

    A stored run is taken for the planned run of the same identity, if its probes of ``tasks``
    are finished; only runs not started here (status ``todo``) are written (a partial or trained
    run here resumes instead). ``write=False`` only counts (``--dry-run``).

    Returns:
        Per file: ``written`` (runs written, or that would be) and ``skipped`` (``"<key> (<why>)"``).

    Raises:
        ValueError: a file that is not a ``results.json`` of this version (:func:`read_results`).
    """
    by_identity = {run.identity: run for run in runs}
    report: dict[str, Any] = {}
    taken: set[str] = set()
    for path in files:
        record = read_results(path)
        machine = record.get("machine") if isinstance(record.get("machine"), dict) else {}
        stamp = {"file": str(path), "commit": machine.get("commit"), "date": machine.get("date")}
        out = report[str(path)] = {"written": 0, "skipped": []}
        for stored in record["runs"]:
            ev = stored.get("eval") if isinstance(stored, dict) else None
            run = by_identity.get(ev.get("identity")) if isinstance(ev, dict) else None
            if run is None or run.identity in taken:
                continue  # not planned here, or taken from an earlier file
            if not all(t in (ev.get("final") or {}) for t in tasks):
                out["skipped"].append(f"{run.key} (probes unfinished)")
                continue
            if run.row.method is not None and (stored.get("train") or {}).get("identity") != run.identity:
                out["skipped"].append(f"{run.key} (no training record)")
                continue
            if run_status(run, tasks) != "todo":
                continue
            taken.add(run.identity)
            out["written"] += 1
            if write:
                run.dir.mkdir(parents=True, exist_ok=True)
                if run.row.method is not None:
                    write_json(run.dir / "train.json", {**stored["train"], "reused_from": stamp})
                write_json(run.dir / "eval.json", {**ev, "reused_from": stamp})
    return report

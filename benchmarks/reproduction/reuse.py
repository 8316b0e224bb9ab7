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

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from agents.pretrain import DataConfig
from agents.rundir import NON_NUMERIC_FIELDS, config_differences
from agents.systems import SystemConfig
from agents.train_config import TrainConfig

from .profiles import CAPTION_FIELDS, Profile, parse_row, run_configs, run_identity
from .report import RESULTS_FORMAT
from .runner import Run, run_status, write_json

__all__ = ["read_results", "reuse_runs", "upgrade_results"]


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
            f"{RESULTS_FORMAT}); convert it once with `python benchmarks/reproduce.py --upgrade {path}`"
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


# -- results.json of format 1 (row fingerprints), converted once -----------------------------------

#: Format-1 profile fields that became fields of the configs a profile now holds.
_V1_DATA = ("view_size", "scale", "augment", "device", "threads")
_V1_TRAIN = ("steps", "batch_size", "views_per_image", "lr", "warmup_steps", "weight_decay")
_V1_NOT_HASHED = (
    "name", "description", "seeds", "orderings", "rows", "first_seed_rows", "device", "threads", "est_step_s",
    "fingerprint", "images_seen",
)  # fmt: skip


def _v1_fingerprint(d: dict[str, Any], reads_captions: bool | None = None) -> str:
    """Format 1's fingerprint of a stored profile (``reads_captions``: of a row, None: the profile's)."""
    d = {k: v for k, v in d.items() if k not in _V1_NOT_HASHED}
    if reads_captions is False and d["scenes"].get("annotate", "all") == "all":
        d["scenes"] = {k: v for k, v in d["scenes"].items() if k not in CAPTION_FIELDS}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:12]


def _v1_profile(stored: dict[str, Any]) -> Profile:
    d = {k: v for k, v in stored.items() if k not in ("fingerprint", "images_seen")}
    if _v1_fingerprint(d) != stored.get("fingerprint"):
        raise ValueError(f"its profile does not give back its fingerprint {stored.get('fingerprint')}")
    tup = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    data = DataConfig(**{k: tup.pop(k) for k in _V1_DATA})
    train = TrainConfig(**{k: tup.pop(k) for k in _V1_TRAIN})
    system = SystemConfig("simclr", encoder=tup.pop("encoder"), encoder_kwargs=tup.pop("encoder_kwargs"),
                          **tup.pop("system"))  # fmt: skip
    tup["scenes"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["scenes"].items()}
    return Profile(data=data, system=system, train=train, **tup)


def upgrade_results(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A format-1 ``results.json`` record in this format, and the runs left out (``"<key> (<why>)"``).

    The stored profile must give back the fingerprint it was stamped with, each run's records must
    carry its row's fingerprint, and each trained run's stored configs (``train.json``'s ``recipe``)
    must equal the configs its row resolves to now (:func:`~.profiles.run_configs`; a field added
    since is taken at its legacy value or default, as ``pretrain`` does on resume). Runs that pass
    are stamped with their identity; the others are left out and listed. A trained run stored
    without a recipe (made before recipes were recorded) passes only for a row without knobs.

    Raises:
        ValueError: the record is not of format 1, or its profile is not what it says.
    """
    if record.get("format", 1) != 1 or not isinstance(record.get("profile"), dict):
        raise ValueError("not a results.json of format 1 (row fingerprints)")
    old = record["profile"]
    profile = _v1_profile(old)
    runs, left_out = [], []
    for stored in record.get("runs", []):
        key = stored.get("key")
        row = parse_row(stored["row"])
        train, ev = stored.get("train"), stored.get("eval") or {}
        fps = {_v1_fingerprint(old, row.reads_captions), old["fingerprint"]}
        if ev.get("fingerprint") not in fps or (row.method and (train or {}).get("fingerprint") not in fps):
            left_out.append(f"{key} (records of another profile)")
            continue
        if row.method is not None:
            recipe = train.get("recipe")
            if recipe is None and (row.system or row.data or row.train):
                left_out.append(f"{key} (no recipe record, and its knobs may have meant something else then)")
                continue
            if recipe is not None:
                data, system, tr = run_configs(profile, row, stored["ordering"])
                now = {
                    "system": system.to_dict(),
                    "data": dataclasses.asdict(data),
                    "train": dataclasses.asdict(tr),
                }
                diffs = config_differences(recipe, json.loads(json.dumps(now, default=list)),
                                           NON_NUMERIC_FIELDS | {"source", "seed"})  # fmt: skip
                if diffs:
                    field, a, b = diffs[0]
                    left_out.append(f"{key} (trained with {field}={a!r}, the row now gives {b!r})")
                    continue
        identity = run_identity(profile, row, stored["seed"], stored["ordering"])
        strip = ("fingerprint", "recipe")
        new = {**stored, "eval": {**{k: v for k, v in ev.items() if k not in strip}, "identity": identity}}
        if train is not None:
            new["train"] = {**{k: v for k, v in train.items() if k not in strip}, "identity": identity}
        runs.append(new)
    upgraded = {"from_format": 1, "fingerprint": old["fingerprint"], "left_out": left_out}
    out = {**record, "format": RESULTS_FORMAT, "profile": profile.to_dict(), "runs": runs}
    out["upgraded"] = upgraded
    return out, left_out

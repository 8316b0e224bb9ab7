"""Finished runs reused from an earlier report's ``results.json`` (``reproduce.py --reuse FILE``).

A report's ``results.json`` stores its whole profile and, for every run, the ``train.json`` and
``eval.json`` that run wrote. A stored run stands for a planned run of this profile (same row, seed
and ordering) when both profiles give its row the same fingerprint (:meth:`Profile.fingerprint`
with the row): for instance the SimCLR and DINO runs of a report made with other captions, which
those methods never read. A reused run is written into its run directory, stamped ``reused_from``
(file, fingerprint, commit, date), so later calls (``--report-only`` included) find it done and the
report says how many runs came from where.

Nothing is taken on trust where it can be checked: the stored profile must give back the
fingerprint its report printed, and when two files, or a file and a run already finished here, hold
the same run, their numbers (probe scores, curve points, training loss) must agree to the last digit;
a difference is an error naming both, since it would mean the fingerprint leaves out something
that changes the numbers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from .profiles import Profile
from .runner import Run, read_json, recipe_difference, run_status, write_json

__all__ = ["reuse_runs", "stored_profile"]

_TIMING = ("wall_s", "wall_s_last_call", "images_per_s")
_STAMPS = ("fingerprint", "reused_from", "images_seen", "recipe")


def stored_profile(record: dict[str, Any], path: Path) -> Profile:
    """The :class:`Profile` a ``results.json`` record was made with.

    Raises:
        ValueError: naming ``path`` when the record has no profile, has fields this version does not
            know, or does not give back the fingerprint it was stamped with (made by a version whose
            fields meant something else).
    """
    stored = record.get("profile") if isinstance(record, dict) else None
    if not isinstance(stored, dict) or "fingerprint" not in stored:
        raise ValueError(f"--reuse {path}: not a reproduce.py results.json (no profile with a fingerprint)")
    fields = {f.name for f in dataclasses.fields(Profile)}
    kwargs = {k: v for k, v in stored.items() if k not in ("fingerprint", "images_seen")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"--reuse {path}: profile fields {unknown} are unknown to this version")
    try:
        profile = Profile(**kwargs)
    except TypeError as e:  # a required field missing
        raise ValueError(f"--reuse {path}: its profile is incomplete ({e})") from e
    if profile.fingerprint() != stored["fingerprint"]:
        raise ValueError(
            f"--reuse {path}: its profile gives fingerprint {profile.fingerprint()} here, not the "
            f"{stored['fingerprint']} it was made with (made by a version whose fields differ); rerun instead"
        )
    return profile


def _numbers(train: dict[str, Any] | None, ev: dict[str, Any]) -> dict[str, Any]:
    """What a run measured, without timings and stamps (the part two copies of one run must share)."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in _TIMING}
        return x

    out = {"final": strip(ev.get("final") or {}), "curve": strip(ev.get("curve") or {})}
    if train is not None:
        out["train"] = strip({k: v for k, v in train.items() if k not in _STAMPS})
    return out


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first place where two runs' numbers differ (curve points compared where both have them)."""
    for part in ("final", "train"):
        if a.get(part) != b.get(part):
            return part
    for step in sorted(set(a["curve"]) & set(b["curve"]), key=int):
        for task in sorted(set(a["curve"][step]) & set(b["curve"][step])):
            if a["curve"][step][task] != b["curve"][step][task]:
                return f"curve step {step} {task}"
    return None


def _agree(key: str, a: dict[str, Any], b: dict[str, Any], where_a: Any, where_b: Any) -> None:
    where = _difference(a, b)
    if where is not None:
        raise ValueError(
            f"{key}: {where_a} and {where_b} differ ({where}) though the fingerprints match; the "
            "fingerprint leaves out something that changes the numbers"
        )


def reuse_runs(
    runs: list[Run], profile: Profile, files: list[Path], device: str, write: bool = True
) -> dict[str, dict[str, Any]]:
    """Write into ``runs``' directories the finished runs that ``files`` hold for them.

    Only runs not started here (status ``todo``) are written; a run finished here is compared with
    the stored copies instead, and a partial one is left to resume. Not reused: runs made on another
    kind of device than ``device`` (CUDA runs use bf16 autocast, for one), and trained runs whose
    configs, stored in their ``train.json`` as ``recipe``, differ from the row's recipe now
    (:func:`~.runner.recipe_difference`: a knob or default whose meaning changed). A run stored
    without them (made before they were recorded) is taken for a row without knobs, whose recipe is
    the profile's, and not for an ablation row. Everything is checked before anything is written.
    ``write=False`` only counts (``--dry-run``).

    Returns:
        Per file: ``written`` (runs written, or that would be), ``unchecked`` (of those, trained runs
        without a recipe record) and ``skipped`` (``"<key> (<why>)"``).

    Raises:
        ValueError: a file that is not a results.json of a known profile (:func:`stored_profile`),
            or two copies of one run whose numbers differ.
    """
    by_key = {run.key: run for run in runs}
    report: dict[str, dict[str, Any]] = {str(p): {"written": 0, "unchecked": 0, "skipped": []} for p in files}
    copies: dict[str, list[tuple[Path, dict[str, Any], dict[str, Any]]]] = {}
    for path in files:
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"--reuse {path}: cannot read it ({e.strerror})") from e
        try:
            record = json.loads(text)
        except ValueError as e:
            raise ValueError(f"--reuse {path}: cannot read it as JSON ({e})") from e
        source = stored_profile(record, path)
        stored_runs = record.get("runs")
        machine = record.get("machine") if isinstance(record.get("machine"), dict) else {}
        if not isinstance(stored_runs, list) or not all(isinstance(r, dict) for r in stored_runs):
            raise ValueError(f"--reuse {path}: its runs are not a list of run records")
        made_on = str(machine.get("device") or "cpu").split(":")[0]
        for stored in stored_runs:
            run = by_key.get(stored.get("key"))
            if run is None or source.fingerprint(run.row) != profile.fingerprint(run.row):
                continue  # not planned here, or made with other settings for this row
            why = _unusable(stored, profile, run, made_on, torch.device(device).type)
            if why is not None:
                report[str(path)]["skipped"].append(f"{run.key} ({why})")
                continue
            stamp = {
                "file": str(path),
                "fingerprint": stored["eval"].get("fingerprint"),
                "commit": machine.get("commit"),
                "date": machine.get("date"),
            }
            copies.setdefault(run.key, []).append((path, stored, stamp))
    todo = []
    for key, found in copies.items():  # check everything first: a difference writes nothing
        run = by_key[key]
        (path, first, stamp), *others = found
        numbers = _numbers(first.get("train"), first["eval"])
        for other_path, other, _ in others:
            _agree(key, numbers, _numbers(other.get("train"), other["eval"]), path, other_path)
        status = run_status(run, profile)
        if status == "done":
            here = _numbers(read_json(run.dir / "train.json"), read_json(run.dir / "eval.json") or {})
            _agree(key, numbers, here, path, f"the run in {run.dir}")
        elif status == "todo":  # (a partial or trained run here resumes)
            todo.append((run, path, first, stamp))
    for run, path, first, stamp in todo:
        report[str(path)]["written"] += 1
        report[str(path)]["unchecked"] += bool(first.get("train")) and "recipe" not in first["train"]
        if not write:
            continue
        fp = profile.fingerprint(run.row)
        run.dir.mkdir(parents=True, exist_ok=True)
        if first.get("train"):
            write_json(run.dir / "train.json", {**first["train"], "fingerprint": fp, "reused_from": stamp})
        write_json(run.dir / "eval.json", {**first["eval"], "fingerprint": fp, "reused_from": stamp})
    return report


def _unusable(stored: dict[str, Any], profile: Profile, run: Run, made_on: str, here: str) -> str | None:
    """Why a stored run record cannot stand for ``run`` (None: it can)."""
    ev = stored.get("eval")
    if not isinstance(ev, dict) or not isinstance(ev.get("final"), dict):
        return "no probe results"
    if not all(t in ev["final"] for t in profile.tasks):
        return "probes unfinished"
    if made_on != here:
        return f"made on {made_on}, not {here}"
    if run.row.method is None:
        return None
    train = stored.get("train")
    if not isinstance(train, dict):
        return "no training record"
    recipe = train.get("recipe")
    if isinstance(recipe, dict):
        diff = recipe_difference(recipe, profile, run.row)
        return None if diff is None else f"trained with {diff}"
    if run.row.system or run.row.data or run.row.train:
        return "no recipe record, and its knobs may have meant something else then"
    return None

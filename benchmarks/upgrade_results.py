"""Convert a ``results.json`` of ``benchmarks/reproduce.py`` written before run identities (format 1,
row fingerprints) to the current format, once, in place (the original kept beside it as
``<name>.v1.json``).

Usage: ``python benchmarks/upgrade_results.py RESULTS_JSON [...]``

The stored profile must give back the fingerprint it was stamped with, each run's records must
carry its row's fingerprint, and each trained run's stored configs (``train.json``'s ``recipe``)
must equal the configs its row resolves to now (:func:`reproduction.profiles.run_configs`; a field
added since is taken at its legacy value or default, as ``pretrain`` does on resume). Runs that pass
are stamped with their identity; the others are left out and listed. A trained run stored without
a recipe (made before recipes were recorded) passes only for a row without knobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from reproduction.profiles import CAPTION_FIELDS, Profile, parse_row, run_configs, run_identity
from reproduction.report import RESULTS_FORMAT

from agents.pretrain import DataConfig
from agents.rundir import LEGACY_VALUES, NON_NUMERIC_FIELDS, config_differences
from agents.systems import SystemConfig
from agents.train_config import TrainConfig

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


def _v1_profile(stored: dict[str, Any], device: str | None) -> Profile:
    """The profile of a format-1 record, on the device its machine record names (format 1's command
    line did not write ``--device`` into the profile)."""
    d = {k: v for k, v in stored.items() if k not in ("fingerprint", "images_seen")}
    if _v1_fingerprint(d) != stored.get("fingerprint"):
        raise ValueError(f"its profile does not give back its fingerprint {stored.get('fingerprint')}")
    tup = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    data = DataConfig(**{k: tup.pop(k) for k in _V1_DATA})
    if device:
        data = dataclasses.replace(data, device=device)
    train = TrainConfig(**{k: tup.pop(k) for k in _V1_TRAIN})
    system = SystemConfig("simclr", encoder=tup.pop("encoder"), encoder_kwargs=tup.pop("encoder_kwargs"),
                          **tup.pop("system"))  # fmt: skip
    tup["scenes"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["scenes"].items()}
    return Profile(data=data, system=system, train=train, **tup)


def upgrade_results(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A format-1 ``results.json`` record in this format, and the runs left out (``"<key> (<why>)"``;
    see the module docstring).

    Raises:
        ValueError: the record is not of format 1, or its profile is not what it says.
    """
    if record.get("format", 1) != 1 or not isinstance(record.get("profile"), dict):
        raise ValueError("not a results.json of format 1 (row fingerprints)")
    old = record["profile"]
    machine = record.get("machine") if isinstance(record.get("machine"), dict) else {}
    profile = _v1_profile(old, machine.get("device"))
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
        made_by = profile
        if row.method is not None and train.get("recipe") is None:  # trained before the configs'
            # newer fields existed: at their legacy values (rundir.LEGACY_VALUES), not today's defaults
            made_by = dataclasses.replace(
                profile, data=dataclasses.replace(profile.data, **LEGACY_VALUES["data"])
            )
        identity = run_identity(made_by, row, stored["seed"], stored["ordering"])
        strip = ("fingerprint", "recipe")
        new = {**stored, "eval": {**{k: v for k, v in ev.items() if k not in strip}, "identity": identity}}
        if train is not None:
            new["train"] = {**{k: v for k, v in train.items() if k not in strip}, "identity": identity}
        runs.append(new)
    upgraded = {"from_format": 1, "fingerprint": old["fingerprint"], "left_out": left_out}
    out = {**record, "format": RESULTS_FORMAT, "profile": profile.to_dict(), "runs": runs}
    out["upgraded"] = upgraded
    return out, left_out


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        raise SystemExit("usage: python benchmarks/upgrade_results.py RESULTS_JSON [...]")
    for path in paths:
        try:
            new, left_out = upgrade_results(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: {e}") from e
        except (KeyError, TypeError, AttributeError) as e:  # a run record missing a field
            why = f"{type(e).__name__}: {e}"
            raise SystemExit(f"{path}: not a readable results.json of format 1 ({why})") from e
        backup = path.with_name(path.stem + ".v1.json")
        backup.write_text(path.read_text())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(new, indent=2, default=list))
        tmp.replace(path)
        print(f"upgraded {path}: {len(new['runs'])} runs stamped with their identity (original in {backup})")
        if left_out:
            print(f"  left out ({len(left_out)}): " + ", ".join(left_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

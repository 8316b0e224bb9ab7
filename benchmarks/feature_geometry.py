"""Why a reproduce run's kNN probe is low: the geometry of its pooled features.

Usage::

    python benchmarks/feature_geometry.py --profile cpu-quick [--out DIR] [--rows random,clip]
        [--seeds 0] [--orderings 0] [--device cpu] [--threads N] [--json PATH]

For each finished run of ``benchmarks/reproduce.py`` (and the random-init row), on the held-out
object-crop task: the spectrum of the pooled features of the probe's training crops (participation
ratio, effective rank, the top direction's share of the variance, mean cosine; see
``agents.eval.geometry``), the cosine kNN top-1 as the benchmark computes it, the same kNN on
PCA-whitened features, and the linear probe's top-1 from the run's ``eval.json``. A kNN far below
the linear probe together with a participation ratio near 1 is dimensional collapse: the variance
sits in directions that do not separate the classes, which whitening undoes. Prints a table and
writes JSON (default ``<out>/feature_geometry.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduction.cli import RESULTS, parse_ints
from reproduction.probing import ProbeSet
from reproduction.profiles import PROFILES, expand_rows
from reproduction.runner import machine_info, plan, random_encoder, read_json, run_status

from agents.eval import extract_features, knn_eval, pca_whiten, spectrum_stats
from agents.export import load_encoder


def measure(encoder: torch.nn.Module, probes: ProbeSet, knn_k: int, device: str) -> dict[str, float]:
    """Spectrum of the training crops' pooled features, and kNN top-1 raw and whitened."""
    train, test = probes.data("region"), probes.data("heldout_test")
    train, test = train.subset(train.labels >= 0), test.subset(test.labels >= 0)
    f_tr = extract_features(encoder, train.views, device=device).pooled.float().cpu()
    f_te = extract_features(encoder, test.views, device=device).pooled.float().cpu()
    w_tr, w_te = pca_whiten(f_tr, f_te)
    return {
        **spectrum_stats(f_tr),
        "knn": knn_eval(f_tr, train.labels, f_te, test.labels, k=knn_k)["top1"],
        "knn_whitened": knn_eval(w_tr, train.labels, w_te, test.labels, k=knn_k)["top1"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu-quick", choices=sorted(PROFILES))
    p.add_argument("--out", default=None, help="the reproduce output directory (default: its default)")
    p.add_argument("--rows", default=None, help="rows as for reproduce.py (default: the profile's)")
    p.add_argument("--seeds", default=None, help="e.g. 0,1 (default: the profile's)")
    p.add_argument("--orderings", default=None, help="e.g. 0 (default: the profile's)")
    p.add_argument("--device", default="cpu", help="where to measure")
    p.add_argument(
        "--trained-on", default=None, help="the device the runs were trained on (default: the profile's)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="default: <out>/feature_geometry.json")
    args = p.parse_args(argv)
    profile = PROFILES[args.profile]
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=parse_ints(args.seeds, "--seeds"))
    if args.orderings:
        profile = dataclasses.replace(profile, orderings=parse_ints(args.orderings, "--orderings"))
    if args.trained_on:
        profile = dataclasses.replace(profile, data=dataclasses.replace(profile.data, device=args.trained_on))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / profile.name
    # (the runs keep the identity of the profile's device; the measurement runs on --device)
    here = dataclasses.replace(profile, data=dataclasses.replace(profile.data, device=args.device))
    probes = ProbeSet(here)
    results: list[dict[str, Any]] = []
    skipped = []
    head = ("run", "PR", "erank", "top", "cos", "kNN", "kNN white", "linear")
    print(" | ".join(head))
    runs = plan(profile, expand_rows(profile, args.rows), out)
    by_key = {run.key: run for run in runs}
    for run in runs:
        if run.row.method is None:
            encoder = random_encoder(here, run.seed)
        elif run_status(run, profile.tasks) in ("done", "trained"):
            encoder = load_encoder(run.dir, args.device)
        else:
            skipped.append(run.key)
            continue
        ev = read_json(run.dir / "eval.json") or {}
        linear = ev.get("final", {}).get("heldout", {}).get("linear", {}).get("top1")
        m = {"run": run.key, **measure(encoder, probes, profile.knn_k, args.device), "linear": linear}
        results.append(m)
        cells = [f"{m[k]:.2f}" for k in ("participation_ratio", "effective_rank", "top_share", "mean_cosine")]
        cells += [f"{100 * m[k]:.1f}" if m[k] is not None else "-" for k in ("knn", "knn_whitened", "linear")]
        print(" | ".join([run.key, *cells]), flush=True)
    if skipped:
        print(f"skipped (not trained yet): {', '.join(skipped)}")
    path = Path(args.json) if args.json else out / "feature_geometry.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "profile": profile.name,
        "identities": {r["run"]: run.identity for r in results for run in [by_key[r["run"]]]},
        "machine": machine_info(args.device),
        "runs": results,
        "skipped": skipped,
    }
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the paper's findings at small scale (issue 7): AB against its base, honestly.

Usage::

    python benchmarks/reproduce.py --profile cpu-quick [--rows ROWS] [--out DIR] [--device cpu]
        [--threads N] [--seeds 0,1,2] [--orderings 0,1] [--reuse RESULTS_JSON] [--dry-run] [--no-plots]

Profiles (``benchmarks/reproduction/profiles.py``): ``cpu-quick`` (random / supervised calibration
rows plus CLIP/ABCLIP, 3 seeds; 51 min on 2 CPU cores), ``cpu-full`` (every pair, 3 seeds x 2 data
orderings, cpu-quick's settings; resumable), ``gpu`` (every pair, a 2x wider CNN, 4 views per image;
6 min on one H100 as 3 processes, measured with class-only captions) and ``smoke`` (tests).
Every trained row of a profile uses the same scenes, encoder, steps x batch (images seen), seeds
and orderings. Rows: ``random``, ``supervised``, the bases and AB methods, and ablations of an AB
row (``abclip-gamma0.9``, ``abclip-noact``, ``abclip-noema``, ``abclip-iou0.3_0.6``; group
``ablations``).

Each (row, seed, ordering) is a resumable ``vpt pretrain`` run directory
``<out>/<row>/s<seed>o<ordering>``; finished runs are skipped, interrupted ones resume, and probe
results are cached in each run's ``eval.json``. Runs are stamped with their identity, the hash of
their resolved configs (which leaves the captions out for rows that never read them: all but the
CLIP family), so ``--reuse`` can take an earlier report's finished runs (its ``results.json``)
wherever the identity matches; ``benchmarks/upgrade_results.py`` converts a report of the older
format once. Probes (linear, kNN, attention pooling) on three tasks: ``scene`` (multi-label mAP),
``region`` (object-in- region top-1, split by image) and ``heldout`` (object crops, probe trained on
training instances, tested on held-out instances).
Writes ``table.md``, ``results.json``, ``curves.png`` (score against images seen) and ``pairs.png``
(AB against its base with the seed spread) under ``<out>`` (default
``benchmarks/results/reproduce/<profile>``), stamped with the machine, profile and date.
"""

from __future__ import annotations

import sys

from reproduction.cli import main  # the package next to this script (its directory is sys.path[0])

if __name__ == "__main__":
    sys.exit(main())

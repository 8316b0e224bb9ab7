"""Generation speed of the embedded scenes (``source="scenes"``), in images per second.

Usage: ``python benchmarks/scene_speed.py [--n-images N] [--repeats R] [--json PATH]``.

Rows, each for the default parameters (128x128, 2-6 objects, every
installed object set) unless named:

* construction: loading the object sets (first time in the process) and
  drawing every layout and annotation;
* rendering every scene (``SceneSource.images()``: chunks of 128 scenes in
  parallel threads), best of ``--repeats``; the same with ``clutter=8`` and
  with ``size=64``;
* ``image(i)`` read in order (renders 128-scene chunks) and out of order
  (renders each scene alone);
* caching to disk: the first run (render + atomic write) and a later run
  (memory-map the file and read every image).

The machine is shared with whatever else runs on it: report the best of
several repeats, and rerun when the load is high.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vpt_env.data.scenes import SceneSource


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/scene_speed.json")
    args = parser.parse_args()
    n, reps = args.n_images, args.repeats

    start = time.perf_counter()
    src = SceneSource(n_images=n)
    first_build = time.perf_counter() - start
    build = _best(lambda: SceneSource(n_images=n), reps)
    rows: dict[str, float] = {}
    # images() renders every scene in threaded chunks (_render_all, uncached here, so it can repeat).
    for name, kw in (("defaults", {}), ("clutter=8", {"clutter": 8}), ("size=64", {"size": 64})):
        scenes = SceneSource(n_images=n, **kw)
        rows[f"images(), {name}"] = n / _best(scenes._render_all, reps)
    reads = min(n, 2000)
    fresh = iter([SceneSource(n_images=n) for _ in range(reps)])
    rows["image(i) in order"] = reads / _best(
        lambda: [s.image(i) for s in [next(fresh)] for i in range(reads)], reps
    )
    order = np.random.default_rng(0).permutation(n)[:reads].tolist()
    fresh = iter([SceneSource(n_images=n) for _ in range(reps)])
    rows["image(i) in random order"] = reads / _best(
        lambda: [s.image(i) for s in [next(fresh)] for i in order], reps
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        SceneSource(n_images=n, cache=tmp).images()
        write = time.perf_counter() - start
        start = time.perf_counter()
        cached = SceneSource(n_images=n, cache=tmp)
        total = sum(int(cached.image(i)[0, 0, 0]) for i in range(n))  # touch every image
        read = time.perf_counter() - start
        assert total >= 0
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"embedded scenes, {n} images of {src.config.size}x{src.config.size}, object sets "
        f"{', '.join(src.object_sets)} ({machine})"
    )
    print(f"construction (layouts + annotations): first {first_build:.2f} s, then {build:.2f} s")
    print(f"{'rendering':<34} {'images/s':>9} {'s per 10k':>10}")
    for name, ips in rows.items():
        print(f"{name:<34} {ips:>9.0f} {1e4 / ips:>10.2f}")
    print(
        f"disk cache: first run {write:.2f} s (render + write), later run {read:.2f} s "
        f"({n / read:.0f} images/s)"
    )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "n_images": n,
                "machine": machine,
                "object_sets": list(src.object_sets),
                "construction_s": {"first": first_build, "again": build},
                "images_per_second": rows,
                "cache_first_run_s": write,
                "cache_later_run_s": read,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

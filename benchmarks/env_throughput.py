"""Views per second of every way to step image views, measured side by side in one run.

Usage: ``python benchmarks/env_throughput.py [--quick] [--sizes 256,4096] [--device cuda] [--json PATH]``

Rows (64x64 views of the embedded photos, random continuous actions):

(a) one ``ImageViewEnv`` stepped in a Python loop;
(b) Gymnasium ``SyncVectorEnv`` of ``ImageViewEnv`` at N = 256 (one shared image pool);
(c) Gymnasium ``AsyncVectorEnv`` of ``ImageViewEnv``, one worker process per core;
(d) ``ImageViewVectorEnv`` at N = 64, 256, 1024, 4096, for each interpolation;
(e) ``TransitionSampler``: 64 images x 4 views per call;
(f) a reference loop of PIL ``resize(box=...)`` per view (bilinear, antialiased),
    the fastest simple per-view CPU implementation, with and without Pillow's
    ``reducing_gap`` fast path; ratios use the faster of the two.

Two settings: ``crop`` (``augmentations=()``: crop + resize only, what (f)
does) and ``augment`` (every augmentation enabled; (f) has no such row). Each
ratio is against (b) of the same setting, measured in the same run, and the
vector env's rows also give the fraction of the memory-bandwidth floor: the
bytes a view must move at least (reading its ``S*S*3`` source texels as float32
and writing ``S*S*3`` uint8; nearest reads uint8) over the copy bandwidth
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import vpt_env
from vpt_env.data.pool import ImagePool
from vpt_env.data.sources import load_images

S = 64
A = 11  # action size with every augmentation (4 + 7); crop-only envs use 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, min_seconds: float, device: torch.device) -> float:
    """Calls per second of ``step`` over at least ``min_seconds`` (after one warm-up call)."""
    step()
    _sync(device)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if n >= 3 and time.perf_counter() - start >= min_seconds:
            break
    _sync(device)
    return n / (time.perf_counter() - start)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    x = torch.empty(64 * 2**20, dtype=torch.float32, device=device).fill_(1.0)
    y = torch.empty_like(x)
    rate = _timed(lambda: y.copy_(x), 0.5, device)
    return rate * 2 * x.numel() * 4


def single_env(pool: ImagePool, kw: dict[str, Any], seconds: float) -> float:
    env = gym.make("ImageView-v0", source=pool, **kw)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (256, env.action_space.shape[0])).astype(np.float32)
    k = [0]

    def step() -> None:
        env.step(acts[k[0] % 256])
        k[0] += 1

    return _timed(step, seconds, torch.device("cpu"))


def gym_vector(pool: ImagePool, kw: dict[str, Any], n: int, seconds: float, asynchronous: bool) -> float:
    def make() -> gym.Env:
        return gym.make("ImageView-v0", source=pool, **kw)

    if asynchronous:
        # spawn, as in the recorded figures (each worker starts with torch's default threads);
        # Gymnasium's default (fork on Linux) works too: forked envs use one torch thread.
        venv = gym.vector.AsyncVectorEnv([make for _ in range(n)], context="spawn")
    else:
        venv = gym.vector.SyncVectorEnv([make for _ in range(n)])
    venv.reset(seed=0)
    acts = venv.action_space.sample()
    rate = _timed(lambda: venv.step(acts), seconds, torch.device("cpu")) * n
    venv.close()
    return rate


def vector_env(pool: ImagePool, kw: dict[str, Any], n: int, seconds: float, device: torch.device) -> float:
    venv = vpt_env.ImageViewVectorEnv(n, pool, device=device, validate=device.type == "cpu", **kw)
    venv.reset(seed=0)
    acts = torch.rand(n, venv.single_action_space.shape[0], device=device) * 2 - 1
    return _timed(lambda: venv.step(acts), seconds, device) * n


def sampler(pool: ImagePool, kw: dict[str, Any], seconds: float, device: torch.device) -> float:
    params = vpt_env.EnvParams(**kw)
    s = vpt_env.TransitionSampler(pool, params=params, view_size=S, device=device)
    return _timed(lambda: s.sample(64, 4), seconds, device) * 256


def pil_loop(images: list[np.ndarray], seconds: float, reducing_gap: float | None = None) -> float:
    pils = [Image.fromarray(im) for im in images]
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(512):
        i = int(rng.integers(len(pils)))
        w, h = pils[i].size
        s = np.sqrt(rng.uniform(0.1, 1.0))
        bw, bh = s * w, s * h
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        boxes.append((i, (x0, y0, x0 + bw, y0 + bh)))
    k = [0]

    def step() -> None:
        for _ in range(64):
            i, b = boxes[k[0] % 512]
            np.asarray(pils[i].resize((S, S), Image.Resampling.BILINEAR, box=b, reducing_gap=reducing_gap))
            k[0] += 1

    return _timed(step, seconds, torch.device("cpu")) * 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings and fewer rows")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="benchmarks/results/env_throughput.json")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated N of the vector-env rows (default 64,256,1024,4096; --quick: 64,256)",
    )
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 1.5
    device = torch.device(args.device)
    images, annotations = load_images("photos", min_side=S)
    cpu_pool = ImagePool(images, annotations)
    dev_pool = cpu_pool if device.type == "cpu" else ImagePool(images, annotations, device=device)
    sizes = (64, 256) if args.quick else (64, 256, 1024, 4096)
    if args.sizes:
        try:
            sizes = tuple(int(v) for v in args.sizes.split(","))
        except ValueError:
            parser.error(f"--sizes {args.sizes!r}: expected comma-separated ints, e.g. 256,4096")
        if not sizes or min(sizes) < 1:
            parser.error(f"--sizes {args.sizes!r}: sizes must be >= 1")
    bw_cpu = copy_bandwidth(torch.device("cpu"))
    bw_dev = bw_cpu if device.type == "cpu" else copy_bandwidth(device)
    rows: list[dict[str, Any]] = []

    def add(setting: str, name: str, rate: float, dev: str, floor_bytes: float | None = None) -> None:
        bw = bw_dev if dev != "cpu" else bw_cpu
        row = {"setting": setting, "row": name, "device": dev, "views_per_s": rate}
        if floor_bytes is not None:
            row["bandwidth_fraction"] = rate * floor_bytes / bw
        rows.append(row)
        frac = f"{row['bandwidth_fraction']:.1%}" if floor_bytes is not None else ""
        print(f"  {setting:8} {name:44} {dev:5} {rate:12,.0f} {frac:>8}", flush=True)

    print(
        f"copy bandwidth: cpu {bw_cpu / 1e9:.1f} GB/s"
        + (f", {device} {bw_dev / 1e9:.0f} GB/s" if device.type != "cpu" else "")
    )
    print(f"  {'setting':8} {'row':44} {'dev':5} {'views/s':>12} {'of floor':>8}")
    add("crop", "(f) PIL resize loop", pil_loop(images, seconds), "cpu")
    # Pillow's fast path for large reductions (a box reduce first): the stronger baseline.
    add("crop", "(f) PIL resize loop, reducing_gap=2", pil_loop(images, seconds, 2.0), "cpu")
    for setting, base in (("crop", {"augmentations": ()}), ("augment", {})):
        add(setting, "(a) ImageViewEnv loop", single_env(cpu_pool, base, seconds), "cpu")
        add(
            setting,
            "(b) SyncVectorEnv(ImageViewEnv) N=256",
            gym_vector(cpu_pool, base, 256, seconds, False),
            "cpu",
        )
        workers = os.cpu_count() or 2
        if not args.quick:
            add(
                setting,
                f"(c) AsyncVectorEnv(ImageViewEnv) N={workers}",
                gym_vector(cpu_pool, base, workers, seconds, True),
                "cpu",
            )
        devices = [torch.device("cpu")] + ([device] if device.type != "cpu" else [])
        for dev in devices:
            pool = cpu_pool if dev.type == "cpu" else dev_pool
            for interp in ("antialias", "bilinear", "nearest"):
                kw = {**base, "interpolation": interp}
                read = 1 if interp == "nearest" else 4
                for n in sizes if dev.type != "cpu" or interp != "antialias" else sizes[:3]:
                    add(
                        setting,
                        f"(d) ImageViewVectorEnv {interp} N={n}",
                        vector_env(pool, kw, n, seconds, dev),
                        dev.type,
                        S * S * 3 * (read + 1),
                    )
            add(
                setting, "(e) TransitionSampler 64x4 (antialias)", sampler(pool, base, seconds, dev), dev.type
            )
            add(
                setting,
                "(e) TransitionSampler 64x4 (bilinear)",
                sampler(pool, {**base, "interpolation": "bilinear"}, seconds, dev),
                dev.type,
            )

    print("\nratios at N=256 against (b) of the same setting, and against the faster (f):")
    for setting in ("crop", "augment"):
        base = next(r["views_per_s"] for r in rows if r["setting"] == setting and r["row"].startswith("(b)"))
        pil = max(r["views_per_s"] for r in rows if r["row"].startswith("(f)"))
        for r in rows:
            if r["setting"] == setting and (
                r["row"].endswith("N=256") or r["row"].startswith(("(a)", "(c)", "(e)"))
            ):
                r["x_b"] = r["views_per_s"] / base
                r["x_f"] = r["views_per_s"] / pil
                print(
                    f"  {setting:8} {r['row']:44} {r['device']:5} x(b) {r['x_b']:7.2f}   x(f) {r['x_f']:6.2f}"
                )
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "copy_bandwidth_bytes_per_s": {"cpu": bw_cpu, str(device): bw_dev},
        "view_size": S,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

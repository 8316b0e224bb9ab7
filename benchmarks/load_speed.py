"""Load speed (images/s) of the folder and WebDataset shard readers, against a plain PIL loop in the same run.

Usage: ``python benchmarks/load_speed.py [--n 2000] [--size 128] [--shards 4] [--repeats 3] [--json PATH]``.

Generates ``n`` JPEG images (``size`` x ``size``, smooth gradients with a few
shapes and mild noise, quality 90: about the bytes per pixel of photos) in a
temporary folder, and the same bytes as WebDataset shards (``key.jpg`` plus
``key.txt`` and ``key.cls``), then times, best of ``repeats`` (files in the
page cache):

* reference: a plain loop of ``np.asarray(Image.open(path).convert("RGB"))``
  over the files, no annotation;
* ``load_images(FolderSource(folder))``: what ``gym.make(source=folder)`` does;
* ``load_images(WebDatasetSource(pattern))``: random access, index build included
  (a fresh source each repeat);
* iterating ``WebDatasetSource(pattern)``: the streamed path, with captions and labels.

Each ratio is against the reference, measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vpt_env.data import FolderSource, WebDatasetSource, load_images


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    arr = base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 6, (size, size, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, size - 16, 2)
        w, h = rng.integers(8, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _generate(root: Path, n: int, size: int, shards: int) -> tuple[Path, str, int]:
    """Write the folder and the shards; return the folder, the shard brace pattern and total JPEG bytes."""
    rng = np.random.default_rng(0)
    folder = root / "folder"
    folder.mkdir()
    per_shard = -(-n // shards)
    tars = [tarfile.open(root / f"shard-{s:03d}.tar", "w") for s in range(shards)]
    total = 0
    for i in range(n):
        data = _jpeg(rng, size)
        total += len(data)
        (folder / f"{i:06d}.jpg").write_bytes(data)
        tf = tars[i // per_shard]
        for ext, payload in (("jpg", data), ("txt", f"image {i}".encode()), ("cls", str(i % 10).encode())):
            info = tarfile.TarInfo(f"{i:06d}.{ext}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    for tf in tars:
        tf.close()
    return folder, str(root / f"shard-{{000..{shards - 1:03d}}}.tar"), total


def _best(fn: Callable[[], int], repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` runs of ``fn`` (which returns the image count)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images to generate")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--shards", type=int, default=4, help="tar shards to split them into")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (the best is kept)")
    parser.add_argument("--json", default="benchmarks/results/load_speed.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder, pattern, nbytes = _generate(Path(tmp), args.n, args.size, args.shards)
        gen_s = time.perf_counter() - start
        paths = FolderSource(folder).paths

        def reference() -> int:
            for p in paths:
                with Image.open(p) as img:
                    np.asarray(img.convert("RGB"))
            return len(paths)

        def folder_load() -> int:
            return len(load_images(FolderSource(folder))[0])

        def shards_load() -> int:
            return len(load_images(WebDatasetSource(pattern))[0])

        def shards_stream() -> int:
            return sum(1 for _ in iter(WebDatasetSource(pattern)))

        rows = {
            "reference: PIL decode loop over the files": _best(reference, args.repeats),
            "load_images(FolderSource)": _best(folder_load, args.repeats),
            "load_images(WebDatasetSource), index included": _best(shards_load, args.repeats),
            "WebDatasetSource, streamed iteration": _best(shards_stream, args.repeats),
        }

    ref = rows["reference: PIL decode loop over the files"]
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(
        f"images per second, {args.n} JPEGs of {args.size}x{args.size} "
        f"({nbytes / args.n / 1024:.1f} KiB each, {args.shards} shards), best of {args.repeats} ({machine})"
    )
    print(f"{'reader':<48} {'images/s':>9} {'x reference':>12}")
    for name, ips in rows.items():
        print(f"{name:<48} {ips:>9.0f} {ips / ref:>12.2f}")
    print(f"(generating the set took {gen_s:.1f} s)")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "n": args.n,
                "size": args.size,
                "shards": args.shards,
                "repeats": args.repeats,
                "bytes_per_image": nbytes / args.n,
                "machine": machine,
                "images_per_second": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
